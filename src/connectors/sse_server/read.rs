//! An `sse_server:` connection and sink read from the file and checked beyond their shape: a
//! path the admin listener can serve and does not use itself, an origin, and event types.

use super::config::{SseServerConnection, SseServerSink, SseServerSinkKeys};
use crate::config::diagnostics::Report;
use crate::config::reader::Reader;
use crate::config::yaml::Node;
use crate::connectors::sse::protocol::event_type;

impl Reader<'_> {
    /// The sse_server connection written at `node`.
    pub fn sse_server_connection(&mut self, node: &Node) -> Option<SseServerConnection> {
        let server: SseServerConnection = self.section(node)?;
        let at = |key: &str| node.get(key).map_or(node.pos, |n| n.pos);
        let path_ok = self.admin_path(&server.path, node, "a stream", "/events/sensors");
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
}
