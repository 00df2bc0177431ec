//! HTTP sink: sends messages as HTTP requests (to be built).

use std::sync::Arc;

use super::{Connection, Runtime, Sink};
use crate::config::{self, SinkSpec, SourceSpec};
use crate::pipeline::queue::RouteInput;
use crate::pipeline::status::ConnectionStatus;

/// HTTP endpoints ferry sends messages to.
pub struct HttpConnection {
    name: String,
    #[allow(dead_code)]
    config: config::HttpConnection,
    #[allow(dead_code)]
    status: ConnectionStatus,
}

impl HttpConnection {
    pub fn new(name: &str, config: config::HttpConnection, status: ConnectionStatus) -> Self {
        HttpConnection {
            name: name.to_string(),
            config,
            status,
        }
    }
}

impl Connection for HttpConnection {
    fn add_source(
        &mut self,
        _route: &str,
        _source: &SourceSpec,
        _input: RouteInput,
    ) -> anyhow::Result<()> {
        anyhow::bail!("connection {}: not built yet", self.name)
    }

    fn add_sink(&mut self, _sink: &SinkSpec) -> anyhow::Result<Arc<dyn Sink>> {
        anyhow::bail!("connection {}: not built yet", self.name)
    }

    fn start(self: Box<Self>, _runtime: &Runtime) {}
}
