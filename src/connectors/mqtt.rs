//! MQTT connector (stub).
use std::sync::Arc;
use crate::config;
use crate::pipeline::queue::RouteInput;
use crate::pipeline::status::ConnectionStatus;
use super::{Connection, Runtime, Sink};

pub struct MqttConnection;
impl MqttConnection {
    pub fn new(_name: &str, _c: config::MqttConnection, _r: config::Reconnect, _s: ConnectionStatus) -> Self { MqttConnection }
}
impl Connection for MqttConnection {
    fn add_source(&mut self, _route: &str, _source: &config::SourceSpec, _input: RouteInput) -> anyhow::Result<()> { todo!() }
    fn add_sink(&mut self, _sink: &config::SinkSpec) -> anyhow::Result<Arc<dyn Sink>> { todo!() }
    fn start(self: Box<Self>, _runtime: &Runtime) { todo!() }
}
