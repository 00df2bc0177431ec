//! The one HTTP client stack (reqwest over hyper, rustls with ring) that the SSE source, the
//! HTTP sink and SSE handshakes share, so TLS options behave as for MQTT and NATS.

use std::time::Duration;

use anyhow::Context;

use super::tls;
use crate::config::Tls;

/// What differs between the users of the client.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timeouts {
    /// Connecting (TCP and TLS).
    pub connect: Option<Duration>,
    /// A whole request, response body included. Never set for a stream.
    pub request: Option<Duration>,
    /// Between two reads of the response: a stream silent for this long fails (`idle_timeout`).
    pub read: Option<Duration>,
}

/// A client for `connection` with its TLS settings and `timeouts`. It follows up to 10
/// redirects within the first URL's origin (scheme, host, port) and stops at one that leaves
/// it: the requests carry the connection's headers (API keys), which must not go to another
/// server. The 3xx answer is then reported like any other failure.
pub fn client(tls: &Tls, connection: &str, timeouts: Timeouts) -> anyhow::Result<reqwest::Client> {
    let same_origin = reqwest::redirect::Policy::custom(|attempt| {
        let leaves = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() != attempt.url().origin());
        if leaves || attempt.previous().len() >= 10 {
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    build(tls, connection, timeouts, same_origin)
}

/// A client that never follows redirects, for sending messages: on a 301, 302 or 303 a
/// client repeats a POST as a GET without its body, so a redirect would lose the message
/// while the final 200 claims it arrived. The sender reports the redirect instead.
pub fn sender(tls: &Tls, connection: &str, timeouts: Timeouts) -> anyhow::Result<reqwest::Client> {
    build(tls, connection, timeouts, reqwest::redirect::Policy::none())
}

fn build(
    tls: &Tls,
    connection: &str,
    timeouts: Timeouts,
    redirects: reqwest::redirect::Policy,
) -> anyhow::Result<reqwest::Client> {
    let tls = tls::client_config(tls, connection)?;
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured((*tls).clone())
        .redirect(redirects)
        .tcp_nodelay(true);
    if let Some(t) = timeouts.connect {
        builder = builder.connect_timeout(t);
    }
    if let Some(t) = timeouts.request {
        builder = builder.timeout(t);
    }
    if let Some(t) = timeouts.read {
        builder = builder.read_timeout(t);
    }
    builder
        .build()
        .with_context(|| format!("connection {connection}: cannot build the HTTP client"))
}

/// A request error as one line for the log: its causes (`tcp connect error: Connection
/// refused`), without the URL reqwest would put in it (its query may carry an API key), without
/// the wrappers that only say a request failed, and without causes that repeat one another.
pub fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut line = String::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !text.starts_with("client error (") && !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        source = cause.source();
    }
    if line.is_empty() {
        error.to_string()
    } else {
        line
    }
}

/// A response body, read up to a bound.
pub struct Body {
    /// What was read: at most the bound.
    pub bytes: Vec<u8>,
    pub end: BodyEnd,
}

/// How reading a body ended.
pub enum BodyEnd {
    /// The whole body is in `bytes`.
    Whole,
    /// The body is larger than the bound: `bytes` is its start, the rest was not read.
    OverLimit,
    /// The body broke off (the connection failed, or the request's timeout passed).
    Broken(reqwest::Error),
}

impl Body {
    /// Whether `bytes` is all the server will give: a body that broke off has no more.
    pub fn complete(&self) -> bool {
        !matches!(self.end, BodyEnd::OverLimit)
    }
}

/// Reads `response`'s body, at most `limit` bytes of it: a server's answer is never held in
/// memory past the bound its caller documents, whatever the server sends.
pub async fn read_body(response: &mut reqwest::Response, limit: usize) -> Body {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - bytes.len();
                if chunk.len() > room {
                    bytes.extend_from_slice(&chunk[..room]);
                    return Body {
                        bytes,
                        end: BodyEnd::OverLimit,
                    };
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => {
                return Body {
                    bytes,
                    end: BodyEnd::Whole,
                };
            }
            Err(error) => {
                return Body {
                    bytes,
                    end: BodyEnd::Broken(error),
                };
            }
        }
    }
}

/// The start of a server's answer as one line of text for a log or a dead letter: at most
/// `max` bytes of `body`, whitespace runs made one space, `…` when it was cut (or `complete`
/// is false: more was left unread).
pub fn excerpt(body: &[u8], max: usize, complete: bool) -> String {
    let cut = body.len() > max;
    let mut text = String::with_capacity(max.min(body.len()));
    let mut space = false;
    for c in String::from_utf8_lossy(&body[..body.len().min(max)]).chars() {
        if c.is_whitespace() || c.is_control() {
            space = !text.is_empty();
        } else {
            if space {
                text.push(' ');
                space = false;
            }
            text.push(c);
        }
    }
    if cut || !complete {
        text.push('…');
    }
    text
}
