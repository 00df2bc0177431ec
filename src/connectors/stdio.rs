//! Standard input and output as a connection, for `ferry relay -`: every line of standard
//! input is a message, every message is a line on standard output.
//!
//! (Being written: see the relay issue.)

use super::{Connection, Runtime};
use crate::config;
use crate::pipeline::status::ConnectionStatus;

/// Standard input (as a source) and standard output (as a sink).
pub struct StdioConnection {
    #[allow(dead_code)]
    config: config::StdioConnection,
    status: ConnectionStatus,
}

impl StdioConnection {
    pub fn new(_name: &str, config: config::StdioConnection, status: ConnectionStatus) -> Self {
        StdioConnection { config, status }
    }
}

impl Connection for StdioConnection {
    fn start(self: Box<Self>, _runtime: &Runtime) {
        self.status.up("(standard input/output)");
    }
}
