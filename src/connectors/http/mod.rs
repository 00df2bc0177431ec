//! HTTP sink: each message becomes one request (POST or PUT) to a webhook or REST API, its
//! payload the body.
//!
//! HTTP has no session to supervise: a connection is a reqwest client (one per `connections:`
//! entry, its TLS settings and timeouts, connections kept alive and reused) and a limit on the
//! requests in flight, shared by every route that sends through it. A route sends one message
//! at a time, in order, and waits for the answer before the next, so what the server sees is
//! the order the route received.
//!
//! The answer decides what becomes of the message:
//! - 2xx: delivered;
//! - 408, 429 and 5xx, a timeout, a refused or broken connection: the server may take it later.
//!   The route retries the same message with backoff, or after `Retry-After` when the answer
//!   has one;
//! - 3xx: refused. ferry does not follow redirects: a client repeats a redirected POST as a GET
//!   without its body, so the message would be lost behind a final 200;
//! - any other 4xx: refused for good; the route's dead-letter sink gets the message with the
//!   status and the start of the response body in `Ferry-Error`.
//!
//! Secrets: the connection's headers (API keys, `Authorization`, and `user:password@` from its
//! URL as Basic auth) are marked sensitive and never logged; URLs are never logged beyond their origin (scheme, host and port), because query
//! strings and even paths (Slack-style webhook URLs) carry credentials.

pub mod config;
pub mod protocol;
mod read;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Semaphore;
use url::Url;

use super::http_client::{self, Timeouts};
use super::{Connection, Sinks};
use crate::config::{HttpMethod, Reconnect, SinkSpec};
use crate::contracts::status::ConnectionStatus;
use crate::contracts::{BoxFuture, ConnectionContext, Sink, SinkError};
use crate::message::Message;

pub mod url_form;

/// How much of an error response's body goes into the reason (logs, `Ferry-Error`).
const EXCERPT_BYTES: usize = 512;

/// How much of a successful response's body is read (and dropped) so the connection can be
/// reused; past this the connection is closed instead of reading on.
const DRAIN_BYTES: usize = 64 * 1024;

/// Headers that frame the request or belong to one hop: a message cannot set them (a
/// forwarded `Content-Length` would corrupt the request).
const FRAMING_HEADERS: [&str; 10] = [
    "connection",
    "content-length",
    "expect",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// HTTP endpoints ferry sends messages to.
pub struct HttpConnection {
    name: Arc<str>,
    config: crate::config::HttpConnection,
    reconnect: Reconnect,
    status: ConnectionStatus,
    /// Built with the first sink, so a bad TLS file stops ferry at start.
    endpoint: Option<Arc<Endpoint>>,
}

impl HttpConnection {
    pub fn new(
        name: &str,
        config: crate::config::HttpConnection,
        reconnect: Reconnect,
        status: ConnectionStatus,
    ) -> Self {
        HttpConnection {
            name: name.into(),
            config,
            reconnect,
            status,
            endpoint: None,
        }
    }

    fn endpoint(&mut self) -> anyhow::Result<Arc<Endpoint>> {
        if let Some(endpoint) = &self.endpoint {
            return Ok(endpoint.clone());
        }
        let c = &self.config;
        // Errors name the connection, not the URL, which may hold a key.
        let url = Url::parse(c.url.expose())
            .with_context(|| format!("connection {}: `url` is not a URL", self.name))?;
        let client = http_client::sender(
            &c.tls,
            &self.name,
            Timeouts {
                connect: Some(self.reconnect.connect_timeout),
                request: Some(c.timeout),
                read: None,
            },
        )?;
        // `https://user:password@host/...`: reqwest turns the user info into a Basic
        // `Authorization` header (sensitive) as it builds a request, and takes it out of the
        // URL. Do it once here, so that it is one of the connection's headers like the rest
        // (which a message's own headers cannot replace) and no URL ferry holds carries it.
        let probe = client
            .get(url)
            .build()
            .with_context(|| format!("connection {}: `url` cannot be requested", self.name))?;
        let base = probe.url().clone();
        let mut headers = HeaderMap::new();
        for (name, value) in &c.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("connection {}: bad header name `{name}`", self.name))?;
            let mut value = HeaderValue::from_bytes(value.expose().as_bytes()).map_err(|_| {
                anyhow::anyhow!("connection {}: bad value for header `{name}`", self.name)
            })?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        if let Some(basic) = probe.headers().get(header::AUTHORIZATION)
            && !headers.contains_key(header::AUTHORIZATION)
        {
            headers.insert(header::AUTHORIZATION, basic.clone());
        }
        let endpoint = Arc::new(Endpoint {
            origin: base.origin().ascii_serialization(),
            base,
            client,
            headers,
            timeout: c.timeout,
            connect_timeout: self.reconnect.connect_timeout,
            permits: Semaphore::new(c.max_concurrent.max(1)),
            status: self.status.clone(),
        });
        self.endpoint = Some(endpoint.clone());
        Ok(endpoint)
    }
}

/// Makes the sinks of one HTTP connection: each shares its endpoint.
struct HttpSinks {
    name: Arc<str>,
    /// Or why it could not be built (a bad URL or TLS file).
    endpoint: Result<Arc<Endpoint>, String>,
}

impl Sinks for HttpSinks {
    fn add_sink(&self, sink: &SinkSpec) -> anyhow::Result<Arc<dyn Sink>> {
        let SinkSpec::Http(sink) = sink else {
            anyhow::bail!("connection {} is HTTP, the sink is not", self.name);
        };
        let method = match sink.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
        };
        Ok(Arc::new(HttpSink {
            endpoint: self.endpoint.clone().map_err(|e| anyhow::anyhow!(e))?,
            method,
        }))
    }
}

impl Connection for HttpConnection {
    fn sinks(&mut self) -> Arc<dyn Sinks> {
        Arc::new(HttpSinks {
            name: self.name.clone(),
            endpoint: self.endpoint().map_err(|e| format!("{e:#}")),
        })
    }

    /// There is no session to open: the connection counts as up until a request cannot reach
    /// the server (and again after the next answer), so `ferry ready` does not wait on it.
    fn start(self: Box<Self>, _runtime: &ConnectionContext) {
        let origin = match &self.endpoint {
            Some(e) => e.origin.clone(),
            None => Url::parse(self.config.url.expose())
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default(),
        };
        self.status
            .up(&format!("to {origin} (HTTP: one request per message)"));
    }
}

/// What every sink on one connection shares.
struct Endpoint {
    base: Url,
    /// `scheme://host:port` of `base`: all of it that is ever logged, and the only server a
    /// sink sends to (the connection's headers and TLS settings are for it).
    origin: String,
    client: reqwest::Client,
    /// The connection's `headers`, marked sensitive.
    headers: HeaderMap,
    timeout: Duration,
    connect_timeout: Duration,
    /// `max_concurrent`: requests in flight over every route of the connection.
    permits: Semaphore,
    status: ConnectionStatus,
}

impl Endpoint {
    /// Where a message goes: its rendered `url` resolved against the connection's URL as a
    /// browser resolves a link (`Url::join`): `""` is the connection's URL itself, `events` a
    /// sibling of its last path segment (end the connection's URL with `/` to go below it),
    /// `/events` from the root, `?id=1` a new query. Absolute URLs are allowed on the same
    /// origin only: another server must be another connection, so that the connection's
    /// credentials never go to a host that a payload field named.
    fn resolve(&self, target: &str) -> Result<Url, String> {
        if target.is_empty() {
            return Ok(self.base.clone());
        }
        let url = self
            .base
            .join(target)
            .map_err(|e| format!("`{}` is not a URL path: {e}", shown(target)))?;
        if url.origin().ascii_serialization() != self.origin {
            return Err(format!(
                "`{}` is not on {}: an HTTP sink sends only to its connection's server (use another connection for another server)",
                shown(target),
                self.origin
            ));
        }
        Ok(url)
    }

    /// The request headers: the connection's, then the message's (a message cannot replace a
    /// header the connection sets, nor set one that frames the request), then a
    /// `Content-Type` guessed from the payload when there is none.
    fn headers(&self, message: &Message) -> Result<HeaderMap, String> {
        let mut headers = self.headers.clone();
        for (name, value) in &message.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
            if self.headers.contains_key(&name) || FRAMING_HEADERS.contains(&name.as_str()) {
                continue;
            }
            let value = HeaderValue::from_bytes(value.as_bytes())
                .map_err(|_| format!("the value of header `{name}` cannot travel in HTTP"))?;
            headers.append(name, value);
        }
        if !headers.contains_key(header::CONTENT_TYPE)
            && let Some(guess) = content_type(&message.payload)
        {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(guess));
        }
        Ok(headers)
    }

    /// What a failed request means for the message, and for the connection's state.
    fn request_failed(&self, error: reqwest::Error) -> SinkError {
        let reason = if error.is_connect() {
            let reason = if error.is_timeout() {
                format!("cannot connect within {:?}", self.connect_timeout)
            } else {
                format!("cannot connect: {}", http_client::describe(error))
            };
            self.status
                .unreachable(&format_args!("{}: {reason}", self.origin));
            reason
        } else if error.is_timeout() {
            format!(
                "no answer within {:?} (the connection's `timeout`)",
                self.timeout
            )
        } else if error.is_builder() {
            return SinkError::Rejected(format!(
                "cannot build the request: {}",
                http_client::describe(error)
            ));
        } else {
            http_client::describe(error)
        };
        SinkError::Unavailable(reason)
    }
}

struct HttpSink {
    endpoint: Arc<Endpoint>,
    method: reqwest::Method,
}

impl Sink for HttpSink {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let e = &self.endpoint;
            let url = e.resolve(&message.subject).map_err(SinkError::Rejected)?;
            let headers = e.headers(message).map_err(SinkError::Rejected)?;
            let _permit = e.permits.acquire().await.expect("never closed");
            let request = e
                .client
                .request(self.method.clone(), url)
                .headers(headers)
                .body(message.payload.clone());
            let mut response = match request.send().await {
                Ok(response) => response,
                Err(error) => return Err(e.request_failed(error)),
            };
            e.status.up(&format!("to {}", e.origin));
            let status = response.status();
            if status.is_success() {
                // Reuse the connection when the body is small; a large one is not worth it.
                http_client::read_body(&mut response, DRAIN_BYTES).await;
                return Ok(());
            }
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let body = http_client::read_body(&mut response, EXCERPT_BYTES).await;
            Err(failure(
                status,
                retry_after,
                &http_client::excerpt(&body.bytes, EXCERPT_BYTES, body.complete()),
            ))
        })
    }
}

/// The error an answer other than 2xx makes: retry (408, 429, 5xx; after `retry_after` when
/// the server gave a non-zero one) or refuse (the rest). The reason holds the status and the
/// start of the body, which is what a user needs to see what the server did not like.
fn failure(status: reqwest::StatusCode, retry_after: Option<Duration>, excerpt: &str) -> SinkError {
    let mut reason = format!("HTTP {status}");
    if !excerpt.is_empty() {
        reason.push_str(": ");
        reason.push_str(excerpt);
    }
    let retry = status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
    if retry {
        // `Retry-After: 0` (or a date gone by) means "now": the route's own backoff then
        // keeps a server that says it again and again from being hammered.
        match retry_after {
            Some(retry_after) if !retry_after.is_zero() => SinkError::Busy {
                reason,
                retry_after,
            },
            _ => SinkError::Unavailable(reason),
        }
    } else if status.is_redirection() {
        SinkError::Rejected(format!(
            "{reason} (ferry does not follow redirects, which would turn the POST into a GET without the message: point the sink at the new address)"
        ))
    } else {
        SinkError::Rejected(reason)
    }
}

/// `Retry-After`: seconds, or an HTTP date (RFC 9110).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `Content-Type` of a message that has none: JSON when the payload parses as JSON, text
/// when it is UTF-8, bytes otherwise; none for an empty body.
fn content_type(payload: &Bytes) -> Option<&'static str> {
    if payload.is_empty() {
        None
    } else if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        Some("application/json")
    } else if std::str::from_utf8(payload).is_ok() {
        Some("text/plain; charset=utf-8")
    } else {
        Some("application/octet-stream")
    }
}

/// A rendered URL as far as it may be shown: without its query, which may hold a key.
fn shown(target: &str) -> String {
    let mut shown: String = match target.split_once('?') {
        Some((path, _)) => format!("{path}?…"),
        None => target.to_string(),
    };
    if shown.len() > 200 {
        let mut end = 200;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn endpoint(base: &str, headers: &[(&str, &str)]) -> Arc<Endpoint> {
        let config = crate::config::HttpConnection {
            url: crate::config::SecretUrl::new(base),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), crate::config::Secret::new(v.to_string())))
                .collect(),
            tls: Default::default(),
            timeout: Duration::from_secs(30),
            max_concurrent: 8,
        };
        crate::connectors::tls::install_crypto_provider();
        let mut connection = HttpConnection::new(
            "hook",
            config,
            Reconnect::default(),
            ConnectionStatus::new("hook", "http"),
        );
        connection.endpoint().unwrap()
    }

    fn message(subject: &str, payload: &'static [u8], headers: &[(&str, &str)]) -> Message {
        let mut m = Message::new("src".into(), subject, Bytes::from_static(payload));
        m.headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m
    }

    #[test]
    fn urls_resolve_like_links_on_the_connections_server_only() {
        let e = endpoint("https://api.example.com/v1/hooks/?key=s3cret", &[]);
        let r = |t: &str| e.resolve(t).map(|u| u.to_string());
        assert_eq!(
            r("").unwrap(),
            "https://api.example.com/v1/hooks/?key=s3cret"
        );
        assert_eq!(
            r("orders/eu").unwrap(),
            "https://api.example.com/v1/hooks/orders/eu"
        );
        assert_eq!(r("/other").unwrap(), "https://api.example.com/other");
        assert_eq!(
            r("?id=7").unwrap(),
            "https://api.example.com/v1/hooks/?id=7"
        );
        assert_eq!(r("a b").unwrap(), "https://api.example.com/v1/hooks/a%20b");
        assert_eq!(
            r("https://api.example.com:443/x").unwrap(),
            "https://api.example.com/x"
        );
        for foreign in [
            "https://evil.example.com/x?token=abc",
            "//evil.example.com/x",
            "http://api.example.com/x",
            "https://api.example.com:8443/x",
        ] {
            let error = r(foreign).unwrap_err();
            assert!(error.contains("https://api.example.com"), "{error}");
            assert!(
                !error.contains("abc") && !error.contains("s3cret"),
                "{error}"
            );
        }
        // Without a trailing slash, a relative path replaces the last segment.
        let e = endpoint("http://127.0.0.1:9/hooks", &[]);
        assert_eq!(
            e.resolve("orders").unwrap().as_str(),
            "http://127.0.0.1:9/orders"
        );
    }

    #[test]
    fn user_info_in_the_url_becomes_basic_auth_and_leaves_the_url() {
        let e = endpoint("http://ferry:pa%20ss@127.0.0.1:9/hook", &[]);
        assert_eq!(e.base.as_str(), "http://127.0.0.1:9/hook");
        assert_eq!(e.resolve("x").unwrap().as_str(), "http://127.0.0.1:9/x");
        let h = e
            .headers(&message("", b"", &[("Authorization", "Bearer forged")]))
            .unwrap();
        // base64("ferry:pa ss")
        assert_eq!(
            h.get_all("authorization").iter().collect::<Vec<_>>(),
            ["Basic ZmVycnk6cGEgc3M="]
        );
        assert!(h["authorization"].is_sensitive());
        // An explicit Authorization header is the one sent.
        let e = endpoint(
            "http://ferry:pw@127.0.0.1:9/hook",
            &[("Authorization", "Bearer s3cret")],
        );
        assert_eq!(
            e.headers(&message("", b"", &[])).unwrap()["authorization"],
            "Bearer s3cret"
        );
    }

    #[test]
    fn connection_headers_win_and_framing_headers_stay_out() {
        let e = endpoint(
            "http://127.0.0.1:9/",
            &[("Authorization", "Bearer s3cret"), ("x-static", "1")],
        );
        let h = e
            .headers(&message(
                "",
                b"{\"a\":1}",
                &[
                    ("authorization", "Bearer forged"),
                    ("content-length", "999"),
                    ("Host", "evil"),
                    ("x-tag", "a"),
                    ("x-tag", "b"),
                    ("x-utf8", "grüße"),
                ],
            ))
            .unwrap();
        assert_eq!(
            h.get_all("authorization").iter().collect::<Vec<_>>(),
            ["Bearer s3cret"]
        );
        assert!(h["authorization"].is_sensitive());
        assert!(h.get("content-length").is_none() && h.get("host").is_none());
        assert_eq!(h.get_all("x-tag").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(h["x-utf8"].as_bytes(), "grüße".as_bytes());
        assert_eq!(h["content-type"], "application/json");
        assert!(!format!("{h:?}").contains("s3cret"));

        let h = e
            .headers(&message(
                "",
                b"{}",
                &[("Content-Type", "application/cloudevents+json")],
            ))
            .unwrap();
        assert_eq!(
            h.get_all("content-type").iter().collect::<Vec<_>>(),
            ["application/cloudevents+json"]
        );
        assert!(e.headers(&message("", b"", &[("bad name", "x")])).is_err());
    }

    #[test]
    fn content_type_follows_the_payload() {
        let ct = |p: &'static [u8]| content_type(&Bytes::from_static(p));
        assert_eq!(ct(b"{\"a\": [1, 2]}"), Some("application/json"));
        assert_eq!(ct(b"42"), Some("application/json"));
        assert_eq!(ct(b"hello"), Some("text/plain; charset=utf-8"));
        assert_eq!(ct(b"{\"a\":"), Some("text/plain; charset=utf-8"));
        assert_eq!(ct(b"\xff\x00"), Some("application/octet-stream"));
        assert_eq!(ct(b""), None);
    }

    #[test]
    fn answers_map_to_retry_or_refusal() {
        let kind = |code: u16, retry_after: Option<u64>| match failure(
            StatusCode::from_u16(code).unwrap(),
            retry_after.map(Duration::from_secs),
            "body",
        ) {
            SinkError::Busy { retry_after, .. } => format!("busy {}", retry_after.as_secs()),
            SinkError::Unavailable(_) => "retry".into(),
            SinkError::Rejected(_) => "refuse".into(),
        };
        assert_eq!(kind(503, Some(2)), "busy 2");
        assert_eq!(kind(429, Some(1)), "busy 1");
        assert_eq!(kind(429, None), "retry");
        assert_eq!(kind(429, Some(0)), "retry");
        assert_eq!(kind(500, None), "retry");
        assert_eq!(kind(502, Some(3)), "busy 3");
        assert_eq!(kind(408, None), "retry");
        assert_eq!(kind(400, Some(5)), "refuse");
        assert_eq!(kind(404, None), "refuse");
        assert_eq!(kind(301, None), "refuse");
        match failure(StatusCode::BAD_REQUEST, None, "missing field `id`") {
            SinkError::Rejected(reason) => {
                assert_eq!(reason, "HTTP 400 Bad Request: missing field `id`")
            }
            other => panic!("{other:?}"),
        }
        match failure(StatusCode::NOT_FOUND, None, "") {
            SinkError::Rejected(reason) => assert_eq!(reason, "HTTP 404 Not Found"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let parse = |v| parse_retry_after(v, now);
        assert_eq!(parse("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:50:07 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse("Sun, 06 Nov 1994 08:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("soon"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(
            http_client::excerpt(b"  {\"error\":\n\t\"bad\"}\r\n", EXCERPT_BYTES, true),
            "{\"error\": \"bad\"}"
        );
        let long = vec![b'x'; 2000];
        let e = http_client::excerpt(&long, EXCERPT_BYTES, false);
        assert_eq!(e.len(), EXCERPT_BYTES + '…'.len_utf8());
        assert!(e.ends_with('…'));
        assert_eq!(http_client::excerpt(b"", EXCERPT_BYTES, true), "");
    }

    #[test]
    fn shown_urls_lose_their_query() {
        assert_eq!(shown("orders?key=s3cret"), "orders?…");
        assert_eq!(shown("orders"), "orders");
        assert!(shown(&"é".repeat(300)).ends_with('…'));
    }
}
