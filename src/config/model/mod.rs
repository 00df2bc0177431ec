//! The validated, typed configuration. Everything here has passed validation: connectors and the
//! pipeline can trust it without checking again.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::values::{self, Flag, Interpolated, Text, Whole};

mod headers;
mod secret;
pub use headers::{HeaderRules, TraceMode};
pub use secret::{Secret, SecretUrl};

// Each protocol's connection, source and sink live in its connector's folder, beside the keys
// they are read from; the enums below wrap them.
pub use crate::connectors::http::config::{HttpConnection, HttpSink};
pub use crate::connectors::http_server::config::{HttpServerConnection, HttpServerSource};
pub use crate::connectors::migratorydata::config::{
    MigratoryDataConnection, MigratoryDataQos, MigratoryDataSink, MigratoryDataSource,
};
pub use crate::connectors::mqtt::config::{
    LastWill, MqttConnection, MqttSink, MqttSource, MqttTransport, MqttVersion,
};
pub use crate::connectors::nats::config::{
    JetStreamDeliver, JetStreamSource, NatsConnection, NatsSink, NatsSource, PriorityPolicy,
};
pub use crate::connectors::sse::config::{Handshake, SseConnection, SseSource};
pub use crate::connectors::sse_server::config::{SseServerConnection, SseServerSink};
pub use crate::connectors::stdio::config::{LineFormat, StdioConnection, StdioSink};

/// A whole `bridges.yaml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Named endpoints, shared by any number of routes.
    pub connections: BTreeMap<String, Connection>,
    /// Shared, not copied, by whatever keeps a route beside its configuration (the pipeline's
    /// plan of each route): at thousands of routes each copy is megabytes.
    pub routes: Vec<Arc<Route>>,
    /// How long SIGINT/SIGTERM waits for queued messages to reach their sinks.
    pub shutdown_timeout: Duration,
    /// How long `ferry run` waits for every connection to come up before it tells systemd it is
    /// ready anyway (naming the ones still down in the log and on `/readyz`).
    pub startup_timeout: Duration,
    /// Threads that run the routes and connections (`threads:`, default 1).
    pub threads: usize,
    pub loop_guard: LoopGuard,
    /// Where ferry keeps what must survive a restart (SSE resume cursors). `None`: systemd's
    /// `$STATE_DIRECTORY`, else `/var/lib/ferry`; see [`Config::state_dir`].
    pub state_dir: Option<PathBuf>,
    /// The admin HTTP listener (health, metrics, routes, taps, `sse_server` streams); off
    /// unless configured.
    pub admin: Option<Admin>,
}

impl Config {
    /// The state directory: `state_dir:` if set, else the first of systemd's
    /// `$STATE_DIRECTORY` (set by `StateDirectory=`), else `/var/lib/ferry`.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        std::env::var_os("STATE_DIRECTORY")
            .and_then(|dirs| std::env::split_paths(&dirs).next())
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("/var/lib/ferry"))
    }

    /// Where `route`'s spool lives, when it has one.
    pub fn spool_dir(&self, route: &Route) -> Option<PathBuf> {
        let spool = route.spool.as_ref()?;
        Some(match &spool.dir {
            Some(dir) => dir.clone(),
            None => self.state_dir().join("spool").join(&route.name),
        })
    }
}

/// ferry's own HTTP listener.
#[derive(Clone, Debug, PartialEq)]
pub struct Admin {
    /// Address and port; a bare port listens on 127.0.0.1. Without `listen`,
    /// 127.0.0.1:[`DEFAULT_ADMIN_PORT`].
    pub listen: std::net::SocketAddr,
    /// The bearer token `/metrics`, `/routes` and the taps ask for; `None`: they are open to
    /// whoever reaches the listener (`/healthz` and `/readyz` always are).
    pub token: Option<Secret>,
    /// Serve `/routes/{route}/tap` (live payloads); off unless asked for.
    pub taps: bool,
    /// The `Host` names (no port) a request may carry, lower case; empty: any. By default the
    /// loopback names on a loopback listener, which defeats DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Connections served at once; past it, the one idle the longest is closed.
    pub max_connections: usize,
    /// How long a client has to send a request's headers (also the most a connection may
    /// sit idle between requests).
    pub header_read_timeout: Duration,
    /// A connection on which no byte moved either way for this long is closed.
    pub idle_timeout: Duration,
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<AdminTls>,
}

impl Admin {
    pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// `allowed_hosts` on a loopback listener unless the config says otherwise.
    pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

    /// The listener as `listen` alone configures it, with every other setting at its default.
    pub fn on(listen: std::net::SocketAddr) -> Admin {
        let allowed_hosts = if listen.ip().is_loopback() {
            Self::LOOPBACK_HOSTS.map(String::from).to_vec()
        } else {
            Vec::new()
        };
        Admin {
            listen,
            token: None,
            taps: false,
            allowed_hosts,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            tls: None,
        }
    }
}

/// The admin listener's certificate and key.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    /// The PEM certificate chain, the listener's own first.
    #[schemars(with = "Text")]
    pub cert: PathBuf,
    /// The PEM private key of `cert`.
    #[schemars(with = "Text")]
    pub key: PathBuf,
}

/// The admin listener's port when `admin:` names none: one that no common service (brokers,
/// Prometheus and its exporters, web proxies) uses by default.
pub const DEFAULT_ADMIN_PORT: u16 = 7439;

/// The loop guard: ferry marks what it publishes, and drops what it has relayed too often.
// It drops its own echoes (see `mapping::marker`), and gives up on a message after `max_hops`
// ferry hops of any instance.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LoopGuard {
    /// The name ferry marks what it publishes with. Default: the host name.
    // `None`: the host name, found at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Text>")]
    pub instance: Option<String>,
    /// A message that has made this many ferry hops is dropped.
    #[schemars(with = "Whole<1, 255>")]
    pub max_hops: u32,
}

impl Default for LoopGuard {
    fn default() -> Self {
        LoopGuard {
            instance: None,
            max_hops: 8,
        }
    }
}

/// A named endpoint: one client connection to a broker, supervised.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    pub name: String,
    pub kind: ConnectionKind,
    pub reconnect: Reconnect,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConnectionKind {
    Mqtt(MqttConnection),
    Nats(NatsConnection),
    Sse(SseConnection),
    Http(HttpConnection),
    SseServer(SseServerConnection),
    HttpServer(HttpServerConnection),
    /// A MigratoryData server (or cluster) through its REST API.
    MigratoryData(MigratoryDataConnection),
    /// Standard input (as a source) or standard output (as a sink) of `ferry relay`, one
    /// message per line. Not written in bridges.yaml: `ferry relay` builds it from `-`.
    Stdio(StdioConnection),
}

impl ConnectionKind {
    /// The protocol whose syntax the names of this connection's messages follow: its own, or
    /// for JSON lines the one they carry (see [`LineFormat::Json`]).
    pub fn names(&self) -> Protocol {
        match self {
            ConnectionKind::Stdio(stdio) => stdio.names(),
            other => other.protocol(),
        }
    }

    pub fn protocol(&self) -> Protocol {
        match self {
            ConnectionKind::Mqtt(_) => Protocol::Mqtt,
            ConnectionKind::Nats(_) => Protocol::Nats,
            ConnectionKind::Sse(_) => Protocol::Sse,
            ConnectionKind::Http(_) => Protocol::Http,
            ConnectionKind::SseServer(_) => Protocol::SseServer,
            ConnectionKind::HttpServer(_) => Protocol::HttpServer,
            ConnectionKind::MigratoryData(_) => Protocol::MigratoryData,
            ConnectionKind::Stdio(_) => Protocol::Stdio,
        }
    }
}

/// What a connection speaks: decides how names are converted and checked, and which
/// directions it can serve. Each protocol's facts are its descriptor
/// (`connectors::protocol::Descriptor`), in its connector's folder, which reads this model:
/// the model stays below it and names no descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Mqtt,
    Nats,
    /// A server-sent-events stream ferry reads (source only).
    Sse,
    /// HTTP requests ferry makes (sink only).
    Http,
    /// A server-sent-events stream ferry serves on the admin listener (sink only).
    SseServer,
    /// HTTP requests ferry takes on the admin listener (source only).
    HttpServer,
    /// MigratoryData's REST API: subjects like `/a/b` (source and sink).
    MigratoryData,
    /// Lines on standard input or output (`ferry relay -`).
    Stdio,
}

impl Protocol {
    /// The protocol's name as a user writes it in the config.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Nats => "nats",
            Protocol::Sse => "sse",
            Protocol::Http => "http",
            Protocol::SseServer => "sse_server",
            Protocol::HttpServer => "http_server",
            Protocol::MigratoryData => "migratorydata",
            Protocol::Stdio => "stdio",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reconnection backoff: the delay doubles from `initial_delay` up to `max_delay`.
// With jitter. The backoff starts over only after a connection stayed up `stable_after`, so a
// broker that accepts and then drops every connection is not hammered at `initial_delay`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Reconnect {
    /// The first delay after a connection drops.
    #[serde(with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub initial_delay: Duration,
    /// The longest delay between two attempts.
    #[serde(with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub max_delay: Duration,
    /// How long one connection attempt may take.
    #[serde(with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub connect_timeout: Duration,
    /// A connection up this long is stable: the next drop starts again from `initial_delay`.
    #[serde(with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub stable_after: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            stable_after: Duration::from_secs(30),
        }
    }
}

/// The liveness probe's timing.
// ferry publishes on a private topic/subject it subscribes to and expects the probe back. A
// subscription that stays silent while the connection claims to be up is torn down and
// rebuilt.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Probe {
    /// How often to probe.
    #[serde(with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub interval: Duration,
    /// How long the probe may take to come back.
    #[serde(with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub timeout: Duration,
    /// The topic or subject to probe on. Default: a private one under ferry's own prefix.
    // `None`: `ferry/probe/<client_id>` on MQTT, `_FERRY.probe.<connection>.<random>` on NATS.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Text>")]
    pub topic: Option<String>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            topic: None,
        }
    }
}

/// TLS settings (for mqtts://, wss://, tls://, https:// URLs).
// Shared by every protocol. Read from a `tls:` block; without one, `Tls::default()`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// A PEM file of CA certificates to trust instead of the system's.
    #[schemars(with = "Option<Text>")]
    pub ca: Option<PathBuf>,
    /// A PEM client certificate (needs `key`).
    #[schemars(with = "Option<Text>")]
    pub cert: Option<PathBuf>,
    /// The PEM private key of `cert`.
    #[schemars(with = "Option<Text>")]
    pub key: Option<PathBuf>,
    /// Accept any server certificate. For tests only: anyone can pose as the server.
    // Only ever explicit; logged as a warning.
    #[serde(default)]
    #[schemars(with = "Flag")]
    pub insecure_skip_verify: bool,
    /// A `tls:` block was written: the connection must use TLS, whatever its URL's scheme says
    /// (a server, or a man in the middle, cannot talk it down to plaintext).
    #[serde(skip_deserializing, default = "written")]
    #[schemars(skip)]
    pub required: bool,
}

/// A `tls:` block read from the file was written.
fn written() -> bool {
    true
}

/// The method of an HTTP request, for the protocols that speak HTTP (an SSE stream's request
/// and handshake, an HTTP sink's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
    Put,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
        }
    }
}

/// One route: a source, the mapping stage, one or more sinks.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub name: String,
    pub from: Source,
    pub to: Vec<Sink>,
    /// jq program applied to JSON payloads; each value it yields becomes one message.
    pub transform: Option<String>,
    /// jq program; a message passes when it yields `true` (anything but `false`/`null`).
    pub filter: Option<String>,
    pub headers: HeaderRules,
    pub queue: Queue,
    /// Where messages that cannot be mapped or delivered go, unchanged, with the reason.
    pub dead_letter: Option<Sink>,
    /// The guarantee the user asked for; `None` gives what the sides allow (`ferry check`
    /// says which).
    pub delivery: Option<Delivery>,
    /// Store-and-forward: while a sink is unreachable, its messages wait on disk.
    pub spool: Option<Spool>,
    /// The route ends once this many messages were relayed (`ferry relay --count`; never set
    /// from bridges.yaml).
    pub stop_after: Option<u64>,
    /// What the route's filter and transform may take of one message.
    pub transform_budget: TransformBudget,
    /// A request route (`request:`): its sink's reply goes back to whoever asked.
    pub request: Option<Request>,
}

/// What a route's jq programs (filter and transform) may take of one message
/// (`transform_timeout`, `transform_memory`); past either, they are stopped and the message is
/// dead-lettered with the reason.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransformBudget {
    /// Wall-clock time for one message.
    pub timeout: Duration,
    /// Address space of the worker process that runs them, in bytes.
    pub memory: u64,
}

impl TransformBudget {
    /// Below this the worker process cannot start (its own code and stacks take ~30 MiB).
    pub const MIN_MEMORY: u64 = 64 << 20;
}

impl Default for TransformBudget {
    fn default() -> Self {
        TransformBudget {
            timeout: Duration::from_secs(1),
            memory: 512 << 20,
        }
    }
}

/// A route's delivery promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The source is acknowledged as soon as the route takes a message: a crash or a failed
    /// sink can lose it, never duplicate it.
    AtMostOnce,
    /// The source is acknowledged only after every sink confirmed: nothing is lost, a crash
    /// can duplicate.
    AtLeastOnce,
}

impl Delivery {
    pub fn name(self) -> &'static str {
        match self {
            Delivery::AtMostOnce => "at-most-once",
            Delivery::AtLeastOnce => "at-least-once",
        }
    }
}

/// A route's spool on disk.
// Store and forward: what a sink that is away cannot take waits here.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spool {
    /// Where. Default: `<state_dir>/spool/<route>`.
    // See [`Config::spool_dir`].
    #[schemars(with = "Option<Text>")]
    pub dir: Option<PathBuf>,
    /// The most bytes it holds (at least 1MiB).
    // When the spool holds this much, the route blocks its source instead.
    #[serde(default = "Spool::default_max_bytes", with = "values::size")]
    #[schemars(with = "values::Size")]
    pub max_bytes: u64,
}

impl Spool {
    /// A spool's size limit when `max_bytes` is not given.
    fn default_max_bytes() -> u64 {
        1024 * 1024 * 1024
    }
}

/// A request route: each message is a request its one sink makes in turn, and the reply goes
/// back to the requester (a NATS reply inbox, an MQTT 5 response topic, the HTTP response).
// Checked at parse (`config/request_route.rs`): which ends can ask and answer.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// How long a request waits for its reply; past it the requester is told so.
    #[serde(default = "Request::default_timeout", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub timeout: Duration,
    /// The most requests of the route waiting for their replies at once.
    #[serde(default = "Request::default_max_in_flight")]
    #[schemars(with = "Whole<1, 65536>")]
    pub max_in_flight: usize,
}

impl Request {
    fn default_timeout() -> Duration {
        Duration::from_secs(5)
    }

    fn default_max_in_flight() -> usize {
        256
    }
}

impl Default for Request {
    fn default() -> Self {
        Request {
            timeout: Request::default_timeout(),
            max_in_flight: Request::default_max_in_flight(),
        }
    }
}

/// How a payload is read or written.
// Read by jq, templates and envelopes; written from jq's outputs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[schemars(extend("errorMessage" = "`{value}` is not a valid payload format"))]
pub enum PayloadFormat {
    /// JSON; jq sees the parsed value, and writes its outputs as compact JSON.
    #[default]
    Json,
    /// UTF-8 text; jq sees a string, and string outputs are written without quotes.
    Text,
    /// Raw bytes; jq sees a byte string, envelopes carry it as base64.
    Bytes,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// Name of the connection (a key of `connections`).
    pub connection: String,
    pub spec: SourceSpec,
    /// A regex the source name must match; its named captures feed templates and jq.
    pub pattern: Option<String>,
    pub format: PayloadFormat,
    /// The payload is a ferry envelope, unwrapped before anything else.
    pub envelope: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    Mqtt(MqttSource),
    Nats(NatsSource),
    Sse(SseSource),
    MigratoryData(MigratoryDataSource),
    HttpServer(HttpServerSource),
    /// Every line of standard input is a message; the route ends at the end of the input.
    Stdio,
}

impl SourceSpec {
    /// Makes the source hand each message's way back to its requester to the route (a request
    /// route's source; `config/request_route.rs` checked that it has one).
    pub fn answer_requests(&mut self) {
        match self {
            SourceSpec::Nats(nats) => nats.replies = true,
            SourceSpec::Mqtt(mqtt) => mqtt.replies = true,
            SourceSpec::HttpServer(http) => http.replies = true,
            _ => {}
        }
    }

    pub fn protocol(&self) -> Protocol {
        match self {
            SourceSpec::Mqtt(_) => Protocol::Mqtt,
            SourceSpec::Nats(_) => Protocol::Nats,
            SourceSpec::Sse(_) => Protocol::Sse,
            SourceSpec::MigratoryData(_) => Protocol::MigratoryData,
            SourceSpec::HttpServer(_) => Protocol::HttpServer,
            SourceSpec::Stdio => Protocol::Stdio,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sink {
    pub connection: String,
    pub spec: SinkSpec,
    /// How jq's outputs are written.
    pub format: PayloadFormat,
    /// Wrap what is published in a ferry envelope.
    pub envelope: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SinkSpec {
    Mqtt(MqttSink),
    Nats(NatsSink),
    Http(HttpSink),
    SseServer(SseServerSink),
    MigratoryData(MigratoryDataSink),
    Stdio(StdioSink),
}

impl SinkSpec {
    pub fn protocol(&self) -> Protocol {
        match self {
            SinkSpec::Mqtt(_) => Protocol::Mqtt,
            SinkSpec::Nats(_) => Protocol::Nats,
            SinkSpec::Http(_) => Protocol::Http,
            SinkSpec::SseServer(_) => Protocol::SseServer,
            SinkSpec::MigratoryData(_) => Protocol::MigratoryData,
            SinkSpec::Stdio(_) => Protocol::Stdio,
        }
    }

    /// The subject/topic/URL/event template of this sink.
    pub fn target(&self) -> &Target {
        match self {
            SinkSpec::Mqtt(s) => &s.topic,
            SinkSpec::Nats(s) => &s.subject,
            SinkSpec::Http(s) => &s.url,
            SinkSpec::SseServer(s) => &s.event,
            SinkSpec::MigratoryData(s) => &s.subject,
            SinkSpec::Stdio(s) => &s.subject,
        }
    }
}

/// Where a sink publishes.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// The source subject, converted between MQTT and NATS by nats-server's own rules.
    Auto,
    /// A minijinja template over the source message.
    Template(String),
}

/// Publish retained: `true`, `false`, or `source` (as the message arrived).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retain {
    Fixed(bool),
    /// Copy the retain flag of the source message.
    FromSource,
}

impl Default for Retain {
    fn default() -> Self {
        Retain::Fixed(false)
    }
}

impl schemars::JsonSchema for Retain {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RetainSetting".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "enum": [true, false, "true", "false", "source"],
            "errorMessage": "`{value}` is not a valid `{key}` setting"
        })
    }
}

impl serde::Serialize for Retain {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Retain::Fixed(retain) => serializer.serialize_bool(*retain),
            Retain::FromSource => serializer.serialize_str("source"),
        }
    }
}

impl<'de> Deserialize<'de> for Retain {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RetainVisitor;
        impl serde::de::Visitor<'_> for RetainVisitor {
            type Value = Retain;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or source")
            }
            fn visit_bool<E: serde::de::Error>(self, retain: bool) -> Result<Retain, E> {
                Ok(Retain::Fixed(retain))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Retain, E> {
                match v {
                    "true" => Ok(Retain::Fixed(true)),
                    "false" => Ok(Retain::Fixed(false)),
                    "source" => Ok(Retain::FromSource),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(RetainVisitor)
    }
}

/// A route's bounded queue, and what happens when it is full.
// Between the source and the sinks.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// The most messages it holds.
    #[schemars(with = "Whole<1, 100000000>")]
    pub max_messages: usize,
    /// The most payload bytes it holds.
    #[serde(with = "values::size")]
    #[schemars(with = "values::Size")]
    pub max_bytes: usize,
    /// What a full queue does with a new message.
    #[schemars(with = "Interpolated<WhenFull>")]
    pub when_full: WhenFull,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            max_messages: 10_000,
            max_bytes: 64 * 1024 * 1024,
            when_full: WhenFull::Block,
        }
    }
}

/// What a full queue does with a new message.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[schemars(extend("errorMessage" = "`{value}` is not a valid `when_full` policy"))]
pub enum WhenFull {
    /// The source waits: it stops reading, and the broker's own flow control takes over.
    Block,
    /// The oldest queued message is dropped (counted) to make room.
    DropOldest,
    /// The new message is dropped (counted).
    DropNewest,
}
