//! A route's source (`from`) and sinks (`to`, `dead_letter`) as the file writes them: the
//! keys every one takes, beside the keys of the protocol of the connection it names; and the
//! checks that make them the model's [`Source`] and [`Sink`]. Each protocol's keys, and the
//! checks they need, live with the protocol (`connectors/<proto>/config.rs` and `read.rs`):
//! here, one arm per protocol hands its part to them.

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::decode;
use super::diagnostics::Report;
use super::model::*;
use super::reader::Reader;
use super::values::{Flag, Interpolated, Text};
use super::yaml::Node;
use crate::connectors::http::config::HttpSinkKeys;
use crate::connectors::http_server::config::HttpServerSourceKeys;
use crate::connectors::migratorydata::config::{MigratoryDataSinkKeys, MigratoryDataSourceKeys};
use crate::connectors::mqtt::config::{MqttSinkKeys, MqttSourceKeys};
use crate::connectors::nats::config::{NatsSinkKeys, NatsSourceKeys};
use crate::connectors::protocol::{Described, End, NameRule};
use crate::connectors::sse::config::SseSourceKeys;
use crate::connectors::sse_server::config::SseServerSinkKeys;
use crate::connectors::stdio::config::{StdioSinkKeys, StdioSourceKeys};

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
    HttpServer(Endpoint<SourceCommon, HttpServerSourceKeys>),
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

/// What `end` of a route on `protocol` is called in messages: `an MQTT source`.
fn what(protocol: Protocol, end: End) -> String {
    match protocol.descriptor().with_article() {
        Some(name) => match end {
            End::Source => format!("{name} source"),
            End::Sink => format!("{name} sink"),
        },
        None => "a source or sink".to_string(),
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

    /// The keys every source takes and the protocol's (`P`), read from `node` (called
    /// `what`); `read` checks the protocol's and makes its part of the model.
    fn source_keys<P: DeserializeOwned + JsonSchema>(
        &mut self,
        node: &Node,
        what: &str,
        read: impl FnOnce(&mut Self, P) -> SourceSpec,
    ) -> Option<(SourceCommon, SourceSpec)> {
        let (common, keys) = self.endpoint::<SourceCommon, P>(node, what)?;
        Some((common, read(self, keys)))
    }

    /// The keys every sink takes and the protocol's (`P`), as for a source.
    fn sink_keys<P: DeserializeOwned + JsonSchema>(
        &mut self,
        node: &Node,
        what: &str,
        read: impl FnOnce(&mut Self, P) -> SinkSpec,
    ) -> Option<(SinkCommon, SinkSpec)> {
        let (common, keys) = self.endpoint::<SinkCommon, P>(node, what)?;
        Some((common, read(self, keys)))
    }

    /// The source at `node`, which names `connection` (`c`).
    pub fn source(&mut self, node: &Node, connection: String, c: &Connection) -> Option<Source> {
        let protocol = c.kind.protocol();
        if let Some((message, hint)) = protocol.descriptor().refusal(&connection, End::Source) {
            self.errors.report(node.pos, message, hint);
            return None;
        }
        let what = &what(protocol, End::Source);
        let at = |key: &str| node.get(key).map_or(node.pos, |n| n.pos);
        let (common, spec) = match &c.kind {
            ConnectionKind::Mqtt(mqtt) => {
                self.source_keys(node, what, |r, keys: MqttSourceKeys| {
                    SourceSpec::Mqtt(r.mqtt_source(keys, node, &connection, mqtt))
                })
            }
            ConnectionKind::Nats(_) => self.source_keys(node, what, |r, keys: NatsSourceKeys| {
                SourceSpec::Nats(r.nats_source(keys, node))
            }),
            ConnectionKind::Sse(_) => self.source_keys(node, what, |r, keys: SseSourceKeys| {
                SourceSpec::Sse(r.sse_source(keys, node))
            }),
            ConnectionKind::MigratoryData(_) => {
                self.source_keys(node, what, |r, keys: MigratoryDataSourceKeys| {
                    SourceSpec::MigratoryData(r.migratorydata_source(keys, node))
                })
            }
            ConnectionKind::HttpServer(_) => {
                self.source_keys(node, what, |r, keys: HttpServerSourceKeys| {
                    SourceSpec::HttpServer(r.http_server_source(keys))
                })
            }
            // Only `ferry relay` builds standard input (Front::Relay).
            ConnectionKind::Stdio(_) => {
                self.source_keys(node, what, |_, StdioSourceKeys {}| SourceSpec::Stdio)
            }
            // Refused above: ferry only writes to them.
            ConnectionKind::Http(_) | ConnectionKind::SseServer(_) => None,
        }?;
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
        let what = &what(c.kind.protocol(), End::Sink);
        let (common, spec) = match &c.kind {
            ConnectionKind::Mqtt(_) => self.sink_keys(node, what, |r, keys: MqttSinkKeys| {
                SinkSpec::Mqtt(r.mqtt_sink(keys, node, captures))
            }),
            ConnectionKind::Nats(_) => self.sink_keys(node, what, |r, keys: NatsSinkKeys| {
                SinkSpec::Nats(r.nats_sink(keys, node, captures))
            }),
            ConnectionKind::Http(_) => self.sink_keys(node, what, |r, keys: HttpSinkKeys| {
                SinkSpec::Http(r.http_sink(keys, node, captures))
            }),
            ConnectionKind::SseServer(_) => {
                self.sink_keys(node, what, |r, keys: SseServerSinkKeys| {
                    SinkSpec::SseServer(r.sse_server_sink(keys, node, captures))
                })
            }
            ConnectionKind::MigratoryData(_) => {
                self.sink_keys(node, what, |r, keys: MigratoryDataSinkKeys| {
                    SinkSpec::MigratoryData(r.migratorydata_sink(keys, node, captures))
                })
            }
            // Only `ferry relay` builds standard output (Front::Relay).
            ConnectionKind::Stdio(_) => self.sink_keys(node, what, |r, keys: StdioSinkKeys| {
                SinkSpec::Stdio(r.stdio_sink(keys, node, captures))
            }),
            // Refused above: ferry only reads them.
            ConnectionKind::Sse(_) | ConnectionKind::HttpServer(_) => None,
        }?;
        Some(Sink {
            connection: common.connection,
            spec,
            format: common.payload_format,
            envelope: common.envelope,
        })
    }

    /// A sink's `topic`/`subject` (its `key`): `auto`, or a template that may use `captures`.
    /// A template without `{{` is a plain name and is checked against the protocol's `rule`
    /// right away.
    pub fn target(
        &mut self,
        node: &Node,
        key: &str,
        text: String,
        rule: NameRule,
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
