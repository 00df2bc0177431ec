//! The reference of `bridges.yaml`: every part of the file with its keys, what each takes, its
//! default and what it is, read from the JSON Schema `ferry schema` prints (whose descriptions
//! are the configuration types' doc comments), so the reference says what the schema says and
//! cannot drift from it.
//!
//! One walk of the schema, two renderings of it: the key tables in docs/ (`docs_tables.rs`,
//! kept by a test) and the bridges.yaml(5) manual page (`man_page.rs`, `ferry man
//! bridges.yaml`).

#[cfg(test)]
mod docs_tables;
mod man_page;

pub use man_page::man_page;

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One part of the file: the file itself, or one definition of the schema (`Admin`,
/// `MqttConnection`, `Route`...), as the reference shows it.
struct Part {
    /// What it is, on one line (Markdown: `code` in backquotes).
    description: String,
    body: Body,
}

enum Body {
    /// A mapping: its keys, by name.
    Keys(Vec<Key>),
    /// One of a few named values (`json`, `text`, `bytes`), each with what it means.
    Values(Vec<(String, String)>),
    /// A value of another form: one of several parts, names each to a part, a list...
    Takes(Words),
}

struct Key {
    name: String,
    required: bool,
    takes: Words,
    /// The default as written in the file.
    default: Option<String>,
    /// What it is, on one line (Markdown: `code` in backquotes).
    description: String,
}

/// What a value takes, in words that each rendering formats its own way.
type Words = Vec<Word>;

#[derive(Clone, Debug, PartialEq)]
enum Word {
    /// Words of ours: "a list of", "duration".
    Plain(String),
    /// A value as written in the file: `true`, `block`, `""`.
    Value(String),
    /// The name of another part, which has its own table or section.
    Part(String),
}

/// The parts in the order a reader meets them: the file itself (`""`) first, then the
/// definitions depth first from the file's keys, then any the walk did not reach. A scalar
/// form (a flag, text, a duration...) is said in words wherever it is used: no part of its own.
fn reading_order(schema: &Value) -> Vec<String> {
    fn walk(v: &Value, defs: &Map<String, Value>, seen: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(name) = o.get("$ref").and_then(Value::as_str).and_then(def_name)
                    && !seen.iter().any(|s| s == name)
                {
                    seen.push(name.to_string());
                    if let Some(def) = defs.get(name) {
                        walk(def, defs, seen);
                    }
                }
                for (key, child) in o {
                    if key != "$defs" {
                        walk(child, defs, seen);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, defs, seen)),
            _ => {}
        }
    }
    let no_defs = Map::new();
    let defs = definitions(schema).unwrap_or(&no_defs);
    let mut seen = vec![String::new()];
    walk(schema, defs, &mut seen);
    for name in defs.keys() {
        if !seen.contains(name) {
            seen.push(name.clone());
        }
    }
    seen.retain(|name| !defs.get(name).is_some_and(is_scalar));
    seen
}

fn definitions(schema: &Value) -> Option<&Map<String, Value>> {
    schema["$defs"].as_object()
}

fn def_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/$defs/")
}

/// The part `name` (`""`: the file itself) of `schema`, which defines it.
fn part(schema: &Value, name: &str) -> Part {
    let no_defs = Map::new();
    let defs = definitions(schema).unwrap_or(&no_defs);
    let def = if name.is_empty() { schema } else { &defs[name] };
    let body = if let Some(props) = def.get("properties").and_then(Value::as_object) {
        let required: BTreeSet<&str> = def["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        Body::Keys(
            props
                .iter()
                .map(|(key, prop)| Key {
                    name: key.clone(),
                    required: required.contains(key.as_str()),
                    takes: takes(prop, defs),
                    default: prop.get("default").map(literal),
                    description: text(prop.get("description")),
                })
                .collect(),
        )
    } else if let Some(values) = def["oneOf"]
        .as_array()
        .filter(|alts| alts.iter().all(|a| a.get("const").is_some()))
    {
        Body::Values(
            values
                .iter()
                .map(|value| (literal(&value["const"]), text(value.get("description"))))
                .collect(),
        )
    } else {
        Body::Takes(takes(def, defs))
    };
    Part {
        description: text(def.get("description")),
        body,
    }
}

/// What a value takes, in words: `duration`, `a whole number from 1 to 64`, `` `a` or `b` ``,
/// another part... A `${...}` alternative is left out: every value may be one.
fn takes(v: &Value, defs: &Map<String, Value>) -> Words {
    let plain = |words: &str| vec![Word::Plain(words.into())];
    if let Some(name) = v.get("$ref").and_then(Value::as_str).and_then(def_name) {
        return match defs.get(name) {
            Some(def) if is_scalar(def) => takes(def, defs),
            _ => vec![Word::Part(name.into())],
        };
    }
    if let Some(alts) = v.get("anyOf").or(v.get("oneOf")).and_then(Value::as_array) {
        let alts: Vec<&Value> = alts.iter().filter(|a| !is_interpolation(a)).collect();
        let pattern = |a: &&Value| a["pattern"].as_str().unwrap_or_default().to_string();
        if alts.iter().map(pattern).any(|p| p.contains("ms|s|m")) {
            return plain("duration");
        }
        if alts.iter().map(pattern).any(|p| p.contains("[kKmMgG]")) {
            return plain("size");
        }
        let has_integer = alts.iter().any(|a| a["type"] == "integer");
        let mut choices: Vec<Words> = Vec::new();
        for alt in alts {
            // "12" for 12: the same whole number, written as text.
            if has_integer && alt["type"] == "string" && alt["pattern"] == DIGITS {
                continue;
            }
            let words = takes(alt, defs);
            if !choices.contains(&words) {
                choices.push(words);
            }
        }
        return joined(choices, ", or ");
    }
    if let Some(values) = v.get("enum").and_then(Value::as_array) {
        let mut seen = Vec::new();
        for value in values {
            let value = vec![Word::Value(literal(value))];
            if !seen.contains(&value) {
                seen.push(value);
            }
        }
        return one_of(seen);
    }
    if let Some(value) = v.get("const") {
        return vec![Word::Value(literal(value))];
    }
    let of = |words: &str, what: &Value| {
        let mut out = plain(words);
        out.extend(takes(what, defs));
        out
    };
    match &v["type"] {
        Value::Array(_) => plain("text"),
        Value::String(t) => match t.as_str() {
            "boolean" => one_of(vec![
                vec![Word::Value("true".into())],
                vec![Word::Value("false".into())],
            ]),
            "integer" => match (v["minimum"].as_i64(), v["maximum"].as_i64()) {
                (Some(min), Some(max)) => plain(&format!("a whole number from {min} to {max}")),
                (Some(min), None) => plain(&format!("a whole number, at least {min}")),
                _ => plain("a whole number"),
            },
            "number" => plain("a number"),
            "array" => of("a list of ", &v["items"]),
            "object" => match v.get("additionalProperties") {
                Some(values @ Value::Object(_)) => of("names, each to ", values),
                _ => plain("a mapping"),
            },
            _ => plain("text"),
        },
        _ => plain("anything"),
    }
}

/// A definition with no keys, no alternatives of its own kind and no named values: a way to
/// write one value (`Flag`, `Text`, `Duration`, `Size`, `Whole_1_64`).
fn is_scalar(def: &Value) -> bool {
    def.get("properties").is_none()
        && def.get("additionalProperties").is_none()
        && def.get("oneOf").is_none()
        && def
            .get("anyOf")
            .and_then(Value::as_array)
            .is_none_or(|alts| {
                alts.iter()
                    .all(|a| a.get("$ref").is_none() && a["type"] != "object")
            })
}

/// The pattern of a whole number written as text.
const DIGITS: &str = r"^\s*[0-9]+\s*$";

/// `${...}`: written where any value may be.
fn is_interpolation(v: &Value) -> bool {
    v["type"] == "string" && v["pattern"].as_str().is_some_and(|p| p.contains(r"\$\{"))
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(choices: Vec<Words>) -> Words {
    let Some((last, init)) = choices.split_last() else {
        return Vec::new();
    };
    if init.is_empty() {
        return last.clone();
    }
    let mut out = joined(init.to_vec(), ", ");
    out.push(Word::Plain(" or ".into()));
    out.extend(last.iter().cloned());
    out
}

fn joined(choices: Vec<Words>, separator: &str) -> Words {
    let mut out = Vec::new();
    for (i, words) in choices.into_iter().enumerate() {
        if i > 0 {
            out.push(Word::Plain(separator.into()));
        }
        out.extend(words);
    }
    out
}

/// A value as written in the file: `""` for the empty text.
fn literal(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A description on one line.
fn text(description: Option<&Value>) -> String {
    description
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
