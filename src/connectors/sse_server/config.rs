//! An `sse_server:` connection as `bridges.yaml` writes it and the connector receives it: a
//! `text/event-stream` ferry serves on the admin listener, for browsers (`EventSource`); and
//! its sink.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::values::{self, Text, Whole};
use crate::config::{Secret, Target};

/// A server-sent-event stream served to browsers on the admin listener.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SseServerConnection {
    /// The path on the admin listener, e.g. `/events/sensors`.
    #[schemars(with = "Text")]
    pub path: String,
    /// Events kept for clients that reconnect with `Last-Event-ID`.
    #[serde(default = "default_buffer")]
    #[schemars(with = "Whole<0, 1000000>")]
    pub buffer: usize,
    /// How often an idle stream gets a comment, so proxies keep it open.
    #[serde(default = "default_keep_alive", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub keep_alive: Duration,
    /// The origin whose pages may read the stream (`*` for any). Default: the listener's own.
    // Sent as `Access-Control-Allow-Origin`; `None`: no header, only pages served from the
    // admin listener's own origin can read the stream.
    #[schemars(with = "Option<Text>")]
    pub cors_origin: Option<String>,
    /// The token a client must show as `?token=` or in the `ferry_token` cookie. Default: the
    /// stream is public.
    // Not a header: a browser's EventSource sends none.
    #[schemars(with = "Option<Text>")]
    pub token: Option<Secret>,
    /// Clients served at once; one more is answered 503.
    #[serde(default = "default_max_clients")]
    #[schemars(with = "Whole<1, 1000000>")]
    pub max_clients: usize,
}

impl SseServerConnection {
    pub const DEFAULT_MAX_CLIENTS: usize = 1000;
}

fn default_buffer() -> usize {
    1000
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(15)
}

fn default_max_clients() -> usize {
    SseServerConnection::DEFAULT_MAX_CLIENTS
}

/// An sse_server sink.
#[derive(serde::Deserialize, JsonSchema)]
pub struct SseServerSinkKeys {
    /// The event name (a template). Default: the MQTT topic or NATS subject.
    #[serde(default = "values::auto")]
    #[schemars(with = "Text")]
    pub event: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SseServerSink {
    /// The `event:` of each served event; `Auto` is the source's name as it came.
    pub event: Target,
}
