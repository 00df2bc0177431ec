//! The connection's tasks: the supervised event loop, and the dispatcher that hands incoming
//! messages to the routes.
//!
//! The event loop task is the only one polling the MQTT client: it connects, (re)subscribes,
//! backs off after failures, and sends what sinks queued on the client. It never waits on a
//! route: incoming messages go through a small channel to the dispatcher, which waits on full
//! route queues (`when_full: block`). Only when that channel is full too does the event loop
//! wait, and so stop reading: the broker's flow control (and TCP) takes over.
//!
//! Shutdown: when the sources stop, the event loop stops forwarding (it keeps running for the
//! sinks until close) and the dispatcher hands over what it already has, then ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::BrokerLimits;
use super::client::{Client, ConnAck, Event, EventLoop, Received, SubAcks, Subscription};
use super::topic;
use crate::connectors::Runtime;
use crate::message::{Incoming, Message};
use crate::pipeline::queue::RouteInput;
use crate::pipeline::status::{Backoff, ConnectionStatus};

/// Messages between the event loop and the dispatcher. Small: the route queues are the buffer.
const DISPATCH_CAPACITY: usize = 256;
/// On close, how long the publishes the sinks queued may take to reach the broker, DISCONNECT
/// included. The daemon gives its connections 5 s to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the client's own DISCONNECT waits for in-flight QoS 1/2 publishes (none are left
/// by then, unless the close timed out).
const DISCONNECT_DRAIN: Duration = Duration::from_secs(1);

/// A route reading from this connection.
pub struct RouteSource {
    pub input: RouteInput,
    /// The route's subscriptions: their identifier (index + 1 in the connection's list) and
    /// their filter as applied to topic names (without `$share/GROUP/`).
    pub filters: Vec<(usize, String)>,
}

impl RouteSource {
    /// Whether this route takes a message on `topic_name` delivered for the subscriptions
    /// `subscription_ids` (empty when unknown: MQTT 3.1.1, or a broker without identifiers).
    ///
    /// A broker may deliver one copy per matching subscription. The route takes only the copy
    /// for its first subscription that matches the topic, so it sees each message once even
    /// when its own filters, or other routes' filters, overlap.
    fn accepts(&self, topic_name: &str, subscription_ids: &[usize]) -> bool {
        let mut matching = self
            .filters
            .iter()
            .filter(|(_, f)| topic::matches(topic_name, f));
        match matching.next() {
            None => false,
            Some(_) if subscription_ids.is_empty() => true,
            Some((id, _)) => subscription_ids.contains(id),
        }
    }
}

/// What the event loop hands the dispatcher.
struct Delivery {
    message: Message,
    subscription_ids: Vec<usize>,
    // At-least-once: the message's MQTT ack token (`client::Received`) travels here too.
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
    /// The subscription identifiers in incoming messages are ours. Not after resuming a
    /// session a previous process made (its identifiers may mean other filters).
    pub trust_subscription_ids: bool,
}

impl Supervisor {
    /// Spawns the event loop task and, when routes read from this connection, the dispatcher.
    pub fn spawn(self, routes: Vec<RouteSource>, runtime: &Runtime) {
        let dispatch = if routes.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::channel(DISPATCH_CAPACITY);
            let dispatcher = dispatch(self.name.clone(), routes, rx, runtime.close.clone());
            runtime.sources.spawn(dispatcher);
            Some(tx)
        };
        runtime.tasks.spawn(self.run(dispatch, runtime.clone()));
    }

    async fn run(mut self, mut dispatch: Option<mpsc::Sender<Delivery>>, runtime: Runtime) {
        let mut connected = false;
        // The broker confirmed our subscriptions in its current session.
        let mut subscribed = false;
        // The SUBACK we wait for before calling the connection up.
        let mut suback: Option<Pin<Box<SubAckFuture>>> = None;
        loop {
            let step = tokio::select! {
                biased;
                _ = runtime.close.cancelled() => break,
                _ = runtime.stop_sources.cancelled(), if dispatch.is_some() => Step::StopSources,
                result = maybe(suback.as_mut()) => Step::SubAck(result),
                event = self.eventloop.poll() => Step::Poll(event),
            };
            match step {
                // With automatic acks, what arrives from now on is lost to ferry; with manual
                // acks it will stay unacked, for the broker to deliver again.
                Step::StopSources => dispatch = None,
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
                    if let Some(tx) = &dispatch
                        && !forward(tx, self.delivery(received), &runtime.close).await
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
    fn on_connack(&mut self, ack: ConnAck, subscribed: bool) -> Option<SubAcks> {
        self.backoff.reset();
        self.limits.update(&ack);
        self.trust_subscription_ids = !ack.broker_only_resume;
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
        match self
            .client
            .subscribe(&self.subscriptions, ack.subscription_ids_available)
        {
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
                let total = self.subscriptions.len();
                let subscribed = match refused {
                    0 => format!("{total} subscriptions"),
                    _ => format!("{} of {total} subscriptions", total - refused),
                };
                self.status.up(&format!("to {} ({subscribed})", self.url));
                true
            }
            // The connection dropped before the SUBACK; the next CONNACK subscribes again.
            Err(error) => {
                tracing::debug!(connection = %self.name, "no SUBACK: {error}");
                false
            }
        }
    }

    /// What routes see of what arrived.
    fn delivery(&self, received: Received) -> Delivery {
        let mut message = Message::new(self.name.clone(), received.topic, received.payload);
        message.headers = received.headers;
        message.qos = received.qos;
        message.retain = received.retain;
        let subscription_ids = match self.trust_subscription_ids {
            true => received.subscription_ids,
            false => Vec::new(),
        };
        Delivery {
            message,
            subscription_ids,
        }
    }

    /// Closes the connection: first lets what the sinks queued reach the broker (their `send`
    /// resolved once queued, so their routes count it as delivered), then sends DISCONNECT, all
    /// within `CLOSE_TIMEOUT`. Without a connection there is nothing to send.
    async fn disconnect(mut self, connected: bool) {
        if !connected {
            match self.eventloop.unsent() {
                0 => tracing::debug!(connection = %self.name, "closed"),
                unsent => tracing::warn!(
                    connection = %self.name,
                    "closed while disconnected: {unsent} publish(es) never reached the broker"
                ),
            }
            return;
        }
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while self.eventloop.unsent() > 0 {
                self.eventloop.poll().await?;
            }
            anyhow::ensure!(
                self.client.disconnect(DISCONNECT_DRAIN),
                "the client is gone"
            );
            loop {
                if let Event::Disconnected = self.eventloop.poll().await? {
                    return Ok(());
                }
            }
        })
        .await;
        let why = match closed {
            Ok(Ok(())) => {
                tracing::debug!(connection = %self.name, "disconnected");
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("timed out after {CLOSE_TIMEOUT:?}"),
        };
        tracing::warn!(
            connection = %self.name,
            "closed without a clean DISCONNECT ({why}); {} publish(es) never reached the broker",
            self.eventloop.unsent()
        );
    }
}

/// Hands a message to the dispatcher, waiting while its channel is full (the connection stops
/// reading meanwhile). `false` when the dispatcher is gone.
async fn forward(
    tx: &mpsc::Sender<Delivery>,
    delivery: Delivery,
    close: &CancellationToken,
) -> bool {
    match tx.try_send(delivery) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(delivery)) => tokio::select! {
            _ = close.cancelled() => false,
            sent = tx.send(delivery) => sent.is_ok(),
        },
    }
}

type SubAckFuture = dyn Future<Output = Result<Vec<Option<String>>, String>> + Send;

enum Step {
    StopSources,
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
/// Ends once the event loop stopped forwarding (the sources stopped) and everything it had
/// forwarded is handed over, or at close.
async fn dispatch(
    connection: Arc<str>,
    routes: Vec<RouteSource>,
    mut rx: mpsc::Receiver<Delivery>,
    close: CancellationToken,
) {
    loop {
        let Delivery {
            message,
            subscription_ids: ids,
        } = tokio::select! {
            biased;
            _ = close.cancelled() => return,
            delivery = rx.recv() => match delivery {
                Some(delivery) => delivery,
                None => return,
            },
        };
        let Some(last) = routes
            .iter()
            .rposition(|r| r.accepts(&message.subject, &ids))
        else {
            tracing::debug!(%connection, topic = %message.subject, "no route matches; dropped");
            continue;
        };
        // Every matching route but the last gets a (cheap) clone; the last the message itself.
        for route in routes[..last]
            .iter()
            .filter(|r| r.accepts(&message.subject, &ids))
        {
            if !deliver(route, message.clone(), &close).await {
                return;
            }
        }
        if !deliver(&routes[last], message, &close).await {
            return;
        }
    }
}

/// Pushes `message` into the route's queue, waiting for room if the route blocks when full.
/// `false` when the connection closed meanwhile.
async fn deliver(route: &RouteSource, message: Message, close: &CancellationToken) -> bool {
    // At-least-once: replace `unacked` with an `Ack` that, once every matching route confirmed,
    // queues this message's MQTT ack (`prepare_ack` + `manual_ack`, in arrival order) with the
    // client in manual ack mode.
    let incoming = Incoming::unacked(message);
    tokio::select! {
        biased;
        _ = close.cancelled() => false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::queue::bounded;

    fn route(filters: &[(usize, &str)]) -> RouteSource {
        RouteSource {
            input: bounded("r", Default::default()).0,
            filters: filters.iter().map(|(id, f)| (*id, f.to_string())).collect(),
        }
    }

    #[test]
    fn without_identifiers_routes_match_by_topic() {
        let r = route(&[(1, "a/#"), (2, "b/+")]);
        assert!(r.accepts("a", &[]));
        assert!(r.accepts("b/c", &[]));
        assert!(!r.accepts("b/c/d", &[]));
        assert!(!r.accepts("c", &[]));
    }

    #[test]
    fn with_identifiers_a_route_takes_one_copy() {
        // Overlapping filters of one route: copies for subscription 1 and 2 may both arrive.
        let r = route(&[(1, "a/#"), (2, "a/b")]);
        assert!(r.accepts("a/b", &[1]));
        assert!(!r.accepts("a/b", &[2]));
        assert!(r.accepts("a/b", &[2, 1]));
        assert!(r.accepts("a/c", &[1]));
        // A copy for another route's subscription is not this route's.
        assert!(!r.accepts("a/c", &[3]));
        // The topic must still match: a stray identifier does not pull in foreign topics.
        assert!(!r.accepts("x/y", &[1]));
        // Shared: a route whose filter is `$share/g/t/#` stores `t/#`.
        let shared = route(&[(4, "t/#")]);
        assert!(shared.accepts("t/x", &[4]));
        assert!(!shared.accepts("t/x", &[1]));
    }
}
