//! SSE server sink: serves messages to browsers as text/event-stream (to be built).

use std::sync::Arc;

use super::{Connection, Runtime, Sink};
use crate::config::{self, SinkSpec, SourceSpec};
use crate::pipeline::queue::RouteInput;
use crate::pipeline::status::ConnectionStatus;

/// A stream ferry serves on the admin listener.
pub struct SseServerConnection {
    name: String,
    #[allow(dead_code)]
    config: config::SseServerConnection,
    #[allow(dead_code)]
    status: ConnectionStatus,
}

impl SseServerConnection {
    pub fn new(name: &str, config: config::SseServerConnection, status: ConnectionStatus) -> Self {
        SseServerConnection {
            name: name.to_string(),
            config,
            status,
        }
    }
}

impl Connection for SseServerConnection {
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
