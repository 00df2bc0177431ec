//! The reader of the file's sections: each is read through its serde type, checked against
//! its schema, and its errors collected with their positions; and the checks several sections
//! share (TLS, headers, templates, http:// URLs). Each protocol's own checks extend it in its
//! connector's folder (`connectors/<protocol>/read.rs`), so reading a protocol's sections is
//! written where its keys are.

use std::collections::BTreeMap;

use super::decode;
use super::diagnostics::{Diagnostic, Report};
use super::interpolate::Lookup;
use super::model::{Connection, ConnectionKind, Secret, Tls};
use super::redact::redact_url;
use super::yaml::{Key, Node, Pos, Value};
use crate::contracts::admin_listener::OWN_PATHS;
use crate::mapping::template;

/// Errors being collected, and where `${...}` look up their values.
pub struct Reader<'a> {
    pub lookup: &'a Lookup<'a>,
    pub errors: &'a mut Vec<Diagnostic>,
    /// A section read had errors: what is made of it only serves the checks that follow.
    pub damaged: bool,
}

impl<'a> Reader<'a> {
    pub fn new(lookup: &'a Lookup<'a>, errors: &'a mut Vec<Diagnostic>) -> Self {
        Reader {
            lookup,
            errors,
            damaged: false,
        }
    }

    /// The section at `node` read as a `T`, its errors reported; with errors, read without
    /// the keys they are about (see [`decode`]), or `None`.
    pub fn section<T: serde::de::DeserializeOwned + schemars::JsonSchema>(
        &mut self,
        node: &Node,
    ) -> Option<T> {
        self.keep(decode::section(node, self.lookup))
    }

    /// The value of a section read, its errors reported.
    pub fn keep<T>(&mut self, read: decode::Section<T>) -> Option<T> {
        self.damaged |= !read.errors.is_empty();
        self.errors.extend(read.errors);
        read.value
    }

    /// A section's `tls:` (read with it), or no TLS asked for.
    pub fn tls(&mut self, tls: Option<Tls>, section: &Node) -> Tls {
        let Some(tls) = tls else {
            return Tls::default();
        };
        if tls.cert.is_some() != tls.key.is_some() {
            self.errors.report(
                section.get("tls").map_or(section.pos, |n| n.pos),
                "a client certificate needs both `cert` and `key`",
                "give both PEM files, or neither",
            );
        }
        tls
    }

    /// Header names and values, checked; `at` is the `headers:` mapping.
    pub fn headers(
        &mut self,
        headers: Vec<(String, String)>,
        at: Option<&Node>,
    ) -> Vec<(String, Secret)> {
        let positions = key_positions(at);
        headers
            .into_iter()
            .enumerate()
            .filter(|(i, (name, value))| {
                let pos = positions.get(*i).copied().unwrap_or_default();
                self.errors
                    .rule(pos, crate::connectors::http::protocol::header(name, value))
            })
            .map(|(_, (name, value))| (name, Secret::new(value)))
            .collect()
    }

    /// Whether `text` compiles as a template (of `key`, at `pos`) that names only the
    /// `captures` of its route's source; what is wrong is reported.
    pub fn template(&mut self, pos: Pos, key: &str, text: &str, captures: &[String]) -> bool {
        match template::Template::compile(text) {
            Err(message) => {
                self.errors.report(
                    pos,
                    format!("template in `{key}` does not compile: {message}"),
                    "templates use {{ ... }}, e.g. `iot.{{ topic[1] }}.temperature`",
                );
                false
            }
            Ok(t) => match t.unknown_capture(captures) {
                Some(name) => {
                    let hint = if captures.is_empty() {
                        "give the source a `match:` regex with named groups, e.g. `match: '^sensors/(?P<room>[^/]+)/temp$'`".to_string()
                    } else {
                        format!("the source's `match:` defines: {}", captures.join(", "))
                    };
                    self.errors.report(
                        pos,
                        format!("template in `{key}` uses `{name}`, which the source's `match:` does not capture"),
                        hint,
                    );
                    false
                }
                None => true,
            },
        }
    }

    /// Whether `path` (the `path` key of the section at `node`) is one the admin listener can
    /// serve `what` on and does not use itself; `example` is a good one.
    pub fn admin_path(&mut self, path: &str, node: &Node, what: &str, example: &str) -> bool {
        let at = node.get("path").map_or(node.pos, |n| n.pos);
        // What a client sends unescaped (RFC 3986 path characters), so the path in the config
        // is the path in the request; `{`, `}` and `%` stay out.
        let url_char = |c: char| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@".contains(c);
        if !path.starts_with('/') || path == "/" || !path.chars().all(url_char) {
            self.errors.report(
                at,
                format!("`{path}` is not a path ferry can serve {what} on"),
                format!("write an absolute path of plain URL characters, such as `{example}`"),
            );
            false
        } else if OWN_PATHS
            .iter()
            .any(|own| path == *own || path.starts_with(&format!("{own}/")))
        {
            self.errors.report(
                at,
                format!("`{path}` is the admin listener's own path"),
                format!(
                    "choose another path; {} and what is under them are taken",
                    OWN_PATHS.join(", ")
                ),
            );
            false
        } else {
            true
        }
    }

    /// Connections that serve on the admin listener (`sse_server`, `http_server`) need it on,
    /// and a path each; `entries` are the file's connections as written, `connections` those
    /// read, `admin` whether the listener is on.
    pub fn served_on_admin_listener(
        &mut self,
        entries: &[(Key, Node)],
        connections: &BTreeMap<String, Connection>,
        admin: bool,
    ) {
        let mut paths: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, _) in entries {
            let (path, serves) = match connections.get(&key.name).map(|c| &c.kind) {
                Some(ConnectionKind::SseServer(s)) => (s.path.as_str(), "serves SSE"),
                Some(ConnectionKind::HttpServer(h)) => (h.path.as_str(), "takes POSTs"),
                _ => continue,
            };
            if !admin {
                self.errors.report(
                    key.pos,
                    format!(
                        "connection `{}` {serves} on the admin listener, which is off",
                        key.name
                    ),
                    "turn it on at the top level: `admin: {listen: 127.0.0.1:9090}`",
                );
            }
            if let Some(other) = paths.insert(path, &key.name) {
                self.errors.report(
                    key.pos,
                    format!(
                        "connections `{other}` and `{}` both serve `{path}`",
                        key.name
                    ),
                    "give each connection on the admin listener a path of its own",
                );
            }
        }
    }

    /// An http:// or https:// URL, checked; `node` is where it is written.
    pub fn http_url(&mut self, text: &str, node: Option<&Node>) -> Option<url::Url> {
        match url::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
            _ => {
                self.errors.report(
                    node.map_or_else(Pos::default, |n| n.pos),
                    format!("`{}` is not an http:// or https:// URL", redact_url(text)),
                    "write e.g. `https://db.example.com/realtime`",
                );
                None
            }
        }
    }
}

/// The positions of a mapping's keys, in the order written.
fn key_positions(node: Option<&Node>) -> Vec<Pos> {
    match node.map(|n| &n.value) {
        Some(Value::Map(entries)) => entries.iter().map(|(k, _)| k.pos).collect(),
        _ => Vec::new(),
    }
}

/// The positions of a list's items, or of the one value written instead of a list.
pub fn item_positions(node: Option<&Node>) -> Vec<Pos> {
    match node {
        Some(Node {
            value: Value::Seq(items),
            ..
        }) => items.iter().map(|n| n.pos).collect(),
        Some(one) => vec![one.pos],
        None => Vec::new(),
    }
}
