//! An `sse:` connection as `bridges.yaml` writes it: a server-sent-event stream ferry reads.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Tls;
use crate::config::values::{self, Flag, Interpolated, OneOrList, Size, Text, TextMap};

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
