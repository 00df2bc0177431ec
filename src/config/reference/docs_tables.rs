//! The key tables of the configuration reference in docs/, rendered from the reference's
//! walk of the schema (`mod.rs`).
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

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Body, Part, Word, definitions, part, reading_order};

const BEGIN: &str = "<!-- generated from `ferry schema`:";
const END: &str = "<!-- end of generated part -->";

/// The pages (path under docs/, text) with each generated part rendered again from `schema`.
/// A definition's table is on the page whose marker names it; `*` takes the file itself and
/// every definition no other page names. Links between tables lead to wherever each is.
pub fn render_pages(pages: &[(String, String)], schema: &Value) -> Result<Vec<String>, String> {
    let defs = definitions(schema).ok_or("the schema has no $defs")?;
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
        for name in reading_order(schema) {
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
    let links = Links { home, from: path };
    for names in markers(page, path)? {
        let start = rest.find(BEGIN).expect("markers() found it");
        let line_end = start + rest[start..].find('\n').expect("markers() found it");
        out.push_str(&rest[..=line_end]);
        let names: Vec<String> = if names == ["*"] {
            reading_order(schema)
                .into_iter()
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
    let mut out = Vec::new();
    for name in names {
        let title = if name.is_empty() {
            "The file".to_string()
        } else {
            format!("`{name}`")
        };
        out.push(format!(
            "### {title}\n\n{}",
            table(&part(schema, name), links)
        ));
    }
    out.join("\n\n")
}

/// Where a definition's name links to: its table, on this page or another under docs/.
struct Links<'a> {
    home: &'a BTreeMap<String, String>,
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

    /// What a value takes, with each other part a link to its table.
    fn words(&self, words: &[Word]) -> String {
        words
            .iter()
            .map(|word| match word {
                Word::Plain(words) => words.clone(),
                Word::Value(value) => code(value),
                Word::Part(name) => self.to(name),
            })
            .collect()
    }
}

/// One part: what it is, then its keys, its values or its alternatives.
fn table(part: &Part, links: &Links) -> String {
    let mut out = cell(&part.description);
    let mut add = |table: String| {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&table);
    };
    match &part.body {
        Body::Keys(keys) => {
            let mut table =
                String::from("| key | takes | default | what it is |\n|---|---|---|---|");
            for key in keys {
                let name = if key.required {
                    format!("`{}` (required)", key.name)
                } else {
                    format!("`{}`", key.name)
                };
                table.push_str(&format!(
                    "\n| {name} | {} | {} | {} |",
                    links.words(&key.takes),
                    key.default.as_deref().map(code).unwrap_or_default(),
                    cell(&key.description)
                ));
            }
            add(table);
        }
        Body::Values(values) => {
            let mut table = String::from("| value | what it means |\n|---|---|");
            for (value, meaning) in values {
                table.push_str(&format!("\n| {} | {} |", code(value), cell(meaning)));
            }
            add(table);
        }
        Body::Takes(words) => add(format!("Takes {}.", links.words(words))),
    }
    out
}

/// A value as written in the file, as code in a table cell.
fn code(value: &str) -> String {
    format!("`{}`", value.replace('|', r"\|"))
}

/// A description, safe in a table cell.
fn cell(description: &str) -> String {
    description.replace('|', r"\|")
}

#[cfg(test)]
mod tests {
    use super::super::takes;
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn schema() -> Value {
        serde_json::from_str(&crate::config::schema::json()).unwrap()
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
        let links = Links {
            home: &home,
            from: "connectors/mqtt.md",
        };
        let words = |v: Value| links.words(&takes(&v, &serde_json::Map::new()));
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
