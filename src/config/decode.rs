//! One section of the file, from its positioned tree to its type: checked against the
//! type's generated schema first (every structural error at once, each with its place), then
//! deserialized. Checks that need more than the shape (names, references, ranges that depend
//! on another key) are the caller's, on the result.
//!
//! A section with errors is still read, without the keys they are about (their defaults
//! stand in), so that the caller's checks run on the rest and report what else is wrong in
//! the same run; such a value only ever serves those checks.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::deserialize::NodeDeserializer;
use super::diagnostics::Diagnostic;
use super::interpolate::Lookup;
use super::schema;
use super::validate::{Validator, name_of};
use super::yaml::{Node, Pos, Value};

/// A section read: its value (for a section with errors, read without the keys they are
/// about; `None` when even that cannot be read), and its errors.
pub struct Section<T> {
    pub value: Option<T>,
    pub errors: Vec<Diagnostic>,
}

#[cfg(test)]
impl<T> Section<T> {
    /// The value, when the section has no error; its errors otherwise.
    pub fn clean(self) -> Result<T, Vec<Diagnostic>> {
        match self.value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ => Err(self.errors),
        }
    }
}

/// `node` read as a `T`, with every error in it.
pub fn section<T: DeserializeOwned + JsonSchema>(node: &Node, lookup: &Lookup) -> Section<T> {
    let what = name_of(&T::schema_name()).unwrap_or("a mapping");
    let mut errors = check::<T>(node, what, lookup);
    let value = read_around(node, &mut errors, lookup);
    Section { value, errors }
}

/// `node` read as a `T` whose sections called `inner` are read on their own: they are left
/// alone here.
pub fn outer<T: DeserializeOwned + JsonSchema>(
    node: &Node,
    inner: &[&str],
    lookup: &Lookup,
) -> Section<T> {
    let what = name_of(&T::schema_name()).unwrap_or("a mapping");
    let schema = schema::section_schema::<T>();
    let mut errors =
        Validator::new(schema.root(), lookup)
            .skipping(inner)
            .check(node, schema.part(), what);
    let value = read_around(node, &mut errors, lookup);
    Section { value, errors }
}

/// The errors in the shape of `node`, a `T` whose sections called `inner` are read on their
/// own.
pub fn shape<T: JsonSchema>(node: &Node, inner: &[&str], lookup: &Lookup) -> Vec<Diagnostic> {
    let what = name_of(&T::schema_name()).unwrap_or("a mapping");
    let schema = schema::section_schema::<T>();
    Validator::new(schema.root(), lookup)
        .skipping(inner)
        .check(node, schema.part(), what)
}

/// `node` read as two types from the same mapping (serde skips the keys of the other),
/// checked against `Whole`'s schema, which describes both and is called `what` in messages.
pub fn parts<Whole: JsonSchema, A: DeserializeOwned, B: DeserializeOwned>(
    node: &Node,
    what: &str,
    lookup: &Lookup,
) -> Section<(A, B)> {
    let mut errors = check::<Whole>(node, what, lookup);
    let value = read_around(node, &mut errors, lookup)
        .and_then(|a| Some((a, read_around(node, &mut errors, lookup)?)));
    Section { value, errors }
}

fn check<T: JsonSchema>(node: &Node, what: &str, lookup: &Lookup) -> Vec<Diagnostic> {
    let schema = schema::section_schema::<T>();
    Validator::new(schema.root(), lookup).check(node, schema.part(), what)
}

/// `node` read without the keys and values `errors` are about.
// A section that passed its schema and still does not deserialize is reported too (a
// protocol's keys type that refuses the keys every source shares, say): never read as nothing.
fn read_around<T: DeserializeOwned>(
    node: &Node,
    errors: &mut Vec<Diagnostic>,
    lookup: &Lookup,
) -> Option<T> {
    if errors.is_empty() {
        return read(node, lookup).map_err(|e| errors.extend(e)).ok();
    }
    let places: Vec<Pos> = errors.iter().map(|e| e.pos).collect();
    read(&without(node, &places)?, lookup).ok()
}

/// `node` without what is at `places` (`None`: the node itself is there).
fn without(node: &Node, places: &[Pos]) -> Option<Node> {
    if places.contains(&node.pos) {
        return None;
    }
    let value = match &node.value {
        Value::Map(entries) => Value::Map(
            entries
                .iter()
                .filter(|(key, _)| !places.contains(&key.pos))
                .filter_map(|(key, value)| Some((key.clone(), without(value, places)?)))
                .collect(),
        ),
        Value::Seq(items) => Value::Seq(items.iter().filter_map(|n| without(n, places)).collect()),
        other => other.clone(),
    };
    Some(Node {
        value,
        pos: node.pos,
    })
}

fn read<T: DeserializeOwned>(node: &Node, lookup: &Lookup) -> Result<T, Vec<Diagnostic>> {
    T::deserialize(NodeDeserializer::new(node, lookup)).map_err(|e| {
        vec![Diagnostic {
            pos: e.pos.unwrap_or(node.pos),
            message: e.message,
            hint: e.hint,
        }]
    })
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde_json::{Value, json};

    use super::*;
    use crate::config::admin_listener::AdminSection;
    use crate::config::model::{
        HeaderRules, JetStreamSource, LastWill, LoopGuard, Probe, Queue, Reconnect, Request, Spool,
        Tls,
    };
    use crate::config::yaml;
    use crate::connectors::http::config::HttpSection;
    use crate::connectors::http_server::config::HttpServerConnection;
    use crate::connectors::migratorydata::config::MigratoryDataSection;
    use crate::connectors::mqtt::config::MqttSection;
    use crate::connectors::nats::config::{KvSink, KvSource, NatsSection, PriorityGroup};
    use crate::connectors::sse::config::{HandshakeSection, SseSection};
    use crate::connectors::sse_server::config::SseServerConnection;

    fn lookup() -> Lookup<'static> {
        Lookup {
            var: &|_| None,
            file: &|_| Err(std::io::Error::other("none")),
        }
    }

    fn read<T: DeserializeOwned + JsonSchema>(json: &Value) -> T {
        // JSON is YAML.
        let node = yaml::parse(&json.to_string()).unwrap();
        section(&node, &lookup())
            .clean()
            .unwrap_or_else(|e| panic!("{json}: {e:?}"))
    }

    /// A section written in its `minimal` form is the same as that form with every default
    /// the schema shows written out: the schema shows the defaults the types have.
    fn shows_its_defaults<T: DeserializeOwned + JsonSchema + PartialEq + Debug>(minimal: Value) {
        let schema = schema::section_schema::<T>();
        let mut written = minimal.clone();
        let properties = schema.part()["properties"].as_object().unwrap();
        for (key, property) in properties {
            if let Some(default) = property.get("default") {
                written[key] = default.clone();
            }
        }
        assert_ne!(written, minimal, "{} shows no default", T::schema_name());
        assert_eq!(read::<T>(&minimal), read::<T>(&written), "{written}");
    }

    #[test]
    fn the_schema_shows_every_default() {
        shows_its_defaults::<AdminSection>(json!({}));
        shows_its_defaults::<LoopGuard>(json!({}));
        shows_its_defaults::<Reconnect>(json!({}));
        shows_its_defaults::<Probe>(json!({}));
        shows_its_defaults::<Tls>(json!({}));
        shows_its_defaults::<LastWill>(json!({ "topic": "t" }));
        shows_its_defaults::<MqttSection>(json!({ "url": "mqtt://b" }));
        shows_its_defaults::<NatsSection>(json!({ "url": "nats://n" }));
        shows_its_defaults::<SseSection>(json!({ "url": "http://s" }));
        shows_its_defaults::<HandshakeSection>(json!({ "on": "e", "url": "/u" }));
        shows_its_defaults::<HttpSection>(json!({ "url": "http://h" }));
        shows_its_defaults::<MigratoryDataSection>(json!({ "servers": "http://m", "token": "t" }));
        shows_its_defaults::<SseServerConnection>(json!({ "path": "/p" }));
        shows_its_defaults::<HttpServerConnection>(json!({ "path": "/p" }));
        shows_its_defaults::<Queue>(json!({}));
        shows_its_defaults::<Spool>(json!({}));
        shows_its_defaults::<Request>(json!({}));
        shows_its_defaults::<HeaderRules>(json!({}));
        shows_its_defaults::<JetStreamSource>(json!({ "stream": "S", "consumer": "c" }));
        shows_its_defaults::<PriorityGroup>(json!({ "name": "g", "policy": "pinned_client" }));
        shows_its_defaults::<KvSource>(json!({ "bucket": "b", "consumer": "c" }));
        shows_its_defaults::<KvSink>(json!({ "bucket": "b" }));
    }
}
