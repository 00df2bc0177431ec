//! An `http:` connection: its keys as `bridges.yaml` writes them (the endpoint ferry sends
//! each message to), and the connection and sink the connector receives once they are
//! checked.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::values::{self, Interpolated, Text, TextMap, Whole};
use crate::config::{HttpMethod, Secret, SecretUrl, Target, Tls};

/// An HTTP endpoint ferry sends each message to.
#[derive(Deserialize, JsonSchema)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpConnection")]
pub struct HttpSection {
    /// The base http:// or https:// URL; a sink's `url` is relative to it.
    #[schemars(with = "Text")]
    pub url: String,
    /// Headers sent with every request, e.g. `{authorization: "Bearer ${TOKEN}"}`.
    #[serde(default)]
    #[schemars(with = "Option<TextMap>", example = &"{x-api-key: ${API_KEY}}")]
    pub headers: TextMap,
    /// TLS settings.
    pub tls: Option<Tls>,
    /// How long one request may take.
    #[serde(default = "default_timeout", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub timeout: Duration,
    /// Requests in flight at once on this connection.
    #[serde(default = "default_max_concurrent")]
    #[schemars(with = "Whole<1, 1024>")]
    pub max_concurrent: usize,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_concurrent() -> usize {
    8
}

/// An HTTP sink: one request per message.
#[derive(Deserialize, JsonSchema)]
pub struct HttpSinkKeys {
    /// The URL (a template), relative to the connection's.
    #[schemars(with = "Option<Text>")]
    pub url: Option<String>,
    /// The request method.
    #[serde(default)]
    #[schemars(with = "Interpolated<SinkMethod>")]
    pub method: SinkMethod,
}

/// The method of an HTTP sink's requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schemars(extend("errorMessage" = "`{value}` is not a valid method here"))]
pub enum SinkMethod {
    #[default]
    Post,
    Put,
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
