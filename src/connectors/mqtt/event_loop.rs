//! The connection's tasks: the supervised event loop, and the dispatcher that hands incoming
//! messages to the routes.
//!
//! The event loop task is the only one polling the MQTT client: it connects, (re)subscribes,
//! backs off after failures, and sends what sinks queued on the client. It never waits on a
//! route: incoming messages go through a small channel to the dispatcher, which waits on full
//! route queues (`when_full: block`). Only when that channel is full too does the event loop
//! wait, and so stop reading: the broker's flow control (and TCP) takes over.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::BrokerLimits;
use super::client::{Client, ConnAck, Event, EventLoop, Received, SubscribeNotice, Subscription};
use super::topic;
use crate::connectors::Runtime;
use crate::message::{Incoming, Message};
use crate::pipeline::queue::RouteInput;
use crate::pipeline::status::{Backoff, ConnectionStatus};

/// Messages between the event loop and the dispatcher. Small: the route queues are the buffer.
const DISPATCH_CAPACITY: usize = 256;
/// On close, how long in-flight QoS 1/2 publishes may take before DISCONNECT goes out anyway.
const DISCONNECT_DRAIN: Duration = Duration::from_secs(5);

/// A route reading from this connection.
pub struct RouteSource {
    pub input: RouteInput,
    /// The route's filters as applied to topic names (without `$share/GROUP/`).
    pub filters: Vec<String>,
}

impl RouteSource {
    fn accepts(&self, topic_name: &str) -> bool {
        self.filters.iter().any(|f| topic::matches(topic_name, f))
    }
}

/// Everything the event loop task owns.
pub struct Supervisor {
    pub name: Arc<str>,
    /// The broker URL (without credentials), for logs.
    pub url: String,
    pub client: Client,
    pub eventloop: EventLoop,
    pub status: ConnectionStatus,
    pub backoff: Backoff,
    pub subscriptions: Vec<Subscription>,
    pub limits: Arc<BrokerLimits>,
}

impl Supervisor {
    /// Spawns the event loop task and, when routes read from this connection, the dispatcher.
    pub fn spawn(self, routes: Vec<RouteSource>, runtime: &Runtime) {
        let dispatch = if routes.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::channel(DISPATCH_CAPACITY);
            runtime.tasks.spawn(dispatch(
                self.name.clone(),
                routes,
                rx,
                runtime.stop_sources.clone(),
            ));
            Some(tx)
        };
        runtime.tasks.spawn(self.run(dispatch, runtime.clone()));
    }

    async fn run(mut self, mut dispatch: Option<mpsc::Sender<Message>>, runtime: Runtime) {
        let mut connected = false;
        // The broker confirmed our subscriptions in its current session.
        let mut subscribed = false;
        // The SUBACK we wait for before calling the connection up.
        let mut suback: Option<Pin<Box<SubAckFuture>>> = None;
        loop {
            let step = tokio::select! {
                biased;
                _ = runtime.close.cancelled() => break,
                result = maybe(suback.as_mut()) => Step::SubAck(result),
                event = self.eventloop.poll() => Step::Poll(event),
            };
            match step {
                Step::SubAck(result) => {
                    suback = None;
                    if self.on_suback(result) {
                        subscribed = true;
                    }
                }
                Step::Poll(Ok(Event::ConnAck(ack))) => {
                    connected = true;
                    if !ack.session_present {
                        subscribed = false;
                    }
                    suback = self
                        .on_connack(ack, subscribed)
                        .map(|notice| -> Pin<Box<SubAckFuture>> { Box::pin(notice.wait()) });
                }
                Step::Poll(Ok(Event::Publish(received))) => {
                    if runtime.stop_sources.is_cancelled() {
                        dispatch = None;
                    }
                    if let Some(tx) = &dispatch
                        && !forward(tx, self.message(received), &runtime.close).await
                    {
                        dispatch = None;
                    }
                }
                Step::Poll(Ok(Event::Disconnected | Event::Other)) => {}
                Step::Poll(Err(error)) => {
                    connected = false;
                    suback = None;
                    let delay = self.backoff.next_delay();
                    self.status.down(&error, delay);
                    tokio::select! {
                        _ = runtime.close.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        drop(dispatch);
        self.disconnect(connected).await;
    }

    /// A new connection: resets the backoff, records the broker's limits, and subscribes when
    /// the broker does not hold our subscriptions. Returns the SUBACK to wait for, or `None`
    /// when the connection is up already.
    fn on_connack(&mut self, ack: ConnAck, subscribed: bool) -> Option<SubscribeNotice> {
        self.backoff.reset();
        self.limits.update(&ack);
        if ack.broker_only_resume {
            tracing::warn!(
                connection = %self.name,
                "resumed the broker's stored session without local session state (restart with \
                 clean_start: false): the broker's stored subscriptions stay as they were, and \
                 QoS 1/2 publishes through this connection are refused until the broker starts a \
                 fresh session; give sinks their own connection or use clean_start: true"
            );
        }
        // Subscribe on the first connection even when the broker kept a session (the config
        // may have changed since), then again whenever the broker lost it.
        if self.subscriptions.is_empty() || subscribed || ack.broker_only_resume {
            self.status.up(&format!("to {}", self.url));
            return None;
        }
        match self.client.subscribe(&self.subscriptions) {
            Ok(notice) => Some(notice),
            Err(error) => {
                tracing::error!(connection = %self.name, "cannot subscribe: {error:#}");
                None
            }
        }
    }

    /// The broker answered our SUBSCRIBE. Returns whether the subscriptions are in place.
    fn on_suback(&self, result: Result<Vec<Option<String>>, String>) -> bool {
        match result {
            Ok(codes) => {
                let mut refused = 0;
                for (subscription, code) in self.subscriptions.iter().zip(&codes) {
                    if let Some(reason) = code {
                        refused += 1;
                        tracing::error!(
                            connection = %self.name,
                            filter = %subscription.filter,
                            "the broker refused the subscription to {:?}: {reason}",
                            subscription.filter
                        );
                    }
                }
                let granted = self.subscriptions.len() - refused;
                self.status
                    .up(&format!("to {} ({granted} subscriptions)", self.url));
                true
            }
            // The connection dropped before the SUBACK; the next CONNACK subscribes again.
            Err(error) => {
                tracing::debug!(connection = %self.name, "no SUBACK: {error}");
                false
            }
        }
    }

    /// The message a route sees for what arrived.
    fn message(&self, received: Received) -> Message {
        Message {
            subject: received.topic,
            payload: received.payload,
            headers: received.headers,
            qos: received.qos,
            retain: received.retain,
            origin: self.name.clone(),
            received: SystemTime::now(),
        }
    }

    /// Closes the connection cleanly: DISCONNECT after in-flight QoS 1/2 publishes completed
    /// (or `DISCONNECT_DRAIN` passed). Without a connection there is nothing to send.
    async fn disconnect(mut self, connected: bool) {
        if !connected || !self.client.disconnect(DISCONNECT_DRAIN) {
            tracing::debug!(connection = %self.name, "closed");
            return;
        }
        let sent = tokio::time::timeout(DISCONNECT_DRAIN + Duration::from_secs(1), async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Disconnected) => return Ok(()),
                    Ok(_) => {}
                    Err(error) => return Err(error),
                }
            }
        })
        .await;
        match sent {
            Ok(Ok(())) => tracing::debug!(connection = %self.name, "disconnected"),
            Ok(Err(error)) => {
                tracing::warn!(connection = %self.name, "closed without a clean DISCONNECT: {error:#}")
            }
            Err(_) => {
                tracing::warn!(connection = %self.name, "closed without a clean DISCONNECT: timed out")
            }
        }
    }
}

/// Hands a message to the dispatcher, waiting while its channel is full (the connection stops
/// reading meanwhile). `false` when the dispatcher is gone.
async fn forward(tx: &mpsc::Sender<Message>, message: Message, close: &CancellationToken) -> bool {
    match tx.try_send(message) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(message)) => tokio::select! {
            _ = close.cancelled() => false,
            sent = tx.send(message) => sent.is_ok(),
        },
    }
}

type SubAckFuture = dyn Future<Output = Result<Vec<Option<String>>, String>> + Send;

enum Step {
    SubAck(Result<Vec<Option<String>>, String>),
    Poll(anyhow::Result<Event>),
}

/// Awaits the future if there is one; never resolves otherwise.
async fn maybe<F: Future + Unpin>(future: Option<&mut F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Gives each received message to every route whose filters match its topic, in arrival order.
/// Stops when the sources stop (shutdown step one); the event loop then drops what arrives.
async fn dispatch(
    connection: Arc<str>,
    routes: Vec<RouteSource>,
    mut rx: mpsc::Receiver<Message>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            message = rx.recv() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let Some(last) = routes.iter().rposition(|r| r.accepts(&message.subject)) else {
            tracing::debug!(%connection, topic = %message.subject, "no route matches; dropped");
            continue;
        };
        // Every matching route but the last gets a (cheap) clone; the last the message itself.
        for route in routes[..last]
            .iter()
            .filter(|r| r.accepts(&message.subject))
        {
            if !deliver(route, message.clone(), &stop).await {
                return;
            }
        }
        if !deliver(&routes[last], message, &stop).await {
            return;
        }
    }
}

/// Pushes `message` into the route's queue, waiting for room if the route blocks when full.
/// `false` when the sources stopped meanwhile.
async fn deliver(route: &RouteSource, message: Message, stop: &CancellationToken) -> bool {
    // At-least-once: replace `unacked` with an `Ack` that, once every matching route confirmed,
    // queues this message's MQTT ack (`prepare_ack` + `manual_ack`, in arrival order) with the
    // client in manual ack mode.
    let incoming = Incoming::unacked(message);
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        // A `false` from push means the route is shutting down: nothing more to do here.
        _ = route.input.push(incoming) => true,
    }
}

impl BrokerLimits {
    fn update(&self, ack: &ConnAck) {
        self.max_packet_size
            .store(ack.max_packet_size.unwrap_or(0), Ordering::Relaxed);
        self.retain_unavailable
            .store(!ack.retain_available, Ordering::Relaxed);
        self.broker_only_resume
            .store(ack.broker_only_resume, Ordering::Relaxed);
    }
}
