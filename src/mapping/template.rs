//! Subject, topic and header templates (minijinja) over the message being mapped.
//!
//! Variables (see [`Scope`]):
//! - `topic`: the source name as an MQTT topic, `subject`: the same name as a NATS subject,
//!   whichever protocol it came from (converted by the codec). Both render whole; indexed,
//!   `topic[1]` is the second `/` level and `subject[-1]` the last `.` token.
//! - `payload`: the payload being published (after the transform), read per the route's
//!   `payload_format`; parsed only when a template uses it. `input`: the payload as the source
//!   delivered it, before the transform (e.g. a field the transform leaves out).
//! - `headers` (a map), `match` (the named captures of the source's `match:` regex),
//!   `event` and `id` (of SSE messages), `route` (the route's name).
//!
//! Filters: `nats` (MQTT topic → NATS subject) and `mqtt` (the inverse), besides minijinja's own
//! (`lower`, `upper`, `replace`, `default`, ...).
//!
//! A template of text and plain names only (`out.{{ subject[-1] }}`) renders without minijinja,
//! to the same text (see `Piece`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use minijinja::{Environment, UndefinedBehavior};

use super::codec;
use super::payload::Payload;
use crate::config::{PayloadFormat, Protocol};
use crate::message::Message;

/// What a template can see of one message.
pub struct Scope<'a> {
    pub route: &'a str,
    /// The message as the source handed it over (after unwrapping an envelope).
    pub message: &'a Message,
    /// The source's protocol: which way `topic`/`subject` are converted.
    pub protocol: Protocol,
    /// Named captures of the source's `match:` regex.
    pub captures: &'a [(String, String)],
    pub payload: &'a Payload,
    /// How a payload that is still raw bytes is read.
    pub format: PayloadFormat,
}

impl<'a> Scope<'a> {
    /// The source name as an MQTT topic.
    pub fn topic(&self) -> Cow<'a, str> {
        match self.protocol {
            Protocol::Nats => codec::subject_to_topic(&self.message.subject).into(),
            Protocol::MigratoryData => migratorydata_to_topic(&self.message.subject).into(),
            _ => self.message.subject.as_str().into(),
        }
    }

    /// The source name as a NATS subject. A path POSTed to ferry is `/`-separated as an MQTT
    /// topic is, and converted the same way.
    pub fn subject(&self) -> Cow<'a, str> {
        match self.protocol {
            Protocol::Mqtt | Protocol::HttpServer => {
                codec::topic_to_subject(&self.message.subject).into()
            }
            Protocol::MigratoryData => {
                codec::topic_to_subject(&migratorydata_to_topic(&self.message.subject)).into()
            }
            _ => self.message.subject.as_str().into(),
        }
    }

    /// The source name as a MigratoryData subject: `/` and the MQTT topic (`/a/b` for MQTT
    /// `a/b` or NATS `a.b`); a MigratoryData subject as it is.
    pub fn migratorydata_subject(&self) -> String {
        match self.protocol {
            Protocol::MigratoryData => self.message.subject.clone(),
            _ => format!("/{}", self.topic()),
        }
    }
}

/// A MigratoryData subject as an MQTT topic: without its leading `/` (`/a/b` is `a/b`).
fn migratorydata_to_topic(subject: &str) -> String {
    subject.strip_prefix('/').unwrap_or(subject).to_string()
}

/// A checked template, compiled for rendering at its first render.
pub struct Template {
    source: Box<str>,
    /// Made by the first render. A compiled template takes some 16 KB (minijinja's
    /// environment and instruction buffers), and at thousands of routes most never see a
    /// message: they pay for the source alone.
    env: OnceLock<Box<Environment<'static>>>,
    /// The variables the template names; only those are built for each message.
    uses: Uses,
    /// `match.NAME` names the template uses.
    captures: Vec<String>,
    /// The template as text and names, when it is no more than that (see [`Piece`]).
    pieces: Option<Box<[Piece]>>,
}

/// A part of a template that is only text and whole or indexed names (`out.{{ subject[-1] }}`,
/// the usual rewrite), which renders by splitting the name: minijinja takes several thousand
/// instructions a message for the same text (its context, its machine, its output).
#[derive(Debug, PartialEq)]
enum Piece {
    /// Text of the source, from and to these byte offsets.
    Text(u32, u32),
    /// `topic` or `subject` (`topic: false`), whole or one level (negative: from the end).
    Name { topic: bool, level: Option<i64> },
}

#[derive(Default)]
struct Uses {
    topic: bool,
    subject: bool,
    payload: bool,
    input: bool,
    headers: bool,
    captures: bool,
    id: bool,
    route: bool,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Template")
    }
}

const NAME: &str = "target";

/// The most minijinja instructions one render may run: a loop over a huge payload array
/// (`{% for x in payload.items %}`) fails the message instead of holding the route. A name
/// template runs tens.
pub const FUEL: u64 = 100_000;

/// The longest a rendered subject, topic or header may be (MQTT's own limit on a topic).
pub const MAX_RENDERED: usize = 65_535;

impl Template {
    /// Checks `source` and finds what it uses; the error is minijinja's message.
    pub fn compile(source: &str) -> Result<Template, String> {
        let env = environment(source)?;
        let template = env.get_template(NAME).map_err(|e| describe(&e))?;
        let names = template.undeclared_variables(false);
        let captures = template
            .undeclared_variables(true)
            .iter()
            .filter_map(|n| n.strip_prefix("match.").map(str::to_string))
            .collect();
        // minijinja's `undeclared_variables` misses the variable of a slice (`topic[1:]`), so
        // the two names are also looked for in the text: a false find only builds a name.
        let uses = Uses {
            topic: names.contains("topic") || mentions(source, "topic"),
            subject: names.contains("subject") || mentions(source, "subject"),
            payload: names.contains("payload"),
            input: names.contains("input"),
            headers: names.contains("headers"),
            captures: names.contains("match"),
            id: names.contains("id"),
            route: names.contains("route"),
        };
        Ok(Template {
            source: source.into(),
            env: OnceLock::new(),
            uses,
            captures,
            pieces: pieces(source),
        })
    }

    /// The first `match.NAME` the template uses that is not among `available`; `match` when
    /// the template uses captures and there are none.
    pub fn unknown_capture(&self, available: &[String]) -> Option<String> {
        if let Some(name) = self.captures.iter().find(|c| !available.contains(c)) {
            return Some(format!("match.{name}"));
        }
        (self.uses.captures && available.is_empty()).then(|| "match".to_string())
    }

    /// Whether the template names the message's `id`: a route that renders one gives every
    /// message an id, as for a sink that reads it.
    pub fn uses_id(&self) -> bool {
        self.uses.id
    }

    /// Renders the template for one message.
    pub fn render(&self, scope: &Scope) -> Result<String, String> {
        // What the pieces cannot render (a level the name does not have) minijinja renders,
        // into the error it gives.
        if let Some(pieces) = &self.pieces
            && let Some(text) = self.render_pieces(pieces, scope)
        {
            return Ok(text);
        }
        self.render_minijinja(scope)
    }

    /// Renders a template of [`Piece`]s; `None` where a level is missing or the text is too
    /// long.
    fn render_pieces(&self, pieces: &[Piece], scope: &Scope) -> Option<String> {
        let topic = self.uses.topic.then(|| scope.topic());
        let subject = self.uses.subject.then(|| scope.subject());
        // Room for the text and the whole name: no growing on the way.
        let names = topic.as_ref().map_or(0, |t| t.len()) + subject.as_ref().map_or(0, |s| s.len());
        let mut text = String::with_capacity(self.source.len() + names);
        for piece in pieces {
            match *piece {
                Piece::Text(from, to) => text.push_str(&self.source[from as usize..to as usize]),
                Piece::Name {
                    topic: is_topic,
                    level,
                } => {
                    let (name, separator) = match is_topic {
                        true => (topic.as_deref()?, '/'),
                        false => (subject.as_deref()?, '.'),
                    };
                    text.push_str(match level {
                        None => name,
                        Some(level) => nth_level(name, separator, level)?,
                    });
                }
            }
        }
        (text.len() <= MAX_RENDERED).then_some(text)
    }

    fn render_minijinja(&self, scope: &Scope) -> Result<String, String> {
        let uses = &self.uses;
        // Only what the template names is built (this is most of a render's cost).
        let strings = |used: bool, pairs: &mut dyn Iterator<Item = (&String, &String)>| {
            used.then(|| {
                let map: BTreeMap<&str, Value> = pairs
                    .map(|(k, v)| (k.as_str(), Value::from(v.as_str())))
                    .collect();
                Value::from(map)
            })
        };
        let context = Context {
            topic: uses
                .topic
                .then(|| Segments::value(scope.topic().into_owned(), '/')),
            subject: uses
                .subject
                .then(|| Segments::value(scope.subject().into_owned(), '.')),
            payload: match uses.payload {
                true => Some(scope.payload.template_value(scope.format)?),
                false => None,
            },
            input: match uses.input {
                true => {
                    Some(Payload::Raw(scope.message.payload.clone()).template_value(scope.format)?)
                }
                false => None,
            },
            headers: strings(
                uses.headers,
                &mut scope.message.headers.iter().map(|(k, v)| (k, v)),
            ),
            captures: strings(
                uses.captures,
                &mut scope.captures.iter().map(|(k, v)| (k, v)),
            ),
            event: scope.message.event.as_deref().map(Value::from),
            id: scope.message.id.as_deref().map(Value::from),
            route: uses.route.then(|| Value::from(scope.route)),
        };
        let env = match self.env.get() {
            Some(env) => env,
            None => {
                let env = Box::new(environment(&self.source)?);
                self.env.get_or_init(|| env)
            }
        };
        let template = env.get_template(NAME).map_err(|e| describe(&e))?;
        let mut out = Bounded::default();
        match template.render_captured_to(Value::from_object(context), &mut out) {
            Ok(_) => {
                String::from_utf8(out.text).map_err(|_| "renders text that is not UTF-8".into())
            }
            Err(_) if out.overflowed => Err(format!("renders longer than {MAX_RENDERED} bytes")),
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(format!(
                "runs more than {FUEL} template instructions (a loop over a large payload?)"
            )),
            Err(e) => Err(describe(&e)),
        }
    }
}

/// `source` as [`Piece`]s, when it is only text and `{{ topic }}`, `{{ subject[N] }}` and the
/// like. Whatever else minijinja would read differently is left to it: a brace in the text
/// (`{%`, `{#`), whitespace control (`{{-`), a line break (minijinja drops a trailing one),
/// anything but a plain name or a plain index.
fn pieces(source: &str) -> Option<Box<[Piece]>> {
    if source.len() > u32::MAX as usize || source.contains(['\n', '\r']) {
        return None;
    }
    let mut pieces = Vec::new();
    let text = |pieces: &mut Vec<Piece>, from: usize, to: usize| {
        let t = &source[from..to];
        if t.contains(['{', '}']) {
            return None;
        }
        if !t.is_empty() {
            pieces.push(Piece::Text(from as u32, to as u32));
        }
        Some(())
    };
    let mut at = 0;
    while let Some(open) = source[at..].find("{{").map(|o| at + o) {
        text(&mut pieces, at, open)?;
        let close = source[open + 2..].find("}}").map(|c| open + 2 + c)?;
        pieces.push(name_piece(
            source[open + 2..close].trim_matches([' ', '\t']),
        )?);
        at = close + 2;
    }
    text(&mut pieces, at, source.len())?;
    Some(pieces.into_boxed_slice())
}

/// `topic`, `subject`, `topic[N]` or `subject[N]` (N an integer, negative from the end).
fn name_piece(expression: &str) -> Option<Piece> {
    let (name, level) = match expression.split_once('[') {
        None => (expression, None),
        Some((name, index)) => {
            let digits = index.strip_suffix(']')?;
            let magnitude = digits.strip_prefix('-').unwrap_or(digits);
            let canonical = !magnitude.is_empty()
                && magnitude.bytes().all(|b| b.is_ascii_digit())
                && (magnitude == "0" || !magnitude.starts_with('0'));
            if !canonical {
                return None;
            }
            (name, Some(digits.parse::<i64>().ok()?))
        }
    };
    match name {
        "topic" => Some(Piece::Name { topic: true, level }),
        "subject" => Some(Piece::Name {
            topic: false,
            level,
        }),
        _ => None,
    }
}

/// Level `level` of `name` (negative: from the end), as [`Segments`] indexes it.
fn nth_level(name: &str, separator: char, level: i64) -> Option<&str> {
    match usize::try_from(level) {
        Ok(index) => name.split(separator).nth(index),
        // From the end: only the levels after it are looked at, not the whole name twice.
        Err(_) => name
            .rsplit(separator)
            .nth(usize::try_from(-(level + 1)).ok()?),
    }
}

/// `source` compiled, with ferry's settings and filters.
fn environment(source: &str) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    // A missing variable or payload field is an error (the message is dead-lettered), not
    // an empty string that would silently publish to the wrong subject. `default` and
    // `is defined` still work for values that may be absent.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.add_filter("nats", |v: Value| codec::topic_to_subject(&text(&v)));
    env.add_filter("mqtt", |v: Value| codec::subject_to_topic(&text(&v)));
    env.add_template_owned(NAME, source.to_string())
        .map_err(|e| describe(&e))?;
    Ok(env)
}

/// Takes a render's output up to [`MAX_RENDERED`] bytes, then refuses.
#[derive(Default)]
struct Bounded {
    text: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > MAX_RENDERED {
            self.overflowed = true;
            return Err(std::io::Error::other("too long"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The variables of one render, as one object that minijinja asks by name.
#[derive(Debug)]
struct Context {
    topic: Option<Value>,
    subject: Option<Value>,
    payload: Option<Value>,
    input: Option<Value>,
    headers: Option<Value>,
    captures: Option<Value>,
    event: Option<Value>,
    id: Option<Value>,
    route: Option<Value>,
}

impl Object for Context {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "topic" => self.topic.clone(),
            "subject" => self.subject.clone(),
            "payload" => self.payload.clone(),
            "input" => self.input.clone(),
            "headers" => self.headers.clone(),
            "match" => self.captures.clone(),
            "event" => self.event.clone(),
            "id" => self.id.clone(),
            "route" => self.route.clone(),
            _ => None,
        }
    }
}

/// Whether `word` occurs in `source` as a whole identifier.
fn mentions(source: &str, word: &str) -> bool {
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    source.match_indices(word).any(|(at, _)| {
        !ident(source[..at].chars().next_back()) && !ident(source[at + word.len()..].chars().next())
    })
}

/// minijinja's message without its template-name decoration.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    if let Some(line) = e.line()
        && line > 1
    {
        s = format!("{s} (template line {line})");
    }
    s
}

/// A name that renders whole and indexes by level (negative indexes count from the end). It
/// is split only when indexed.
#[derive(Debug)]
struct Segments {
    whole: String,
    separator: char,
}

impl Segments {
    fn value(whole: String, separator: char) -> Value {
        Value::from_object(Segments { whole, separator })
    }

    fn parts(&self) -> std::str::Split<'_, char> {
        self.whole.split(self.separator)
    }
}

/// The text of a value: a [`Segments`] name as it is, anything else as it renders.
fn text(v: &Value) -> std::borrow::Cow<'_, str> {
    match (v.downcast_object_ref::<Segments>(), v.as_str()) {
        (Some(segments), _) => segments.whole.as_str().into(),
        (None, Some(s)) => s.into(),
        (None, None) => v.to_string().into(),
    }
}

impl Object for Segments {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let index = i64::try_from(key.clone()).ok()?;
        let index = if index < 0 {
            usize::try_from(self.parts().count() as i64 + index).ok()?
        } else {
            usize::try_from(index).ok()?
        };
        self.parts().nth(index).map(Value::from)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.parts().count())
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Case {
        message: Message,
        protocol: Protocol,
        captures: Vec<(String, String)>,
        payload: Payload,
    }

    fn case(protocol: Protocol, subject: &str, payload: &str) -> Case {
        Case {
            message: Message::new("test".into(), subject, payload.as_bytes().to_vec()),
            protocol,
            captures: Vec::new(),
            payload: Payload::Raw(bytes::Bytes::copy_from_slice(payload.as_bytes())),
        }
    }

    impl Case {
        fn render(&self, template: &str) -> Result<String, String> {
            let scope = Scope {
                route: "r",
                message: &self.message,
                protocol: self.protocol,
                captures: &self.captures,
                payload: &self.payload,
                format: PayloadFormat::Json,
            };
            Template::compile(template).unwrap().render(&scope)
        }
    }

    #[test]
    fn a_template_is_compiled_for_rendering_at_its_first_render() {
        let t = Template::compile("iot.{{ topic[1] | lower }}").unwrap();
        assert!(t.env.get().is_none(), "compiled before any message");
        let c = case(Protocol::Mqtt, "sensors/kitchen/temp", "{}");
        let scope = Scope {
            route: "r",
            message: &c.message,
            protocol: c.protocol,
            captures: &c.captures,
            payload: &c.payload,
            format: PayloadFormat::Json,
        };
        assert_eq!(t.render(&scope).unwrap(), "iot.kitchen");
        assert!(t.env.get().is_some());
        assert_eq!(t.render(&scope).unwrap(), "iot.kitchen");
        // Text and names render without minijinja; a level the name lacks, with it (its error).
        let t = Template::compile("iot.{{ topic[1] }}").unwrap();
        assert_eq!(t.render(&scope).unwrap(), "iot.kitchen");
        assert!(t.env.get().is_none(), "rendered by its pieces");
        let t = Template::compile("iot.{{ topic[7] }}").unwrap();
        assert!(t.render(&scope).is_err());
        assert!(t.env.get().is_some());
    }

    #[test]
    fn only_text_and_plain_names_are_pieces() {
        for simple in [
            "plain.text",
            "{{ topic }}",
            "out.{{ subject[-1] }}",
            "a/{{topic[1]}}/{{ subject[0] }}",
            "x{{\ttopic[-0] }}",
            "",
        ] {
            assert!(pieces(simple).is_some(), "{simple}");
        }
        for other in [
            "{{ topic | upper }}",
            "{% if true %}x{% endif %}",
            "a{b",
            "a}b",
            "{# c #}x",
            "{{- topic }}",
            "{{ topic -}}",
            "{{ topic[01] }}",
            "{{ topic[1:] }}",
            "{{ topic [1] }}",
            "{{ topic[ 1 ] }}",
            "{{ topic[99999999999999999999] }}",
            "{{ topics }}",
            "{{ payload }}",
            "{{ topic }}\n",
            "{{ topic ",
        ] {
            assert!(pieces(other).is_none(), "{other}");
        }
    }

    #[test]
    fn segments_and_codec_views() {
        let c = case(Protocol::Mqtt, "sensors/kitchen/temp", "{}");
        assert_eq!(
            c.render("iot.{{ topic[1] }}.temperature").unwrap(),
            "iot.kitchen.temperature"
        );
        assert_eq!(c.render("{{ subject }}").unwrap(), "sensors.kitchen.temp");
        assert_eq!(c.render("{{ subject[-1] }}").unwrap(), "temp");
        assert_eq!(
            c.render("fwd.{{ topic | nats }}").unwrap(),
            "fwd.sensors.kitchen.temp"
        );
        let c = case(Protocol::Nats, "cmd.a//b.c", "x");
        assert_eq!(c.render("{{ topic }}").unwrap(), "cmd/a.b/c");
        assert_eq!(c.render("out/{{ topic[1] }}").unwrap(), "out/a.b");
        assert_eq!(c.render("{{ subject | mqtt }}").unwrap(), "cmd/a.b/c");
        assert_eq!(c.render("{{ subject[1] }}").unwrap(), "a//b");
    }

    #[test]
    fn slices_of_names() {
        let c = case(Protocol::Mqtt, "sensors/kitchen/temp", "{}");
        assert_eq!(
            c.render("{{ topic[1:] | join('/') }}").unwrap(),
            "kitchen/temp"
        );
        assert_eq!(
            c.render("iot{% for t in subject[1:] %}.{{ t }}{% endfor %}")
                .unwrap(),
            "iot.kitchen.temp"
        );
        assert!(!mentions("{{ topics }}", "topic") && mentions("{{topic[1:]}}", "topic"));
    }

    #[test]
    fn payload_headers_captures_and_builtin_filters() {
        let mut c = case(Protocol::Mqtt, "a/b", r#"{"room":"Kitchen","n":3}"#);
        c.message.headers.push(("site".into(), "plant-1".into()));
        c.captures.push(("x".into(), "b".into()));
        assert_eq!(
            c.render("{{ route }}.{{ headers.site }}.{{ match.x }}")
                .unwrap(),
            "r.plant-1.b"
        );
        assert_eq!(
            c.render("{{ payload.room | lower }}.{{ payload.n }}")
                .unwrap(),
            "kitchen.3"
        );
        assert_eq!(c.render("{{ payload.room | upper }}").unwrap(), "KITCHEN");
        assert_eq!(c.render("{{ topic | replace('/', '-') }}").unwrap(), "a-b");
        assert_eq!(
            c.render("{{ payload.floor | default('ground') }}").unwrap(),
            "ground"
        );
        assert_eq!(
            c.render("{{ headers.zone | default('none') }}").unwrap(),
            "none"
        );
        assert_eq!(c.render("{{ event | default('-') }}").unwrap(), "-");
        c.message.event = Some("update".into());
        c.message.id = Some("42".into());
        assert_eq!(c.render("{{ event }}/{{ id }}").unwrap(), "update/42");
    }

    #[test]
    fn a_transformed_payload_is_what_templates_see() {
        let mut c = case(Protocol::Nats, "a", "ignored");
        c.payload = Payload::Value(jaq_json::read::parse_single(br#"{"room":"hall"}"#).unwrap());
        assert_eq!(c.render("{{ payload.room }}").unwrap(), "hall");
    }

    #[test]
    fn missing_values_are_errors() {
        let c = case(Protocol::Mqtt, "a/b", r#"{"x":1}"#);
        assert!(c.render("{{ payload.room }}").is_err());
        assert!(c.render("{{ topic[5] }}").is_err());
        assert!(c.render("{{ event }}").is_err());
        let c = case(Protocol::Mqtt, "a/b", "not json");
        assert!(
            c.render("{{ payload.x }}")
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(Template::compile("{{ topic[1 }}").is_err());
    }

    #[test]
    fn renders_within_a_budget() {
        let items: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
        let c = case(
            Protocol::Mqtt,
            "a/b",
            &format!(r#"{{"items":[{}],"s":"xxxxxxxx"}}"#, items.join(",")),
        );
        let e = c
            .render("{% for x in payload.items %}{% if x > 1 %}{% endif %}{% endfor %}x")
            .unwrap_err();
        assert!(e.contains("template instructions"), "{e}");
        let e = c
            .render("{% for x in payload.items %}{{ payload.s }}{% endfor %}")
            .unwrap_err();
        assert!(e.contains("longer than 65535 bytes"), "{e}");
        let e = c.render("{{ payload.s * 100000 }}").unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        // Just under the bound is fine.
        let c = case(Protocol::Mqtt, &"t/".repeat(MAX_RENDERED / 2), "{}");
        assert_eq!(c.render("{{ topic }}").unwrap().len(), MAX_RENDERED - 1);
    }

    proptest::proptest! {
        /// Remote names, headers and payload text are arbitrary Unicode: rendering them, whole,
        /// indexed, sliced or converted, never panics.
        #[test]
        fn arbitrary_unicode_renders_without_panic(
            subject in proptest::prelude::any::<String>(),
            header in proptest::prelude::any::<String>(),
            field in proptest::prelude::any::<String>(),
            nats in proptest::prelude::any::<bool>(),
        ) {
            let protocol = if nats { Protocol::Nats } else { Protocol::Mqtt };
            let payload = serde_json::json!({ "f": field }).to_string();
            let mut c = case(protocol, &subject, &payload);
            c.message.headers.push(("h".into(), header));
            c.captures.push(("x".into(), subject.clone()));
            for template in [
                "{{ topic }}/{{ subject }}",
                "{{ topic[0] }}.{{ subject[-1] }}",
                "{{ topic[1:] | join('.') }}",
                "{{ topic | nats }}-{{ subject | mqtt }}",
                "{{ payload.f | upper }}{{ input.f | lower }}",
                "{{ headers.h | replace('.', '/') }}:{{ match.x }}",
                "{{ payload.f[:3] }}{{ payload.f * 3 }}",
            ] {
                let _ = c.render(template);
            }
        }
    }

    proptest::proptest! {
        /// A template of pieces renders what minijinja renders, whatever the name.
        #[test]
        fn pieces_render_as_minijinja_does(
            subject in "[a-z./]{0,12}|\\PC{0,12}",
            nats in proptest::prelude::any::<bool>(),
        ) {
            let protocol = if nats { Protocol::Nats } else { Protocol::Mqtt };
            let c = case(protocol, &subject, "{}");
            let scope = Scope {
                route: "r",
                message: &c.message,
                protocol: c.protocol,
                captures: &c.captures,
                payload: &c.payload,
                format: PayloadFormat::Json,
            };
            for template in [
                "{{ topic }}/{{ subject }}",
                "out.{{ subject[-1] }}",
                "a/{{ topic[1] }}/b",
                "{{topic[0]}}{{ subject[2] }}",
                "x{{ topic[-3] }}.{{ subject[-0] }}",
                "plain",
            ] {
                let t = Template::compile(template).unwrap();
                proptest::prop_assert!(t.pieces.is_some(), "{}", template);
                proptest::prop_assert_eq!(t.render(&scope), t.render_minijinja(&scope), "{}", template);
            }
        }
    }

    #[test]
    fn knows_which_captures_it_uses() {
        let t = Template::compile("{{ match.room }}.{{ topic }}").unwrap();
        assert_eq!(t.unknown_capture(&["room".into()]), None);
        assert_eq!(
            t.unknown_capture(&["site".into()]).as_deref(),
            Some("match.room")
        );
        let t = Template::compile("{{ topic }}").unwrap();
        assert_eq!(t.unknown_capture(&[]), None);
    }
}
