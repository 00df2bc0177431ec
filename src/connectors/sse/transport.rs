//! The HTTP transport eventsource-client runs on: ferry's one reqwest client (rustls with ring,
//! the connection's TLS options), so SSE needs no second HTTP/TLS stack.
//!
//! eventsource-client builds the request (method, headers, body) and parses the stream; this
//! sends the request, with `Last-Event-ID` (as UTF-8: the library accepts only ASCII ids),
//! and hands back the status, headers and body bytes.
//!
//! A stream that sends no byte (no event, no comment) for `idle_timeout` while ferry waits
//! for one fails here, and the connection reconnects. The clock runs only while ferry waits:
//! reqwest's own read timeout keeps running while ferry does not read (a route's queue is
//! full), so a long backpressure pause would have looked like a dead stream.
//!
//! It also watches the bytes for `retry:` fields. eventsource-client reports `retry:` only on
//! events it dispatches, and an event without data is never dispatched, so the common
//! `retry: 10000` block on its own would be lost.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use launchdarkly_sdk_transport::{ByteStream, HttpTransport, ResponseFuture, TransportError};
use sync_wrapper::{SyncFuture, SyncStream};

/// Sends eventsource-client's requests with a reqwest client.
#[derive(Clone)]
pub(super) struct ReqwestTransport {
    client: reqwest::Client,
    /// For the message when the stream falls silent.
    idle_timeout: Duration,
    retry: ServerRetry,
    last_event_id: Option<http::HeaderValue>,
}

impl ReqwestTransport {
    pub(super) fn new(
        client: reqwest::Client,
        idle_timeout: Duration,
        retry: ServerRetry,
        last_event_id: Option<http::HeaderValue>,
    ) -> Self {
        ReqwestTransport {
            client,
            idle_timeout,
            retry,
            last_event_id,
        }
    }
}

impl HttpTransport for ReqwestTransport {
    fn request(&self, request: http::Request<Option<Bytes>>) -> ResponseFuture {
        let (parts, body) = request.into_parts();
        let mut builder = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers);
        if let Some(body) = body {
            builder = builder.body(body);
        }
        if let Some(id) = &self.last_event_id {
            builder = builder.header("last-event-id", id.clone());
        }
        let idle_timeout = self.idle_timeout;
        let mut retry = RetryField::new(self.retry.clone());
        // eventsource-client wants Sync futures and streams; reqwest's are Send only. They are
        // only ever polled from one task, so wrapping them is all it takes.
        Box::pin(SyncFuture::new(async move {
            let silent = move || TransportError::new(Failure::silent(idle_timeout));
            let response = tokio::time::timeout(idle_timeout, builder.send())
                .await
                .map_err(|_| silent())?
                .map_err(|e| TransportError::new(Failure::from_reqwest(e)))?;
            let mut answer = http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let chunks = response.bytes_stream();
            // Each wait for the next chunk starts when ferry asks for it.
            let bytes = futures_util::stream::unfold(chunks, move |mut chunks| async move {
                let chunk = match tokio::time::timeout(idle_timeout, chunks.next()).await {
                    Ok(None) => return None,
                    Ok(Some(Ok(chunk))) => Ok(chunk),
                    Ok(Some(Err(e))) => Err(TransportError::new(Failure::from_reqwest(e))),
                    Err(_) => Err(silent()),
                };
                Some((chunk, chunks))
            })
            .inspect_ok(move |chunk| retry.feed(chunk));
            let body: ByteStream = Box::pin(SyncStream::new(bytes));
            answer.body(body).map_err(TransportError::new)
        }))
    }
}

/// The reconnection time the server last asked for with `retry:`, shared by the streams of
/// one connection.
#[derive(Clone, Debug)]
pub(super) struct ServerRetry(Arc<AtomicU64>);

impl ServerRetry {
    const NONE: u64 = u64::MAX;

    pub(super) fn new() -> Self {
        ServerRetry(Arc::new(AtomicU64::new(Self::NONE)))
    }

    pub(super) fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            Self::NONE => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// Finds `retry:` lines in a stream's bytes, whichever way chunks split them.
struct RetryField {
    /// The start of the current line: enough to tell a `retry:` line and its value.
    line: Vec<u8>,
    /// The current line is longer than any `retry:` line ferry takes.
    long: bool,
    found: ServerRetry,
}

impl RetryField {
    const MAX_LINE: usize = 32;

    fn new(found: ServerRetry) -> Self {
        RetryField {
            line: Vec::with_capacity(Self::MAX_LINE),
            long: false,
            found,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                self.end_line();
            } else if self.line.len() < Self::MAX_LINE {
                self.line.push(b);
            } else {
                self.long = true;
            }
        }
    }

    /// Per the SSE specification: field `retry`, one optional space, then only ASCII digits.
    fn end_line(&mut self) {
        if !self.long
            && let Some(value) = self.line.strip_prefix(b"retry:")
        {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if !value.is_empty()
                && value.iter().all(u8::is_ascii_digit)
                && let Some(ms) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&ms| ms != ServerRetry::NONE)
            {
                self.found.0.store(ms, Ordering::Relaxed);
            }
        }
        self.line.clear();
        self.long = false;
    }
}

/// Why a request or a stream failed, as one line for the log: reqwest's error and its causes,
/// without the URL (its query string may carry an API key).
#[derive(Debug)]
pub(super) struct Failure(String);

impl Failure {
    pub(super) fn from_reqwest(error: reqwest::Error) -> Self {
        Failure(super::http_client::describe(error))
    }

    fn silent(idle_timeout: Duration) -> Self {
        Failure(format!(
            "nothing received for {} (idle_timeout): the stream is taken for dead",
            humantime::format_duration(idle_timeout)
        ))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(chunks: &[&str]) -> Option<Duration> {
        let found = ServerRetry::new();
        let mut field = RetryField::new(found.clone());
        for chunk in chunks {
            field.feed(chunk.as_bytes());
        }
        found.get()
    }

    #[test]
    fn retry_fields_are_found_however_the_stream_is_cut() {
        assert_eq!(
            retry_after(&["retry: 1500\n\n"]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&["retry:20\r\n"]),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            retry_after(&["data: x\nre", "try: 7", "5\r"]),
            Some(Duration::from_millis(75))
        );
        assert_eq!(
            retry_after(&["retry: 5\n", "retry: 9\n"]),
            Some(Duration::from_millis(9)),
            "the last one counts"
        );
    }

    #[test]
    fn other_lines_are_not_retry_fields() {
        assert_eq!(retry_after(&["retry: soon\n"]), None);
        assert_eq!(retry_after(&["retry:  5\n"]), None, "one space only");
        assert_eq!(retry_after(&["data: retry: 5\n"]), None);
        assert_eq!(retry_after(&[":retry: 5\n"]), None);
        assert_eq!(retry_after(&["retry: 5"]), None, "not a whole line yet");
        assert_eq!(
            retry_after(&["retry: 1", "00000000000000000000000000000\n"]),
            None,
            "absurdly long"
        );
    }
}
