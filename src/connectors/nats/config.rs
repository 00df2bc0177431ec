//! A `nats:` connection: its keys as `bridges.yaml` writes them (a NATS server or cluster),
//! and the connection, source and sink the connector receives once they are checked.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::probe::ProbeSetting;
use crate::config::values::{self, Flag, Interpolated, OneOrList, Text, Whole};
use crate::config::{Probe, Secret, Target, Tls};

/// A NATS server or cluster. One way to authenticate: user/password, token, nkey or creds.
#[derive(Deserialize, JsonSchema)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NatsConnection")]
pub struct NatsSection {
    /// `nats://host:4222`, `tls://host:4222`, `ws://host:8080` or `wss://...`; a list fails
    /// over between servers.
    #[schemars(with = "OneOrList<Text>")]
    pub url: OneOrList<String>,
    /// The client name the server shows.
    #[schemars(with = "Option<Text>")]
    pub name: Option<String>,
    /// The user name (with `password`).
    #[schemars(with = "Option<Text>")]
    pub user: Option<String>,
    /// The password: write `${ENV}` or `${file:PATH}` rather than the secret itself.
    #[schemars(with = "Option<Text>")]
    pub password: Option<Secret>,
    /// An authentication token.
    #[schemars(with = "Option<Text>")]
    pub token: Option<Secret>,
    /// An nkey seed.
    #[schemars(with = "Option<Text>")]
    pub nkey: Option<Secret>,
    /// A credentials file (JWT and nkey seed).
    #[schemars(with = "Option<Text>")]
    pub creds: Option<PathBuf>,
    /// TLS settings.
    pub tls: Option<Tls>,
    /// How often the client pings the server to notice a dead connection.
    #[serde(default = "default_ping_interval", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub ping_interval: Duration,
    /// The liveness probe.
    #[serde(default)]
    pub probe: ProbeSetting,
}

fn default_ping_interval() -> Duration {
    Duration::from_secs(20)
}

/// A NATS source: a core NATS subscription, or a JetStream durable consumer.
#[derive(Deserialize, JsonSchema)]
pub struct NatsSourceKeys {
    /// The subject to subscribe to (`*` and `>` wildcards).
    #[schemars(with = "Text")]
    pub subject: String,
    /// A queue group: instances in the same group share the messages.
    #[schemars(with = "Option<Text>")]
    pub queue: Option<String>,
    /// Read through a JetStream durable consumer (at-least-once).
    pub jetstream: Option<JetStreamSource>,
}

/// A NATS sink.
#[derive(Deserialize, JsonSchema)]
pub struct NatsSinkKeys {
    /// The subject: a template such as `iot.{{ topic[1] }}.temperature`, or `auto` (the
    /// source's name, converted).
    #[serde(default = "values::auto")]
    #[schemars(with = "Text")]
    pub subject: String,
    /// Publish to JetStream and wait for the server's ack.
    #[serde(default)]
    #[schemars(with = "Flag")]
    pub jetstream: bool,
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
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
