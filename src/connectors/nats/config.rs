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

/// A NATS source: a core NATS subscription, a JetStream durable consumer, or a KV bucket
/// watched through one.
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
    /// Watch a KV bucket through a durable consumer (at-least-once): each message is an
    /// entry, its subject the key; `subject` is then the keys to watch (`>` for all).
    pub kv: Option<KvSource>,
}

/// A NATS sink: core NATS, a JetStream stream, or a KV bucket.
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
    /// Put into a KV bucket and wait for its ack: `subject` is then the key.
    pub kv: Option<KvSink>,
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
    /// Watch a KV bucket (its stream, through a durable pull consumer); `subject` filters
    /// the keys. Boxed: most sources have none.
    pub kv: Option<Box<KvSource>>,
    /// The route is a request route: each message's reply goes to its reply inbox.
    pub replies: bool,
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
    /// Share the consumer among ferry instances through a priority group (nats-server 2.11
    /// or later): one pinned instance at a time, or standbys that pull only past a backlog.
    /// Without it, every instance bound to the consumer pulls its share.
    pub priority_group: Option<PriorityGroup>,
}

impl JetStreamSource {
    fn default_max_ack_pending() -> i64 {
        1000
    }

    fn default_ack_wait() -> Duration {
        Duration::from_secs(30)
    }
}

/// A priority group of a JetStream consumer: which of the instances that pull through it get
/// messages.
// The consumer's `priority_groups` (one group) and `priority_policy`; ferry pulls with the
// group's name.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityGroup {
    /// The group's name, the same in every instance (up to 16 letters, digits, `-`, `_`, `/`
    /// or `=`).
    #[schemars(with = "Text")]
    pub name: String,
    /// `pinned_client`: the server delivers to one instance at a time and the others wait on
    /// standby; `overflow`: an instance with `min_pending` pulls only while the consumer holds
    /// at least that many messages.
    #[schemars(with = "Interpolated<PriorityPolicy>")]
    pub policy: PriorityPolicy,
    /// With `pinned_client`: how long the server keeps the pin of an instance that stopped
    /// pulling but is still connected (it hangs) before a standby takes over; one that
    /// disconnects loses it at once.
    #[serde(
        default = "PriorityGroup::default_pinned_ttl",
        with = "values::duration"
    )]
    #[schemars(with = "values::Duration")]
    pub pinned_ttl: Duration,
    /// With `overflow`: this instance pulls only while the consumer holds at least this many
    /// messages not yet delivered (unset: it always pulls).
    #[schemars(with = "Option<Whole<1, 1000000000>>")]
    pub min_pending: Option<u64>,
}

impl PriorityGroup {
    /// The server's own default.
    fn default_pinned_ttl() -> Duration {
        Duration::from_secs(120)
    }
}

/// How a JetStream consumer's priority group shares its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(
    rename = "PriorityPolicy",
    extend("errorMessage" = "`{value}` is not a valid priority `policy`")
)]
pub enum PriorityPolicy {
    /// One instance at a time gets the messages, in order; a standby takes over once it
    /// disconnects, or stopped pulling for `pinned_ttl`.
    PinnedClient,
    /// Every instance may pull; one with `min_pending` only past that backlog.
    Overflow,
}

impl PriorityPolicy {
    /// As the server and `ferry check` write it.
    pub fn name(self) -> &'static str {
        match self {
            PriorityPolicy::PinnedClient => "pinned_client",
            PriorityPolicy::Overflow => "overflow",
        }
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
    /// Put into a KV bucket, the subject being the key. Boxed: most sinks have none.
    pub kv: Option<Box<KvSink>>,
}

/// A KV bucket a route watches.
// The bucket is the stream `KV_<bucket>`; ferry reads it as the JetStream source does, through
// a durable pull consumer filtered on `$KV.<bucket>.<subject>`.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvSource {
    /// The bucket's name (made with `nats kv add`).
    #[schemars(with = "Text")]
    pub bucket: String,
    /// The durable consumer's name (created if missing): a restart resumes after the last
    /// revision it acknowledged.
    #[schemars(with = "Text")]
    pub consumer: String,
    /// Where a new consumer starts.
    #[serde(default)]
    #[schemars(with = "Interpolated<KvDeliver>")]
    pub deliver: KvDeliver,
    /// Entries delivered but not yet acknowledged, at most.
    #[serde(default = "JetStreamSource::default_max_ack_pending")]
    #[schemars(with = "Whole<1, 1000000>")]
    pub max_ack_pending: i64,
    /// How long the server waits for an ack before it delivers an entry again.
    #[serde(
        default = "JetStreamSource::default_ack_wait",
        with = "values::duration"
    )]
    #[schemars(with = "values::Duration")]
    pub ack_wait: Duration,
}

/// Where a new KV consumer starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(extend("errorMessage" = "`{value}` is not a valid KV `deliver` policy"))]
pub enum KvDeliver {
    /// The current value of each key, then every change (as a KV watcher does).
    #[default]
    LastPerSubject,
    /// Every revision the bucket still holds, then every change.
    All,
    /// Only changes made from now on.
    New,
}

impl KvDeliver {
    /// As the server and `ferry check` write it.
    pub fn name(self) -> &'static str {
        match self {
            KvDeliver::LastPerSubject => "last_per_subject",
            KvDeliver::All => "all",
            KvDeliver::New => "new",
        }
    }
}

/// A KV bucket a route puts into.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvSink {
    /// The bucket's name (made with `nats kv add`).
    #[schemars(with = "Text")]
    pub bucket: String,
    /// An empty payload deletes the key (an empty MQTT retained message clears its topic)
    /// rather than putting an empty value.
    #[serde(default)]
    #[schemars(with = "Flag")]
    pub delete_on_empty: bool,
    /// Put only if the key is still at the revision the message's `KV-Revision` header names
    /// (a message without one is put as it is); a stale one is refused (dead letter).
    #[serde(default)]
    #[schemars(with = "Flag")]
    pub check_revision: bool,
}
