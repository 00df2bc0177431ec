//! HTTP in (`http_server`): messages POSTed to a path of the admin listener go into the routes
//! that read the connection, so a webhook or `curl` can publish to MQTT and NATS through the
//! same mapping stage as any other source.
//!
//! `POST {path}/a/b` is a message named `a/b` (`POST {path}` one named ``), its body the
//! payload, its `Content-Type` and the connection's `keep_headers` its headers. The answer says
//! what became of it:
//! - **202 Accepted** on an at-least-once route, once every sink of every route that reads the
//!   connection confirmed it: the client may forget it;
//! - **200 OK** on another route, as soon as the route took it (it may still be lost);
//! - **503 Service Unavailable** with `Retry-After` when a route's queue is full (whatever its
//!   `when_full`, the client is told to come back rather than held), when ferry is stopping, or
//!   when a route gave the message up; **504** when the sinks did not confirm within
//!   `confirm_timeout` (the message may still be delivered: sending it again may duplicate);
//! - on a request route (`request:`), the reply: **200** with its payload and `Content-Type`,
//!   **504** when none came within the route's timeout, **502** when the request failed;
//! - **401** without the connection's bearer token, **405** for another method, **413** for a
//!   body over `max_body`.
//!
//! A 503 for a full queue answers at once: HTTP has no flow control a client would honour
//! short of not answering, and a webhook sender would time out and retry anyway.

pub mod config;
pub mod protocol;
mod read;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use tokio::sync::oneshot;

use super::{Connection, HttpRoutes};
use crate::config::SourceSpec;
use crate::contracts::ConnectionContext;
use crate::contracts::admin_listener::same_secret;
use crate::contracts::queue::RouteInput;
use crate::contracts::status::ConnectionStatus;
use crate::message::{Ack, Answer, Incoming, Message, Reply};

/// What a client is told to wait before it sends a refused message again.
const RETRY_AFTER_SECONDS: &str = "1";

/// A path on the admin listener that takes POSTs.
pub struct HttpServerConnection {
    path: String,
    status: ConnectionStatus,
    ingress: Arc<Ingress>,
}

/// What the request handler shares with the connection.
struct Ingress {
    origin: Arc<str>,
    prefix: String,
    token: Option<crate::config::Secret>,
    max_body: usize,
    confirm_timeout: Duration,
    keep_headers: Vec<HeaderName>,
    routes: Mutex<Vec<Reader>>,
}

/// A route reading the connection.
struct Reader {
    input: RouteInput,
    /// It promises at-least-once: answer once its sinks confirmed.
    confirm: bool,
    /// A request route: the answer is its reply.
    replies: bool,
}

impl HttpServerConnection {
    pub fn new(name: &str, config: config::HttpServerConnection, status: ConnectionStatus) -> Self {
        let keep_headers = (config.keep_headers.iter())
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        HttpServerConnection {
            path: config.path.clone(),
            status,
            ingress: Arc::new(Ingress {
                origin: name.into(),
                prefix: config.path,
                token: config.token,
                max_body: config.max_body,
                confirm_timeout: config.confirm_timeout,
                keep_headers,
                routes: Mutex::new(Vec::new()),
            }),
        }
    }
}

impl Connection for HttpServerConnection {
    fn add_source(
        &mut self,
        _route: &str,
        source: &SourceSpec,
        input: RouteInput,
    ) -> anyhow::Result<()> {
        let SourceSpec::HttpServer(source) = source else {
            anyhow::bail!("not an http_server source");
        };
        let reader = Reader {
            input,
            confirm: source.confirm,
            replies: source.replies,
        };
        self.ingress.routes.lock().expect("routes").push(reader);
        Ok(())
    }

    fn admin_routes(&mut self) -> Option<HttpRoutes> {
        let under = format!("{}/{{*name}}", self.path);
        Some(
            axum::Router::new()
                .route(&self.path, any(take))
                .route(&under, any(take))
                .with_state(self.ingress.clone()),
        )
    }

    /// There is no broker: the path is served once the admin listener is bound, which the
    /// pipeline does before it starts the connections.
    fn start(self: Box<Self>, _context: &ConnectionContext) {
        self.status.up(&format!(
            "(taking POSTs at {} on the admin listener)",
            self.path
        ));
    }
}

/// One POST: checked, read within `max_body`, handed to every route, answered.
async fn take(State(ingress): State<Arc<Ingress>>, request: Request) -> Response {
    if request.method() != Method::POST {
        let mut response = answer(StatusCode::METHOD_NOT_ALLOWED, "only POST takes messages");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    if let Some(token) = &ingress.token
        && !bearer_is(request.headers(), token.expose())
    {
        let mut response = answer(StatusCode::UNAUTHORIZED, "a bearer token is needed");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let name = message_name(&ingress.prefix, request.uri().path());
    let headers = kept_headers(request.headers(), &ingress.keep_headers);
    let payload = match axum::body::to_bytes(request.into_body(), ingress.max_body).await {
        Ok(body) => body,
        Err(_) => {
            let why = format!("the body is larger than {} bytes", ingress.max_body);
            return answer(StatusCode::PAYLOAD_TOO_LARGE, &why);
        }
    };
    deliver(&ingress, name, headers, payload).await
}

/// Hands the message to every route reading the connection and answers for all of them.
async fn deliver(
    ingress: &Ingress,
    name: String,
    headers: Vec<(String, String)>,
    payload: Bytes,
) -> Response {
    let mut confirmations = Vec::new();
    let mut answered = None;
    {
        let routes = ingress.routes.lock().expect("routes");
        if routes.is_empty() {
            return unavailable("no route reads this path");
        }
        for route in routes.iter() {
            let mut message = Message::new(ingress.origin.clone(), name.clone(), payload.clone());
            message.headers = headers.clone();
            let reply = match route.replies && answered.is_none() {
                true => {
                    let (tx, rx) = oneshot::channel();
                    answered = Some(rx);
                    Some(Reply::new(move |answer| {
                        let _ = tx.send(answer);
                    }))
                }
                false => None,
            };
            let (ack, confirmed) = if route.confirm && reply.is_none() {
                let (tx, rx) = oneshot::channel();
                let ack = Ack::new(move |ok| {
                    let _ = tx.send(ok);
                });
                (ack, Some(rx))
            } else {
                (Ack::none(), None)
            };
            let incoming = Incoming {
                message,
                ack,
                reply,
            };
            match route.input.try_push(incoming) {
                Ok(true) => confirmations.extend(confirmed),
                Ok(false) => return unavailable("ferry is stopping"),
                Err(_) => return unavailable("the route's queue is full"),
            }
        }
    }
    if let Some(answered) = answered {
        // The route answers in its `request.timeout`, and a reply dropped unanswered says so.
        return replied(
            answered
                .await
                .unwrap_or(Answer::Failed("ferry stopped".into())),
        );
    }
    if confirmations.is_empty() {
        return answer(StatusCode::OK, "taken");
    }
    let all = futures_util::future::join_all(confirmations);
    match tokio::time::timeout(ingress.confirm_timeout, all).await {
        Ok(results) if results.iter().all(|r| matches!(r, Ok(true))) => {
            answer(StatusCode::ACCEPTED, "delivered")
        }
        Ok(_) => unavailable("a route gave the message up"),
        Err(_) => answer(
            StatusCode::GATEWAY_TIMEOUT,
            "not confirmed in time; it may still be delivered",
        ),
    }
}

/// A request route's answer: 200 with the reply (and its `Content-Type`), 504 when none
/// came in time, 502 when the request failed.
fn replied(answered: Answer) -> Response {
    match answered {
        Answer::Reply(reply) => {
            let mut response = (StatusCode::OK, reply.payload).into_response();
            let content_type = (reply.headers.iter())
                .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
                .and_then(|(_, value)| HeaderValue::from_str(value).ok());
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        Answer::TimedOut(after) => answer(
            StatusCode::GATEWAY_TIMEOUT,
            &format!(
                "no reply within {}",
                crate::config::values::duration::text(after)
            ),
        ),
        Answer::Failed(why) => answer(StatusCode::BAD_GATEWAY, &format!("no reply: {why}")),
    }
}

/// `Authorization: Bearer TOKEN` with the connection's token.
fn bearer_is(headers: &HeaderMap, token: &str) -> bool {
    (headers.get(header::AUTHORIZATION))
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| same_secret(given, token.as_bytes()))
}

/// The message's name: the request path under the connection's, percent-decoded, without
/// the `/` between them.
fn message_name(prefix: &str, path: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or("");
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    percent_encoding::percent_decode_str(rest)
        .decode_utf8_lossy()
        .into_owned()
}

/// `Content-Type` (so named, as the sinks map it to their own content type), the W3C trace
/// context (so a trace a webhook's sender started goes on through ferry) and the kept headers
/// (in lower case, as HTTP gives them), as the message's headers; values that are not text
/// are left out.
fn kept_headers(headers: &HeaderMap, keep: &[HeaderName]) -> Vec<(String, String)> {
    const ALWAYS: [HeaderName; 3] = [
        header::CONTENT_TYPE,
        HeaderName::from_static("traceparent"),
        HeaderName::from_static("tracestate"),
    ];
    let named = |name: &HeaderName| match name == header::CONTENT_TYPE {
        true => "Content-Type".to_string(),
        false => name.as_str().to_string(),
    };
    (ALWAYS.iter())
        .chain(keep.iter().filter(|n| !ALWAYS.contains(n)))
        .flat_map(|name| {
            (headers.get_all(name).iter())
                .filter_map(|v| v.to_str().ok())
                .map(|v| (named(name), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A plain-text answer.
fn answer(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// 503 with `Retry-After`.
fn unavailable(why: &str) -> Response {
    let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, why);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_the_path_under_the_connections() {
        assert_eq!(message_name("/hooks", "/hooks"), "");
        assert_eq!(message_name("/hooks", "/hooks/"), "");
        assert_eq!(message_name("/hooks", "/hooks/github/push"), "github/push");
        assert_eq!(message_name("/hooks", "/hooks/a%20b/%E2%82%AC"), "a b/€");
    }

    #[test]
    fn a_bearer_token_is_compared_whole() {
        let mut headers = HeaderMap::new();
        assert!(!bearer_is(&headers, "s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(bearer_is(&headers, "s3cret"));
        assert!(!bearer_is(&headers, "s3cre"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(!bearer_is(&headers, "s3cret"));
    }

    proptest! {
        /// Whatever a client puts in the path, the name is text and never panics.
        #[test]
        fn any_path_makes_a_name(rest in ".*") {
            let path = format!("/hooks/{}", percent_encoding::utf8_percent_encode(
                &rest, percent_encoding::NON_ALPHANUMERIC));
            prop_assert_eq!(message_name("/hooks", &path), rest);
        }
    }
}
