//! A route's source (`from`) and sinks (`to`, `dead_letter`) as the file writes them: the
//! keys every one takes, beside the keys of the protocol of the connection it names (those
//! live with the protocol, in `connectors/<proto>/config.rs`); and the checks that make them
//! the model's [`Source`] and [`Sink`].

use crate::connectors::protocol::{Described, End};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::connections::Reader;
use super::decode;
use super::diagnostics::Report;
use super::model::*;
use super::values::{Flag, Interpolated, Text};
use super::yaml::{Node, Pos};
use crate::connectors::http::config::{HttpSinkKeys, SinkMethod};
use crate::connectors::migratorydata::config::{MigratoryDataSinkKeys, MigratoryDataSourceKeys};
use crate::connectors::mqtt::config::{MqttSinkKeys, MqttSourceKeys};
use crate::connectors::nats::config::{NatsSinkKeys, NatsSourceKeys};
use crate::connectors::sse::config::SseSourceKeys;
use crate::connectors::sse_server::config::SseServerSinkKeys;

/// Keys every source takes.
#[derive(Deserialize, JsonSchema)]
pub struct SourceCommon {
    /// The connection to read from (a name under `connections`).
    #[schemars(with = "Text")]
    pub connection: String,
    /// A regular expression on the topic or subject; its named groups are `match.NAME` in
    /// templates, and messages that do not match are dropped.
    #[serde(rename = "match")]
    #[schemars(with = "Option<Text>")]
    pub pattern: Option<String>,
    /// How the payload is read.
    #[serde(default)]
    #[schemars(with = "Interpolated<PayloadFormat>")]
    pub payload_format: PayloadFormat,
    /// The payload is a ferry envelope (subject, headers and payload in JSON) to unwrap.
    #[serde(default)]
    #[schemars(with = "Flag")]
    pub envelope: bool,
}

/// Keys every sink takes.
#[derive(Deserialize, JsonSchema)]
pub struct SinkCommon {
    /// The connection to publish to (a name under `connections`).
    #[schemars(with = "Text")]
    pub connection: String,
    /// How the payload is written.
    #[serde(default)]
    #[schemars(with = "Interpolated<PayloadFormat>")]
    pub payload_format: PayloadFormat,
    /// Wrap the message in a ferry envelope (subject, headers and payload in JSON).
    #[serde(default)]
    #[schemars(with = "Flag")]
    pub envelope: bool,
}

// A source or sink: the keys every one takes (`C`) and its protocol's (`P`), described by
// the protocol's part. Only its schema is used: the two parts are read from the same mapping
// one after the other.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, rename = "{P}")]
#[allow(dead_code, reason = "only its schema is used")]
pub struct Endpoint<C, P> {
    // The protocol's part first: its doc comment is the description.
    #[serde(flatten)]
    protocol: P,
    #[serde(flatten)]
    common: C,
}

/// A route's source; its keys depend on the protocol of the connection it names.
#[derive(JsonSchema)]
#[schemars(untagged)]
#[schemars(rename = "Source")]
#[allow(dead_code, reason = "only its schema is used")]
pub enum SourceForm {
    Mqtt(Endpoint<SourceCommon, MqttSourceKeys>),
    Nats(Endpoint<SourceCommon, NatsSourceKeys>),
    Sse(Endpoint<SourceCommon, SseSourceKeys>),
    MigratoryData(Endpoint<SourceCommon, MigratoryDataSourceKeys>),
}

/// A sink; its keys depend on the protocol of the connection it names.
#[derive(JsonSchema)]
#[schemars(untagged)]
#[schemars(rename = "Sink")]
#[allow(dead_code, reason = "only its schema is used")]
pub enum SinkForm {
    Mqtt(Endpoint<SinkCommon, MqttSinkKeys>),
    Nats(Endpoint<SinkCommon, NatsSinkKeys>),
    Http(Endpoint<SinkCommon, HttpSinkKeys>),
    SseServer(Endpoint<SinkCommon, SseServerSinkKeys>),
    MigratoryData(Endpoint<SinkCommon, MigratoryDataSinkKeys>),
}

/// A source standard input reads (`ferry relay - ...`): never in a file.
#[derive(Deserialize, JsonSchema)]
pub struct StdioSourceKeys {}

/// A sink standard output writes (`ferry relay ... -`): never in a file.
#[derive(Deserialize, JsonSchema)]
pub struct StdioSinkKeys {
    #[serde(default = "super::values::auto")]
    #[schemars(with = "Text")]
    subject: String,
}

/// What a source or sink on `protocol` is called in messages.
fn what(protocol: Protocol, source: bool) -> &'static str {
    match (protocol, source) {
        (Protocol::Mqtt, true) => "an MQTT source",
        (Protocol::Nats, true) => "a NATS source",
        (Protocol::Sse, true) => "an SSE source",
        (Protocol::MigratoryData, true) => "a MigratoryData source",
        (Protocol::Mqtt, false) => "an MQTT sink",
        (Protocol::Nats, false) => "a NATS sink",
        (Protocol::Http, false) => "an HTTP sink",
        (Protocol::SseServer, false) => "an sse_server sink",
        (Protocol::MigratoryData, false) => "a MigratoryData sink",
        _ => "a source or sink",
    }
}

impl Reader<'_> {
    fn endpoint<C, P>(&mut self, node: &Node, what: &str) -> Option<(C, P)>
    where
        C: DeserializeOwned + JsonSchema,
        P: DeserializeOwned + JsonSchema,
    {
        let read = decode::parts::<Endpoint<C, P>, C, P>(node, what, self.lookup);
        self.keep(read)
    }

    /// The source at `node`, which names `connection` (`c`).
    pub fn source(&mut self, node: &Node, connection: String, c: &Connection) -> Option<Source> {
        let protocol = c.kind.protocol();
        if let Some((message, hint)) = protocol.descriptor().refusal(&connection, End::Source) {
            self.errors.report(node.pos, message, hint);
            return None;
        }
        let what = what(protocol, true);
        let at = |key: &str| node.get(key).map_or(node.pos, |n| n.pos);
        let (common, spec) = match &c.kind {
            ConnectionKind::Mqtt(mqtt) => {
                let (common, keys) = self.endpoint::<SourceCommon, MqttSourceKeys>(node, what)?;
                (common, self.mqtt_source(keys, node, &connection, mqtt)?)
            }
            ConnectionKind::Nats(_) => {
                let (common, keys) = self.endpoint::<SourceCommon, NatsSourceKeys>(node, what)?;
                self.errors.rule(
                    at("subject"),
                    crate::connectors::nats::names::subscription(&keys.subject),
                );
                if let Some(js) = &keys.jetstream {
                    let js_node = node.get("jetstream").unwrap_or(node);
                    for (key, name) in [("stream", &js.stream), ("consumer", &js.consumer)] {
                        // JetStream names become subject tokens: no dots, wildcards or spaces.
                        if name.is_empty() || name.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
                            self.errors.report(
                                js_node.get(key).map_or(js_node.pos, |n| n.pos),
                                format!("`{name}` is not a valid JetStream {key} name"),
                                "use letters, digits, `-` and `_`",
                            );
                        }
                    }
                    if keys.queue.is_some() {
                        self.errors.report(
                            node.pos,
                            "a JetStream source takes no `queue`",
                            "instances that bind the same durable `consumer` share its messages",
                        );
                    }
                }
                let spec = SourceSpec::Nats(NatsSource {
                    subject: keys.subject,
                    queue_group: keys.queue,
                    jetstream: keys.jetstream,
                });
                (common, spec)
            }
            ConnectionKind::Sse(_) => {
                let (common, keys) = self.endpoint::<SourceCommon, SseSourceKeys>(node, what)?;
                let events = keys.events.map(|e| e.0).unwrap_or_default();
                let positions = super::connections::item_positions(node.get("events"));
                let events = (events.into_iter().enumerate())
                    .filter(|(i, e)| {
                        let pos = positions.get(*i).copied().unwrap_or(node.pos);
                        self.errors
                            .rule(pos, crate::connectors::sse::protocol::event_type(e))
                    })
                    .map(|(_, e)| e)
                    .collect();
                (common, SourceSpec::Sse(SseSource { events }))
            }
            ConnectionKind::MigratoryData(_) => {
                let (common, keys) =
                    self.endpoint::<SourceCommon, MigratoryDataSourceKeys>(node, what)?;
                self.errors.rule(
                    at("subject"),
                    crate::connectors::migratorydata::protocol::subject(&keys.subject),
                );
                let spec = SourceSpec::MigratoryData(MigratoryDataSource {
                    subject: keys.subject,
                    history: keys.history,
                });
                (common, spec)
            }
            // Only `ferry relay` builds standard input (Front::Relay).
            ConnectionKind::Stdio(_) => {
                let (common, StdioSourceKeys {}) =
                    self.endpoint::<SourceCommon, StdioSourceKeys>(node, what)?;
                (common, SourceSpec::Stdio)
            }
            // Refused above: ferry only writes to them.
            ConnectionKind::Http(_) | ConnectionKind::SseServer(_) => return None,
        };
        let pattern = common.pattern.filter(|text| match regex::Regex::new(text) {
            Ok(_) => true,
            Err(e) => {
                self.errors.report(
                    at("match"),
                    format!(
                        "`match` is not a valid regular expression: {}",
                        one_line(&e.to_string())
                    ),
                    "name the parts you need, e.g. `^sensors/(?P<room>[^/]+)/temp$`",
                );
                false
            }
        });
        Some(Source {
            connection: common.connection,
            spec,
            pattern,
            format: common.payload_format,
            envelope: common.envelope,
        })
    }

    fn mqtt_source(
        &mut self,
        keys: MqttSourceKeys,
        node: &Node,
        connection: &str,
        mqtt: &MqttConnection,
    ) -> Option<SourceSpec> {
        let mut topics = Vec::new();
        let mut filter = |reader: &mut Self, topic: String, pos: Pos| {
            if reader
                .errors
                .rule(pos, crate::connectors::mqtt::names::filter(&topic))
            {
                topics.push(topic);
            }
        };
        match (keys.topic, keys.topics) {
            (Some(topic), None) => {
                filter(self, topic, node.get("topic").map_or(node.pos, |n| n.pos))
            }
            (None, Some(list)) => {
                let positions = super::connections::item_positions(node.get("topics"));
                for (i, topic) in list.0.into_iter().enumerate() {
                    filter(self, topic, positions.get(i).copied().unwrap_or(node.pos));
                }
            }
            (Some(_), Some(_)) => self.errors.report(
                node.pos,
                "an MQTT source takes `topic` or `topics`, not both",
                "put every filter in `topics: [...]`",
            ),
            (None, None) => self.errors.report(
                node.pos,
                "an MQTT source needs `topic`",
                "add e.g. `topic: \"sensors/#\"`",
            ),
        }
        if let Some(group) = &keys.share
            && (group.is_empty() || group.contains(['/', '+', '#']))
        {
            self.errors.report(
                node.get("share").map_or(node.pos, |n| n.pos),
                format!("`{group}` is not a valid shared-subscription group"),
                "a group name is one level: no `/`, `+` or `#`",
            );
        }
        if keys.no_local && mqtt.version != MqttVersion::V5 {
            self.errors.report(
                node.pos,
                "`no_local` needs MQTT 5",
                format!("set `version: 5` on connection `{connection}`"),
            );
        }
        Some(SourceSpec::Mqtt(MqttSource {
            topics,
            qos: keys.qos,
            share: keys.share,
            no_local: keys.no_local,
        }))
    }

    /// The sink at `node`, which names `connection` (`c`); its templates may use `captures`.
    pub fn sink(
        &mut self,
        node: &Node,
        connection: String,
        c: &Connection,
        captures: &[String],
    ) -> Option<Sink> {
        if let Some((message, hint)) = c
            .kind
            .protocol()
            .descriptor()
            .refusal(&connection, End::Sink)
        {
            self.errors.report(node.pos, message, hint);
            return None;
        }
        let what = what(c.kind.protocol(), false);
        let (common, spec) = match &c.kind {
            ConnectionKind::Mqtt(_) => {
                let (common, keys) = self.endpoint::<SinkCommon, MqttSinkKeys>(node, what)?;
                let topic = self.target(
                    node,
                    "topic",
                    keys.topic,
                    crate::connectors::mqtt::names::topic,
                    captures,
                );
                let spec = SinkSpec::Mqtt(MqttSink {
                    topic,
                    qos: keys.qos,
                    retain: keys.retain,
                });
                (common, spec)
            }
            ConnectionKind::Nats(_) => {
                let (common, keys) = self.endpoint::<SinkCommon, NatsSinkKeys>(node, what)?;
                let subject = self.target(
                    node,
                    "subject",
                    keys.subject,
                    crate::connectors::nats::names::subject,
                    captures,
                );
                let spec = SinkSpec::Nats(NatsSink {
                    subject,
                    jetstream: keys.jetstream,
                });
                (common, spec)
            }
            ConnectionKind::Http(_) => {
                let (common, keys) = self.endpoint::<SinkCommon, HttpSinkKeys>(node, what)?;
                let url = match keys.url {
                    Some(url) => self.target(node, "url", url, |_| Ok(()), captures),
                    None => Target::Auto,
                };
                let method = match keys.method {
                    SinkMethod::Post => HttpMethod::Post,
                    SinkMethod::Put => HttpMethod::Put,
                };
                (common, SinkSpec::Http(HttpSink { url, method }))
            }
            ConnectionKind::SseServer(_) => {
                let (common, keys) = self.endpoint::<SinkCommon, SseServerSinkKeys>(node, what)?;
                let event = self.target(
                    node,
                    "event",
                    keys.event,
                    crate::connectors::sse::protocol::event_type,
                    captures,
                );
                (common, SinkSpec::SseServer(SseServerSink { event }))
            }
            ConnectionKind::MigratoryData(_) => {
                let (common, keys) =
                    self.endpoint::<SinkCommon, MigratoryDataSinkKeys>(node, what)?;
                let subject = self.target(
                    node,
                    "subject",
                    keys.subject,
                    crate::connectors::migratorydata::protocol::subject,
                    captures,
                );
                let spec = SinkSpec::MigratoryData(MigratoryDataSink {
                    subject,
                    retained: keys.retained,
                    qos: keys.qos,
                });
                (common, spec)
            }
            // Only `ferry relay` builds standard output (Front::Relay).
            ConnectionKind::Stdio(_) => {
                let (common, keys) = self.endpoint::<SinkCommon, StdioSinkKeys>(node, what)?;
                let subject = self.target(node, "subject", keys.subject, |_| Ok(()), captures);
                (common, SinkSpec::Stdio(StdioSink { subject }))
            }
            // Refused above: ferry only reads it.
            ConnectionKind::Sse(_) => return None,
        };
        Some(Sink {
            connection: common.connection,
            spec,
            format: common.payload_format,
            envelope: common.envelope,
        })
    }

    /// A sink's `topic`/`subject`: `auto`, or a template. A template without `{{` is a plain
    /// name and is checked against the protocol's rules right away.
    fn target(
        &mut self,
        node: &Node,
        key: &str,
        text: String,
        rule: fn(&str) -> Result<(), crate::connectors::protocol::Problem>,
        captures: &[String],
    ) -> Target {
        if text == "auto" {
            return Target::Auto;
        }
        let pos = node.get(key).map_or(node.pos, |n| n.pos);
        if self.template(pos, key, &text, captures) && !text.contains("{{") && !text.contains("{%")
        {
            self.errors.rule(pos, rule(&text));
        }
        Target::Template(text)
    }
}

/// The first line of a multi-line message (regex errors draw the pattern over several lines).
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(": ")
}
