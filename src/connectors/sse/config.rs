//! An `sse:` connection: its keys as `bridges.yaml` writes them (a server-sent-event stream
//! ferry reads), and the connection and source the connector receives once they are checked.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::values::{self, Flag, Interpolated, OneOrList, Size, Text, TextMap};
use crate::config::{HttpMethod, Secret, SecretUrl, Tls};

/// `max_line_size` and `max_event_size` when unset.
pub const DEFAULT_MAX_EVENT_SIZE: u64 = 16 * 1024 * 1024;
/// `max_response_body` when unset.
pub const DEFAULT_MAX_RESPONSE_BODY: u64 = 64 * 1024;

/// A server-sent-event stream ferry reads; resumed with `Last-Event-ID`.
#[derive(Deserialize, JsonSchema)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SseConnection")]
pub struct SseSection {
    /// The stream's http:// or https:// URL.
    #[schemars(with = "Text")]
    pub url: String,
    /// The request method.
    #[serde(default)]
    #[schemars(with = "Interpolated<StreamMethod>")]
    pub method: StreamMethod,
    /// A request body (needs `method: POST`).
    #[schemars(with = "Option<Text>")]
    pub body: Option<String>,
    /// Request headers, e.g. `{x-apikey: "${API_KEY}"}`.
    #[serde(default)]
    #[schemars(with = "Option<TextMap>", example = &"{x-api-key: ${API_KEY}}")]
    pub headers: TextMap,
    /// Query parameters appended to the URL.
    #[serde(default)]
    #[schemars(with = "Option<TextMap>", example = &"{apiKey: ${API_KEY}}")]
    pub query: TextMap,
    /// TLS settings.
    pub tls: Option<Tls>,
    /// A stream silent this long is reconnected.
    #[serde(default = "default_idle_timeout", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub idle_timeout: Duration,
    /// Resume after a restart from the last event delivered (`Last-Event-ID`).
    #[serde(default = "yes")]
    #[schemars(with = "Flag")]
    pub resume: bool,
    /// A request ferry makes when the stream sends a given event (e.g. PocketBase's
    /// `PB_CONNECT`), to subscribe.
    pub handshake: Option<HandshakeSection>,
    /// The longest line ferry takes from the stream (1KiB to 1GiB); a longer one fails the
    /// stream, which is reopened from the last event ID.
    #[serde(default = "default_max_event_size", with = "values::size")]
    #[schemars(with = "Size")]
    pub max_line_size: u64,
    /// The most data one event may carry (1KiB to 1GiB); past it, as for a line.
    #[serde(default = "default_max_event_size", with = "values::size")]
    #[schemars(with = "Size")]
    pub max_event_size: u64,
    /// The most ferry reads of an error answer or a handshake's reply (1KiB to 1GiB).
    #[serde(default = "default_max_response_body", with = "values::size")]
    #[schemars(with = "Size")]
    pub max_response_body: u64,
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn yes() -> bool {
    true
}

fn default_max_event_size() -> u64 {
    DEFAULT_MAX_EVENT_SIZE
}

fn default_max_response_body() -> u64 {
    DEFAULT_MAX_RESPONSE_BODY
}

/// The method of an SSE stream's request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schemars(extend("errorMessage" = "`{value}` is not a valid method here"))]
pub enum StreamMethod {
    #[default]
    Get,
    Post,
}

/// A request made when the stream sends the event `on`.
#[derive(Deserialize, JsonSchema)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Handshake")]
pub struct HandshakeSection {
    /// The event that triggers the request.
    #[schemars(with = "Text")]
    pub on: String,
    /// The request method.
    #[serde(default)]
    #[schemars(with = "Interpolated<HandshakeMethod>")]
    pub method: HandshakeMethod,
    /// The URL (a template), absolute or relative to the stream's URL.
    #[schemars(
        with = "Text",
        extend("x-hint" = "add `url: /api/realtime` (relative to the stream's URL) or a full URL")
    )]
    pub url: String,
    /// Request headers (templates).
    #[serde(default)]
    #[schemars(with = "Option<TextMap>", example = &"{x-api-key: ${API_KEY}}")]
    pub headers: TextMap,
    /// The request body (a template), e.g. `{"clientId": "{{ payload.clientId }}"}`.
    #[schemars(with = "Option<Text>")]
    pub body: Option<String>,
}

/// The method of a handshake request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schemars(extend("errorMessage" = "`{value}` is not a valid method here"))]
pub enum HandshakeMethod {
    Get,
    #[default]
    Post,
    Put,
}

/// An SSE source.
#[derive(Deserialize, JsonSchema)]
pub struct SseSourceKeys {
    /// The event names to relay. Default: all.
    #[schemars(with = "Option<OneOrList<Text>>")]
    pub events: Option<OneOrList<String>>,
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
    pub const DEFAULT_MAX_LINE_SIZE: usize = DEFAULT_MAX_EVENT_SIZE as usize;
    pub const DEFAULT_MAX_EVENT_SIZE: usize = DEFAULT_MAX_EVENT_SIZE as usize;
    pub const DEFAULT_MAX_RESPONSE_BODY: usize = DEFAULT_MAX_RESPONSE_BODY as usize;
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
