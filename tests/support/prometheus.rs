//! Reading ferry's `/metrics` as Prometheus would: through the official Prometheus Python
//! client's exposition-format parsers (`prometheus_client.parser` for the text format 0.0.4,
//! `prometheus_client.openmetrics.parser` for OpenMetrics, which refuses anything the
//! OpenMetrics specification does not allow). scripts/setup installs the client.

use std::io::Write;
use std::process::{Command, Stdio};

use super::require_binary;

/// One metric family as the parser read it.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `info`, ...
    pub kind: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

/// One sample: its full name (`..._total`, `..._bucket`), labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Which exposition format a scrape is in.
#[derive(Clone, Copy, Debug)]
pub enum Exposition {
    /// `text/plain; version=0.0.4`.
    Text004,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

const PARSE: &str = r#"
import json, sys
kind = sys.argv[1]
if kind == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    out.append({
        "name": family.name, "type": family.type, "help": family.documentation,
        "samples": [{"name": s.name, "labels": sorted(s.labels.items()), "value": s.value}
                    for s in family.samples],
    })
json.dump(out, sys.stdout)
"#;

/// Parses a scrape with the official parser for its format; panics (with the parser's error
/// and the scrape) when the parser refuses it.
pub fn parse_exposition(body: &str, format: Exposition) -> Vec<Family> {
    let python = require_binary("python3", "python3");
    let mut child = Command::new(python)
        .args([
            "-c",
            PARSE,
            match format {
                Exposition::Text004 => "text",
                Exposition::OpenMetrics => "openmetrics",
            },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser ({format:?}) refused the scrape (scripts/setup installs \
         prometheus-client): {}\n--- scrape\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Family {
            name: f["name"].as_str().unwrap().to_string(),
            kind: f["type"].as_str().unwrap().to_string(),
            help: f["help"].as_str().unwrap().to_string(),
            samples: f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    name: s["name"].as_str().unwrap().to_string(),
                    labels: s["labels"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|kv| {
                            (
                                kv[0].as_str().unwrap().to_string(),
                                kv[1].as_str().unwrap().to_string(),
                            )
                        })
                        .collect(),
                    value: s["value"].as_f64().unwrap(),
                })
                .collect(),
        })
        .collect()
}

/// The value of the one sample named `name` whose labels include every one of `labels`;
/// panics when there is none or more than one.
pub fn sample_value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = families
        .iter()
        .flat_map(|f| &f.samples)
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one sample {name}{labels:?}, found {found:?}"
    );
    found[0].value
}
