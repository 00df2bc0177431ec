//! Checks the positioned YAML tree against the JSON Schema that schemars generates for the
//! file's types (the copy built into the binary, see `schema.rs`), collecting every error with
//! its position, in the words an operator reads in `ferry check`: an unknown key with "did you
//! mean", a missing one, a value of the wrong kind or out of its range. serde's derive would stop at the first error; this walks on.
//!
//! It knows the parts of JSON Schema that schemars emits for the file's types: `$ref` into
//! `$defs`, `type`, `properties`, `required`, `additionalProperties` (false, or the schema of
//! a map's values) and `unevaluatedProperties`, `enum` and `const`s, `anyOf`/`oneOf`,
//! `items`. Scalars are checked by the name of their definition ([`Scalar`]), with the hints
//! of [`super::ranges`]; a schema may word its own error (`errorMessage`, `x-hint`).

use serde_json::{Map, Value as Json};

use super::diagnostics::{Diagnostic, did_you_mean};
use super::interpolate::{Lookup, scalar_text};
use super::ranges::{
    DURATION_HINT, NumberProblem, SIZE_HINT, check_duration, check_size, duration_of_seconds,
};
use super::values::{INTERPOLATION, Scalar};
use super::yaml::{Node, Pos, Value};

/// What each mapping of the file is to the user, by the name of its type's schema: "unknown
/// key `x` in {this}".
const MAPPINGS: &[(&str, &str)] = &[
    ("Admin", "`admin`"),
    ("AdminTls", "the admin listener's `tls`"),
    ("LoopGuard", "`loop_guard`"),
    ("Reconnect", "`reconnect`"),
    ("Tls", "`tls`"),
    (
        "Probe",
        "`probe` (false, or a map of interval, timeout, topic)",
    ),
    ("MqttConnection", "an MQTT connection"),
    ("LastWill", "`last_will`"),
    ("NatsConnection", "a NATS connection"),
    ("SseConnection", "an SSE connection"),
    ("Handshake", "a `handshake`"),
    ("Queue", "`queue`"),
    ("HeaderRules", "`headers`"),
    ("Route", "a route"),
    ("Connection", "a connection"),
    ("ConfigFile", "the configuration"),
    (
        "JetStreamSource",
        "`jetstream` (a map of stream, consumer, ...)",
    ),
    (
        "PriorityGroup",
        "`priority_group` (a map of name, policy, ...)",
    ),
    ("KvSource", "`kv` (a map of bucket, consumer, ...)"),
    (
        "KvSink",
        "`kv` (a map of bucket, delete_on_empty, check_revision)",
    ),
    ("Spool", "`spool` (a map of dir, max_bytes)"),
    ("Request", "`request` (a map of timeout, max_in_flight)"),
    ("HttpConnection", "an HTTP connection"),
    ("SseServerConnection", "an sse_server connection"),
    ("HttpServerConnection", "an http_server connection"),
    ("MigratoryDataConnection", "a MigratoryData connection"),
];

/// What a mapping described by the definition `name` is called in messages.
pub fn name_of(definition: &str) -> Option<&'static str> {
    MAPPINGS
        .iter()
        .find(|(def, _)| *def == definition)
        .map(|(_, what)| *what)
}

/// Walks a tree against a root schema (one with `$defs`), pushing what is wrong to `errors`.
pub struct Validator<'a> {
    root: &'a Json,
    lookup: &'a Lookup<'a>,
    errors: Vec<Diagnostic>,
    /// Definitions left alone: sections read on their own, later.
    skip: &'a [&'a str],
}

impl<'a> Validator<'a> {
    pub fn new(root: &'a Json, lookup: &'a Lookup<'a>) -> Self {
        Validator {
            root,
            lookup,
            errors: Vec::new(),
            skip: &[],
        }
    }

    /// Leaves the definitions called `skip` alone.
    pub fn skipping(self, skip: &'a [&'a str]) -> Self {
        Validator { skip, ..self }
    }

    /// Every error in `node`, which `schema` (the root or a part of it) describes and the user
    /// calls `what`.
    pub fn check(mut self, node: &Node, schema: &Json, what: &str) -> Vec<Diagnostic> {
        self.value(node, schema, what, what);
        self.errors
    }

    fn error(&mut self, pos: Pos, message: String, hint: Option<String>) {
        self.errors.push(Diagnostic { pos, message, hint });
    }

    /// `node` against `schema`. `key` names the value in messages about scalars and lists,
    /// `what` a mapping in messages about its keys.
    fn value(&mut self, node: &Node, schema: &Json, key: &str, what: &str) {
        if let Some(reference) = schema.get("$ref").and_then(Json::as_str) {
            let name = reference.rsplit('/').next().unwrap_or(reference);
            if self.skip.contains(&name) {
                return;
            }
            let definition = &self.root["$defs"][name];
            match Scalar::of(name, definition) {
                Some(scalar) => self.scalar(node, scalar, key),
                None => self.value(node, definition, key, name_of(name).unwrap_or(what)),
            }
            return;
        }
        if let Some(choices) = schema.get("enum").and_then(Json::as_array) {
            self.choice(node, choices, schema, key);
            return;
        }
        // An enum whose variants have doc comments: one `const` alternative each.
        if let Some(choices) = constants(schema) {
            self.choice(node, &choices, schema, key);
            return;
        }
        // A schema with a type of its own is checked by it: a `oneOf` beside it (a connection
        // is exactly one of the protocols) is a rule for the checks after deserializing, which
        // say it in the user's terms.
        if schema.get("type").is_none()
            && let Some(alternatives) = schema
                .get("anyOf")
                .or_else(|| schema.get("oneOf"))
                .and_then(Json::as_array)
        {
            self.alternatives(node, alternatives, key, what);
            return;
        }
        match schema.get("type").and_then(Json::as_str) {
            Some("object") => self.mapping(node, schema, key, what),
            Some("array") => self.list(node, schema, key),
            Some("string") => self.scalar(node, Scalar::Text, key),
            Some("boolean") => self.scalar(node, Scalar::Flag, key),
            Some("integer") => self.scalar(
                node,
                Scalar::Whole {
                    min: schema["minimum"].as_u64().unwrap_or(0),
                    max: schema["maximum"].as_u64().unwrap_or(u64::MAX),
                },
                key,
            ),
            _ => {}
        }
    }

    fn mapping(&mut self, node: &Node, schema: &Json, key: &str, what: &str) {
        let Value::Map(entries) = &node.value else {
            let found = node.value.kind();
            if let Some(message) = schema["errorMessage"].as_str() {
                let hint = schema["x-hint"].as_str().map(String::from);
                self.error(node.pos, message.replace("{found}", found), hint);
                return;
            }
            match schema.get("properties") {
                Some(_) => self.error(
                    node.pos,
                    format!("expected a mapping for {what}, found {found}"),
                    Some("write `key: value` pairs, indented under it".into()),
                ),
                // Names of the user's choosing (headers, say): an example shows the form.
                None => self.error(
                    node.pos,
                    format!("`{key}` must be a mapping, found {found}"),
                    schema["examples"][0]
                        .as_str()
                        .map(|example| format!("write `{key}: {example}`")),
                ),
            }
            return;
        };
        let empty = Map::new();
        let properties = schema["properties"].as_object().unwrap_or(&empty);
        for required in schema["required"].as_array().into_iter().flatten() {
            let Some(required) = required.as_str() else {
                continue;
            };
            if !entries.iter().any(|(k, _)| k.name == required) {
                // The key's schema may say what its absence means (`x-missing`) and how to
                // write it (`x-hint`).
                let property = properties.get(required);
                let message = match property.and_then(|p| p["x-missing"].as_str()) {
                    Some(message) => message.to_string(),
                    None => format!("{what} needs `{required}`"),
                };
                let hint = match property.and_then(|p| p["x-hint"].as_str()) {
                    Some(hint) => hint.to_string(),
                    None => format!("add `{required}: ...`"),
                };
                self.error(node.pos, message, Some(hint));
            }
        }
        for (k, value) in entries {
            if let Some(property) = properties.get(&k.name) {
                // `x-name`: what the value (each value, for a list or map) is called.
                let name = property["x-name"].as_str().unwrap_or(&k.name);
                self.value(value, property, name, what);
                continue;
            }
            // `unevaluatedProperties` is what schemars writes for a type with flattened parts.
            let others = schema
                .get("additionalProperties")
                .or_else(|| schema.get("unevaluatedProperties"));
            // `patternProperties` as schemars writes it here: `^x-` and the like, prefixes.
            let free = schema["patternProperties"]
                .as_object()
                .is_some_and(|patterns| {
                    (patterns.keys())
                        .any(|p| p.strip_prefix('^').is_some_and(|p| k.name.starts_with(p)))
                });
            match others {
                _ if free => {}
                Some(Json::Bool(false)) => {
                    let known = properties.keys().map(String::as_str);
                    let hint = match did_you_mean(&k.name, known.clone()) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => {
                            format!("valid keys here: {}", known.collect::<Vec<_>>().join(", "))
                        }
                    };
                    self.error(
                        k.pos,
                        format!("unknown key `{}` in {what}", k.name),
                        Some(hint),
                    );
                }
                Some(values @ Json::Object(_)) => {
                    let name = schema["x-name"].as_str().unwrap_or(&k.name);
                    self.value(value, values, name, what)
                }
                _ => {}
            }
        }
    }

    fn list(&mut self, node: &Node, schema: &Json, key: &str) {
        let Value::Seq(items) = &node.value else {
            // An example of the list, when the schema has one, shows how to write it.
            let hint = schema["examples"][0].as_array().map(|example| {
                let items: Vec<_> = example
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
                    .collect();
                format!("write e.g. `{key}: [{}]`", items.join(", "))
            });
            self.error(
                node.pos,
                format!("`{key}` must be a list, found {}", node.value.kind()),
                hint,
            );
            return;
        };
        if let Some(item) = schema.get("items") {
            for node in items {
                self.value(node, item, key, key);
            }
        }
    }

    /// The first alternative `node` fits; else the errors of the one of its kind.
    fn alternatives(&mut self, node: &Node, alternatives: &[Json], key: &str, what: &str) {
        let mut best: Option<Vec<Diagnostic>> = None;
        // A `${...}` is interpolated before the value is checked: what it stands for must fit
        // one of the other alternatives.
        let interpolation = |a: &&Json| a["pattern"].as_str() == Some(INTERPOLATION);
        for alternative in alternatives.iter().filter(|a| !interpolation(a)) {
            let mut trial = Validator::new(self.root, self.lookup).skipping(self.skip);
            trial.value(node, alternative, key, what);
            if trial.errors.is_empty() {
                return;
            }
            if best.is_none() || self.is_of_kind(node, alternative) {
                best = Some(trial.errors);
            }
        }
        self.errors.extend(best.unwrap_or_default());
    }

    /// Whether `schema` describes the kind of value `node` is (a mapping, a list).
    fn is_of_kind(&self, node: &Node, schema: &Json) -> bool {
        let schema = match schema.get("$ref").and_then(Json::as_str) {
            Some(reference) => &self.root["$defs"][reference.rsplit('/').next().unwrap_or("")],
            None => schema,
        };
        matches!(
            (&node.value, schema.get("type").and_then(Json::as_str)),
            (Value::Map(_), Some("object")) | (Value::Seq(_), Some("array"))
        )
    }

    /// One of the `choices` (numbers among them as their text). The schema may word the
    /// error itself: `errorMessage` (with `{value}`) and `x-hint`.
    fn choice(&mut self, node: &Node, choices: &[Json], schema: &Json, key: &str) {
        let Some(text) = self.text(node, key) else {
            return;
        };
        let names: Vec<String> = choices
            .iter()
            .map(|c| c.as_str().map_or_else(|| c.to_string(), String::from))
            .collect();
        if names.contains(&text) {
            return;
        }
        let message = match schema["errorMessage"].as_str() {
            Some(message) => message.replace("{value}", &text).replace("{key}", key),
            None => format!("`{text}` is not a valid `{key}`"),
        };
        let hint = match (
            schema["x-hint"].as_str(),
            did_you_mean(&text, names.iter().map(String::as_str)),
        ) {
            (Some(hint), _) => hint.to_string(),
            (None, Some(close)) => format!("did you mean `{close}`? one of: {}", names.join(", ")),
            (None, None) => format!("one of: {}", names.join(", ")),
        };
        self.error(node.pos, message, Some(hint));
    }

    /// The node's text, interpolated; a number or boolean as its text. `None` (reported) when
    /// it is no scalar or its interpolation fails.
    fn text(&mut self, node: &Node, key: &str) -> Option<String> {
        scalar_text(node, key, self.lookup)
            .map_err(|e| self.errors.push(e))
            .ok()
    }

    fn scalar(&mut self, node: &Node, scalar: Scalar, key: &str) {
        match scalar {
            Scalar::Text => {
                self.text(node, key);
            }
            Scalar::Flag => {
                let wrong = match &node.value {
                    Value::Bool(_) => return,
                    // The text as written: an interpolated secret is not echoed.
                    Value::Str(s) => match self.text(node, key).as_deref() {
                        Some("true" | "false") | None => return,
                        Some(_) => format!("`{s}`"),
                    },
                    other => other.kind().to_string(),
                };
                let message = format!("`{key}` must be true or false, not {wrong}");
                self.error(node.pos, message, None);
            }
            Scalar::Whole { min, max } => {
                let value = match &node.value {
                    Value::Int(i) => u64::try_from(*i).ok(),
                    Value::Str(_) => match self.text(node, key) {
                        Some(text) => text.trim().parse::<u64>().ok(),
                        None => return,
                    },
                    _ => None,
                };
                if !value.is_some_and(|v| (min..=max).contains(&v)) {
                    let message = format!("`{key}` must be a whole number from {min} to {max}");
                    self.error(node.pos, message, None);
                }
            }
            Scalar::Duration => {
                let checked = match &node.value {
                    Value::Int(i) => duration_of_seconds(*i as f64).map(drop),
                    Value::Float(f) => duration_of_seconds(*f).map(drop),
                    _ => match self.text(node, key) {
                        Some(text) => check_duration(&text).map(drop),
                        None => return,
                    },
                };
                self.number_problem(node, key, checked, DURATION_HINT);
            }
            Scalar::Size => {
                let checked = match &node.value {
                    Value::Int(i) if *i < 0 => Err(NumberProblem::Negative),
                    Value::Int(i) => check_size(&i.to_string()).map(drop),
                    _ => match self.text(node, key) {
                        Some(text) => check_size(&text).map(drop),
                        None => return,
                    },
                };
                self.number_problem(node, key, checked, SIZE_HINT);
            }
        }
    }

    fn number_problem(
        &mut self,
        node: &Node,
        key: &str,
        checked: Result<(), NumberProblem>,
        hint: &str,
    ) {
        if let Err(problem) = checked {
            self.error(node.pos, format!("`{key}` {problem}"), Some(hint.into()));
        }
    }
}

/// The values of a `oneOf` whose alternatives are each one `const`, if it is one.
fn constants(schema: &Json) -> Option<Vec<Json>> {
    let alternatives = schema.get("oneOf")?.as_array()?;
    alternatives
        .iter()
        .map(|a| a.get("const").cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{LoopGuard, Queue};
    use crate::config::schema;
    use crate::config::yaml;
    use crate::connectors::mqtt::config::MqttSection;

    fn lookup() -> Lookup<'static> {
        Lookup {
            var: &|name| (name == "POLICY").then(|| "drop_oldest".to_string()),
            file: &|_| Err(std::io::Error::other("none")),
        }
    }

    /// Every error in `text` read as a `T`, as `LINE:COL message | hint`.
    fn errors<T: schemars::JsonSchema>(text: &str) -> Vec<String> {
        let schema = schema::section_schema::<T>();
        let node = yaml::parse(text).unwrap();
        let what = name_of(&T::schema_name()).unwrap_or("a mapping");
        Validator::new(schema.root(), &lookup())
            .check(&node, schema.part(), what)
            .into_iter()
            .map(|d| {
                let hint = d.hint.unwrap_or_default();
                format!("{}:{} {} | {hint}", d.pos.line, d.pos.col, d.message)
            })
            .collect()
    }

    #[test]
    fn collects_every_error_with_its_place() {
        let found = errors::<Queue>("max_mesages: 5\nmax_bytes: lots\nwhen_full: drop_all\n");
        assert_eq!(
            found,
            [
                "1:1 unknown key `max_mesages` in `queue` | did you mean `max_messages`?",
                "2:12 `max_bytes` is not a size | write a number of bytes, or e.g. `512KiB`, `16MiB`, `1GiB`; at most 1048576GiB (1 PiB)",
                "3:12 `drop_all` is not a valid `when_full` policy | one of: block, drop_oldest, drop_newest",
            ]
        );
    }

    #[test]
    fn a_missing_key_a_wrong_kind_and_a_range() {
        let found = errors::<MqttSection>("version: 6\nclean_start: maybe\nlast_will: []\n");
        assert_eq!(
            found,
            [
                "1:1 an MQTT connection needs `url` | add `url: ...`",
                "1:10 MQTT version `6` is not supported | write `version: 5` or `version: \"3.1.1\"`",
                "2:14 `clean_start` must be true or false, not `maybe` | ",
                "3:12 expected a mapping for `last_will`, found a list | write `key: value` pairs, indented under it",
            ]
        );
        let found = errors::<LoopGuard>("max_hops: 300\nsurprise: 1\n");
        assert_eq!(
            found,
            [
                "1:11 `max_hops` must be a whole number from 1 to 255 | ",
                "2:1 unknown key `surprise` in `loop_guard` | valid keys here: instance, max_hops",
            ]
        );
    }

    /// A reference is checked for what it stands for; one that cannot be resolved is said so.
    #[test]
    fn interpolations_are_checked_for_their_value() {
        assert!(errors::<Queue>("when_full: ${POLICY}\n").is_empty());
        let found = errors::<Queue>("when_full: ${NOPE}\n");
        assert_eq!(
            found,
            [
                "1:12 environment variable `NOPE` is not set | set it, or give a default: ${NOPE:-value}"
            ]
        );
        assert!(errors::<Queue>("max_messages: \"12\"\nmax_bytes: 1024\n").is_empty());
    }
}
