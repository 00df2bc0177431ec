//! SSE source: reads a server-sent-events stream (to be built).

use std::path::Path;
use std::sync::Arc;

use super::{Connection, Runtime, Sink};
use crate::config::{self, SinkSpec, SourceSpec};
use crate::pipeline::queue::RouteInput;
use crate::pipeline::status::ConnectionStatus;

/// A server-sent-events stream ferry reads.
pub struct SseConnection {
    name: String,
    #[allow(dead_code)]
    config: config::SseConnection,
    #[allow(dead_code)]
    status: ConnectionStatus,
}

impl SseConnection {
    pub fn new(
        name: &str,
        config: config::SseConnection,
        _reconnect: config::Reconnect,
        status: ConnectionStatus,
        _state_dir: &Path,
    ) -> Self {
        SseConnection {
            name: name.to_string(),
            config,
            status,
        }
    }
}

impl Connection for SseConnection {
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
