//! One sink of a route as the mapping stage sees it: how it names what it publishes, which
//! headers it can carry, and the message it publishes for one output (or a dead letter).

use std::sync::OnceLock;

use super::marker::Marker;
use super::payload::{self, Payload};
use super::template::{Scope, Template};
use super::{Failure, Stage, fail};
use crate::config::{self, PayloadFormat, Protocol, ResolvedSink, Target};
use crate::connectors::protocol::{Described, HeaderRule, NameRule};
use crate::message::{Headers, Message};

/// One sink as the mapping stage sees it.
#[derive(Debug)]
pub(super) struct SinkSide {
    pub(super) connection: String,
    protocol: Protocol,
    /// The rule the names it publishes follow; `None`: any name.
    name_rule: Option<NameRule>,
    /// What its name is called in a reason (`topic`, `URL`, ...).
    noun: &'static str,
    /// The rule its headers follow, where its protocol has one.
    header_rule: Option<HeaderRule>,
    /// Whether what it publishes carries headers: not on a connection that has nowhere to
    /// put them (MQTT 3.1.1), unless an envelope carries them in the payload.
    pub(super) headers: bool,
    /// Whether what it publishes gets ferry's loop marker. Only brokers can hand a message
    /// back to a route (those whose names the loop analysis reads); a webhook or a browser has
    /// no use for the marker (nor for the host name in it).
    pub(super) marked: bool,
    /// The marker of a message that arrived without one, the same for all of them: made at
    /// the first, kept if it passes the header rule (else each is stamped and checked, and
    /// fails as it would).
    first_hop_marker: OnceLock<Option<Headers>>,
    target: SinkTarget,
    format: PayloadFormat,
    wrap: bool,
    /// When this sink lies on a cycle of routes: every connection name of its broker, which a
    /// message must not have been on.
    pub(super) guard: Option<Vec<String>>,
}

/// How a sink names what it publishes.
#[derive(Debug)]
enum SinkTarget {
    /// The source name, converted for the sink's protocol by the codec.
    Auto,
    Template(Box<Template>),
}

impl SinkSide {
    /// The mapping's view of `sink`, resolved as `side`.
    pub(super) fn new(sink: &config::Sink, side: &ResolvedSink) -> Result<SinkSide, String> {
        // Asked once here rather than for every message.
        let descriptor = side.protocol.descriptor();
        let headers = side.carries_headers || sink.envelope;
        Ok(SinkSide {
            connection: sink.connection.clone(),
            protocol: side.protocol,
            name_rule: descriptor.name_rule(),
            noun: descriptor.noun(),
            header_rule: descriptor.header_rule(),
            headers,
            marked: headers && descriptor.wildcards().is_some(),
            first_hop_marker: OnceLock::new(),
            target: match sink.spec.target() {
                Target::Auto => SinkTarget::Auto,
                Target::Template(t) => SinkTarget::Template(Box::new(Template::compile(t)?)),
            },
            format: sink.format,
            wrap: sink.envelope,
            guard: side.guard.clone(),
        })
    }

    /// Whether its name template names the message's `id`.
    pub(super) fn renders_ids(&self) -> bool {
        matches!(&self.target, SinkTarget::Template(t) if t.uses_id())
    }

    /// The message this sink publishes for one output; the last `checked` headers passed the
    /// header rule before.
    pub(super) fn publish(
        &self,
        scope: &Scope,
        headers: Headers,
        checked: usize,
    ) -> Result<Message, Failure> {
        let subject = self.subject(scope)?;
        self.check_headers(&headers[..headers.len() - checked])?;
        let payload = if self.wrap {
            // A raw payload is embedded as the source reads it; a jq value as the sink writes it.
            let format = match scope.payload {
                Payload::Raw(_) => scope.format,
                Payload::Value(_) => self.format,
            };
            match self.wrap(scope, format, &headers) {
                Ok(p) => p,
                Err(reason) => return fail(Stage::Encode, reason),
            }
        } else {
            match scope.payload {
                // No transform, but the sink writes another format: read it, write it anew.
                Payload::Raw(bytes) if self.format != scope.format => {
                    match payload::read(bytes, scope.format) {
                        Ok(value) => Payload::Value(value).write(self.format),
                        Err(reason) => return fail(Stage::Decode, reason),
                    }
                }
                payload => payload.write(self.format),
            }
        };
        Ok(outgoing(scope.message, subject, payload, headers))
    }

    /// A dead letter: the payload exactly as it arrived (in an envelope as base64 when it is
    /// not in the source's format: the envelope must not fail for the very reason the message
    /// did). Headers NATS cannot carry are left out rather than losing the letter.
    pub(super) fn dead_letter(
        &self,
        scope: &Scope,
        mut headers: Headers,
    ) -> Result<Message, Failure> {
        let subject = self.subject(scope)?;
        if let Some(rule) = self.header_rule {
            headers.retain(|(k, v)| rule(k, v).is_ok());
        }
        let payload = match (self.wrap, scope.payload) {
            (false, payload) => payload.write(scope.format),
            (true, _) => self
                .wrap(scope, scope.format, &headers)
                .or_else(|_| self.wrap(scope, PayloadFormat::Bytes, &headers))
                .map_err(|reason| Failure {
                    stage: Stage::Encode,
                    reason,
                })?,
        };
        Ok(outgoing(scope.message, subject, payload, headers))
    }

    fn wrap(
        &self,
        scope: &Scope,
        format: PayloadFormat,
        headers: &Headers,
    ) -> Result<bytes::Bytes, String> {
        let name = match scope.protocol {
            Protocol::Mqtt => payload::Name::Topic(scope.message.subject.clone()),
            _ => payload::Name::Subject(scope.message.subject.clone()),
        };
        payload::wrap(
            &name,
            scope.payload,
            format,
            headers,
            scope.message.received,
        )
    }

    /// The marker of a message that arrived without one, when it did and that marker passes
    /// the header rule.
    pub(super) fn first_hop_marker(
        &self,
        marker: &Marker,
        instance: &str,
        origin: &str,
    ) -> Option<&Headers> {
        if !marker.is_absent() {
            return None;
        }
        let made = self.first_hop_marker.get_or_init(|| {
            let mut stamp = Headers::new();
            marker.stamp(&mut stamp, instance, origin, &self.connection);
            self.check_headers(&stamp).is_ok().then_some(stamp)
        });
        made.as_ref()
    }

    /// Headers this sink's protocol cannot carry fail the publish (MQTT 5 user properties take
    /// any UTF-8; NATS headers do not).
    pub(super) fn check_headers(&self, headers: &[(String, String)]) -> Result<(), Failure> {
        let Some(rule) = self.header_rule else {
            return Ok(());
        };
        for (k, v) in headers {
            if let Err((what, _)) = rule(k, v) {
                return fail(Stage::Headers, format!("{what} (for {})", self.connection));
            }
        }
        Ok(())
    }

    /// The subject or topic to publish to, checked against the sink protocol's rules.
    fn subject(&self, scope: &Scope) -> Result<String, Failure> {
        let name = match &self.target {
            SinkTarget::Auto => match self.protocol {
                Protocol::Mqtt => scope.topic().into_owned(),
                Protocol::Nats => scope.subject().into_owned(),
                Protocol::MigratoryData => scope.migratorydata_subject(),
                // The connection's own URL.
                Protocol::Http => String::new(),
                // Event types, lines, and any protocol of its own syntax: the name as it came.
                _ => scope.message.subject.clone(),
            },
            SinkTarget::Template(t) => match t.render(scope) {
                Ok(name) => name,
                Err(e) => {
                    return fail(
                        Stage::Template,
                        format!("{} for `{}`: {e}", self.noun, self.connection),
                    );
                }
            },
        };
        self.check_name(&name)?;
        Ok(name)
    }

    /// A name this sink's protocol cannot publish to fails the publish.
    pub(super) fn check_name(&self, name: &str) -> Result<(), Failure> {
        match self.name_rule.map_or(Ok(()), |rule| rule(name)) {
            Ok(()) => Ok(()),
            Err((what, _)) => fail(Stage::Template, format!("{what} (for {})", self.connection)),
        }
    }
}

/// What a sink publishes for `source`: a new name, payload and headers, the rest as it came.
/// Built field by field: cloning `source` would copy its name and headers only to drop them.
fn outgoing(source: &Message, subject: String, payload: bytes::Bytes, headers: Headers) -> Message {
    Message {
        subject,
        payload,
        headers,
        qos: source.qos,
        retain: source.retain,
        origin: source.origin.clone(),
        received: source.received,
        event: source.event.clone(),
        id: source.id.clone(),
    }
}
