//! Each protocol's part of the validated model: its connection, source and sink as connectors
//! receive them. The keys they are read from live with each protocol, in
//! `connectors/<protocol>/config.rs`; where the file's form and the model are one type, that
//! type lives there alone.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// The MQTT protocol version ferry speaks to the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttVersion {
    V311,
    V5,
}

/// How the MQTT connection reaches the broker, from the URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttTransport {
    /// `mqtt://`
    Tcp,
    /// `mqtts://`
    Tls,
    /// `ws://`
    Ws,
    /// `wss://`
    Wss,
}

impl MqttTransport {
    pub fn is_tls(self) -> bool {
        matches!(self, MqttTransport::Tls | MqttTransport::Wss)
    }

    /// The transport a URL scheme names (`tcp` and `ssl` as mosquitto's tools accept them).
    pub fn from_scheme(scheme: &str) -> Option<MqttTransport> {
        Some(match scheme {
            "mqtt" | "tcp" => MqttTransport::Tcp,
            "mqtts" | "ssl" => MqttTransport::Tls,
            "ws" => MqttTransport::Ws,
            "wss" => MqttTransport::Wss,
            _ => return None,
        })
    }

    /// The scheme of its URLs.
    pub fn scheme(self) -> &'static str {
        match self {
            MqttTransport::Tcp => "mqtt",
            MqttTransport::Tls => "mqtts",
            MqttTransport::Ws => "ws",
            MqttTransport::Wss => "wss",
        }
    }

    /// The port a URL without one means.
    pub fn default_port(self) -> u16 {
        match self {
            MqttTransport::Tcp => 1883,
            MqttTransport::Tls => 8883,
            MqttTransport::Ws => 80,
            MqttTransport::Wss => 443,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MqttConnection {
    /// The URL as written (without credentials), for logs.
    pub url: String,
    pub transport: MqttTransport,
    pub host: String,
    pub port: u16,
    /// For ws:// and wss://: the full URL the WebSocket handshake goes to.
    pub ws_url: Option<SecretUrl>,
    pub version: MqttVersion,
    pub client_id: String,
    /// `false` keeps a persistent session: the broker holds messages while ferry is away.
    pub clean_start: bool,
    /// MQTT 5 session expiry interval; `None` means the session ends with the connection.
    pub session_expiry: Option<Duration>,
    pub keep_alive: Duration,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: Tls,
    /// Largest packet accepted from the broker.
    pub max_packet_size: u32,
    /// Largest PUBLISH packet ferry sends when the broker did not announce a limit (MQTT 3.1.1
    /// never does): a larger message is refused before it is sent.
    pub max_outgoing_packet_size: u32,
    pub last_will: Option<LastWill>,
    /// `None` when turned off (`probe: false`).
    pub probe: Option<Probe>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MqttSource {
    /// Topic filters, as the user wrote them (without any `$share/` prefix).
    pub topics: Vec<String>,
    pub qos: u8,
    /// Shared-subscription group: the broker spreads messages over the group's members.
    pub share: Option<String>,
    /// MQTT 5: do not receive what this same connection published.
    pub no_local: bool,
}

impl MqttSource {
    /// The filters as subscribed, with `$share/GROUP/` in front when a group is set.
    pub fn subscriptions(&self) -> Vec<String> {
        self.topics
            .iter()
            .map(|t| match &self.share {
                Some(group) => format!("$share/{group}/{t}"),
                None => t.clone(),
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MqttSink {
    pub topic: Target,
    pub qos: u8,
    pub retain: Retain,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NatsConnection {
    /// One or more server URLs (nats://, tls://, ws://, wss://); the client fails over.
    /// Without credentials: a `user:password@` or `TOKEN@` written in one is moved into
    /// `user`/`password` or `token` when the configuration is read.
    pub urls: Vec<String>,
    /// Connection name shown by the server (`nats server report connections`).
    pub name: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    /// An nkey seed (`SU...`).
    pub nkey: Option<Secret>,
    /// A `.creds` file (JWT + seed).
    pub creds: Option<PathBuf>,
    pub tls: Tls,
    /// How often the client pings the server; two missed pongs and it reconnects, so a
    /// stalled TCP connection is noticed.
    pub ping_interval: Duration,
    /// `None` when turned off (`probe: false`).
    pub probe: Option<Probe>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NatsSource {
    /// The subject subscribed to; for JetStream, the consumer's filter subject.
    pub subject: String,
    /// Queue group: the server gives each message to one member.
    pub queue_group: Option<String>,
    /// Read through a durable JetStream pull consumer instead of a core subscription.
    pub jetstream: Option<JetStreamSource>,
}

/// A JetStream durable consumer.
// A pull consumer: ferry binds to it, or creates it when absent.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JetStreamSource {
    /// The stream's name.
    #[schemars(with = "Text")]
    pub stream: String,
    /// The durable consumer's name (created if missing).
    #[schemars(with = "Text")]
    pub consumer: String,
    /// Messages delivered but not yet acknowledged, at most.
    // The backpressure window.
    #[serde(default = "JetStreamSource::default_max_ack_pending")]
    #[schemars(with = "Whole<1, 1000000>")]
    pub max_ack_pending: i64,
    /// How long the server waits for an ack before it redelivers.
    #[serde(
        default = "JetStreamSource::default_ack_wait",
        with = "values::duration"
    )]
    #[schemars(with = "values::Duration")]
    pub ack_wait: Duration,
    /// Where a new consumer starts.
    #[serde(default)]
    #[schemars(with = "Interpolated<JetStreamDeliver>")]
    pub deliver: JetStreamDeliver,
}

impl JetStreamSource {
    fn default_max_ack_pending() -> i64 {
        1000
    }

    fn default_ack_wait() -> Duration {
        Duration::from_secs(30)
    }
}

/// Where a new JetStream consumer starts.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[schemars(
    rename = "Deliver",
    extend("errorMessage" = "`{value}` is not a valid `deliver` policy")
)]
pub enum JetStreamDeliver {
    /// Every message the stream holds.
    #[default]
    All,
    /// Only messages that arrive from now on.
    New,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NatsSink {
    pub subject: Target,
    /// Publish to JetStream and wait for the stream's ack (with `Nats-Msg-Id` for
    /// deduplication), rather than core NATS.
    pub jetstream: bool,
}

/// A server-sent-events stream ferry reads: database change feeds and the like.
#[derive(Clone, Debug, PartialEq)]
pub struct SseConnection {
    /// The stream's URL (http:// or https://), query parameters already added.
    pub url: SecretUrl,
    pub method: HttpMethod,
    /// Request body, for `method: POST`.
    pub body: Option<String>,
    /// Request headers (API keys come from `${ENV}` or `${file:...}`).
    pub headers: Vec<(String, Secret)>,
    pub tls: Tls,
    /// No event and no comment for this long: the stream is dead, reconnect.
    pub idle_timeout: Duration,
    /// Save the id of the last delivered event and send it as `Last-Event-ID`, after a
    /// reconnect and after a restart.
    pub resume: bool,
    pub handshake: Option<Handshake>,
    /// The longest line ferry buffers from the stream; a longer one fails the stream.
    pub max_line_size: usize,
    /// The most data one event may carry; a larger one fails the stream.
    pub max_event_size: usize,
    /// The most ferry reads of an answer that is not the stream (an error page, a handshake's
    /// reply).
    pub max_response_body: usize,
}

impl SseConnection {
    pub const DEFAULT_MAX_LINE_SIZE: usize = sse::DEFAULT_MAX_EVENT_SIZE as usize;
    pub const DEFAULT_MAX_EVENT_SIZE: usize = sse::DEFAULT_MAX_EVENT_SIZE as usize;
    pub const DEFAULT_MAX_RESPONSE_BODY: usize = sse::DEFAULT_MAX_RESPONSE_BODY as usize;
}

/// An HTTP request fired when a given event arrives on an SSE stream, e.g. PocketBase's
/// subscription POST after `PB_CONNECT`. The event itself is not delivered to routes.
#[derive(Clone, Debug, PartialEq)]
pub struct Handshake {
    /// The event type that triggers it.
    pub on: String,
    pub method: HttpMethod,
    /// Template; relative URLs are resolved against the stream's URL.
    pub url: SecretUrl,
    /// Name and template (an `Authorization` or an API key, often).
    pub headers: Vec<(String, Secret)>,
    /// Template over the event (`payload`, `event`, `id`).
    pub body: Option<String>,
}

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

#[derive(Clone, Debug, PartialEq)]
pub struct SseSource {
    /// Event types this route takes; empty takes every event.
    pub events: Vec<String>,
}

impl SseSource {
    pub fn takes(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }
}

/// HTTP endpoints ferry sends messages to (webhooks, REST APIs).
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConnection {
    /// Base URL; a sink's `url` is resolved against it.
    pub url: SecretUrl,
    /// Headers sent with every request (credentials from `${ENV}` or `${file:...}`).
    pub headers: Vec<(String, Secret)>,
    pub tls: Tls,
    /// How long one request may take, connecting included.
    pub timeout: Duration,
    /// Requests in flight at once on this connection, over all routes.
    pub max_concurrent: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpSink {
    /// Rendered into the message's subject and resolved against the connection's URL;
    /// `Auto` posts to the connection's URL itself.
    pub url: Target,
    pub method: HttpMethod,
}

/// A MigratoryData server reached through its REST API (`Rest.Enable = true` on the server):
/// `POST /rest/produce` to publish, `GET /rest/consume` polled to read.
#[derive(Clone, Debug, PartialEq)]
pub struct MigratoryDataConnection {
    /// The servers' base URLs (http:// or https://), in the order they are tried: on a
    /// connection failure ferry moves to the next, and back to the first once the one it is on
    /// stayed up for `reconnect.stable_after`.
    pub servers: Vec<String>,
    /// The entitlement token sent with every request (from `${ENV}` or `${file:...}`).
    pub token: Secret,
    pub tls: Tls,
    /// How long one request may take, connecting included.
    pub timeout: Duration,
    /// How often each source subject is polled when the last poll brought nothing.
    pub poll_interval: Duration,
    /// The most of one server answer (a produce or consume answer) ferry reads.
    pub max_response_size: usize,
}

/// A MigratoryData subject a route reads.
#[derive(Clone, Debug, PartialEq)]
pub struct MigratoryDataSource {
    /// The subject, `/a/b`.
    pub subject: String,
    /// How many past messages the first poll delivers (`history=N`) while ferry has no
    /// cursor for the subject; `None` (or 0): none, ferry starts from the subject's last
    /// message and delivers what comes after it.
    pub history: Option<u32>,
}

/// MigratoryData's quality of service for a publish.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[schemars(extend("errorMessage" = "`{value}` is not a valid MigratoryData qos"))]
pub enum MigratoryDataQos {
    #[default]
    Standard,
    Guaranteed,
}

impl MigratoryDataQos {
    /// The value of the `qos=` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            MigratoryDataQos::Standard => "standard",
            MigratoryDataQos::Guaranteed => "guaranteed",
        }
    }
}

/// A MigratoryData subject a route publishes to.
#[derive(Clone, Debug, PartialEq)]
pub struct MigratoryDataSink {
    /// The subject (`/a/b`); `Auto` is the source's name as a MigratoryData subject.
    pub subject: Target,
    pub retained: Retain,
    pub qos: MigratoryDataQos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SseServerSink {
    /// The `event:` of each served event; `Auto` is the source's name as it came.
    pub event: Target,
}

/// Standard input or output of `ferry relay`: how a line is a message.
#[derive(Clone, Debug, PartialEq)]
pub struct StdioConnection {
    pub lines: LineFormat,
}

/// How one line of standard input or output is one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// `{"subject": ..., "payload": ..., "headers": {...}, "time": ...}`; the payload as text,
    /// or base64 (`"payload_base64": true` on the line) when it is not UTF-8 or when
    /// `base64` asks for it always.
    ///
    /// `names` is the protocol whose syntax subjects follow on this side, so that a capture
    /// replays onto either broker: on standard output, the source's, written in each line as
    /// `"protocol"`; on standard input, the sink's, to which a line's own `"protocol"` (if it
    /// has one) is converted by the MQTT⇄NATS codec.
    Json { base64: bool, names: Protocol },
    /// The line is the payload, without its newline; the subject is the relay's `--subject`
    /// (input) or dropped (output).
    Raw,
}

/// Standard output as a sink.
#[derive(Clone, Debug, PartialEq)]
pub struct StdioSink {
    /// The subject written with each message; `Auto` keeps the source's own.
    pub subject: Target,
}
