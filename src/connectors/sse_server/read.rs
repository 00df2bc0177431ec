//! An `sse_server:` connection and sink read from the file and checked beyond their shape: a
//! path the admin listener can serve and does not use itself, an origin, and event types; and
//! across connections, the admin listener on and no path served twice.

use std::collections::BTreeMap;

use super::config::{SseServerConnection, SseServerSink, SseServerSinkKeys};
use crate::config::diagnostics::Report;
use crate::config::reader::Reader;
use crate::config::yaml::{Key, Node};
use crate::config::{Connection, ConnectionKind};
use crate::connectors::sse::protocol::event_type;

impl Reader<'_> {
    /// The sse_server connection written at `node`.
    pub fn sse_server_connection(&mut self, node: &Node) -> Option<SseServerConnection> {
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

    /// The sse_server sink at `node`; its event type may use `captures`.
    pub fn sse_server_sink(
        &mut self,
        keys: SseServerSinkKeys,
        node: &Node,
        captures: &[String],
    ) -> SseServerSink {
        SseServerSink {
            event: self.target(node, "event", keys.event, event_type, captures),
        }
    }

    /// `sse_server` connections live on the admin listener, each on a path of its own;
    /// `entries` are the file's connections as written, `connections` those read, `admin`
    /// whether the listener is on.
    pub fn sse_servers_on_admin_listener(
        &mut self,
        entries: &[(Key, Node)],
        connections: &BTreeMap<String, Connection>,
        admin: bool,
    ) {
        let mut paths: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, _) in entries {
            let Some(Connection {
                kind: ConnectionKind::SseServer(server),
                ..
            }) = connections.get(&key.name)
            else {
                continue;
            };
            if !admin {
                self.errors.report(
                    key.pos,
                    format!(
                        "connection `{}` serves SSE on the admin listener, which is off",
                        key.name
                    ),
                    "turn it on at the top level: `admin: {listen: 127.0.0.1:9090}`",
                );
            }
            if let Some(other) = paths.insert(&server.path, &key.name) {
                self.errors.report(
                    key.pos,
                    format!(
                        "connections `{other}` and `{}` both serve `{}`",
                        key.name, server.path
                    ),
                    "give each sse_server a path of its own",
                );
            }
        }
    }
}
