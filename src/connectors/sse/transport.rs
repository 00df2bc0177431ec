//! The HTTP transport eventsource-client runs on: ferry's one reqwest client (rustls with ring,
//! the connection's TLS options), so SSE needs no second HTTP/TLS stack.
//!
//! eventsource-client builds the request (method, headers, body, `Last-Event-ID`) and parses
//! the stream; this only sends the request and hands back the status, headers and body bytes.
//! The client's read timeout is the connection's `idle_timeout`: a stream that sends no byte
//! (no event, no comment) for that long fails here, and the connection reconnects.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use launchdarkly_sdk_transport::{ByteStream, HttpTransport, ResponseFuture, TransportError};
use sync_wrapper::{SyncFuture, SyncStream};

/// Sends eventsource-client's requests with a reqwest client.
#[derive(Clone)]
pub(super) struct ReqwestTransport {
    client: reqwest::Client,
    /// For the message when the stream falls silent.
    idle_timeout: Duration,
}

impl ReqwestTransport {
    pub(super) fn new(client: reqwest::Client, idle_timeout: Duration) -> Self {
        ReqwestTransport {
            client,
            idle_timeout,
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
        let idle_timeout = self.idle_timeout;
        // eventsource-client wants Sync futures and streams; reqwest's are Send only. They are
        // only ever polled from one task, so wrapping them is all it takes.
        Box::pin(SyncFuture::new(async move {
            let response = builder
                .send()
                .await
                .map_err(|e| TransportError::new(Failure::from_reqwest(e, idle_timeout)))?;
            let mut answer = http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body: ByteStream =
                Box::pin(SyncStream::new(response.bytes_stream().map_err(move |e| {
                    TransportError::new(Failure::from_reqwest(e, idle_timeout))
                })));
            answer.body(body).map_err(TransportError::new)
        }))
    }
}

/// Why a request or a stream failed, as one line for the log: reqwest's error and its causes,
/// without the URL (its query string may carry an API key).
#[derive(Debug)]
pub(super) struct Failure(String);

impl Failure {
    pub(super) fn from_reqwest(error: reqwest::Error, idle_timeout: Duration) -> Self {
        if error.is_timeout() && !error.is_connect() {
            return Failure(format!(
                "nothing received for {} (idle_timeout): the stream is taken for dead",
                humantime::format_duration(idle_timeout)
            ));
        }
        Failure(chain(&error.without_url()))
    }
}

/// `error: cause: root cause`, leaving out a cause whose text is already in the line (hyper
/// and reqwest repeat their causes).
pub(crate) fn chain(error: &dyn StdError) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Failure {}
