//! The configuration reference's key tables, rendered from the JSON Schema `ferry schema`
//! prints (whose descriptions are the configuration types' doc comments), so the reference
//! says what the schema says and cannot drift from it.
//!
//! A page asks for tables with a marker comment naming the schema's definitions to render
//! (`*`: the file itself and every definition), and the tables go between it and the end
//! marker; prose around them stays hand-written:
//!
//! ```text
//! <!-- generated from `ferry schema`: MqttConnection MqttSource MqttSink -->
//! ...
//! <!-- end of generated part -->
//! ```
//!
//! The test below fails when a page's tables differ from what the schema gives;
//! `FERRY_BLESS=1 cargo test --lib config::reference` writes them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

const BEGIN: &str = "<!-- generated from `ferry schema`:";
const END: &str = "<!-- end of generated part -->";

/// The pages (path under docs/, text) with each generated part rendered again from `schema`.
/// A definition's table is on the page whose marker names it; `*` takes the file itself and
/// every definition no other page names. Links between tables lead to wherever each is.
pub fn render_pages(pages: &[(String, String)], schema: &Value) -> Result<Vec<String>, String> {
    let defs = schema["$defs"]
        .as_object()
        .ok_or("the schema has no $defs")?;
    let mut home = BTreeMap::new();
    let mut rest_page = None;
    for (path, page) in pages {
        for names in markers(page, path)? {
            if names == ["*"] {
                rest_page = Some(path.clone());
                continue;
            }
            for name in names {
                if !defs.contains_key(&name) {
                    return Err(format!("{path}: the schema defines no `{name}`"));
                }
                home.insert(name, path.clone());
            }
        }
    }
    if let Some(page) = rest_page {
        for name in std::iter::once(String::new()).chain(reading_order(schema, defs)) {
            home.entry(name).or_insert_with(|| page.clone());
        }
    }
    pages
        .iter()
        .map(|(path, page)| render_page(page, path, schema, &home))
        .collect()
}

/// The definition names of each marker on `page`, in order.
fn markers(page: &str, path: &str) -> Result<Vec<Vec<String>>, String> {
    let mut found = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find(BEGIN) {
        let line_end = start
            + rest[start..]
                .find('\n')
                .ok_or_else(|| format!("{path}: a marker ends the page"))?;
        found.push(
            rest[start + BEGIN.len()..line_end]
                .trim()
                .trim_end_matches("-->")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        );
        rest = &rest[line_end..];
        if !rest.contains(END) {
            return Err(format!("{path}: a generated part has no `{END}`"));
        }
    }
    Ok(found)
}

/// `page` with its generated parts rendered again; `home` says where each table is.
fn render_page(
    page: &str,
    path: &str,
    schema: &Value,
    home: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = page;
    let no_defs = Map::new();
    let defs = schema["$defs"].as_object().unwrap_or(&no_defs);
    let links = Links {
        home,
        defs,
        from: path,
    };
    for names in markers(page, path)? {
        let start = rest.find(BEGIN).expect("markers() found it");
        let line_end = start + rest[start..].find('\n').expect("markers() found it");
        out.push_str(&rest[..=line_end]);
        let names: Vec<String> = if names == ["*"] {
            let defs = schema["$defs"].as_object().expect("render_pages() checked");
            std::iter::once(String::new())
                .chain(reading_order(schema, defs))
                .filter(|name| home.get(name).is_some_and(|p| p == path))
                .collect()
        } else {
            names
        };
        out.push('\n');
        out.push_str(&tables(schema, &names, &links));
        out.push_str("\n\n");
        let after = &rest[line_end + 1..];
        rest = &after[after.find(END).expect("markers() found it")..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The tables of the definitions `names` (`""`: the file itself), in that order.
fn tables(schema: &Value, names: &[String], links: &Links) -> String {
    let defs = schema["$defs"].as_object().expect("render_pages() checked");
    let mut out = Vec::new();
    for name in names {
        let (title, def) = if name.is_empty() {
            ("The file".to_string(), schema)
        } else {
            (format!("`{name}`"), &defs[name])
        };
        out.push(format!("### {title}\n\n{}", definition(def, links)));
    }
    out.join("\n\n")
}

/// The definitions in the order a reader meets them: depth first from the file's keys, then
/// any the walk did not reach.
fn reading_order(schema: &Value, defs: &Map<String, Value>) -> Vec<String> {
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
    let mut seen = Vec::new();
    walk(schema, defs, &mut seen);
    for name in defs.keys() {
        if !seen.contains(name) {
            seen.push(name.clone());
        }
    }
    // A scalar form is said in words wherever it is used (see `takes`): no table of its own.
    seen.retain(|name| !defs.get(name).is_some_and(is_scalar));
    seen
}

fn def_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/$defs/")
}

/// Where a definition's name links to: its table, on this page or another under docs/.
struct Links<'a> {
    home: &'a BTreeMap<String, String>,
    /// Every definition: a scalar form (a flag, text, a duration...) is said in words where it
    /// is used rather than linked, as the reader would say it.
    defs: &'a Map<String, Value>,
    /// The page being written, as a path under docs/.
    from: &'a str,
}

impl Links<'_> {
    fn to(&self, name: &str) -> String {
        let page = match self.home.get(name) {
            Some(page) if page != self.from => {
                format!("{}{page}", "../".repeat(self.from.matches('/').count()))
            }
            _ => String::new(),
        };
        format!("[`{name}`]({page}#{})", name.to_lowercase())
    }
}

/// One definition: what it is, then its keys, its values or its alternatives.
fn definition(def: &Value, links: &Links) -> String {
    let mut out = text(def.get("description"));
    let mut add = |part: String| {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&part);
    };
    if let Some(props) = def.get("properties").and_then(Value::as_object) {
        let required: BTreeSet<&str> = def["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut table = String::from("| key | takes | default | what it is |\n|---|---|---|---|");
        for (key, prop) in props {
            let key = if required.contains(key.as_str()) {
                format!("`{key}` (required)")
            } else {
                format!("`{key}`")
            };
            table.push_str(&format!(
                "\n| {key} | {} | {} | {} |",
                takes(prop, links),
                default(prop),
                text(prop.get("description"))
            ));
        }
        add(table);
    } else if let Some(values) = def["oneOf"]
        .as_array()
        .filter(|alts| alts.iter().all(|a| a.get("const").is_some()))
    {
        let mut table = String::from("| value | what it means |\n|---|---|");
        for value in values {
            table.push_str(&format!(
                "\n| {} | {} |",
                literal(&value["const"]),
                text(value.get("description"))
            ));
        }
        add(table);
    } else {
        add(format!("Takes {}.", takes(def, links)));
    }
    out
}

/// What a value takes, in words: `duration`, `a whole number from 1 to 64`, `` `a` or `b` ``,
/// a link to a definition... A `${...}` alternative is left out: every value may be one.
fn takes(v: &Value, links: &Links) -> String {
    if let Some(name) = v.get("$ref").and_then(Value::as_str).and_then(def_name) {
        return match links.defs.get(name) {
            Some(def) if is_scalar(def) => takes(def, links),
            _ => links.to(name),
        };
    }
    if let Some(alts) = v.get("anyOf").or(v.get("oneOf")).and_then(Value::as_array) {
        let alts: Vec<&Value> = alts.iter().filter(|a| !is_interpolation(a)).collect();
        let pattern = |a: &&Value| a["pattern"].as_str().unwrap_or_default().to_string();
        if alts.iter().map(pattern).any(|p| p.contains("ms|s|m")) {
            return "duration".into();
        }
        if alts.iter().map(pattern).any(|p| p.contains("[kKmMgG]")) {
            return "size".into();
        }
        let has_integer = alts.iter().any(|a| a["type"] == "integer");
        let mut words: Vec<String> = Vec::new();
        for alt in alts {
            // "12" for 12: the same whole number, written as text.
            if has_integer && alt["type"] == "string" && alt["pattern"] == DIGITS {
                continue;
            }
            let word = takes(alt, links);
            if !words.contains(&word) {
                words.push(word);
            }
        }
        return words.join(", or ");
    }
    if let Some(values) = v.get("enum").and_then(Value::as_array) {
        let mut seen = Vec::new();
        for value in values {
            let value = literal(value);
            if !seen.contains(&value) {
                seen.push(value);
            }
        }
        return one_of(&seen);
    }
    if let Some(value) = v.get("const") {
        return literal(value);
    }
    match &v["type"] {
        Value::Array(_) => "text".into(),
        Value::String(t) => match t.as_str() {
            "boolean" => one_of(&["`true`".into(), "`false`".into()]),
            "integer" => match (v["minimum"].as_i64(), v["maximum"].as_i64()) {
                (Some(min), Some(max)) => format!("a whole number from {min} to {max}"),
                (Some(min), None) => format!("a whole number, at least {min}"),
                _ => "a whole number".into(),
            },
            "number" => "a number".into(),
            "array" => format!("a list of {}", takes(&v["items"], links)),
            "object" => match v.get("additionalProperties") {
                Some(values @ Value::Object(_)) => {
                    format!("names, each to {}", takes(values, links))
                }
                _ => "a mapping".into(),
            },
            _ => "text".into(),
        },
        _ => "anything".into(),
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

fn one_of(values: &[String]) -> String {
    match values {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn literal(v: &Value) -> String {
    let shown = match v {
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!("`{}`", shown.replace('|', r"\|"))
}

fn default(prop: &Value) -> String {
    prop.get("default").map(literal).unwrap_or_default()
}

/// A description on one line, safe in a table cell.
fn text(description: Option<&Value>) -> String {
    description
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', r"\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn schema() -> Value {
        serde_json::from_str(&super::super::schema::json()).unwrap()
    }

    /// Every page under docs/, as (path under docs/, text), in a stable order.
    fn docs_pages(docs: &Path) -> Vec<(String, String)> {
        let mut pages = Vec::new();
        let mut dirs = vec![docs.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let file = entry.unwrap().path();
                if file.is_dir() {
                    dirs.push(file);
                } else if file.extension().is_some_and(|e| e == "md") {
                    let path = file.strip_prefix(docs).unwrap().display().to_string();
                    pages.push((path, std::fs::read_to_string(&file).unwrap()));
                }
            }
        }
        pages.sort();
        pages
    }

    /// The key tables in docs/ are what the schema says now. With `FERRY_BLESS=1` the pages
    /// are written instead.
    #[test]
    fn docs_key_tables_match_the_schema() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        let pages = docs_pages(&docs);
        assert!(
            pages.iter().any(|(_, page)| page.contains(BEGIN)),
            "no page under docs/ has a generated part"
        );
        let fresh = render_pages(&pages, &schema()).unwrap();
        let bless = std::env::var_os("FERRY_BLESS").is_some_and(|v| v == "1");
        let mut stale = Vec::new();
        for ((path, page), fresh) in pages.iter().zip(fresh) {
            if *page == fresh {
                continue;
            }
            if bless {
                std::fs::write(docs.join(path), fresh).unwrap();
            } else {
                stale.push(path.as_str());
            }
        }
        assert!(
            stale.is_empty(),
            "the key tables of docs/{} differ from `ferry schema`; write them with \
             FERRY_BLESS=1 cargo test --lib config::reference",
            stale.join(", docs/")
        );
    }

    #[test]
    fn takes_says_in_words_what_a_value_takes() {
        let home: BTreeMap<String, String> = [
            ("Probe".to_string(), "connectors/mqtt.md".to_string()),
            ("Tls".to_string(), "configuration.md".to_string()),
        ]
        .into();
        let defs = Map::new();
        let links = Links {
            home: &home,
            defs: &defs,
            from: "connectors/mqtt.md",
        };
        let words = |v: Value| takes(&v, &links);
        let env = json!({"type": "string", "pattern": r"\$\{[^}]+\}"});
        let duration = json!({"anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": r"^\s*([0-9]+)\s*(ms|s|m|min|h|d)?\s*$"},
            env
        ]});
        assert_eq!(words(duration), "duration");
        let threads = json!({"anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 64},
            {"type": "string", "pattern": r"^\s*[0-9]+\s*$"},
            env
        ]});
        assert_eq!(words(threads), "a whole number from 1 to 64");
        let flag = json!({"anyOf": [{"type": "boolean"}, {"enum": ["true", "false"]}, env]});
        assert_eq!(words(flag), "`true` or `false`");
        let probe = json!({"anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/Probe"}]});
        assert_eq!(words(probe), "`true` or `false`, or [`Probe`](#probe)");
        let tls = json!({"$ref": "#/$defs/Tls"});
        assert_eq!(words(tls), "[`Tls`](../configuration.md#tls)");
        let retain = json!({"enum": [true, false, "true", "false", "source"]});
        assert_eq!(words(retain), "`true`, `false` or `source`");
    }

    #[test]
    fn a_page_keeps_its_prose_around_the_generated_part() {
        let schema = schema();
        let page = |names: &str| format!("intro\n{BEGIN} {names} -->\nold\n{END}\noutro\n");
        let pages = vec![
            ("configuration.md".to_string(), page("*")),
            ("connectors/mqtt.md".to_string(), page("Probe")),
        ];
        let fresh = render_pages(&pages, &schema).unwrap();
        let mqtt = &fresh[1];
        assert!(mqtt.starts_with(&format!("intro\n{BEGIN} Probe -->\n\n### `Probe`\n")));
        assert!(mqtt.ends_with(&format!("\n\n{END}\noutro\n")), "{mqtt}");
        assert!(!mqtt.contains("old"));
        // Probe is on the MQTT page only; the reference links there.
        assert!(!fresh[0].contains("### `Probe`"));
        assert!(fresh[0].contains("(connectors/mqtt.md#probe)"));
        assert!(fresh[0].contains("### The file") && fresh[0].contains("### `Route`"));
        let again: Vec<(String, String)> = pages
            .iter()
            .map(|(p, _)| p.clone())
            .zip(fresh.clone())
            .collect();
        assert_eq!(render_pages(&again, &schema), Ok(fresh));
        let unknown = vec![("x.md".to_string(), page("Kafka"))];
        let err = render_pages(&unknown, &schema).unwrap_err();
        assert!(err.contains("no `Kafka`"), "{err}");
    }
}
