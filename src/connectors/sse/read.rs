//! An `sse:` connection and source read from the file and checked beyond their shape: the
//! URL with its query added, headers, the handshake's templates, the bounds on what the server
//! sends, and the event types a source takes.

use super::config::{
    DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_RESPONSE_BODY, Handshake, HandshakeMethod,
    HandshakeSection, SseConnection, SseSection, SseSource, SseSourceKeys, StreamMethod,
};
use super::protocol::event_type;
use crate::config::diagnostics::Report;
use crate::config::reader::{Reader, item_positions};
use crate::config::yaml::Node;
use crate::config::{HttpMethod, SecretUrl};

impl Reader<'_> {
    /// The SSE connection written at `node`.
    pub fn sse_connection(&mut self, node: &Node) -> Option<SseConnection> {
        let sse: SseSection = self.section(node)?;
        let mut url = self.http_url(&sse.url, node.get("url"));
        let method = match sse.method {
            StreamMethod::Get => HttpMethod::Get,
            StreamMethod::Post => HttpMethod::Post,
        };
        if sse.body.is_some() && method == HttpMethod::Get {
            self.errors.report(
                node.pos,
                "a `body` needs `method: POST`",
                "add `method: POST`, or drop the body",
            );
        }
        let headers = self.headers(sse.headers.0, node.get("headers"));
        // Only a given `query:` touches the URL: an empty one would still add a bare `?`.
        if let Some(u) = &mut url
            && !sse.query.0.is_empty()
        {
            u.query_pairs_mut().extend_pairs(sse.query.0);
        }
        let tls = self.tls(sse.tls, node);
        let handshake = match (sse.handshake, node.get("handshake")) {
            (Some(h), Some(at)) => self.handshake(h, at),
            _ => None,
        };
        let mut size = |key: &str, value: u64, default: u64| {
            if (1024..=1024 * 1024 * 1024).contains(&value) {
                return value as usize;
            }
            if let Some(at) = node.get(key) {
                self.errors.report(
                    at.pos,
                    format!("`{key}` must be between 1KiB and 1GiB"),
                    format!(
                        "the default is {}KiB; write e.g. `{key}: 16MiB`",
                        default / 1024
                    ),
                );
            }
            default as usize
        };
        let max_line_size = size("max_line_size", sse.max_line_size, DEFAULT_MAX_EVENT_SIZE);
        let max_event_size = size("max_event_size", sse.max_event_size, DEFAULT_MAX_EVENT_SIZE);
        let max_response_body = size(
            "max_response_body",
            sse.max_response_body,
            DEFAULT_MAX_RESPONSE_BODY,
        );
        Some(SseConnection {
            url: SecretUrl::new(url?.to_string()),
            method,
            body: sse.body,
            headers,
            tls,
            idle_timeout: sse.idle_timeout,
            resume: sse.resume,
            handshake,
            max_line_size,
            max_event_size,
            max_response_body,
        })
    }

    /// The handshake written at `node`: its URL, headers and body are templates over the
    /// event that triggers it.
    fn handshake(&mut self, h: HandshakeSection, node: &Node) -> Option<Handshake> {
        let at = |key: &str| node.get(key).map_or(node.pos, |n| n.pos);
        let url_ok = self.template(at("url"), "url", &h.url, &[]);
        let body_ok = match &h.body {
            Some(body) => self.template(at("body"), "body", body, &[]),
            None => true,
        };
        let headers = self.headers(h.headers.0, node.get("headers"));
        for (name, value) in &headers {
            self.template(node.pos, name, value.expose(), &[]);
        }
        let method = match h.method {
            HandshakeMethod::Get => HttpMethod::Get,
            HandshakeMethod::Post => HttpMethod::Post,
            HandshakeMethod::Put => HttpMethod::Put,
        };
        Some(Handshake {
            on: h.on,
            method,
            url: SecretUrl::new(h.url),
            headers,
            body: h.body.filter(|_| body_ok),
        })
        .filter(|_| url_ok)
    }

    /// The SSE source at `node`: the event types it takes.
    pub fn sse_source(&mut self, keys: SseSourceKeys, node: &Node) -> SseSource {
        let events = keys.events.map(|e| e.0).unwrap_or_default();
        let positions = item_positions(node.get("events"));
        let events = (events.into_iter().enumerate())
            .filter(|(i, e)| {
                let pos = positions.get(*i).copied().unwrap_or(node.pos);
                self.errors.rule(pos, event_type(e))
            })
            .map(|(_, e)| e)
            .collect();
        SseSource { events }
    }
}
