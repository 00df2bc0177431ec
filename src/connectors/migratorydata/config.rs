//! A `migratorydata:` connection: its keys as `bridges.yaml` writes them (a MigratoryData
//! server or cluster, through its REST API), and the connection, source and sink the
//! connector receives once they are checked.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::values::{self, Interpolated, OneOrList, Text, Whole};
use crate::config::{Retain, Secret, Target, Tls};

/// `max_response_size` when unset: a consume answer carries up to 1000 messages.
pub const DEFAULT_MAX_RESPONSE_SIZE: u64 = 16 * 1024 * 1024;

/// A MigratoryData server or cluster through its REST API (`Rest.Enable = true` on the
/// server).
#[derive(Deserialize, JsonSchema)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MigratoryDataConnection")]
pub struct MigratoryDataSection {
    /// The servers' http:// or https:// base URLs, tried in this order: on a connection
    /// failure ferry moves to the next, and back to the first once the one in use stayed up
    /// for `reconnect.stable_after`.
    #[schemars(with = "OneOrList<Text>")]
    pub servers: OneOrList<String>,
    /// The entitlement token, e.g. `${MIGRATORYDATA_TOKEN}`. Never logged.
    #[schemars(with = "Text")]
    pub token: Secret,
    /// TLS settings.
    pub tls: Option<Tls>,
    /// How long one request may take.
    #[serde(default = "default_timeout", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub timeout: Duration,
    /// How long a source waits after a poll that brought nothing.
    #[serde(default = "default_poll_interval", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub poll_interval: Duration,
    /// The most of one server answer ferry reads, at least 1KiB. A larger answer is not
    /// read further: a produce is retried, a poll fails and is retried with backoff.
    #[serde(default = "default_max_response_size", with = "values::size")]
    #[schemars(with = "values::Size")]
    pub max_response_size: u64,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_max_response_size() -> u64 {
    DEFAULT_MAX_RESPONSE_SIZE
}

/// A MigratoryData source: a subject, polled.
#[derive(Deserialize, JsonSchema)]
pub struct MigratoryDataSourceKeys {
    /// The subject to read, e.g. `/sensors/kitchen` (starts with `/`).
    #[schemars(with = "Text")]
    pub subject: String,
    /// How many past messages the first poll delivers when ferry has no cursor for the
    /// subject yet. Default: none (ferry starts from now).
    #[schemars(with = "Option<Whole<0, 1000000>>")]
    pub history: Option<u32>,
}

/// A MigratoryData sink: one produce per message.
#[derive(Deserialize, JsonSchema)]
pub struct MigratoryDataSinkKeys {
    /// The subject: a template such as `/sensors/{{ topic[1] }}`, or `auto` (`/` and the
    /// source's name as an MQTT topic).
    #[serde(default = "values::auto")]
    #[schemars(with = "Text")]
    pub subject: String,
    /// Publish retained: `true`, `false`, or `source` (as the message arrived).
    #[serde(default)]
    #[schemars(with = "Interpolated<Retain>")]
    pub retained: Retain,
    /// MigratoryData's quality of service.
    #[serde(default)]
    #[schemars(with = "Interpolated<MigratoryDataQos>")]
    pub qos: MigratoryDataQos,
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
