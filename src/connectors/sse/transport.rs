//! One SSE request over ferry's reqwest client (rustls with ring, the connection's TLS
//! options), checked as the WHATWG standard's processing model says: a `200` whose
//! Content-Type is `text/event-stream` is a stream; a `204 No Content` or another Content-Type
//! is a refusal ("fail the connection"); any other status is an error answer.
//!
//! A stream that sends no byte (no event, no comment) for `idle_timeout` while ferry waits for
//! one fails here, and the connection reconnects. The clock runs only while ferry waits:
//! reqwest's own read timeout keeps running while ferry does not read (a route's queue is
//! full), so a long backpressure pause would have looked like a dead stream.
//!
//! Answers that are not the stream (an error page, a handshake's reply) are read only up to
//! `max_response_body` bytes and for [`ANSWER_WAIT`] at most.

use std::time::Duration;

use bytes::Bytes;

use crate::config;
use crate::connectors::http_client;

/// How long the start of an error answer is waited for.
pub(super) const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// How much of an error answer goes into the log.
pub(super) const EXCERPT: usize = 200;

/// Why a request did not give a stream.
pub(super) enum NoStream {
    /// A network error, an error answer or a timeout: reconnect with backoff.
    Failed(String),
    /// The server answered, but not with an event stream (`204`, another Content-Type): the
    /// standard fails the connection for good, and ferry retries only at its longest delay.
    Refused(String),
}

/// The open response body of an event stream.
pub(super) struct Stream {
    response: reqwest::Response,
    idle_timeout: Duration,
}

impl Stream {
    /// The next chunk of bytes; `None` when the server ended the stream.
    pub(super) async fn next_chunk(&mut self) -> Option<Result<Bytes, String>> {
        match tokio::time::timeout(self.idle_timeout, self.response.chunk()).await {
            Ok(Ok(Some(chunk))) => Some(Ok(chunk)),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some(Err(http_client::describe(e))),
            Err(_) => Some(Err(silent(self.idle_timeout))),
        }
    }
}

fn silent(idle_timeout: Duration) -> String {
    format!(
        "nothing received for {} (idle_timeout): the stream is taken for dead",
        humantime::format_duration(idle_timeout)
    )
}

/// Sends the stream's request (the connection's method, headers and body, `Last-Event-ID`
/// when there is one) and checks the answer.
pub(super) async fn open(
    client: &reqwest::Client,
    url: &url::Url,
    config: &config::SseConnection,
    last_event_id: Option<http::HeaderValue>,
) -> Result<Stream, NoStream> {
    let method =
        reqwest::Method::from_bytes(config.method.as_str().as_bytes()).expect("GET, POST or PUT");
    let mut request = client
        .request(method, url.clone())
        .header(http::header::ACCEPT, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache");
    for (name, value) in &config.headers {
        request = request.header(name.as_str(), value.expose());
    }
    if let Some(body) = &config.body {
        request = request.body(body.clone());
    }
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = tokio::time::timeout(config.idle_timeout, request.send())
        .await
        .map_err(|_| NoStream::Failed(silent(config.idle_timeout)))?
        .map_err(|e| NoStream::Failed(http_client::describe(e)))?;
    let status = response.status();
    if status == http::StatusCode::NO_CONTENT {
        return Err(NoStream::Refused(
            "the server answered 204 No Content: it has no stream for ferry".into(),
        ));
    }
    if status.is_redirection() {
        return Err(NoStream::Failed(
            "the server redirected the stream to another origin; not followed, so the connection's headers go nowhere else (put the new URL in the config)".into(),
        ));
    }
    if status != http::StatusCode::OK {
        let excerpt = excerpt(response, config.max_response_body).await;
        return Err(NoStream::Failed(if excerpt.is_empty() {
            format!("the server answered {status}")
        } else {
            format!("the server answered {status}: {excerpt}")
        }));
    }
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if !content_type.as_deref().is_some_and(is_event_stream) {
        let shown = match content_type {
            Some(t) => format!(
                "Content-Type {:?}",
                http_client::excerpt(t.as_bytes(), 80, true)
            ),
            None => "no Content-Type".into(),
        };
        return Err(NoStream::Refused(format!(
            "the server answered 200 with {shown}, not text/event-stream"
        )));
    }
    Ok(Stream {
        response,
        idle_timeout: config.idle_timeout,
    })
}

/// A Content-Type naming an event stream: the MIME type's essence `text/event-stream`, in any
/// case, whatever its parameters.
fn is_event_stream(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence
        .trim_matches([' ', '\t'])
        .eq_ignore_ascii_case("text/event-stream")
}

/// The start of a non-stream answer on one line for the log: at most `max` bytes are read
/// (for [`ANSWER_WAIT`] at most), and [`EXCERPT`] of them are quoted.
pub(super) async fn excerpt(response: reqwest::Response, max: usize) -> String {
    let (bytes, complete) = read_answer(response, max).await;
    http_client::excerpt(&bytes, EXCERPT, complete)
}

/// Reads at most `max` bytes of an answer, for [`ANSWER_WAIT`] at most; `true` with them when
/// that was the whole answer.
pub(super) async fn read_answer(mut response: reqwest::Response, max: usize) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    let read = async {
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = max - bytes.len();
                    bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if chunk.len() > room || bytes.len() == max {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    };
    let complete = tokio::time::timeout(ANSWER_WAIT, read)
        .await
        .unwrap_or(false);
    (bytes, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_type_is_compared_by_essence_in_any_case() {
        assert!(is_event_stream("text/event-stream"));
        assert!(is_event_stream("Text/Event-Stream; charset=utf-8"));
        assert!(is_event_stream("text/event-stream ;foo=bar"));
        assert!(!is_event_stream("text/plain"));
        assert!(!is_event_stream("text/event-streams"));
        assert!(!is_event_stream(""));
        assert!(!is_event_stream("application/json; x=text/event-stream"));
    }

    proptest::proptest! {
        #[test]
        fn any_content_type_is_judged_without_panic(text in ".*") {
            let _ = is_event_stream(&text);
        }
    }
}
