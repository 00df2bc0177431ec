//! An `http_server:` connection as `bridges.yaml` writes it and the connector receives it: a
//! path on the admin listener where webhooks and scripts POST messages into a route; and its
//! source.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::Secret;
use crate::config::values::{self, Text};

/// Messages POSTed to ferry: a path on the admin listener (and every path under it) that feeds
/// the routes reading the connection.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConnection {
    /// The path on the admin listener, e.g. `/hooks`. `POST /hooks/github/push` is a message
    /// named `github/push`; `POST /hooks`, one named by the route's sink alone.
    #[schemars(with = "Text")]
    pub path: String,
    /// The token a client must send as `Authorization: Bearer TOKEN`. Default: anyone who
    /// reaches the admin listener may post.
    #[schemars(with = "Option<Text>")]
    pub token: Option<Secret>,
    /// The largest body taken; a larger one is answered 413.
    #[serde(default = "default_max_body", with = "values::size")]
    #[schemars(with = "values::Size")]
    pub max_body: usize,
    /// How long a POST to an at-least-once route waits for its sinks to confirm before it is
    /// answered 504 (the message may still be delivered: a client that sends it again may
    /// make a duplicate).
    #[serde(default = "default_confirm_timeout", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub confirm_timeout: Duration,
    /// Request headers carried into the message as its headers (`Content-Type` always is).
    #[serde(default)]
    #[schemars(with = "Vec<Text>")]
    pub keep_headers: Vec<String>,
}

impl HttpServerConnection {
    pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
}

fn default_max_body() -> usize {
    HttpServerConnection::DEFAULT_MAX_BODY
}

fn default_confirm_timeout() -> Duration {
    Duration::from_secs(10)
}

/// An http_server source: what is POSTed to its connection's path.
#[derive(Deserialize, JsonSchema)]
pub struct HttpServerSourceKeys {}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpServerSource {
    /// The route promises at-least-once: a POST is answered once every sink confirmed (202),
    /// not as soon as the route took it (200).
    pub confirm: bool,
    /// The route is a request route: a POST is answered with its reply.
    pub replies: bool,
}
