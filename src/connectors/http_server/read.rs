//! An `http_server:` connection and source read from the file and checked beyond their shape:
//! a path the admin listener can serve and does not use itself, and header names.

use super::config::{HttpServerConnection, HttpServerSource, HttpServerSourceKeys};
use crate::config::diagnostics::Report;
use crate::config::reader::Reader;
use crate::config::yaml::Node;

impl Reader<'_> {
    /// The http_server connection written at `node`.
    pub fn http_server_connection(&mut self, node: &Node) -> Option<HttpServerConnection> {
        let server: HttpServerConnection = self.section(node)?;
        let path_ok = self.admin_path(&server.path, node, "POSTs", "/hooks");
        let headers = crate::config::reader::item_positions(node.get("keep_headers"));
        for (i, name) in server.keep_headers.iter().enumerate() {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.errors.report(
                    headers.get(i).copied().unwrap_or(node.pos),
                    format!("`{name}` is not an HTTP header name"),
                    "write a header's name as a client sends it, such as `X-GitHub-Event`",
                );
            }
        }
        path_ok.then_some(server)
    }

    /// The http_server source at `node`. Whether its route promises at-least-once is known
    /// once the whole route is read (see `confirm`).
    pub fn http_server_source(&mut self, _keys: HttpServerSourceKeys) -> HttpServerSource {
        HttpServerSource {
            confirm: false,
            replies: false,
        }
    }
}
