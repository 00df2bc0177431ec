//! Connectors: one module per protocol, each behind the small [`Connection`] and [`Sink`]
//! traits. No protocol crate is named outside its module.
//!
//! Each protocol's folder also says what the protocol is, without any I/O, in its
//! `protocol.rs`: a [`protocol::Descriptor`] that the configuration checks, `ferry check` and
//! the loop analysis ask; [`protocol::PROTOCOLS`] lists them all. And it holds the protocol's
//! configuration: its keys and the connection, source and sink it receives (`config.rs`), and
//! the checks that read the one into the other (`read.rs`).
//!
//! A connection is opened once per `connections:` entry that some route uses. Before it starts,
//! every route reading from it registers its source with [`Connection::add_source`] (messages go
//! into the route's queue). Then [`Connection::start`] spawns the supervised task that connects,
//! subscribes, serves, and on failure backs off, reconnects and subscribes again. Routes publish
//! through sinks made by the connection's [`Sinks`], which also works once the connection runs,
//! so a reload can restart a route without restarting the connections it publishes through.

use std::path::Path;
use std::sync::Arc;

use crate::config::{self, ConnectionKind};
use crate::contracts::queue::RouteInput;
use crate::contracts::status::ConnectionStatus;
use crate::contracts::{ConnectionContext, Sink};

pub mod http;
pub(crate) mod http_client;
pub mod http_server;
pub mod migratorydata;
pub mod mqtt;
pub mod nats;
pub mod protocol;
pub mod sse;
pub mod sse_server;
pub mod stdio;
pub(crate) mod tls;

/// Makes the sinks routes publish through on one connection.
pub trait Sinks: Send + Sync {
    /// A route's sink: the handle the route publishes through.
    fn add_sink(&self, sink: &config::SinkSpec) -> anyhow::Result<Arc<dyn Sink>>;
}

/// The sinks of a connection that cannot be one (an SSE source).
struct NoSinks;

impl Sinks for NoSinks {
    fn add_sink(&self, _sink: &config::SinkSpec) -> anyhow::Result<Arc<dyn Sink>> {
        anyhow::bail!("this connection cannot be a sink")
    }
}

/// HTTP routes a connection serves on the admin listener. The admin listener is axum's, so a
/// connection's routes are an axum router, merged into the listener's own.
pub type HttpRoutes = axum::Router;

/// One supervised client connection to a broker.
pub trait Connection: Send {
    /// Registers a route's source: every message it receives goes to `input`. Connections
    /// ferry only writes to keep the default, a refusal (the config parser refuses such a
    /// route first, with its position).
    fn add_source(
        &mut self,
        route: &str,
        _source: &config::SourceSpec,
        _input: RouteInput,
    ) -> anyhow::Result<()> {
        anyhow::bail!("route {route}: this connection cannot be a source")
    }

    /// What makes this connection's sinks, before or after it started. Connections ferry only
    /// reads keep the default, which refuses every sink.
    fn sinks(&mut self) -> Arc<dyn Sinks> {
        Arc::new(NoSinks)
    }

    /// Spawns the supervised connection task(s) on `context.tasks`.
    fn start(self: Box<Self>, context: &ConnectionContext);

    /// HTTP routes this connection serves on the admin listener (`sse_server`), taken once,
    /// after every route registered and before `start`.
    fn admin_routes(&mut self) -> Option<HttpRoutes> {
        None
    }
}

/// Opens (but does not start) the connection a config entry describes. `state_dir` is where
/// a connection keeps what must survive a restart (SSE and MigratoryData resume cursors).
pub fn open(
    connection: &config::Connection,
    status: ConnectionStatus,
    state_dir: &Path,
) -> Box<dyn Connection> {
    let name = &connection.name;
    let reconnect = connection.reconnect.clone();
    if let Some(warning) = config::security::plaintext_credentials(connection) {
        tracing::warn!(connection = %name, "{warning}");
    }
    match &connection.kind {
        ConnectionKind::Mqtt(mqtt) => Box::new(mqtt::MqttConnection::new(
            name,
            mqtt.clone(),
            reconnect,
            status,
        )),
        ConnectionKind::Nats(nats) => Box::new(nats::NatsConnection::new(
            name,
            nats.clone(),
            reconnect,
            status,
        )),
        ConnectionKind::Sse(sse) => Box::new(sse::SseConnection::new(
            name,
            sse.clone(),
            reconnect,
            status,
            state_dir,
        )),
        ConnectionKind::Http(http) => Box::new(http::HttpConnection::new(
            name,
            http.clone(),
            reconnect,
            status,
        )),
        ConnectionKind::MigratoryData(md) => Box::new(migratorydata::MigratoryDataConnection::new(
            name,
            md.clone(),
            reconnect,
            status,
            state_dir,
        )),
        ConnectionKind::Stdio(stdio) => {
            Box::new(stdio::StdioConnection::new(name, stdio.clone(), status))
        }
        ConnectionKind::SseServer(server) => Box::new(sse_server::SseServerConnection::new(
            name,
            server.clone(),
            status,
        )),
        ConnectionKind::HttpServer(server) => Box::new(http_server::HttpServerConnection::new(
            name,
            server.clone(),
            status,
        )),
    }
}
