//! NATS connector (core NATS), on async-nats.
//!
//! async-nats supervises the connection itself: it retries the first connection, reconnects
//! with the delay we give it (ferry's capped, jittered backoff), fails over between the URLs,
//! and re-sends every subscription after a reconnect. This module wires that to ferry: the
//! connection's events become state changes (logged once each), every route's source becomes a
//! subscription feeding the route's queue, and sinks publish with a timeout, because the
//! client's publish waits silently when its internal channel is full.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::{ConnectOptions, Event, HeaderMap, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{BoxFuture, Connection, Runtime, Sink, SinkError};
use crate::config::{self, Reconnect, SinkSpec, SourceSpec};
use crate::message::{Incoming, Message};
use crate::pipeline::queue::RouteInput;
use crate::pipeline::status::{Backoff, ConnectionStatus, reconnect_delay};

/// How long a publish may wait for room in the client's outgoing channel before the sink
/// reports the connection unavailable.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// A route's subscription, registered before the connection starts.
struct SourceRoute {
    subject: String,
    queue_group: Option<String>,
    input: RouteInput,
}

pub struct NatsConnection {
    name: Arc<str>,
    config: config::NatsConnection,
    reconnect: Reconnect,
    status: ConnectionStatus,
    sources: Vec<SourceRoute>,
    /// Sinks get the client once it exists; until then they wait on this.
    client: Arc<tokio::sync::OnceCell<async_nats::Client>>,
}

impl NatsConnection {
    pub fn new(
        name: &str,
        config: config::NatsConnection,
        reconnect: Reconnect,
        status: ConnectionStatus,
    ) -> Self {
        NatsConnection {
            name: name.into(),
            config,
            reconnect,
            status,
            sources: Vec::new(),
            client: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    async fn options(
        &self,
        events: mpsc::UnboundedSender<Event>,
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
        let uses_tls = c
            .urls
            .iter()
            .any(|u| u.starts_with("tls://") || u.starts_with("wss://"));
        if uses_tls || c.tls != config::Tls::default() {
            let tls = super::tls::client_config(&c.tls, &self.name)?;
            options = options
                .tls_client_config((*tls).clone())
                .require_tls(uses_tls);
        }
        let reconnect = self.reconnect.clone();
        options = options
            .name(
                c.name
                    .clone()
                    .unwrap_or_else(|| format!("ferry-{}", self.name)),
            )
            .connection_timeout(self.reconnect.connect_timeout)
            .retry_on_initial_connect()
            .max_reconnects(None)
            // Messages wait here while a route's queue is full (`when_full: block`); past this
            // the server would see a slow consumer.
            .subscription_capacity(64 * 1024)
            // Outgoing messages waiting for the socket. Small: while the server is slow or
            // away, the route's own bounded queue is where messages wait, so memory stays
            // bounded by the route's `queue` settings.
            .client_capacity(1024)
            .reconnect_delay_callback(move |attempt| {
                reconnect_delay(&reconnect, attempt.saturating_sub(1) as u32)
            })
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    let _ = events.send(event);
                }
            });
        Ok(options)
    }
}

impl Connection for NatsConnection {
    fn add_source(
        &mut self,
        _route: &str,
        source: &SourceSpec,
        input: RouteInput,
    ) -> anyhow::Result<()> {
        let SourceSpec::Nats(source) = source else {
            anyhow::bail!("connection {} is NATS, the source is not", self.name);
        };
        self.sources.push(SourceRoute {
            subject: source.subject.clone(),
            queue_group: source.queue_group.clone(),
            input,
        });
        Ok(())
    }

    fn add_sink(&mut self, sink: &SinkSpec) -> anyhow::Result<Arc<dyn Sink>> {
        anyhow::ensure!(
            matches!(sink, SinkSpec::Nats(_)),
            "connection {} is NATS, the sink is not",
            self.name
        );
        Ok(Arc::new(NatsSink {
            client: self.client.clone(),
        }))
    }

    fn start(self: Box<Self>, runtime: &Runtime) {
        let runtime = runtime.clone();
        let tasks = runtime.tasks.clone();
        tasks.spawn(async move {
            let name = self.name.clone();
            if let Err(e) = self.run(runtime).await {
                tracing::error!(connection = %name, "{e:#}");
            }
        });
    }
}

impl NatsConnection {
    async fn run(self: Box<Self>, runtime: Runtime) -> anyhow::Result<()> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let options = self
            .options(events_tx)
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
            .connect(urls)
            .await
            .with_context(|| format!("connection {}", self.name))?;
        let _ = self.client.set(client.clone());

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
            runtime.sources.spawn(feed(
                self.name.clone(),
                subscriber,
                source.input.clone(),
                runtime.stop_sources.clone(),
            ));
        }

        // The client picks its own delays (from the same function); this copy only tells the
        // log when the next attempt comes.
        let mut backoff = Backoff::new(&self.reconnect);
        loop {
            tokio::select! {
                _ = runtime.close.cancelled() => break,
                event = events.recv() => {
                    let Some(event) = event else { break };
                    match event {
                        Event::Connected => {
                            // Subscriptions are re-sent first thing after a (re)connect; once a
                            // flush returns, the server has them and the sources are live.
                            let flushed = tokio::time::timeout(self.reconnect.connect_timeout, client.flush()).await;
                            if matches!(flushed, Ok(Ok(()))) {
                                let info = client.server_info();
                                self.status.up(&format!("to {}:{} ({})", info.host, info.port, info.server_name));
                                backoff.reset();
                            }
                        }
                        Event::Disconnected => {
                            self.status.down(&"disconnected from the server", backoff.next_delay());
                        }
                        Event::ClientError(e) => {
                            self.status.down(&e, backoff.next_delay());
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
        }
        // Close: whatever the sinks published goes out before the connection does.
        let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
        drop(client);
        tracing::debug!(connection = %self.name, "closed");
        Ok(())
    }
}

/// Moves one subscription's messages into its route's queue. When the sources stop, it
/// unsubscribes and still hands over what the client had already received, so a shutdown does
/// not drop messages that were in ferry's hands.
async fn feed(
    origin: Arc<str>,
    mut subscriber: Subscriber,
    input: RouteInput,
    stop: tokio_util::sync::CancellationToken,
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
        let mut m = Message::new(origin.clone(), message.subject.to_string(), message.payload);
        if let Some(headers) = &message.headers {
            m.headers = headers
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.to_string(), v.as_str().to_string()))
                })
                .collect();
        }
        if !input.push(Incoming::unacked(m)).await {
            break;
        }
    }
}

struct NatsSink {
    client: Arc<tokio::sync::OnceCell<async_nats::Client>>,
}

impl Sink for NatsSink {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let Some(client) = self.client.get() else {
                return Err(SinkError::Unavailable("not connected yet".into()));
            };
            if let Err((what, _)) = crate::mapping::names::nats_subject(&message.subject) {
                return Err(SinkError::Rejected(what));
            }
            // async-nats panics on a header it cannot write: refuse the message instead.
            for (k, v) in &message.headers {
                if let Err((what, _)) = crate::mapping::names::nats_header(k, v) {
                    return Err(SinkError::Rejected(what));
                }
            }
            let subject = message.subject.clone();
            let payload: Bytes = message.payload.clone();
            let publish = async {
                if message.headers.is_empty() {
                    client.publish(subject, payload).await
                } else {
                    let mut headers = HeaderMap::new();
                    for (k, v) in &message.headers {
                        headers.append(k.as_str(), v.as_str());
                    }
                    client.publish_with_headers(subject, headers, payload).await
                }
            };
            match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SinkError::Unavailable(e.to_string())),
                Err(_) => Err(SinkError::Unavailable(
                    "publish timed out: the client's buffer is full".into(),
                )),
            }
        })
    }
}
