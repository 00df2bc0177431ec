//! The mapping stage: pure functions over a [`Message`]. A route's [`Mapping`] turns one message
//! from its source into what each sink publishes — or into a reason it cannot, for the route's
//! dead-letter sink.
//!
//! In order: unwrap an envelope (`envelope: true` on the source) → `match:` the source name →
//! `filter` → `transform` (each value it yields is one message, none filters it out) → per sink:
//! the loop guard, the subject or topic, headers, the payload written per the sink's format, an
//! envelope (`envelope: true` on the sink).

pub mod answer;
pub mod codec;
pub mod excerpt;
mod headers;
pub mod jq;
pub mod jq_wire;
pub mod marker;
pub mod payload;
mod sink;
pub mod template;
pub mod trace;

use std::borrow::Cow;
use std::fmt;
use std::time::UNIX_EPOCH;

use jaq_json::Val;
use regex::Regex;

use crate::config::{self, PayloadFormat, Protocol, ResolvedRoute, SinkSpec};
use crate::message::{Headers, Message};
use headers::HeaderMapping;
use marker::Marker;
use payload::Payload;
use sink::SinkSide;
use template::Scope;

/// Where in a route a message failed; it names the stage in dead letters (`Ferry-Stage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Unwrapping the envelope or reading the payload (`payload_format`).
    Decode,
    Filter,
    Transform,
    /// Naming the subject or topic, or rendering a header.
    Template,
    /// A header the sink's protocol cannot carry.
    Headers,
    /// Writing the payload for the sink (an envelope around a payload not in its format).
    Encode,
    /// A sink refused the message for good.
    Sink,
    /// The message panicked the route's worker, twice.
    Worker,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Decode => "decode",
            Stage::Filter => "filter",
            Stage::Transform => "transform",
            Stage::Template => "template",
            Stage::Headers => "headers",
            Stage::Encode => "encode",
            Stage::Sink => "sink",
            Stage::Worker => "worker",
        })
    }
}

/// Why a message could not be mapped or delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub stage: Stage,
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, self.reason)
    }
}

fn fail<T>(stage: Stage, reason: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        stage,
        reason: reason.into(),
    })
}

/// What became of one message.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to publish: `match:` or the filter left it out, or the transform yielded nothing.
    Filtered,
    /// It has crossed `loop_guard.max_hops` ferry hops: a loop between ferry instances.
    TooManyHops(u32),
    /// It failed before reaching any sink.
    Failed(Failure),
    /// In order, what to publish where (or why one output cannot be), how many publishes
    /// the loop guard left out, and whether the message's `traceparent` was malformed (and
    /// replaced by a new trace).
    Mapped {
        steps: Steps,
        echoes: u32,
        malformed_trace: bool,
    },
}

/// What a message became, sink by sink: nearly always one step, kept inline.
pub type Steps = smallvec::SmallVec<[Step; 1]>;

/// The payloads a message's programs made: nearly always one, kept inline.
type Outputs = smallvec::SmallVec<[Payload; 1]>;

#[derive(Debug)]
pub enum Step {
    /// Publish `message` on sink number `sink` of the route.
    Publish {
        sink: usize,
        message: Message,
    },
    Fail(Failure),
}

/// A message on its way through [`Mapping::prepare`] and [`Mapping::finish`]: what its jq
/// programs read.
pub struct Pending<'m> {
    /// After unwrapping an envelope.
    message: Cow<'m, Message>,
    captures: Vec<(String, String)>,
    marker: Marker,
    /// The values of [`jq::VARIABLES`], when a program uses them.
    pub vars: Option<[Val; 5]>,
}

impl Pending<'_> {
    /// The payload the programs read (per the source's `payload_format`).
    pub fn payload(&self) -> &bytes::Bytes {
        &self.message.payload
    }
}

/// A route's mapping stage, compiled.
#[derive(Debug)]
pub struct Mapping {
    route: String,
    source: SourceSide,
    filter: Option<jq::Program>,
    transform: Option<jq::Program>,
    /// Whether either program names a variable, so they are built only when used.
    programs_use_variables: bool,
    headers: HeaderMapping,
    sinks: Vec<SinkSide>,
    dead_letter: Option<SinkSide>,
    instance: String,
    max_hops: u32,
    /// Whether anything reads a message's id (see [`Mapping::uses_message_ids`]).
    message_ids: bool,
}

#[derive(Debug)]
struct SourceSide {
    connection: String,
    protocol: Protocol,
    pattern: Option<Regex>,
    format: PayloadFormat,
    unwrap: bool,
}

impl Mapping {
    /// Compiles a route (already validated), resolved against its configuration; `instance`
    /// is the name ferry marks its messages with.
    pub fn new(resolved: &ResolvedRoute, instance: &str) -> Result<Mapping, String> {
        let route = resolved.route;
        let program = |code: &Option<String>| code.as_deref().map(jq::Program::compile).transpose();
        let source = SourceSide {
            connection: route.from.connection.clone(),
            protocol: resolved.source_names,
            pattern: route
                .from
                .pattern
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| e.to_string())?,
            format: route.from.format,
            unwrap: route.from.envelope,
        };
        let filter = program(&route.filter)?;
        let transform = program(&route.transform)?;
        let uses_variables =
            |code: &Option<String>| code.as_deref().is_some_and(|c| c.contains('$'));
        let programs_use_variables =
            uses_variables(&route.filter) || uses_variables(&route.transform);
        let headers = HeaderMapping::new(&route.headers)?;
        let mut sinks = (route.to.iter().zip(&resolved.sinks))
            .map(|(sink, side)| SinkSide::new(sink, side))
            .collect::<Result<Vec<_>, _>>()?;
        // A collected vector keeps room for four, and routes come by thousands.
        sinks.shrink_to_fit();
        let dead_letter = match (&route.dead_letter, &resolved.dead_letter) {
            (Some(sink), Some(side)) => Some(SinkSide::new(sink, side)?),
            _ => None,
        };
        // Who reads an id: JetStream and KV buckets (the stream's `Nats-Msg-Id`) and
        // MigratoryData (a produce's closure), as sinks or the dead-letter sink; a spool, which keeps it for whichever
        // sink forwards the message later; a template that names `id`; a program that reads
        // `$meta` (any variable, to be safe).
        let reads_ids = |sink: &config::Sink| match &sink.spec {
            SinkSpec::Nats(nats) => nats.jetstream || nats.kv.is_some(),
            SinkSpec::MigratoryData(_) => true,
            _ => false,
        };
        let message_ids = route.to.iter().chain(&route.dead_letter).any(reads_ids)
            || route.spool.is_some()
            || programs_use_variables
            || headers.set.iter().any(|(_, t)| t.uses_id())
            || sinks.iter().chain(&dead_letter).any(SinkSide::renders_ids);
        Ok(Mapping {
            route: route.name.clone(),
            source,
            filter,
            transform,
            programs_use_variables,
            headers,
            sinks,
            dead_letter,
            instance: instance.to_string(),
            max_hops: resolved.max_hops,
            message_ids,
        })
    }

    /// Whether anything on this route reads a message's id: a sink that derives a key from
    /// it, a spool, a template or a program. A route where nothing does gives its messages
    /// none (formatting one for every message would be wasted).
    pub fn uses_message_ids(&self) -> bool {
        self.message_ids
    }

    /// The connection each sink publishes on, by sink number.
    pub fn sink_connection(&self, sink: usize) -> &str {
        &self.sinks[sink].connection
    }

    /// Maps one message from the route's source.
    pub fn apply(&self, message: &Message) -> Outcome {
        let marker = Marker::read(&message.headers, &self.instance);
        if marker.hops >= self.max_hops {
            return Outcome::TooManyHops(marker.hops);
        }
        match self.map(message, &marker) {
            Ok(Some(outcome)) => outcome,
            Ok(None) => Outcome::Filtered,
            Err(failure) => Outcome::Failed(failure),
        }
    }

    fn map(&self, original: &Message, marker: &Marker) -> Result<Option<Outcome>, Failure> {
        let message = self.unwrap(original)?;
        let captures = match &self.source.pattern {
            None => Vec::new(),
            Some(re) => match re.captures(&message.subject) {
                None => return Ok(None),
                Some(c) => re
                    .capture_names()
                    .flatten()
                    .filter_map(|name| Some((name.to_string(), c.name(name)?.as_str().to_string())))
                    .collect(),
            },
        };
        let outputs = self.run_programs(&message, &captures)?;
        self.publish_steps(&message, &captures, marker, outputs)
    }

    /// Whether the route has a filter or a transform: a route without pays nothing for
    /// running them elsewhere ([`Mapping::prepare`]).
    pub fn has_programs(&self) -> bool {
        self.filter.is_some() || self.transform.is_some()
    }

    /// The mapping up to its jq programs, for a route that runs them elsewhere (a worker
    /// process under a time and memory budget): either the outcome already (filtered, failed,
    /// looped) or what the programs need, to be ended with [`Mapping::finish`].
    // The outcome is as large as `apply`'s (its one step is kept inline) and handed back the
    // same way; boxing it would allocate for every message a filter drops.
    #[allow(clippy::result_large_err)]
    pub fn prepare<'m>(&self, original: &'m Message) -> Result<Pending<'m>, Outcome> {
        let marker = Marker::read(&original.headers, &self.instance);
        if marker.hops >= self.max_hops {
            return Err(Outcome::TooManyHops(marker.hops));
        }
        let message = self.unwrap(original).map_err(Outcome::Failed)?;
        let captures = self.captures(&message.subject).ok_or(Outcome::Filtered)?;
        let vars = self
            .programs_use_variables
            .then(|| self.variables(&message, &captures));
        Ok(Pending {
            message,
            captures,
            marker,
            vars,
        })
    }

    /// The rest of the mapping, given what the programs made of `pending`'s payload.
    pub fn finish(&self, pending: Pending, programs: Result<Vec<Val>, Failure>) -> Outcome {
        let outputs = match programs {
            Ok(values) => values.into_iter().map(Payload::Value).collect(),
            Err(failure) => return Outcome::Failed(failure),
        };
        let Pending {
            message,
            captures,
            marker,
            ..
        } = pending;
        match self.publish_steps(&message, &captures, &marker, outputs) {
            Ok(Some(outcome)) => outcome,
            Ok(None) => Outcome::Filtered,
            Err(failure) => Outcome::Failed(failure),
        }
    }

    /// What each sink publishes for each output of the programs (`None`: there is none).
    fn publish_steps(
        &self,
        message: &Message,
        captures: &[(String, String)],
        marker: &Marker,
        outputs: Outputs,
    ) -> Result<Option<Outcome>, Failure> {
        if outputs.is_empty() {
            return Ok(None);
        }
        let mut steps = Steps::with_capacity(outputs.len() * self.sinks.len());
        let mut echoes = 0;
        let hop = self.headers.trace_hop(&message.headers);
        let malformed_trace = matches!(
            hop,
            trace::Hop::Started {
                malformed: true,
                ..
            }
        );
        for output in &outputs {
            let scope = Scope {
                route: &self.route,
                message,
                protocol: self.source.protocol,
                captures,
                payload: output,
                format: self.source.format,
            };
            let headers = match self.headers.headers(&scope, &hop) {
                Ok(h) => h,
                Err(failure) => {
                    steps.push(Step::Fail(failure));
                    continue;
                }
            };
            for (k, sink) in self.sinks.iter().enumerate() {
                if let Some(broker) = &sink.guard
                    && marker.has_been_on(broker)
                {
                    echoes += 1;
                    continue;
                }
                let mut headers = match sink.headers {
                    true => headers.clone(),
                    false => Headers::new(),
                };
                // How many of the last headers passed the sink's header rule already.
                let mut checked = 0;
                if sink.marked {
                    match sink.first_hop_marker(marker, &self.instance, &self.source.connection) {
                        Some(stamp) => {
                            headers.reserve_exact(stamp.len());
                            headers.extend_from_slice(stamp);
                            checked = stamp.len();
                        }
                        None => marker.stamp(
                            &mut headers,
                            &self.instance,
                            &self.source.connection,
                            &sink.connection,
                        ),
                    }
                }
                steps.push(match sink.publish(&scope, headers, checked) {
                    Ok(message) => Step::Publish { sink: k, message },
                    Err(failure) => Step::Fail(failure),
                });
            }
        }
        Ok(Some(Outcome::Mapped {
            steps,
            echoes,
            malformed_trace,
        }))
    }

    /// The message with its envelope taken off (`envelope: true` on the source).
    fn unwrap<'m>(&self, message: &'m Message) -> Result<Cow<'m, Message>, Failure> {
        if !self.source.unwrap {
            return Ok(Cow::Borrowed(message));
        }
        let inner = match payload::unwrap(&message.payload, self.source.format) {
            Ok(inner) => inner,
            Err(reason) => return fail(Stage::Decode, reason),
        };
        let mut m = message.clone();
        m.payload = inner.payload;
        if let Some(name) = inner.name {
            m.subject = self.source_name(name);
        }
        if let Some(headers) = inner.headers {
            // Keep the marker the message arrived with: it tells where *this* copy has been.
            m.headers.retain(|(k, _)| marker::is_ferry_header(k));
            m.headers.extend(
                headers
                    .into_iter()
                    .filter(|(k, _)| !marker::is_ferry_header(k)),
            );
        }
        if let Some(time) = inner.time {
            m.received = time;
        }
        Ok(Cow::Owned(m))
    }

    /// An envelope's name as a name of the source's protocol, converted if it came from the
    /// other one.
    fn source_name(&self, name: payload::Name) -> String {
        use payload::Name;
        match (name, self.source.protocol) {
            (Name::Subject(s), Protocol::Mqtt) => codec::subject_to_topic(&s),
            (Name::Topic(t), Protocol::Nats) => codec::topic_to_subject(&t),
            (Name::Topic(n) | Name::Subject(n), _) => n,
        }
    }

    /// The named captures of the source's `match:` regex; `None` when the name does not match.
    fn captures(&self, name: &str) -> Option<Vec<(String, String)>> {
        let Some(re) = &self.source.pattern else {
            return Some(Vec::new());
        };
        let c = re.captures(name)?;
        Some(
            re.capture_names()
                .flatten()
                .filter_map(|n| Some((n.to_string(), c.name(n)?.as_str().to_string())))
                .collect(),
        )
    }

    /// The filter and the transform: the payloads to publish (none when filtered out).
    fn run_programs(
        &self,
        message: &Message,
        captures: &[(String, String)],
    ) -> Result<Outputs, Failure> {
        if self.filter.is_none() && self.transform.is_none() {
            return Ok(smallvec::smallvec![Payload::Raw(message.payload.clone())]);
        }
        let input = match payload::read(&message.payload, self.source.format) {
            Ok(v) => v,
            Err(reason) => return fail(Stage::Decode, reason),
        };
        let vars = if self.programs_use_variables {
            self.variables(message, captures)
        } else {
            Default::default()
        };
        if let Some(filter) = &self.filter {
            match filter.matches(input.clone(), &vars) {
                Ok(true) => {}
                Ok(false) => return Ok(Outputs::new()),
                Err(e) => return fail(Stage::Filter, e.to_string()),
            }
        }
        match &self.transform {
            None => Ok(smallvec::smallvec![Payload::Raw(message.payload.clone())]),
            Some(transform) => match transform.run(input, &vars) {
                Ok(values) => Ok(values.into_iter().map(Payload::Value).collect()),
                Err(e) => fail(Stage::Transform, e.to_string()),
            },
        }
    }

    /// The values of `$subject $topic $headers $match $meta`.
    fn variables(&self, message: &Message, captures: &[(String, String)]) -> [Val; 5] {
        let scope = Scope {
            route: &self.route,
            message,
            protocol: self.source.protocol,
            captures,
            payload: &Payload::Raw(Default::default()),
            format: self.source.format,
        };
        let text = |s: &str| Val::from(s.to_string());
        let object = |pairs: &mut dyn Iterator<Item = (&str, Val)>| {
            Val::obj(pairs.map(|(k, v)| (text(k), v)).collect())
        };
        let received = message
            .received
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let optional = |v: &Option<String>| v.as_deref().map_or(Val::Null, text);
        [
            text(&scope.subject()),
            text(&scope.topic()),
            object(&mut message.headers.iter().map(|(k, v)| (k.as_str(), text(v)))),
            object(&mut captures.iter().map(|(k, v)| (k.as_str(), text(v)))),
            object(
                &mut [
                    ("qos", Val::from(message.qos as usize)),
                    ("retain", Val::from(message.retain)),
                    ("origin", text(&message.origin)),
                    ("received", Val::from(received)),
                    ("event", optional(&message.event)),
                    ("id", optional(&message.id)),
                ]
                .into_iter(),
            ),
        ]
    }

    /// The dead letter for a message that failed: the message as it arrived, with headers
    /// naming the route, the stage and the reason, for the route's `dead_letter` sink. `None`
    /// when the route has none.
    pub fn dead_letter(
        &self,
        original: &Message,
        failure: &Failure,
    ) -> Option<Result<Message, String>> {
        let sink = self.dead_letter.as_ref()?;
        let mut headers: Headers = original
            .headers
            .iter()
            .filter(|(k, _)| !marker::is_ferry_header(k))
            .cloned()
            .collect();
        headers.push((marker::ROUTE.into(), self.route.clone()));
        headers.push((marker::STAGE.into(), failure.stage.to_string()));
        headers.push((marker::ERROR.into(), header_value(&failure.reason)));
        // Marked like any publish, so a dead letter that feeds a route again cannot circle
        // for ever (`max_hops`).
        Marker::read(&original.headers, &self.instance).stamp(
            &mut headers,
            &self.instance,
            &self.source.connection,
            &sink.connection,
        );
        let payload = Payload::Raw(original.payload.clone());
        let captures = self.captures(&original.subject).unwrap_or_default();
        let scope = Scope {
            route: &self.route,
            message: original,
            protocol: self.source.protocol,
            captures: &captures,
            payload: &payload,
            format: self.source.format,
        };
        Some(sink.dead_letter(&scope, headers).map_err(|f| f.reason))
    }

    /// Checks a message taken from sink `sink`'s spool by the sink's name and header rules,
    /// as every publish was checked when it was mapped. A spool outlives the configuration
    /// that filled it: what it kept from an earlier run may have been named for the protocol
    /// the connection had then, and the sink itself does not check again.
    pub fn check_spooled(&self, sink: usize, message: &Message) -> Result<(), Failure> {
        let side = &self.sinks[sink];
        side.check_name(&message.subject)?;
        side.check_headers(&message.headers)
    }

    /// The connection of the dead-letter sink, if there is one.
    pub fn dead_letter_connection(&self) -> Option<&str> {
        self.dead_letter.as_ref().map(|s| s.connection.as_str())
    }
}

/// A reason as a header value: one line (NATS headers cannot hold line breaks), at most 1 KiB.
fn header_value(reason: &str) -> String {
    let mut line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > 1024 {
        let mut end = 1024;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

#[cfg(test)]
mod tests;
