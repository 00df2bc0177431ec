//! A `nats:` connection as `bridges.yaml` writes it: a NATS server or cluster.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::probe::ProbeSetting;
use crate::config::values::{self, Flag, OneOrList, Text};
use crate::config::{JetStreamSource, Secret, Tls};

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
