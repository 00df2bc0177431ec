//! A connection as the file writes it: exactly one protocol's section, and `reconnect`. Each
//! protocol's section is read and checked in its connector's folder
//! (`connectors/<protocol>/read.rs`); `parse.rs` calls the one the connection names.

use schemars::JsonSchema;

use super::diagnostics::Report;
use super::model::Reconnect;
use super::reader::Reader;
use super::yaml::Node;
use crate::connectors::http::config::HttpSection;
use crate::connectors::http_server::config::HttpServerConnection;
use crate::connectors::migratorydata::config::MigratoryDataSection;
use crate::connectors::mqtt::config::MqttSection;
use crate::connectors::nats::config::NatsSection;
use crate::connectors::sse::config::SseSection;
use crate::connectors::sse_server::config::SseServerConnection;

/// A named endpoint: exactly one of `mqtt`, `nats`, `sse`, `http`, `sse_server`,
/// `http_server` or `migratorydata`.
#[derive(JsonSchema)]
#[allow(
    dead_code,
    reason = "only its schema is used: each protocol's settings are read on their own"
)]
#[schemars(
    rename = "Connection",
    deny_unknown_fields,
    extend("oneOf" = [
        { "required": ["mqtt"] },
        { "required": ["nats"] },
        { "required": ["sse"] },
        { "required": ["http"] },
        { "required": ["sse_server"] },
        { "required": ["http_server"] },
        { "required": ["migratorydata"] }
    ])
)]
pub struct ConnectionSection {
    /// An MQTT broker (3.1.1 or 5).
    mqtt: Option<MqttSection>,
    /// A NATS server or cluster.
    nats: Option<NatsSection>,
    /// A server-sent-event stream ferry reads (a database's change feed, say).
    sse: Option<SseSection>,
    /// An HTTP endpoint ferry sends each message to.
    http: Option<HttpSection>,
    /// A server-sent-event stream ferry serves to browsers, on the admin listener.
    sse_server: Option<SseServerConnection>,
    /// A path on the admin listener where clients POST messages (webhooks, scripts).
    http_server: Option<HttpServerConnection>,
    /// A MigratoryData server or cluster, through its REST API.
    migratorydata: Option<MigratoryDataSection>,
    /// How ferry reconnects when the connection drops: exponential backoff with jitter.
    reconnect: Option<Reconnect>,
}

/// The sections of a connection read on their own.
pub const READ_ON_THEIR_OWN: &[&str] = &[
    "MqttConnection",
    "NatsConnection",
    "SseConnection",
    "HttpConnection",
    "SseServerConnection",
    "HttpServerConnection",
    "MigratoryDataConnection",
    "Reconnect",
];

impl Reader<'_> {
    /// A connection's `reconnect:`, or the default backoff.
    pub fn reconnect(&mut self, node: &Node) -> Reconnect {
        let Some(reconnect) = self.section::<Reconnect>(node) else {
            return Reconnect::default();
        };
        if reconnect.initial_delay > reconnect.max_delay {
            self.errors.report(
                node.pos,
                "`initial_delay` is longer than `max_delay`",
                "the delay doubles from initial_delay up to max_delay",
            );
        }
        reconnect
    }
}
