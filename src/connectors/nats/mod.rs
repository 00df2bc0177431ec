//! NATS connector, on async-nats: core NATS subscriptions and publishes, JetStream
//! ([`jetstream`]) sources and sinks, and KV buckets ([`kv`]) read and written through them.
//!
//! async-nats supervises the connection itself: it retries the first connection, reconnects
//! with the delay we give it (ferry's capped, jittered backoff), fails over between the URLs,
//! and re-sends every subscription after a reconnect. This module wires that to ferry: the
//! connection's events become state changes (logged once each), every route's source becomes a
//! subscription (or a JetStream consumer) feeding the route's queue, and sinks publish with a
//! timeout, because the client's publish waits silently when its internal channel is full.
//!
//! Two things catch a connection that claims to be up and is not: the client's pings
//! (`ping_interval`; two unanswered and it reconnects) and, on connections that feed routes,
//! the liveness [`probe`].
//!
//! What a sink's `send` confirms: on core NATS, that the message left ferry's socket (a flush;
//! core NATS has no server ack, so that is the most it can say); with `jetstream: true`, that
//! the stream stored it (its PubAck).

pub mod config;
mod diagnose;
mod jetstream;
mod kv;
pub mod names;
mod probe;
pub mod protocol;
mod read;
mod request;
pub mod url_form;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_nats::{ConnectOptions, Event, HeaderMap, Subscriber};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::{Connection, Sinks};
use crate::config::{Reconnect, SinkSpec, SourceSpec};
use crate::contracts::queue::RouteInput;
use crate::contracts::status::{Backoff, ConnectionStatus};
use crate::contracts::{BoxFuture, Confirmation, ConnectionContext, Sink, SinkError};
use crate::message::{Headers, Incoming, Message};

/// How long a publish may wait for room in the client's outgoing channel, and then for the
/// socket write (core NATS), before the sink reports the connection unavailable.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a sink waits for its connection's first connect before it reports it unavailable:
/// a route that starts with its connection (`ferry relay`, a restart) has its first messages
/// wait for it instead of failing them with a warning. Once the connection was up, a sink
/// whose connection is down says so at once (a spool takes over without delay).
const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// A route's core NATS subscription, registered before the connection starts.
struct SourceRoute {
    subject: String,
    queue_group: Option<String>,
    input: RouteInput,
    /// A request route's: its messages come with the way back to their requester.
    replies: bool,
}

/// The client, once it exists, with its JetStream context.
struct Handles {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    /// Bumped on every disconnect, so a sink waiting for a write hears of it.
    disconnects: watch::Receiver<u64>,
    flushes: Arc<Flushes>,
}

/// Group flushes: one socket flush confirms every core publish queued before it, so a route
/// with many messages in flight pays one flush per batch, not one per message. The flush is
/// asked for by the first confirmation awaited while none is under way, on the route
/// worker's own task: no task of its own to wake per message, no timer.
struct Flushes {
    /// Core publishes queued with the client so far.
    queued: AtomicU64,
    /// A confirmation is flushing for everyone: the others wait for `written`.
    flushing: AtomicBool,
    /// How many of the queued publishes the flushes so far have written. Also sent, unchanged,
    /// when a flush ends without writing, so that a waiting confirmation takes over.
    written: watch::Sender<u64>,
}

impl Flushes {
    /// Resolves once the publish numbered `queued` was written to the socket (`Ok`), or the
    /// flush failed or the client is gone (`Err`).
    async fn written(&self, client: &async_nats::Client, queued: u64) -> Result<(), ()> {
        let mut written = self.written.subscribe();
        loop {
            if *written.borrow_and_update() >= queued {
                return Ok(());
            }
            if self.flushing.swap(true, Ordering::AcqRel) {
                written.changed().await.map_err(|_| ())?;
                continue;
            }
            // This confirmation flushes, for every publish queued so far; dropped half-way,
            // it hands the flush on (see `Flushing`).
            let mut flushing = Flushing {
                flushes: self,
                wrote: 0,
            };
            let target = self.queued.load(Ordering::Acquire);
            let flushed = client.flush().await;
            if flushed.is_ok() {
                flushing.wrote = target;
            }
            drop(flushing);
            // The connection broke: the route hears it from the disconnect watch, or from this.
            if let Err(error) = flushed {
                tracing::debug!("flush failed: {error}");
                return Err(());
            }
        }
    }
}

/// A flush under way. When it ends, however it ends, the next confirmation may flush, and
/// those waiting look again: one notification says both what it wrote and that it ended.
struct Flushing<'a> {
    flushes: &'a Flushes,
    /// The publishes queued before it, once it succeeded (until then 0: `written` stays).
    wrote: u64,
}

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        self.flushes.flushing.store(false, Ordering::Release);
        let wrote = self.wrote;
        self.flushes
            .written
            .send_modify(|written| *written = (*written).max(wrote));
    }
}

pub struct NatsConnection {
    name: Arc<str>,
    config: crate::config::NatsConnection,
    reconnect: Reconnect,
    status: ConnectionStatus,
    sources: Vec<SourceRoute>,
    jetstream_sources: Vec<jetstream::JetStreamRoute>,
    /// Sinks get the client once it exists; until then they report the connection unavailable.
    handles: Arc<tokio::sync::OnceCell<Handles>>,
    /// Whether the connection is up, for sinks to wait on: `None` before the first connect
    /// (or the first failure).
    connected: Arc<watch::Sender<Option<bool>>>,
}

/// The delays async-nats asks for between connection attempts, from ferry's [`Backoff`]: it
/// starts over only once a connection stayed up for `stable_after` (async-nats's own attempt
/// counter starts over at every connection).
#[derive(Clone)]
struct Pacing(Arc<Mutex<(Backoff, Duration)>>);

impl Pacing {
    fn new(reconnect: &Reconnect) -> Self {
        Pacing(Arc::new(Mutex::new((
            Backoff::new(reconnect),
            Duration::ZERO,
        ))))
    }

    /// The delay before the next attempt (async-nats's callback).
    fn next_attempt(&self) -> Duration {
        let mut state = self.0.lock().expect("pacing lock");
        state.1 = state.0.next_delay();
        state.1
    }

    /// The delay async-nats was last given, for the log: async-nats asks for it as it
    /// notices a disconnect, before ferry hears of the disconnect.
    fn last_delay(&self) -> Duration {
        self.0.lock().expect("pacing lock").1
    }

    fn connected(&self) {
        self.0.lock().expect("pacing lock").0.reset();
    }
}

impl NatsConnection {
    pub fn new(
        name: &str,
        config: crate::config::NatsConnection,
        reconnect: Reconnect,
        status: ConnectionStatus,
    ) -> Self {
        NatsConnection {
            name: name.into(),
            config,
            reconnect,
            status,
            sources: Vec::new(),
            jetstream_sources: Vec::new(),
            handles: Arc::new(tokio::sync::OnceCell::new()),
            connected: Arc::new(watch::Sender::new(None)),
        }
    }

    /// A `tls:` block, or a tls:// or wss:// URL, makes TLS a requirement: without it the
    /// client would follow the server's INFO, and a man in the middle announcing no TLS would
    /// get the CONNECT, credentials included, in plaintext.
    fn requires_tls(&self) -> bool {
        let c = &self.config;
        c.tls.required
            || c.urls
                .iter()
                .any(|u| u.starts_with("tls://") || u.starts_with("wss://"))
    }

    async fn options(
        &self,
        events: mpsc::UnboundedSender<Event>,
        pacing: Pacing,
    ) -> anyhow::Result<ConnectOptions> {
        let c = &self.config;
        let mut options = ConnectOptions::new();
        if let Some(creds) = &c.creds {
            options = options
                .credentials_file(creds)
                .await
                .with_context(|| format!("cannot read the creds file {}", creds.display()))?;
        }
        if let (Some(user), Some(password)) = (&c.user, &c.password) {
            options = options.user_and_password(user.clone(), password.expose().to_string());
        }
        if let Some(token) = &c.token {
            options = options.token(token.expose().to_string());
        }
        if let Some(seed) = &c.nkey {
            options = options.nkey(seed.expose().to_string());
        }
        if self.requires_tls() {
            let tls = super::tls::client_config(&c.tls, &self.name)?;
            options = options.tls_client_config((*tls).clone()).require_tls(true);
        }
        options = options
            .name(
                c.name
                    .clone()
                    .unwrap_or_else(|| format!("ferry-{}", self.name)),
            )
            .connection_timeout(self.reconnect.connect_timeout)
            // Two pings without a pong and the client reconnects: a stalled TCP connection is
            // noticed within about three intervals instead of never.
            .ping_interval(c.ping_interval)
            .retry_on_initial_connect()
            .max_reconnects(None)
            // Messages wait here while a route's queue is full (`when_full: block`), or while
            // the route's task is busy; past this the client drops them and reports a slow
            // consumer (core NATS has no flow control). 16k absorbs a burst larger than a
            // default route queue (10,000) and keeps ferry within about 25 MB when a NATS
            // publisher outruns the sink (bench/RESULTS.md); 64k cost 40 MB.
            .subscription_capacity(16 * 1024)
            // Outgoing messages waiting for the socket. Small: while the server is slow or
            // away, the route's own bounded queue is where messages wait, so memory stays
            // bounded by the route's `queue` settings.
            .client_capacity(1024)
            .reconnect_delay_callback(move |_attempt| pacing.next_attempt())
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    let _ = events.send(event);
                }
            });
        Ok(options)
    }
}

/// Makes the sinks of one NATS connection: each a handle on its client, once it connected.
struct NatsSinks {
    name: Arc<str>,
    handles: Arc<tokio::sync::OnceCell<Handles>>,
    connected: Arc<watch::Sender<Option<bool>>>,
}

impl Sinks for NatsSinks {
    fn add_sink(&self, sink: &SinkSpec) -> anyhow::Result<Arc<dyn Sink>> {
        let SinkSpec::Nats(sink) = sink else {
            anyhow::bail!("connection {} is NATS, the sink is not", self.name);
        };
        Ok(Arc::new(NatsSink {
            connection: self.name.clone(),
            handles: self.handles.clone(),
            connected: self.connected.clone(),
            // A KV put waits for the stream's ack, one at a time, as a JetStream publish does.
            jetstream: sink.jetstream || sink.kv.is_some(),
            kv: sink.kv.clone(),
        }))
    }
}

impl Connection for NatsConnection {
    fn add_source(
        &mut self,
        route: &str,
        source: &SourceSpec,
        input: RouteInput,
    ) -> anyhow::Result<()> {
        let SourceSpec::Nats(source) = source else {
            anyhow::bail!("connection {} is NATS, the source is not", self.name);
        };
        match (&source.jetstream, &source.kv) {
            (Some(consumer), _) => self.jetstream_sources.push(jetstream::JetStreamRoute {
                route: route.to_string(),
                subject: source.subject.clone(),
                config: consumer.clone(),
                input,
                kv: None,
            }),
            (None, Some(bucket)) => {
                let watch = kv::watch(route, &source.subject, bucket, input);
                self.jetstream_sources.push(watch)
            }
            (None, None) => self.sources.push(SourceRoute {
                subject: source.subject.clone(),
                queue_group: source.queue_group.clone(),
                input,
                replies: source.replies,
            }),
        }
        Ok(())
    }

    fn sinks(&mut self) -> Arc<dyn Sinks> {
        Arc::new(NatsSinks {
            name: self.name.clone(),
            handles: self.handles.clone(),
            connected: self.connected.clone(),
        })
    }

    fn start(self: Box<Self>, runtime: &ConnectionContext) {
        let runtime = runtime.clone();
        let tasks = runtime.tasks.clone();
        tasks.spawn("client", async move {
            let name = self.name.clone();
            if let Err(e) = self.run(runtime).await {
                tracing::error!(connection = %name, "{e:#}");
            }
        });
    }
}

impl NatsConnection {
    async fn run(mut self: Box<Self>, runtime: ConnectionContext) -> anyhow::Result<()> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let pacing = Pacing::new(&self.reconnect);
        let options = self
            .options(events_tx, pacing.clone())
            .await
            .with_context(|| format!("connection {}", self.name))?;
        let urls: Vec<async_nats::ServerAddr> = self
            .config
            .urls
            .iter()
            .map(|u| u.parse())
            .collect::<Result<_, _>>()
            .with_context(|| format!("connection {}: invalid url", self.name))?;
        // With retry_on_initial_connect this returns at once; the client connects in the
        // background and reports through the event callback.
        let client = options
            .connect(urls.clone())
            .await
            .with_context(|| format!("connection {}", self.name))?;
        let mut context = async_nats::jetstream::new(client.clone());
        context.set_timeout(jetstream::REQUEST_TIMEOUT);
        let (disconnects_tx, disconnects) = watch::channel(0u64);
        let flushes = Arc::new(Flushes {
            queued: AtomicU64::new(0),
            flushing: AtomicBool::new(false),
            written: watch::Sender::new(0),
        });
        let _ = self.handles.set(Handles {
            client: client.clone(),
            jetstream: context.clone(),
            disconnects,
            flushes,
        });

        let feeds_routes = !self.sources.is_empty() || !self.jetstream_sources.is_empty();
        let probe_subject = match &self.config.probe {
            Some(probe) if feeds_routes => {
                let subject = probe::subject(&self.name, probe);
                runtime.tasks.spawn(
                    "probe",
                    probe::run(
                        client.clone(),
                        subject.clone(),
                        probe.clone(),
                        self.status.clone(),
                        runtime.close.clone(),
                    ),
                );
                Some(Arc::<str>::from(subject))
            }
            _ => None,
        };
        let replies = (self.sources.iter().any(|s| s.replies))
            .then(|| request::Replies::start(client.clone(), &runtime));
        for source in &self.sources {
            let subscriber = match &source.queue_group {
                Some(group) => {
                    client
                        .queue_subscribe(source.subject.clone(), group.clone())
                        .await
                }
                None => client.subscribe(source.subject.clone()).await,
            }
            .with_context(|| {
                format!(
                    "connection {}: cannot subscribe to {}",
                    self.name, source.subject
                )
            })?;
            runtime.sources.spawn(
                "subscription",
                feed(
                    self.name.clone(),
                    subscriber,
                    source.input.clone(),
                    probe_subject.clone(),
                    runtime.stop_sources.clone(),
                    replies.clone().filter(|_| source.replies),
                ),
            );
        }
        // The connection is up once connected and, the first time, once every JetStream
        // source is bound to its consumer (so `ferry ready` means they read).
        let consumers = self.jetstream_sources.len();
        let (bound_tx, mut bound) = watch::channel(0usize);
        for route in std::mem::take(&mut self.jetstream_sources) {
            jetstream::Source {
                route,
                origin: self.name.clone(),
                client: client.clone(),
                jetstream: context.clone(),
                reconnect: self.reconnect.clone(),
                bound: bound_tx.clone(),
            }
            .spawn(&runtime);
        }
        drop(bound_tx);

        let mut connected = false;
        loop {
            tokio::select! {
                _ = runtime.close.cancelled() => break,
                Ok(()) = bound.changed() => {}
                event = events.recv() => {
                    let Some(event) = event else { break };
                    match event {
                        Event::Connected => {
                            pacing.connected();
                            // Subscriptions are re-sent first thing after a (re)connect; once a
                            // flush returns, the server has them and the sources are live.
                            let flushed = tokio::time::timeout(self.reconnect.connect_timeout, client.flush()).await;
                            connected = matches!(flushed, Ok(Ok(())));
                            self.connected.send_replace(Some(connected));
                        }
                        Event::Disconnected => {
                            connected = false;
                            self.connected.send_replace(Some(false));
                            disconnects_tx.send_modify(|n| *n += 1);
                            self.status.down(&"disconnected from the server", pacing.last_delay());
                        }
                        Event::ClientError(e) => {
                            connected = false;
                            self.connected.send_replace(Some(false));
                            let text = e.to_string();
                            // The client names only the kind of a failed connect: find the
                            // address and the cause (refused, DNS, timeout) for the operator.
                            let reason = match &e {
                                async_nats::ClientError::Other(kind)
                                    if ["IO error", "DNS error", "timed out"].contains(&kind.as_str()) =>
                                {
                                    let diagnosis = diagnose::connect_failure(&urls, &text, self.reconnect.connect_timeout, self.requires_tls());
                                    // A shutdown does not wait for ferry's own connect.
                                    tokio::select! {
                                        found = diagnosis => found,
                                        _ = runtime.close.cancelled() => break,
                                    }
                                }
                                _ => text,
                            };
                            self.status.down(&reason, pacing.last_delay());
                        }
                        Event::SlowConsumer(_) => tracing::warn!(
                            connection = %self.name,
                            "the server is dropping messages for ferry (slow consumer): a route's queue is full"
                        ),
                        Event::ServerError(e) => tracing::warn!(connection = %self.name, "server error: {e}"),
                        Event::LameDuckMode => tracing::info!(connection = %self.name, "server entering lame duck mode; will move to another"),
                        Event::Draining | Event::Closed => {}
                    }
                }
            }
            if connected
                && *bound.borrow() >= consumers
                && self.status.state() != crate::contracts::status::State::Up
            {
                let to = diagnose::connected_to(&client, &urls).await;
                self.status.up(&format!("to {to}"));
            }
        }
        self.connected.send_replace(Some(false));
        // Close: whatever the sinks published goes out before the connection does.
        let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
        drop(client);
        tracing::debug!(connection = %self.name, "closed");
        Ok(())
    }
}

/// A message's NATS headers as ferry's header list.
fn headers_of(headers: Option<&HeaderMap>) -> Headers {
    let Some(headers) = headers else {
        return Vec::new();
    };
    headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().to_string()))
        })
        .collect()
}

/// Moves one subscription's messages into its route's queue. When the sources stop, it
/// unsubscribes and still hands over what the client had already received, so a shutdown does
/// not drop messages that were in ferry's hands. Probes are not the route's: skipped.
async fn feed(
    origin: Arc<str>,
    mut subscriber: Subscriber,
    input: RouteInput,
    probe_subject: Option<Arc<str>>,
    stop: tokio_util::sync::CancellationToken,
    replies: Option<request::Replies>,
) {
    let mut draining = false;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled(), if !draining => {
                draining = true;
                if subscriber.drain().await.is_err() {
                    break;
                }
                continue;
            }
            m = subscriber.next() => match m { Some(m) => m, None => break },
        };
        let subject = message.subject.as_str();
        if probe::is_probe(subject) || probe_subject.as_deref() == Some(subject) {
            continue;
        }
        let reply = replies.as_ref().map(|replies| replies.to(&message));
        let mut m = Message::new(origin.clone(), subject.to_string(), message.payload);
        m.headers = headers_of(message.headers.as_ref());
        let incoming = Incoming {
            reply,
            ..Incoming::unacked(m)
        };
        if !input.push(incoming).await {
            break;
        }
    }
}

/// The NATS header name for `name`: ferry's loop marker, on every message, is made once, not
/// parsed again for each.
fn header_name(name: &str) -> async_nats::HeaderName {
    use crate::mapping::marker::VIA;
    const MARKER: async_nats::HeaderName = async_nats::HeaderName::from_static(VIA);
    match name == VIA {
        true => MARKER,
        false => async_nats::header::IntoHeaderName::into_header_name(name),
    }
}

/// A route's NATS sink: core NATS, or JetStream with `jetstream: true`.
struct NatsSink {
    connection: Arc<str>,
    handles: Arc<tokio::sync::OnceCell<Handles>>,
    connected: Arc<watch::Sender<Option<bool>>>,
    jetstream: bool,
    kv: Option<Box<config::KvSink>>,
}

impl Sink for NatsSink {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { self.queue_publish(message).await?.wait().await })
    }

    fn queue<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<Confirmation, SinkError>> {
        Box::pin(async move {
            let confirmation = self.queue_publish(message).await?;
            if self.jetstream {
                // One at a time: publishes still in the client's channel when the connection
                // drops go out after the reconnect, ahead of the ones lost in its write buffer
                // and sent again, and a stream must keep the route's order.
                confirmation.wait().await?;
                return Ok(Confirmation::Done);
            }
            Ok(confirmation)
        })
    }

    fn request<'a>(
        &'a self,
        message: &'a Message,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, SinkError>> {
        Box::pin(request::make(self, message))
    }
}

impl NatsSink {
    async fn queue_publish(&self, message: &Message) -> Result<Confirmation, SinkError> {
        let handles = self.handles().await?;
        // The subject and headers follow NATS's rules (`names::subject`, `names::header`;
        // async-nats panics on a header it cannot write): the route's mapping checked them
        // for every publish and dead letter, and the spool's forwarder checks what it kept
        // from an earlier run, so they are not checked again here.
        if let Some(kv) = &self.kv {
            return kv::put(kv, handles, message).await;
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &message.headers {
            if !(self.jetstream && jetstream::is_publish_control(k)) {
                headers.append(header_name(k), v.as_str());
            }
        }
        if self.jetstream {
            return jetstream::publish(
                &handles.jetstream,
                message.subject.clone(),
                message,
                headers,
                handles.disconnects.clone(),
            )
            .await;
        }
        self.publish_core(handles, message, headers).await
    }

    /// The client, once the connection is up; unavailable while it is not.
    async fn handles(&self) -> Result<&Handles, SinkError> {
        if self.connected.borrow().is_none() {
            let mut connected = self.connected.subscribe();
            tokio::time::timeout(CONNECTION_WAIT, connected.wait_for(Option::is_some))
                .await
                .map_err(|_| {
                    SinkError::Unavailable(format!("connection {} is not up yet", self.connection))
                })?
                .map_err(|_| {
                    SinkError::Unavailable(format!("connection {} is closed", self.connection))
                })?;
        }
        let Some(handles) = self.handles.get() else {
            return Err(SinkError::Unavailable(format!(
                "connection {} is not started yet",
                self.connection
            )));
        };
        // Published while disconnected, a message would wait in the client and go out at
        // the reconnect, after the route (or its spool) had already taken it back as
        // unavailable: a duplicate. Say so at once instead.
        if handles.client.connection_state() != async_nats::connection::State::Connected {
            return Err(SinkError::Unavailable(format!(
                "connection {} is down",
                self.connection
            )));
        }
        Ok(handles)
    }

    /// Publishes on core NATS and waits until the message has left ferry: the client wrote it
    /// to the socket (a flush), on the same connection it was queued for.
    ///
    /// Once queued, a message is never reported unavailable while that connection lives, or
    /// the route's retry would send it twice: a sink that is merely slow (a paused server, a
    /// full socket) holds the route until the write completes or the client gives the
    /// connection up (missed pings). async-nats drops what it had not written when a
    /// connection dies, yet a flush waiting across the reconnect then succeeds: so a
    /// reconnect in between means "unavailable", and the route sends the message again.
    async fn publish_core(
        &self,
        handles: &Handles,
        message: &Message,
        headers: HeaderMap,
    ) -> Result<Confirmation, SinkError> {
        let client = &handles.client;
        let connects =
            |handles: &Handles| handles.client.statistics().connects.load(Ordering::SeqCst);
        let mut disconnects = handles.disconnects.clone();
        disconnects.borrow_and_update();
        let connection = connects(handles);
        // The client takes a subject it may copy; one made from the owned name is not copied
        // again (a `String` would be).
        let subject = async_nats::Subject::from(message.subject.clone());
        let payload = message.payload.clone();
        let publish = async {
            if headers.is_empty() {
                client.publish(subject, payload).await
            } else {
                client.publish_with_headers(subject, headers, payload).await
            }
        };
        // Almost always the client's channel has room: only a publish that must wait pays
        // for a timer.
        let mut publish = std::pin::pin!(publish);
        let published = match futures_util::poll!(publish.as_mut()) {
            std::task::Poll::Ready(published) => Ok(published),
            std::task::Poll::Pending => tokio::time::timeout(PUBLISH_TIMEOUT, publish).await,
        };
        match published {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(publish_error(&self.connection, &message.subject, &e)),
            Err(_) => {
                return Err(SinkError::Unavailable(format!(
                    "connection {}: publish timed out: the client's buffer is full (the server \
                     is slow or away)",
                    self.connection
                )));
            }
        }
        let queued = handles.flushes.queued.fetch_add(1, Ordering::AcqRel) + 1;
        // The confirmation reaches the client through the connection's handles, which it
        // shares: one reference count, not a clone of the client (its channels, watches and
        // counters) for every message.
        let shared = self.handles.clone();
        let name = self.connection.clone();
        Ok(Confirmation::Pending(Box::pin(async move {
            let lost = || {
                SinkError::Unavailable(format!(
                    "connection {name}: the connection was lost before the message was written"
                ))
            };
            // Set before the publish this confirms.
            let Some(handles) = shared.get() else {
                return Err(lost());
            };
            tokio::select! {
                flushed = handles.flushes.written(&handles.client, queued) => match flushed {
                    Ok(()) if connects(handles) == connection => Ok(()),
                    Ok(()) => Err(lost()),
                    Err(()) if connects(handles) != connection => Err(lost()),
                    Err(()) => Err(SinkError::Unavailable(format!("connection {name} is closed"))),
                },
                _ = disconnects.changed() => Err(lost()),
            }
        })))
    }
}

/// What a failed core publish means for the route. The client checks a message against the
/// server's `max_payload` (from its INFO, renewed at each reconnect; payload and headers
/// counted as the server counts them) and the subject before it sends anything: neither
/// passes on a retry, so the message is refused and the route goes on with the next. Only a
/// client that can no longer send (its connection task gone) is worth another try.
fn publish_error(connection: &str, subject: &str, error: &async_nats::PublishError) -> SinkError {
    use async_nats::PublishErrorKind;
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => SinkError::Rejected(format!(
            "connection {connection}: message to `{subject}` is larger than the server's \
             max_payload: {}",
            std::error::Error::source(error).map_or_else(String::new, |e| e.to_string())
        )),
        PublishErrorKind::InvalidSubject => SinkError::Rejected(format!(
            "connection {connection}: `{subject}` is not a subject NATS can publish to"
        )),
        PublishErrorKind::Send => {
            SinkError::Unavailable(format!("connection {connection}: {error}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::PublishErrorKind;

    #[test]
    fn publish_errors_say_whether_to_retry() {
        let too_large = async_nats::PublishError::with_source(
            PublishErrorKind::MaxPayloadExceeded,
            "Payload size limit of 1024 exceeded by message size of 2048",
        );
        let refused = publish_error("nats", "out.x", &too_large);
        assert!(matches!(refused, SinkError::Rejected(_)), "{refused:?}");
        assert!(refused.to_string().contains("limit of 1024"), "{refused}");
        let bad = async_nats::PublishError::new(PublishErrorKind::InvalidSubject);
        assert!(matches!(
            publish_error("nats", "a b", &bad),
            SinkError::Rejected(_)
        ));
        let gone = async_nats::PublishError::new(PublishErrorKind::Send);
        assert!(matches!(
            publish_error("nats", "out.x", &gone),
            SinkError::Unavailable(_)
        ));
    }
}
