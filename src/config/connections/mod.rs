//! The checks a connection's settings need once they are read, beyond their shape: URLs that
//! parse, keys that go together, names the protocol allows. Each reports with the position of
//! the node it is about, and gives the connection as the rest of ferry uses it.

mod mqtt;
mod nats;
mod sse;

use schemars::JsonSchema;

use super::decode;
use super::diagnostics::{Diagnostic, Report};
use super::interpolate::Lookup;
use super::model::{HttpConnection, MigratoryDataConnection, Reconnect, Secret, SecretUrl, Tls};
use super::redact::redact_url;
use super::yaml::{Node, Pos};
use crate::connectors::http::config::HttpSection;
use crate::connectors::migratorydata::config::MigratoryDataSection;
use crate::connectors::mqtt::config::MqttSection;
use crate::connectors::nats::config::NatsSection;
use crate::connectors::sse::config::SseSection;
use crate::connectors::sse_server::config::SseServerConnection;
use crate::mapping::template;

/// A named endpoint: exactly one of `mqtt`, `nats`, `sse`, `http`, `sse_server` or
/// `migratorydata`.
#[derive(JsonSchema)]
#[allow(
    dead_code,
    reason = "only its schema is used: each protocol's settings are read on their own"
)]
#[schemars(
    rename = "Connection",
    deny_unknown_fields,
    extend("oneOf" = [
        { "required": ["mqtt"] },
        { "required": ["nats"] },
        { "required": ["sse"] },
        { "required": ["http"] },
        { "required": ["sse_server"] },
        { "required": ["migratorydata"] }
    ])
)]
pub struct ConnectionSection {
    /// An MQTT broker (3.1.1 or 5).
    mqtt: Option<MqttSection>,
    /// A NATS server or cluster.
    nats: Option<NatsSection>,
    /// A server-sent-event stream ferry reads (a database's change feed, say).
    sse: Option<SseSection>,
    /// An HTTP endpoint ferry sends each message to.
    http: Option<HttpSection>,
    /// A server-sent-event stream ferry serves to browsers, on the admin listener.
    sse_server: Option<SseServerConnection>,
    /// A MigratoryData server or cluster, through its REST API.
    migratorydata: Option<MigratoryDataSection>,
    /// How ferry reconnects when the connection drops: exponential backoff with jitter.
    reconnect: Option<Reconnect>,
}

/// The sections of a connection read on their own.
pub const READ_ON_THEIR_OWN: &[&str] = &[
    "MqttConnection",
    "NatsConnection",
    "SseConnection",
    "HttpConnection",
    "SseServerConnection",
    "MigratoryDataConnection",
    "Reconnect",
];

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

    pub fn reconnect(&mut self, node: &Node) -> Reconnect {
        let Some(reconnect) = self.section::<Reconnect>(node) else {
            return Reconnect::default();
        };
        if reconnect.initial_delay > reconnect.max_delay {
            self.errors.report(
                node.pos,
                "`initial_delay` is longer than `max_delay`",
                "the delay doubles from initial_delay up to max_delay",
            );
        }
        reconnect
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

    pub fn http(&mut self, node: &Node) -> Option<HttpConnection> {
        let http: HttpSection = self.section(node)?;
        let url = self.http_url(&http.url, node.get("url"));
        let headers = self.headers(http.headers.0, node.get("headers"));
        let tls = self.tls(http.tls, node);
        Some(HttpConnection {
            url: SecretUrl::new(url?.to_string()),
            headers,
            tls,
            timeout: http.timeout,
            max_concurrent: http.max_concurrent,
        })
    }

    pub fn migratorydata(&mut self, node: &Node) -> Option<MigratoryDataConnection> {
        let md: MigratoryDataSection = self.section(node)?;
        let servers_node = node.get("servers");
        if let Some(Node {
            value: super::yaml::Value::Seq(items),
            pos,
        }) = servers_node
            && items.is_empty()
        {
            self.errors.report(
                *pos,
                "`servers` is empty",
                "list at least one, e.g. `servers: [http://md1:8800]`",
            );
        }
        let positions = item_positions(servers_node);
        let servers = md
            .servers
            .0
            .iter()
            .enumerate()
            .filter_map(|(i, text)| {
                let pos = positions.get(i).copied().unwrap_or_default();
                self.server_url(text, pos)
            })
            .collect();
        let tls = self.tls(md.tls, node);
        if md.poll_interval.is_zero() {
            self.errors.report(
                node.pos,
                "`poll_interval` cannot be 0",
                "write e.g. `250ms` or `1s`",
            );
        }
        if md.max_response_size < 1024 {
            self.errors.report(
                node.pos,
                "`max_response_size` must be at least 1KiB",
                "a consume answer carries up to 1000 messages: write e.g. `16MiB`",
            );
        }
        Some(MigratoryDataConnection {
            servers,
            token: md.token,
            tls,
            timeout: md.timeout,
            poll_interval: md.poll_interval,
            max_response_size: usize::try_from(md.max_response_size).unwrap_or(usize::MAX),
        })
    }

    /// One of a MigratoryData connection's `servers`: an http:// or https:// base URL, without
    /// a query (the token goes in `token:`, where it is kept secret).
    fn server_url(&mut self, text: &str, pos: Pos) -> Option<String> {
        match url::Url::parse(text) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.has_host()
                    && u.query().is_none()
                    && u.username().is_empty()
                    && u.password().is_none() =>
            {
                Some(u.to_string())
            }
            _ => {
                self.errors.report(
                    pos,
                    format!(
                        "`{}` is not an http:// or https:// server URL",
                        // Without its query, which may hold the token.
                        redact_url(text.split(['?', '#']).next().unwrap_or_default())
                    ),
                    "write e.g. `http://md1.example.com:8800`, without credentials or a query (the token goes in `token:`)",
                );
                None
            }
        }
    }

    pub fn sse_server(&mut self, node: &Node) -> Option<SseServerConnection> {
        let server: SseServerConnection = self.section(node)?;
        let at = |key: &str| node.get(key).map_or(node.pos, |n| n.pos);
        let path = &server.path;
        // What a browser sends unescaped (RFC 3986 path characters), so the path in the
        // config is the path in the request; `{`, `}` and `%` stay out.
        let url_char = |c: char| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@".contains(c);
        let mut path_ok = true;
        if !path.starts_with('/') || path == "/" || !path.chars().all(url_char) {
            self.errors.report(
                at("path"),
                format!("`{path}` is not a path ferry can serve a stream on"),
                "write an absolute path of plain URL characters, such as `/events/sensors`",
            );
            path_ok = false;
        } else if crate::contracts::admin_listener::OWN_PATHS
            .iter()
            .any(|own| path.as_str() == *own || path.starts_with(&format!("{own}/")))
        {
            path_ok = false;
            self.errors.report(
                at("path"),
                format!("`{path}` is the admin listener's own path"),
                format!(
                    "choose another path; {} and what is under them are taken",
                    crate::contracts::admin_listener::OWN_PATHS.join(", ")
                ),
            );
        }
        if let Some(origin) = &server.cors_origin {
            // One origin exactly as a browser sends it in `Origin:` (scheme, host, port).
            let is_origin = |o: &str| {
                url::Url::parse(o).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https") && u.origin().ascii_serialization() == o
                })
            };
            if origin != "*" && !is_origin(origin) {
                self.errors.report(
                    at("cors_origin"),
                    format!("`{origin}` is not an origin"),
                    "write `*` (pages from anywhere) or one origin, scheme and host, such as `https://dashboard.example.com`",
                );
            }
        }
        path_ok.then_some(server)
    }
}

/// The positions of a mapping's keys, in the order written.
fn key_positions(node: Option<&Node>) -> Vec<Pos> {
    match node.map(|n| &n.value) {
        Some(super::yaml::Value::Map(entries)) => entries.iter().map(|(k, _)| k.pos).collect(),
        _ => Vec::new(),
    }
}

/// The positions of a list's items, or of the one value written instead of a list.
pub fn item_positions(node: Option<&Node>) -> Vec<Pos> {
    match node {
        Some(Node {
            value: super::yaml::Value::Seq(items),
            ..
        }) => items.iter().map(|n| n.pos).collect(),
        Some(one) => vec![one.pos],
        None => Vec::new(),
    }
}
