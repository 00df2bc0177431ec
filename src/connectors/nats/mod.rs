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
mod sink;
pub mod url_form;

use std::sync::atomic::{AtomicBool, AtomicU64};
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
use crate::contracts::{ConnectionContext, Sink};
use crate::message::{Headers, Incoming, Message};
use sink::{Flushes, NatsSink, header_name};

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
