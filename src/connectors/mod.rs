//! Connectors: one module per protocol, each behind the small [`Connection`] and [`Sink`]
//! traits. No protocol crate is named outside its module.
//!
//! Each protocol's folder also says what the protocol is, without any I/O, in its
//! `protocol.rs`: a [`protocol::Descriptor`] that the configuration checks, `ferry check` and
//! the loop analysis ask; [`protocol::PROTOCOLS`] lists them all.
//!
//! A connection is opened once per `connections:` entry that some route uses. Before it starts,
//! every route reading from it registers its source with [`Connection::add_source`] (messages go
//! into the route's queue). Then [`Connection::start`] spawns the supervised task that connects,
//! subscribes, serves, and on failure backs off, reconnects and subscribes again. Routes publish
//! through sinks made by the connection's [`Sinks`], which also works once the connection runs,
//! so a reload can restart a route without restarting the connections it publishes through.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{self, ConnectionKind};
use crate::message::Message;
use crate::pipeline::queue::RouteInput;
use crate::pipeline::status::ConnectionStatus;
use crate::pipeline::supervisor::{OwnerRun, Tasks};

pub mod http;
pub(crate) mod http_client;
pub mod migratorydata;
pub mod mqtt;
pub mod nats;
pub mod protocol;
pub mod sse;
pub mod sse_server;
pub mod stdio;
pub(crate) mod tls;

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a sink did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The connection is down or the broker is busy: the same message may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// The message itself cannot be published here (bad topic, too large): retrying is futile.
    #[error("{0}")]
    Rejected(String),
    /// The server asked to be left alone for a while (HTTP 429/503 with `Retry-After`): try
    /// the same message again after `retry_after`.
    #[error("{reason}")]
    Busy {
        reason: String,
        retry_after: Duration,
    },
}

/// What confirms a message a sink has taken: resolves once the message is as far as the
/// protocol can confirm (a PUBACK, a JetStream ack, the socket write).
pub enum Confirmation {
    /// Confirmed already (the sink's protocol had nothing more to wait for).
    Done,
    Pending(BoxFuture<'static, Result<(), SinkError>>),
}

impl Confirmation {
    /// Waits for the confirmation.
    pub async fn wait(self) -> Result<(), SinkError> {
        match self {
            Confirmation::Done => Ok(()),
            Confirmation::Pending(pending) => pending.await,
        }
    }
}

/// Publishes a route's mapped messages on one connection.
pub trait Sink: Send + Sync {
    /// Publishes `message` (its `subject` already rendered for this sink). Resolves once the
    /// message is as far as this protocol can confirm.
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Hands `message` to the protocol client and resolves as soon as it is on its way, in the
    /// order of the calls, with what will confirm it. A route keeps several messages in flight
    /// this way, so it is not held to one broker round trip per message. Sinks whose protocol
    /// gives nothing to wait on separately keep the default: the whole send, then a done
    /// confirmation.
    fn queue<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<Confirmation, SinkError>> {
        Box::pin(async move {
            self.send(message).await?;
            Ok(Confirmation::Done)
        })
    }
}

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

/// What a started connection needs from the daemon.
#[derive(Clone)]
pub struct Runtime {
    /// Every connection task goes here, supervised (a task that panics or ends before `close`
    /// restarts the connection), so shutdown can wait for them.
    pub tasks: Tasks,
    /// Tasks that only feed route queues, supervised likewise until `stop_sources`. Shutdown
    /// waits for them (after `stop_sources`) before it closes the queues, so what a source
    /// already received still gets delivered.
    pub sources: Tasks,
    /// Cancelled when the sources must stop reading (shutdown step one).
    pub stop_sources: CancellationToken,
    /// Cancelled when the connection must close (shutdown step two, after the queues drained).
    pub close: CancellationToken,
}

impl Runtime {
    /// A runtime with its own tasks and tokens, for one run of a connection (each connection
    /// has one, so a reload or a restart can stop one connection while the others run).
    pub fn new(run: &OwnerRun) -> Runtime {
        let stop_sources = CancellationToken::new();
        let close = CancellationToken::new();
        Runtime {
            // A source task may end once its sources are told to stop; a connection task
            // only once it is told to close.
            sources: run.tasks(stop_sources.clone()),
            tasks: run.tasks(close.clone()),
            stop_sources,
            close,
        }
    }

    /// A runtime whose task failures nobody restarts (they are still logged): for tests and
    /// tools that run a connection on its own.
    pub fn unsupervised() -> Runtime {
        let stop_sources = CancellationToken::new();
        let close = CancellationToken::new();
        Runtime {
            sources: Tasks::unsupervised(stop_sources.clone()),
            tasks: Tasks::unsupervised(close.clone()),
            stop_sources,
            close,
        }
    }
}

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

    /// Spawns the supervised connection task(s) on `runtime.tasks`.
    fn start(self: Box<Self>, runtime: &Runtime);

    /// HTTP routes this connection serves on the admin listener (`sse_server`), taken once,
    /// after every route registered and before `start`.
    fn admin_routes(&mut self) -> Option<crate::admin::Routes> {
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
    }
}
