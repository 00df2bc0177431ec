//! SSE source: reads a server-sent-events stream (a database change feed, a pub/sub channel)
//! and hands each event to the routes that take its type.
//!
//! ferry follows the WHATWG HTML standard's "server-sent events" section: [`transport`] sends
//! the request and checks the answer as its processing model says, [`parse`] turns the bytes
//! into events as its parsing rules say, and this module feeds the routes and reconnects. Every
//! failure comes back here, which logs the change once, waits (the server's `retry:` at least,
//! ferry's backoff above it), and opens a new stream carrying the last event ID as
//! `Last-Event-ID`. A server that answers with something other than an event stream (`204`,
//! another Content-Type) is one the standard gives up on; ferry, a daemon expected to outlive
//! such a misconfiguration, retries it at the connection's longest delay.
//!
//! One HTTP stream per connection, whatever the number of routes reading it. While a route's
//! queue is full (`when_full: block`) the stream is not read, and TCP flow control reaches the
//! server. With `resume: true` each route's ack settles its event in the [`cursor::Tracker`],
//! whose cursor (the id of the last event every route has) is saved under the state
//! directory and sent as `Last-Event-ID` after a restart.

pub mod config;
pub(crate) mod cursor;
mod handshake;
mod parse;
pub mod protocol;
mod read;
mod transport;
pub mod url_form;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::Connection;
use super::http_client::{self, Timeouts};
use crate::config::{Reconnect, SourceSpec};
use crate::contracts::ConnectionContext;
use crate::contracts::queue::RouteInput;
use crate::contracts::status::{Backoff, ConnectionStatus, RateLimitedLog};
use crate::message::{Incoming, Message};
use cursor::{CursorFile, Tracker};
use handshake::Handshake;
use parse::{Limits, Parser, TooLong};
use transport::NoStream;

/// A route reading this stream.
struct SourceRoute {
    source: crate::config::SseSource,
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
    config: crate::config::SseConnection,
    reconnect: Reconnect,
    status: ConnectionStatus,
    state_dir: PathBuf,
    routes: Vec<SourceRoute>,
    prepared: Option<Prepared>,
}

impl SseConnection {
    pub fn new(
        name: &str,
        config: crate::config::SseConnection,
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
        let url = url::Url::parse(self.config.url.expose()).context("invalid url")?;
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
                CursorFile::open(&self.state_dir, self.name.clone(), self.config.url.expose())?;
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

    fn start(mut self: Box<Self>, runtime: &ConnectionContext) {
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
            shown_url: cursor::stream_url(self.config.url.expose()),
            name: self.name,
            config: self.config,
            reconnect: self.reconnect,
            status: self.status,
            routes: self.routes,
            client: prepared.client,
            handshake: prepared.handshake,
            tracker,
            too_long_log: RateLimitedLog::default(),
        };
        let stop = runtime.stop_sources.clone();
        runtime.sources.spawn("stream reader", reader.run(stop));
    }
}

/// The task that reads the stream: connects, feeds the routes, and reconnects.
struct Reader {
    name: Arc<str>,
    config: crate::config::SseConnection,
    url: url::Url,
    /// The URL for logs: without query (API keys) or credentials.
    shown_url: String,
    reconnect: Reconnect,
    status: ConnectionStatus,
    routes: Vec<SourceRoute>,
    client: reqwest::Client,
    handshake: Option<Handshake>,
    tracker: Option<Arc<Tracker>>,
    /// Streams failed for a line or an event past its bound: logged at most every few seconds,
    /// however fast a hostile server repeats it.
    too_long_log: RateLimitedLog,
}

/// Where the reconnection state stands between two streams.
struct Resume {
    /// The last event ID (empty: none): carried by the next stream's events, and its
    /// `Last-Event-ID` with `resume: true`.
    last_id: String,
    /// The reconnection time the server asked for with `retry:`: no reconnect comes sooner.
    retry: Option<Duration>,
    backoff: Backoff,
    /// How many streams failed for a line or an event past its bound, since ferry started.
    too_long: u64,
}

impl Resume {
    /// The stream works (it sent a whole line): if it stays up for `stable_after`, the next
    /// failure starts the backoff afresh. A server that accepts and closes at once, or sends
    /// an endless line, keeps backing off instead of being hammered.
    fn settled(&mut self) {
        self.backoff.reset();
    }

    /// The server's `retry:`. It becomes the first step of the backoff, which doubles from
    /// there; the jitter of [`Backoff`] goes below each step, so the delay is kept at least
    /// `retry` in [`Self::next_delay`].
    fn set_retry(&mut self, retry: Duration, reconnect: &Reconnect) {
        if self.retry == Some(retry) {
            return;
        }
        self.retry = Some(retry);
        self.backoff = Backoff::new(&Reconnect {
            initial_delay: retry,
            max_delay: reconnect.max_delay.max(retry),
            ..reconnect.clone()
        });
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.backoff.next_delay();
        delay.max(self.retry.unwrap_or_default())
    }
}

/// How one stream ended.
enum Ended {
    /// It failed; reconnect after a delay.
    Failed(String),
    /// The server answered without an event stream: retry at the longest delay.
    Refused(String),
    /// A line or an event past its bound: reconnect after a delay, from the last event ID.
    TooLong(TooLong),
    /// Shutdown: the sources stop, or the routes no longer take messages.
    Stopped,
}

impl Reader {
    async fn run(self, stop: CancellationToken) {
        let mut resume = Resume {
            last_id: self
                .tracker
                .as_ref()
                .and_then(|t| t.cursor())
                .unwrap_or_default(),
            retry: None,
            backoff: Backoff::new(&self.reconnect),
            too_long: 0,
        };
        loop {
            let (reason, delay) = match self.serve(&mut resume, &stop).await {
                Ended::Stopped => break,
                Ended::Failed(reason) => (reason, resume.next_delay()),
                Ended::Refused(reason) => {
                    let delay = self
                        .reconnect
                        .max_delay
                        .max(resume.retry.unwrap_or_default());
                    let reason = format!(
                        "{reason}; the SSE standard gives up on such a server, ferry retries it every {} (reconnect.max_delay)",
                        humantime::format_duration(delay)
                    );
                    (reason, delay)
                }
                Ended::TooLong(too_long) => {
                    resume.too_long += 1;
                    self.status.over_limit();
                    let count = resume.too_long;
                    let delay = resume.next_delay();
                    self.too_long_log.warn(|| {
                        format!(
                            "connection {}: {too_long}; stream dropped and reopened from the last event ID ({count} so far)",
                            self.name
                        )
                    });
                    (too_long.to_string(), delay)
                }
            };
            self.status.down(&reason, delay);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        tracing::debug!(connection = %self.name, "stopped reading");
    }

    /// `Last-Event-ID` for the next stream, with `resume: true` and an ID to send.
    fn last_event_id_header(&self, last_id: &str) -> Option<http::HeaderValue> {
        if !self.config.resume || last_id.is_empty() {
            return None;
        }
        match http::HeaderValue::from_bytes(last_id.as_bytes()) {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!(connection = %self.name, "event id {last_id:?} cannot be sent as Last-Event-ID; connecting without it");
                None
            }
        }
    }

    /// Opens one stream and reads it until it fails or `stop`. An event already parsed from
    /// the stream is always handed to every route that takes it: stopping mid-way would
    /// count as not delivered and hold the resume cursor back for nothing.
    async fn serve(&self, resume: &mut Resume, stop: &CancellationToken) -> Ended {
        let last_event_id = self.last_event_id_header(&resume.last_id);
        let opened = tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            opened = transport::open(&self.client, &self.url, &self.config, last_event_id) => opened,
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(NoStream::Failed(reason)) => return Ended::Failed(reason),
            Err(NoStream::Refused(reason)) => return Ended::Refused(reason),
        };
        // With a handshake, the connection is up only once it went through: until then the
        // server sends nothing a route asked for.
        if self.handshake.is_none() {
            self.connected(resume);
        }
        let limits = Limits {
            max_line: self.config.max_line_size,
            max_event: self.config.max_event_size,
        };
        let mut parser = Parser::new(limits, resume.last_id.clone());
        let mut settled = false;
        let mut events = Vec::new();
        loop {
            let chunk = tokio::select! {
                _ = stop.cancelled() => return Ended::Stopped,
                chunk = stream.next_chunk() => chunk,
            };
            let chunk = match chunk {
                None => return Ended::Failed("the server closed the stream".into()),
                Some(Err(reason)) => return Ended::Failed(reason),
                Some(Ok(chunk)) => chunk,
            };
            let parsed = parser.feed(&chunk, &mut events);
            if let Some(retry) = parser.retry() {
                resume.set_retry(retry, &self.reconnect);
            }
            if !settled && parser.lines() > 0 {
                settled = true;
                resume.settled();
            }
            for event in events.drain(..) {
                resume.last_id.clone_from(&event.last_event_id);
                let mut message = Message::new(
                    self.name.clone(),
                    event.event_type.clone(),
                    Bytes::from(event.data),
                );
                message.event = Some(event.event_type);
                message.id = Some(event.last_event_id).filter(|id| !id.is_empty());
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
                            self.config.max_response_body,
                        );
                        tokio::select! {
                            _ = stop.cancelled() => return Ended::Stopped,
                            sent = sent => if let Err(e) = sent {
                                return Ended::Failed(format!("{e:#}"));
                            },
                        }
                        self.connected(resume);
                    }
                    _ => {
                        if !self.deliver(message).await {
                            return Ended::Stopped;
                        }
                    }
                }
            }
            // An `id:` in a block without data moves it too.
            resume.last_id = parser.last_event_id().to_owned();
            if let Err(too_long) = parsed {
                return Ended::TooLong(too_long);
            }
        }
    }

    /// The stream is open (and the handshake, if any, went through).
    fn connected(&self, resume: &Resume) {
        let detail = if self.config.resume && !resume.last_id.is_empty() {
            format!(
                "to {} (resuming after event id {:?})",
                self.shown_url, resume.last_id
            )
        } else {
            format!("to {}", self.shown_url)
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
                reply: None,
            };
            if !route.input.push(incoming).await {
                return false;
            }
        }
        true
    }
}
