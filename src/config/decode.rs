//! One section of the file, from its positioned tree to its type: checked against the
//! type's generated schema first (every structural error at once, each with its place), then
//! deserialized. Checks that need more than the shape (names, references, ranges that depend
//! on another key) are the caller's, on the result.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::deserialize::NodeDeserializer;
use super::diagnostics::Diagnostic;
use super::interpolate::Lookup;
use super::schema;
use super::validate::{Validator, name_of};
use super::yaml::Node;

/// `node` read as a `T`, or every error in it.
pub fn section<T: DeserializeOwned + JsonSchema>(
    node: &Node,
    lookup: &Lookup,
) -> Result<T, Vec<Diagnostic>> {
    let root = schema::generator().into_root_schema_for::<T>().to_value();
    let what = name_of(&T::schema_name()).unwrap_or("a mapping");
    let errors = Validator::new(&root, lookup).check(node, what);
    if !errors.is_empty() {
        return Err(errors);
    }
    read(node, lookup)
}

/// `node` read as two types from the same mapping (serde skips the keys of the other), once
/// it fits `Whole`'s schema, which describes both and is called `what` in messages.
pub fn parts<Whole: JsonSchema, A: DeserializeOwned, B: DeserializeOwned>(
    node: &Node,
    what: &str,
    lookup: &Lookup,
) -> Result<(A, B), Vec<Diagnostic>> {
    let root = schema::generator()
        .into_root_schema_for::<Whole>()
        .to_value();
    let errors = Validator::new(&root, lookup).check(node, what);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((read(node, lookup)?, read(node, lookup)?))
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
        HeaderRules, JetStreamSource, LastWill, LoopGuard, Probe, Queue, Reconnect, Spool, Tls,
    };
    use crate::config::yaml;
    use crate::connectors::http::config::HttpSection;
    use crate::connectors::migratorydata::config::MigratoryDataSection;
    use crate::connectors::mqtt::config::MqttSection;
    use crate::connectors::nats::config::NatsSection;
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
        section(&node, &lookup()).unwrap_or_else(|e| panic!("{json}: {e:?}"))
    }

    /// A section written in its `minimal` form is the same as that form with every default
    /// the schema shows written out: the schema shows the defaults the types have.
    fn shows_its_defaults<T: DeserializeOwned + JsonSchema + PartialEq + Debug>(minimal: Value) {
        let schema = schema::generator().into_root_schema_for::<T>().to_value();
        let mut written = minimal.clone();
        let properties = schema["properties"].as_object().unwrap();
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
        shows_its_defaults::<Queue>(json!({}));
        shows_its_defaults::<Spool>(json!({}));
        shows_its_defaults::<HeaderRules>(json!({}));
        shows_its_defaults::<JetStreamSource>(json!({ "stream": "S", "consumer": "c" }));
    }
}
