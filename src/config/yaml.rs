//! YAML read into a tree whose every node and key knows its line and column, so every error,
//! even one found long after parsing, can point at the place in the file. serde-saphyr does the
//! YAML (anchors, `<<:` merge keys); this module only keeps the positions.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A position in the file, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u64,
    pub col: u64,
}

/// A YAML value with its position.
#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Clone, Debug)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

impl Node {
    /// The value of `key`, when this is a mapping that has it: where a check made after
    /// deserializing points its error.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl Value {
    /// What a user would call this kind of value, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

fn pos(location: &serde_saphyr::Location) -> Pos {
    Pos {
        line: location.line(),
        col: location.column(),
    }
}

/// How deep mappings and lists may nest in a configuration file.
pub const MAX_NESTING: usize = 24;

/// Parses `text`; a syntax error comes back with its position.
pub fn parse(text: &str) -> Result<Node, (Pos, String)> {
    if text.trim().is_empty() {
        return Ok(Node {
            value: Value::Map(Vec::new()),
            pos: Pos { line: 1, col: 1 },
        });
    }
    // Strict booleans: a key or value `y`, `n`, `on` or `off` stays a string, as a user means it.
    // Nesting is bounded well below the parser's default of 64 levels: each level costs the
    // deserializer tens of KiB of stack in a debug build, so 64 overflowed the 2 MiB stack of
    // a runtime thread (where a reload parses); bridges.yaml itself never nests past 8.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! { max_depth: MAX_NESTING },
    };
    match serde_saphyr::from_str_with_options::<Node>(text, options) {
        Ok(node) => Ok(node),
        Err(e) => {
            let at = e
                .location()
                .map(|l| pos(&l))
                .unwrap_or(Pos { line: 1, col: 1 });
            // The message alone: the caller prints its own `file:line:col`.
            let message = e.to_string();
            let message = message.lines().next().unwrap_or("invalid YAML").to_string();
            Err((at, message))
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            pos: pos(&spanned.referenced),
            value: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("number too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(node) = seq.next_element::<Node>()? {
            items.push(node);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Node>()?;
            entries.push((
                Key {
                    name: key.value,
                    pos: pos(&key.referenced),
                },
                value,
            ));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_and_merges() {
        let text = "base: &b\n  x: 1\nroutes:\n  - name: a\n    <<: *b\n    y: \"two\"\n";
        let node = parse(text).unwrap();
        let Value::Map(top) = &node.value else {
            panic!()
        };
        assert_eq!(top[1].0.name, "routes");
        assert_eq!(top[1].0.pos, Pos { line: 3, col: 1 });
        let Value::Seq(routes) = &top[1].1.value else {
            panic!()
        };
        let Value::Map(route) = &routes[0].value else {
            panic!()
        };
        let names: Vec<_> = route.iter().map(|(k, _)| k.name.as_str()).collect();
        assert!(names.contains(&"x"), "merge key applied: {names:?}");
        let y = route.iter().find(|(k, _)| k.name == "y").unwrap();
        assert_eq!(y.1.pos, Pos { line: 6, col: 8 });
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let (at, message) = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(at.line >= 1, "{at:?} {message}");
    }
}
