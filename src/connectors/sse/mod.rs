//! SSE source: reads a server-sent-events stream (a database change feed, a pub/sub channel)
//! and hands each event to the routes that take its type.
//!
//! eventsource-client parses the stream (`event:`, `id:`, `retry:`, multi-line `data:`,
//! comments, LF/CRLF) and builds each request (method, headers, body) over
//! [`transport::ReqwestTransport`]. ferry supervises the connection itself rather than letting
//! the library reconnect: the library retries a refused connection silently (logging each
//! attempt at warn level), so ferry could neither mark the connection down nor log the failure
//! once. Here every failure comes back to this module, which logs the change once, waits (the
//! server's `retry:` as the base of ferry's backoff), and opens a new stream that carries the
//! id of the last event received as `Last-Event-ID`.
//!
//! One HTTP stream per connection, whatever the number of routes reading it. While a route's
//! queue is full (`when_full: block`) the stream is not read, and TCP flow control reaches the
//! server. With `resume: true` each route's ack settles its event in the [`cursor::Tracker`],
//! whose cursor (the id of the last event every route has) is saved under the state
//! directory and sent as `Last-Event-ID` after a restart.

pub(crate) mod cursor;
mod handshake;
mod transport;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use eventsource_client::{BoxStream, Client, ClientBuilder, ReconnectOptions, SSE};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::http_client::{self, Timeouts};
use super::{Connection, Runtime};
use crate::config::{self, Reconnect, SourceSpec};
use crate::message::{Incoming, Message};
use crate::pipeline::queue::RouteInput;
use crate::pipeline::status::{Backoff, ConnectionStatus};
use cursor::{CursorFile, Tracker};
use handshake::Handshake;
use transport::{ReqwestTransport, ServerRetry};

/// How much of a refusing server's answer goes into the log, and how long it is waited for.
const EXCERPT: usize = 200;
const EXCERPT_WAIT: Duration = Duration::from_secs(2);

/// A route reading this stream.
struct SourceRoute {
    source: config::SseSource,
    input: RouteInput,
}

/// Built on the first route's `add_source`, where a failure can still stop `ferry run`.
struct Prepared {
    url: url::Url,
    client: reqwest::Client,
    handshake: Option<Handshake>,
    /// With `resume: true`: the cursor file and the cursor read from it.
    cursor: Option<(CursorFile, Arc<Tracker>)>,
}

/// A server-sent-events stream ferry reads.
pub struct SseConnection {
    name: Arc<str>,
    config: config::SseConnection,
    reconnect: Reconnect,
    status: ConnectionStatus,
    state_dir: PathBuf,
    routes: Vec<SourceRoute>,
    prepared: Option<Prepared>,
}

impl SseConnection {
    pub fn new(
        name: &str,
        config: config::SseConnection,
        reconnect: Reconnect,
        status: ConnectionStatus,
        state_dir: &Path,
    ) -> Self {
        SseConnection {
            name: name.into(),
            config,
            reconnect,
            status,
            state_dir: state_dir.to_path_buf(),
            routes: Vec::new(),
            prepared: None,
        }
    }

    fn prepare(&self) -> anyhow::Result<Prepared> {
        let url = url::Url::parse(&self.config.url).context("invalid url")?;
        let client = http_client::client(
            &self.config.tls,
            &self.name,
            Timeouts {
                connect: Some(self.reconnect.connect_timeout),
                // Not reqwest's read timeout: see `transport` for why.
                read: None,
                request: None,
            },
        )?;
        let handshake = self
            .config
            .handshake
            .as_ref()
            .map(Handshake::compile)
            .transpose()?;
        let cursor = if self.config.resume {
            let (file, saved) =
                CursorFile::open(&self.state_dir, self.name.clone(), &self.config.url)?;
            Some((file, Tracker::new(self.name.clone(), saved)))
        } else {
            None
        };
        Ok(Prepared {
            url,
            client,
            handshake,
            cursor,
        })
    }
}

impl Connection for SseConnection {
    fn add_source(
        &mut self,
        _route: &str,
        source: &SourceSpec,
        input: RouteInput,
    ) -> anyhow::Result<()> {
        let SourceSpec::Sse(source) = source else {
            anyhow::bail!(
                "connection {} is an SSE stream, the source is not",
                self.name
            );
        };
        if self.prepared.is_none() {
            let prepared = self
                .prepare()
                .with_context(|| format!("connection {}", self.name))?;
            self.prepared = Some(prepared);
        }
        self.routes.push(SourceRoute {
            source: source.clone(),
            input,
        });
        Ok(())
    }

    fn start(mut self: Box<Self>, runtime: &Runtime) {
        let Some(prepared) = self.prepared.take() else {
            return; // no route reads it
        };
        let tracker = match prepared.cursor {
            Some((file, tracker)) => {
                runtime.tasks.spawn(
                    "cursor writer",
                    file.keep(tracker.subscribe(), runtime.close.clone()),
                );
                Some(tracker)
            }
            None => None,
        };
        let reader = Reader {
            url: prepared.url,
            shown_url: cursor::stream_url(&self.config.url),
            name: self.name,
            config: self.config,
            reconnect: self.reconnect,
            status: self.status,
            routes: self.routes,
            client: prepared.client,
            handshake: prepared.handshake,
            tracker,
            server_retry: ServerRetry::new(),
        };
        let stop = runtime.stop_sources.clone();
        runtime.sources.spawn("stream reader", reader.run(stop));
    }
}

/// The task that reads the stream: connects, feeds the routes, and reconnects.
struct Reader {
    name: Arc<str>,
    config: config::SseConnection,
    url: url::Url,
    /// The URL for logs: without query (API keys) or credentials.
    shown_url: String,
    reconnect: Reconnect,
    status: ConnectionStatus,
    routes: Vec<SourceRoute>,
    client: reqwest::Client,
    handshake: Option<Handshake>,
    tracker: Option<Arc<Tracker>>,
    /// The `retry:` the server sent last.
    server_retry: ServerRetry,
}

/// Where the reconnection state stands between two streams.
struct Resume {
    /// The id of the last event received: `Last-Event-ID` of the next stream.
    last_id: Option<String>,
    /// The server's `retry:` the backoff is built on.
    retry: Option<Duration>,
    backoff: Backoff,
}

impl Resume {
    /// The stream sent something: it works, so the next failure starts the backoff afresh. A
    /// server that accepts and closes at once keeps backing off instead of being hammered.
    fn settled(&mut self) {
        self.backoff.reset();
    }
}

/// How one stream ended.
enum Ended {
    /// It failed; reconnect after a delay.
    Failed(String),
    /// Shutdown: the sources stop, or the routes no longer take messages.
    Stopped,
}

impl Reader {
    async fn run(self, stop: CancellationToken) {
        let mut resume = Resume {
            last_id: self.tracker.as_ref().and_then(|t| t.cursor()),
            retry: None,
            backoff: Backoff::new(&self.reconnect),
        };
        loop {
            let ended = self.serve(&mut resume, &stop).await;
            let reason = match ended {
                Ended::Stopped => break,
                Ended::Failed(reason) => reason,
            };
            let retry = self.server_retry.get();
            if retry.is_some() && retry != resume.retry {
                // The server's reconnection time becomes the base of the backoff.
                resume.retry = retry;
                let retry = retry.unwrap_or_default();
                resume.backoff = Backoff::new(&Reconnect {
                    initial_delay: retry,
                    max_delay: self.reconnect.max_delay.max(retry),
                    ..self.reconnect.clone()
                });
            }
            let delay = resume.backoff.next_delay();
            self.status.down(&reason, delay);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        tracing::debug!(connection = %self.name, "stopped reading");
    }

    /// A new stream (not connected until polled), asking for what came after `last_id`.
    fn open(
        &self,
        last_id: Option<&str>,
    ) -> Result<BoxStream<eventsource_client::Result<SSE>>, String> {
        let mut builder = ClientBuilder::for_url(self.url.as_str())
            .map_err(|e| format!("invalid URL: {e}"))?
            .method(self.config.method.as_str().to_string())
            // The HTTP client follows redirects within the stream's origin; one it stopped at
            // leaves it, and the connection's headers (API keys) must not go with it.
            .redirect_limit(0)
            // ferry reconnects itself (see the module documentation).
            .reconnect(
                ReconnectOptions::reconnect(false)
                    .retry_initial(false)
                    .build(),
            );
        for (name, value) in &self.config.headers {
            builder = builder
                .header(name, value.expose())
                // The name and value were validated; never show the value.
                .map_err(|_| format!("header `{name}` cannot be sent"))?;
        }
        if let Some(body) = &self.config.body {
            builder = builder.body(body.clone());
        }
        // Set by the transport rather than the library, which refuses ids that are not plain
        // ASCII (SSE ids are any text).
        let last_event_id = last_id.and_then(|id| match http::HeaderValue::from_bytes(id.as_bytes()) {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!(connection = %self.name, "event id {id:?} cannot be sent as Last-Event-ID; connecting without it");
                None
            }
        });
        let transport = ReqwestTransport::new(
            self.client.clone(),
            self.config.idle_timeout,
            self.server_retry.clone(),
            last_event_id,
        );
        Ok(builder.build_with_transport(transport).stream())
    }

    /// Opens one stream and reads it until it fails or `stop`. An event already taken from
    /// the stream is always handed to every route that takes it: stopping mid-way would
    /// count as not delivered and hold the resume cursor back for nothing.
    async fn serve(&self, resume: &mut Resume, stop: &CancellationToken) -> Ended {
        let last_id = resume.last_id.as_deref().filter(|_| self.config.resume);
        let mut stream = match self.open(last_id) {
            Ok(stream) => stream,
            Err(reason) => return Ended::Failed(reason),
        };
        // Until the handshake went through, the server sends nothing a route asked for.
        let mut live = self.handshake.is_none();
        loop {
            let item = tokio::select! {
                _ = stop.cancelled() => return Ended::Stopped,
                item = stream.next() => item,
            };
            let event = match item {
                None => return Ended::Failed("the stream ended".into()),
                Some(Ok(SSE::Connected(_))) => {
                    if live {
                        self.connected(resume);
                    }
                    continue;
                }
                Some(Ok(SSE::Comment(_))) => {
                    resume.settled();
                    continue;
                }
                Some(Ok(SSE::Event(event))) => {
                    resume.settled();
                    event
                }
                Some(Err(e)) => return Ended::Failed(describe(e).await),
            };
            if event.id.is_some() {
                resume.last_id.clone_from(&event.id);
            }
            let mut message = Message::new(
                self.name.clone(),
                event.event_type.clone(),
                Bytes::from(event.data),
            );
            message.event = Some(event.event_type);
            message.id = event.id;
            match &self.handshake {
                Some(handshake) if message.event.as_deref() == Some(handshake.on.as_str()) => {
                    // Not for the routes; its id still moves the cursor.
                    if let Some(tracker) = &self.tracker {
                        tracker.begin(message.id.clone(), 0);
                    }
                    let sent = handshake.send(
                        &self.client,
                        &self.name,
                        &self.url,
                        &message,
                        self.config.idle_timeout,
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return Ended::Stopped,
                        sent = sent => if let Err(e) = sent {
                            return Ended::Failed(format!("{e:#}"));
                        },
                    }
                    live = true;
                    self.connected(resume);
                }
                _ => {
                    if !self.deliver(message).await {
                        return Ended::Stopped;
                    }
                }
            }
        }
    }

    /// The stream is open (and the handshake, if any, went through).
    fn connected(&self, resume: &mut Resume) {
        let detail = match (&resume.last_id, self.config.resume) {
            (Some(id), true) => format!("to {} (resuming after event id {id:?})", self.shown_url),
            _ => format!("to {}", self.shown_url),
        };
        self.status.up(&detail);
    }

    /// Hands one event to every route that takes its type, waiting while a queue is full.
    /// False when a route no longer takes messages (shutdown).
    async fn deliver(&self, message: Message) -> bool {
        let event = message.event.as_deref().unwrap_or_default();
        let takers: Vec<&SourceRoute> = self
            .routes
            .iter()
            .filter(|r| r.source.takes(event))
            .collect();
        let mut acks = match &self.tracker {
            Some(tracker) => tracker.begin(message.id.clone(), takers.len()),
            None => Vec::new(),
        };
        for route in takers {
            let ack = acks.pop().unwrap_or_else(crate::message::Ack::none);
            let incoming = Incoming {
                message: message.clone(),
                ack,
            };
            if !route.input.push(incoming).await {
                return false;
            }
        }
        true
    }
}

/// One line for the log about why a stream failed.
async fn describe(error: eventsource_client::Error) -> String {
    use eventsource_client::Error;
    match error {
        Error::Transport(e) => e.inner().to_string(),
        Error::UnexpectedResponse(response, body) => {
            let status = http::StatusCode::from_u16(response.status())
                .map(|s| s.to_string())
                .unwrap_or_else(|_| response.status().to_string());
            let excerpt = excerpt(body.into_stream()).await;
            if excerpt.is_empty() {
                format!("the server answered {status}")
            } else {
                format!("the server answered {status}: {excerpt}")
            }
        }
        Error::Eof | Error::UnexpectedEof => "the server closed the stream".into(),
        Error::MaxRedirectLimitReached(_) => {
            "the server redirected the stream to another origin; not followed, so the connection's headers go nowhere else (put the new URL in the config)".into()
        }
        Error::InvalidLine(why) => format!("the stream is not valid SSE ({why})"),
        other => other.to_string(),
    }
}

/// The start of a refusing server's answer (read for two seconds at most), on one line.
async fn excerpt(mut body: launchdarkly_sdk_transport::ByteStream) -> String {
    let mut bytes = Vec::new();
    let read = async {
        while bytes.len() < EXCERPT {
            match body.next().await {
                Some(Ok(chunk)) => bytes.extend_from_slice(&chunk),
                _ => break,
            }
        }
    };
    let complete = tokio::time::timeout(EXCERPT_WAIT, read).await.is_ok() && bytes.len() <= EXCERPT;
    http_client::excerpt(&bytes, EXCERPT, complete)
}
