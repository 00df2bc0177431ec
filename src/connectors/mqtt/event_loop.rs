//! The connection's event loop task, supervised; it hands incoming messages to the dispatcher
//! (`dispatch`), which hands them to the routes.
//!
//! The event loop task is the only one polling the MQTT client: it connects, (re)subscribes,
//! backs off after failures, sends what sinks queued on the client, and sends the acks of
//! delivered messages (see `acks`). It never waits on a route: a message goes to the
//! dispatcher when its channel has room, and meanwhile waits in the event loop's own queue
//! while the event loop keeps polling: reading the PUBACKs the sinks wait for, sending the
//! acks the routes release. So a route that reads a connection and publishes back through it
//! cannot stall it. The dispatcher is what waits on full route queues (`when_full: block`).
//!
//! Memory and slow routes: on MQTT 5 ferry asks the broker for at most `RECEIVE_MAXIMUM`
//! unacknowledged QoS 1/2 messages, and acks wait for the sinks, so a broker that keeps to it
//! never has more than that many messages inside ferry. Not every broker keeps to it
//! (mosquitto 2.0.11 sends on after any ack), QoS 0 has no flow control, and MQTT 3.1.1 has no
//! receive maximum; so the event loop's queue has a cap (`PENDING_LIMIT` messages,
//! `PENDING_MAX_BYTES` of payload). The event loop never stops reading, though, however long
//! the routes are full: it must, to send keep-alives (the client sends PINGREQ only while it is
//! polled, and a broker drops a client whose keep-alive lapsed, then sends every unacknowledged
//! message again while ferry still delivers its copies) and to read the PUBACKs its own sinks
//! wait for. A full queue only pauses reading for a moment (`Liveness::max_pause`: at most
//! 1 s, well within the keep-alive), which is all a burst into a fast route needs: TCP holds
//! the broker back meanwhile and nothing has to be sent again. If the queue is still full
//! after that, reading resumes and what arrives while the queue is full is left with the
//! broker instead:
//! - the first QoS 1/2 message over the cap opens a "hole": it is not acknowledged, and nor is
//!   anything after it (acks go out in arrival order), so the event loop takes no further QoS
//!   1/2 message on this connection. Once the routes confirmed everything before the hole and
//!   its acks are on the wire, the event loop reconnects (through the backoff, logged like any
//!   reconnect) and the broker, resuming the session, sends the held-back messages again. Each
//!   is delivered once: nothing from the hole on was handed to a route.
//! - a QoS 0 message over the cap is dropped and counted (a rate-limited warning), as a broker
//!   drops QoS 0 messages for a slow client.
//!
//! Connecting is never interrupted: the client's connect runs inside `poll`, and a `poll`
//! dropped half-way drops the half-open connection with it, so while connecting only close and
//! stop_sources may cut in (anything else would reconnect at once, past the backoff, each time
//! a route confirms a message).
//!
//! Shutdown: when the sources stop, the event loop stops forwarding (what it still held is
//! never acknowledged, so the broker delivers it again next time) and keeps running for the
//! sinks and the acks until close; the dispatcher hands over what it already has, then ends.
//! At close, the acks of what was delivered go out before DISCONNECT.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Link;
use super::acks::AckTracker;
use super::client::{
    AckError, AckToken, Client, ConnAck, Event, EventLoop, RECEIVE_MAXIMUM, Received, Subscription,
};
use super::dispatch::{Arrival, RouteSource, Routing, dispatch};
use super::liveness::{Due, Liveness};
use super::socket::SocketHandle;
use super::subscribe::{Fed, Subscribing};
use crate::contracts::ConnectionContext;
use crate::contracts::status::{Backoff, ConnectionStatus, RateLimitedLog};
use crate::message::Message;

/// Messages between the event loop and the dispatcher. Small: the route queues are the buffer.
const DISPATCH_CAPACITY: usize = 256;
/// Messages the event loop holds for the dispatcher before it leaves further ones with the
/// broker. Above the receive maximum, so QoS 1/2 messages from a broker that keeps to it never
/// fill it.
const PENDING_LIMIT: usize = RECEIVE_MAXIMUM as usize + 256;
/// Payload bytes the event loop holds for the dispatcher at most.
const PENDING_MAX_BYTES: usize = 64 << 20;
/// With a hole open and its acks still in the client, how soon to look again.
const HOLE_RECHECK: Duration = Duration::from_millis(20);
/// On close, how long the publishes the sinks queued may take to reach the broker, DISCONNECT
/// included. The daemon gives its connections 5 s to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the client's own DISCONNECT waits for in-flight QoS 1/2 publishes (none are left
/// by then, unless the close timed out).
const DISCONNECT_DRAIN: Duration = Duration::from_secs(1);

/// Everything the event loop task owns.
pub struct EventLoopTask {
    pub name: Arc<str>,
    /// The broker URL (without credentials), for logs.
    pub url: String,
    pub client: Client,
    pub eventloop: EventLoop,
    pub status: ConnectionStatus,
    pub backoff: Backoff,
    pub subscriptions: Vec<Subscription>,
    pub link: Arc<Link>,
    /// The subscription identifiers in incoming messages are ours. Not after resuming a
    /// session a previous process made (its identifiers may mean other filters).
    pub trust_subscription_ids: bool,
    pub liveness: Liveness,
    /// Ferry's own handle on the connection's socket, to close it after the broker.
    pub socket: SocketHandle,
}

/// The event loop's state between turns.
struct Turn {
    /// To the dispatcher; `None` once the sources stopped (or without routes).
    dispatch: Option<mpsc::Sender<Arrival>>,
    /// Received, waiting for room in the dispatcher's channel.
    pending: Pending,
    /// Released acks the client's request queue had no room for yet.
    acks: VecDeque<AckToken>,
    connected: bool,
    /// The broker confirmed our subscriptions in its current session.
    subscribed: bool,
    /// The SUBSCRIBE packets still to queue on the client (see `subscribe`).
    subscribing: Option<Subscribing>,
    /// The SUBACKs we wait for before calling the connection up.
    suback: Option<Pin<Box<SubAckFuture>>>,
    /// After a failure: when to poll (and so reconnect) again.
    retry_at: Option<Instant>,
    /// QoS 1/2 messages that arrived after the sources stopped: never taken, never acknowledged.
    left_with_broker: usize,
    /// QoS 1/2 messages of this connection that arrived while the queue was full, left
    /// unacknowledged with the broker (see the module doc). More than zero: the hole is open.
    held_back: usize,
    /// Since when the queue is full (reading pauses for a moment first).
    full_since: Option<Instant>,
    /// QoS 0 messages dropped because the queue was full, since the start.
    qos0_dropped: u64,
    qos0_dropped_log: RateLimitedLog,
}

impl EventLoopTask {
    /// Spawns the event loop task and, when routes read from this connection, the dispatcher.
    pub fn spawn(self, routes: Vec<RouteSource>, runtime: &ConnectionContext) {
        let tracker = AckTracker::new();
        let dispatch = if routes.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::channel(DISPATCH_CAPACITY);
            let routing = Routing::new(routes);
            let dispatcher = dispatch(self.name.clone(), routing, rx, runtime.close.clone());
            runtime.sources.spawn("dispatcher", dispatcher);
            Some(tx)
        };
        runtime
            .tasks
            .spawn("event loop", self.run(dispatch, tracker, runtime.clone()));
    }

    async fn run(
        mut self,
        dispatch: Option<mpsc::Sender<Arrival>>,
        tracker: Arc<AckTracker<AckToken>>,
        runtime: ConnectionContext,
    ) {
        let mut turn = Turn {
            dispatch,
            pending: Pending::default(),
            acks: VecDeque::new(),
            connected: false,
            subscribed: false,
            subscribing: None,
            suback: None,
            retry_at: None,
            left_with_broker: 0,
            held_back: 0,
            full_since: None,
            qos0_dropped: 0,
            qos0_dropped_log: RateLimitedLog::default(),
        };
        loop {
            tracker.take_released(&mut turn.acks);
            self.send_acks(&mut turn.acks);
            self.feed_subscriptions(&mut turn);
            // The hole waits for the routes to confirm what came before it, and for those acks
            // to leave the client.
            let mut hole_waits_for_client = false;
            if turn.connected && turn.dispatch.is_some() && tracker.blocked() {
                // Only shutdown lets go of messages unconfirmed, and the sources have not
                // stopped: whatever did, the broker must deliver it again.
                self.reconnect(
                    &mut turn,
                    &tracker,
                    &"a route let go of a message without confirming it: reconnecting, so the \
                      broker delivers it (and what came after it) again",
                );
            } else if turn.connected
                && turn.held_back > 0
                && tracker.unacknowledged() == 0
                && turn.acks.is_empty()
            {
                if self.eventloop.requests_queued() {
                    hole_waits_for_client = true;
                } else {
                    let why = format!(
                        "{} message(s) arrived while the routes were full and were left with \
                         the broker; reconnecting so that it sends them again",
                        turn.held_back
                    );
                    self.reconnect(&mut turn, &tracker, &why);
                }
            }
            // A full queue first pauses reading, briefly (see the module doc).
            let now = Instant::now();
            turn.full_since = match turn.pending.is_full() {
                true => Some(turn.full_since.unwrap_or(now)),
                false => None,
            };
            let pause_until = turn
                .full_since
                .map(|since| since + self.liveness.max_pause())
                .filter(|until| turn.connected && turn.held_back == 0 && now < *until);
            let polling = turn.retry_at.is_none() && pause_until.is_none();
            // Inside `poll` the client is connecting: see the module doc.
            let connecting = polling && !turn.connected;
            let wake =
                self.liveness
                    .wake_at(Instant::now(), turn.connected, polling, turn.subscribed);
            let step = tokio::select! {
                biased;
                _ = runtime.close.cancelled() => break,
                _ = runtime.stop_sources.cancelled(), if turn.dispatch.is_some() => {
                    Step::StopSources
                }
                () = tracker.wait_released(), if !connecting => continue,
                result = maybe(turn.suback.as_mut()) => Step::SubAck(result),
                room = has_room(turn.dispatch.as_ref()),
                    if !connecting && !turn.pending.is_empty() => Step::Room(room),
                () = sleep_until(turn.retry_at), if turn.retry_at.is_some() => Step::Retry,
                // Outside `poll`, so it fires even while `poll` is stuck on the network.
                () = sleep_until(wake), if wake.is_some() => Step::Liveness,
                () = tokio::time::sleep(HOLE_RECHECK), if hole_waits_for_client => continue,
                () = sleep_until(pause_until), if pause_until.is_some() => continue,
                event = self.eventloop.poll(), if polling => Step::Poll(event),
            };
            if let Step::Poll(_) = step {
                self.liveness.progress(Instant::now());
            }
            match step {
                // What was not handed over yet is never acknowledged: the broker delivers it
                // again to the next session.
                Step::StopSources => {
                    turn.dispatch = None;
                    turn.pending.clear();
                }
                Step::Room(true) => {
                    let tx = turn.dispatch.as_ref().expect("room in a channel");
                    if feed(tx, &mut turn.pending).is_err() {
                        turn.dispatch = None;
                    }
                }
                Step::Room(false) => turn.dispatch = None,
                Step::Retry => turn.retry_at = None,
                Step::Liveness => match self.liveness.due(Instant::now()) {
                    Due::Nothing => {}
                    Due::SendProbe(payload) => {
                        let topic = self.liveness.probe_topic().unwrap_or_default();
                        if !self.client.try_publish_probe(topic, payload) {
                            self.liveness.probe_not_sent();
                        }
                    }
                    Due::Dead(why) => {
                        // The broker may have lost our subscriptions without a word.
                        turn.subscribed = false;
                        self.reconnect(&mut turn, &tracker, &why);
                    }
                },
                Step::SubAck(result) => {
                    turn.suback = None;
                    if self.on_suback(result) {
                        turn.subscribed = true;
                    }
                }
                Step::Poll(Ok(Event::ConnAck(ack))) => {
                    self.eventloop.forget_session_store();
                    turn.connected = true;
                    self.link.set_connected(true);
                    self.liveness.restart(Instant::now());
                    // Acks belong to the connection they arrived on (see `acks`).
                    tracker.new_generation();
                    turn.acks.clear();
                    if ack.session_present {
                        // The broker delivers the unacknowledged messages of the old connection
                        // again: the copies not handed over yet would only be duplicates.
                        turn.pending.retain(|d| d.receipt.is_none());
                    } else {
                        turn.subscribed = false;
                    }
                    turn.subscribing = self.on_connack(ack, turn.subscribed);
                    if turn.subscribing.is_none() {
                        turn.subscribed = true;
                    }
                }
                Step::Poll(Ok(Event::Publish(received))) => {
                    if self.liveness.is_probe_topic(&received.topic) {
                        // Probes never reach routes, and are never acknowledged (QoS 0).
                        self.liveness.probe_came_back(&received.payload);
                        continue;
                    }
                    // After the sources stopped, nothing more is taken (nor acknowledged).
                    let Some(tx) = &turn.dispatch else {
                        turn.left_with_broker += usize::from(received.ack.is_some());
                        continue;
                    };
                    let acknowledged = received.ack.is_some();
                    if acknowledged && turn.held_back > 0 {
                        turn.held_back += 1;
                        continue;
                    }
                    if turn.pending.is_full() {
                        if acknowledged {
                            tracing::debug!(
                                connection = %self.name,
                                "the routes are full: leaving QoS 1/2 messages with the broker \
                                 until they caught up"
                            );
                            turn.held_back = 1;
                        } else {
                            turn.qos0_dropped += 1;
                            let dropped = turn.qos0_dropped;
                            turn.qos0_dropped_log.warn(|| {
                                format!(
                                    "connection {}: QoS 0 message dropped: the routes are full \
                                     ({dropped} dropped since the start)",
                                    self.name
                                )
                            });
                        }
                        continue;
                    }
                    let arrival = self.arrival(received, &tracker);
                    turn.pending.push(arrival);
                    if feed(tx, &mut turn.pending).is_err() {
                        turn.dispatch = None;
                    }
                }
                Step::Poll(Ok(Event::Disconnected | Event::Other)) => {}
                Step::Poll(Err(error)) => self.lose_connection(&mut turn, &tracker, &error),
            }
        }
        turn.dispatch = None;
        tracker.take_released(&mut turn.acks);
        let left = tracker.unacknowledged() + turn.left_with_broker + turn.held_back;
        if left > 0 && turn.connected {
            tracing::info!(
                connection = %self.name,
                "{left} received message(s) not delivered stay unacknowledged: the broker \
                 delivers them again"
            );
        }
        self.disconnect(turn.connected, turn.acks).await;
    }

    /// Tears the network connection down on purpose and builds it again after the backoff,
    /// like a failed one.
    fn reconnect(
        &mut self,
        turn: &mut Turn,
        tracker: &AckTracker<AckToken>,
        why: &dyn std::fmt::Display,
    ) {
        self.eventloop.drop_connection();
        self.lose_connection(turn, tracker, why);
    }

    /// The network connection is gone (failed, or torn down by us): what belonged to it goes,
    /// and the next attempt waits for the backoff.
    fn lose_connection(
        &mut self,
        turn: &mut Turn,
        tracker: &AckTracker<AckToken>,
        why: &dyn std::fmt::Display,
    ) {
        turn.connected = false;
        self.link.set_connected(false);
        turn.subscribing = None;
        turn.suback = None;
        self.socket.forget();
        // Acks of the old connection must never reach a new one (see `acks`). Three places
        // could hold them:
        // - the client's request channel and its own queue: both crates' `EventLoop::clean`,
        //   which `poll` runs when a connection fails and `drop_connection` runs when we tear
        //   one down, drains them and drops every PUBACK/PUBREC ("should_replay_after_reconnect"
        //   in the crates), keeping only publishes, PUBRELs and SUBSCRIBEs for the next
        //   connection. Only this task queues acks, and only between two `poll`s, so every
        //   ack it queued for the old connection was in the client before that `clean` ran;
        // - `turn.acks`, released but not yet queued: dropped here;
        // - the tracker, for messages still with the routes: a new generation, so their
        //   receipts settle into nothing. The broker delivers those messages again.
        tracker.new_generation();
        turn.acks.clear();
        // The broker sends the held-back messages again on the next connection.
        turn.held_back = 0;
        let delay = self.backoff.next_delay();
        self.status.down(why, delay);
        turn.retry_at = Some(Instant::now() + delay);
    }

    /// Queues released acks on the client, oldest first, until its request queue is full; the
    /// rest wait for the next turn.
    fn send_acks(&self, acks: &mut VecDeque<AckToken>) {
        while let Some(token) = acks.front() {
            match self.client.try_ack(token) {
                Ok(()) => {
                    acks.pop_front();
                }
                Err(AckError::Full) => return,
                Err(AckError::Closed) => {
                    acks.clear();
                    return;
                }
            }
        }
    }

    /// Queues the SUBSCRIBE packets not queued yet as the client has room; once all are, waits
    /// for their SUBACKs. Meanwhile the connection is not up: the probe waits for the SUBACKs
    /// (it subscribes last), and the stall watchdog sees `poll` report each SUBSCRIBE it sends.
    fn feed_subscriptions(&self, turn: &mut Turn) {
        let Some(subscribing) = &mut turn.subscribing else {
            return;
        };
        match subscribing.feed(&self.client, &self.subscriptions) {
            Fed::More => return,
            Fed::All(subacks) => turn.suback = Some(Box::pin(subacks.wait())),
            Fed::Failed(error) => {
                tracing::error!(connection = %self.name, "cannot subscribe: {error:#}");
                turn.subscribed = true;
            }
        }
        turn.subscribing = None;
    }

    /// A new connection: resets the backoff, records the broker's link, and subscribes when
    /// the broker does not hold our subscriptions. Returns the SUBSCRIBE packets to send, or
    /// `None` when the connection is up already.
    fn on_connack(&mut self, ack: ConnAck, subscribed: bool) -> Option<Subscribing> {
        self.backoff.reset();
        self.link.update(&ack);
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
        Some(Subscribing::new(
            &self.subscriptions,
            ack.subscription_ids_available,
            ack.max_packet_size,
        ))
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

    /// What routes see of what arrived; QoS 1/2 messages take their place in the ack order.
    fn arrival(&self, received: Received, tracker: &Arc<AckTracker<AckToken>>) -> Arrival {
        let mut message = Message::new(self.name.clone(), received.topic, received.payload);
        message.headers = received.headers;
        message.qos = received.qos;
        message.retain = received.retain;
        let subscription_ids = match self.trust_subscription_ids {
            true => received.subscription_ids,
            false => Vec::new(),
        };
        Arrival {
            message,
            subscription_ids,
            receipt: received.ack.map(|token| tracker.track(token)),
        }
    }

    /// Closes the connection: first sends the acks of what was delivered and lets what the
    /// sinks queued reach the broker, then sends DISCONNECT, and closes the socket once the
    /// broker closed its side (see `socket`), all within `CLOSE_TIMEOUT`. Without a connection
    /// there is nothing to send (and the acks would be for a connection that is gone).
    async fn disconnect(mut self, connected: bool, mut acks: VecDeque<AckToken>) {
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
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        let closed = tokio::time::timeout_at(deadline, async {
            loop {
                self.send_acks(&mut acks);
                if acks.is_empty() && self.eventloop.unsent() == 0 {
                    break;
                }
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
                tracing::debug!(
                    connection = %self.name,
                    "DISCONNECT sent; waiting for the broker to close the connection"
                );
                // The client's own handle on the socket goes: ours stays until the broker
                // closed its side.
                drop(self.eventloop);
                match self.socket.close_after_broker(deadline).await {
                    Ok(()) => tracing::debug!(connection = %self.name, "disconnected"),
                    Err(why) => tracing::warn!(
                        connection = %self.name,
                        "closed after DISCONNECT, but {why}: if it had not read the acks of the \
                         last messages delivered yet, it delivers those again"
                    ),
                }
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("timed out after {CLOSE_TIMEOUT:?}"),
        };
        tracing::warn!(
            connection = %self.name,
            "closed without a clean DISCONNECT ({why}); {} publish(es) and {} ack(s) never \
             reached the broker",
            self.eventloop.unsent(),
            acks.len()
        );
    }
}

/// Received messages waiting for room in the dispatcher's channel, oldest first.
#[derive(Default)]
struct Pending {
    items: VecDeque<Arrival>,
    /// Their payload bytes.
    bytes: usize,
}

impl Pending {
    fn push(&mut self, arrival: Arrival) {
        self.bytes += arrival.message.payload.len();
        self.items.push_back(arrival);
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// At the cap: what arrives now stays with the broker (see the module doc).
    fn is_full(&self) -> bool {
        self.items.len() >= PENDING_LIMIT || self.bytes >= PENDING_MAX_BYTES
    }

    fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }

    fn retain(&mut self, keep: impl FnMut(&Arrival) -> bool) {
        self.items.retain(keep);
        self.bytes = self.items.iter().map(|d| d.message.payload.len()).sum();
    }
}

/// Hands pending messages to the dispatcher, oldest first, while its channel has room. `Err`
/// when the dispatcher is gone.
fn feed(tx: &mpsc::Sender<Arrival>, pending: &mut Pending) -> Result<(), ()> {
    while let Some(arrival) = pending.items.pop_front() {
        let size = arrival.message.payload.len();
        match tx.try_send(arrival) {
            Ok(()) => pending.bytes -= size,
            Err(mpsc::error::TrySendError::Full(arrival)) => {
                pending.items.push_front(arrival);
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                pending.clear();
                return Err(());
            }
        }
    }
    Ok(())
}

/// Resolves once the dispatcher's channel has room (`true`) or the dispatcher is gone
/// (`false`). Never resolves without a dispatcher.
async fn has_room(tx: Option<&mpsc::Sender<Arrival>>) -> bool {
    match tx {
        // The permit goes back at once; `feed` takes the room with `try_send`.
        Some(tx) => tx.reserve().await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

type SubAckFuture = dyn Future<Output = Result<Vec<Option<String>>, String>> + Send;

/// What a turn of the event loop brought that needs the event loop task.
enum Step {
    StopSources,
    /// The dispatcher's channel has room (or, `false`, the dispatcher is gone).
    Room(bool),
    /// The backoff after a failure is over: poll (and so reconnect) again.
    Retry,
    /// A liveness timer fired (see `liveness`).
    Liveness,
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

impl Link {
    fn update(&self, ack: &ConnAck) {
        self.max_packet_size
            .store(ack.max_packet_size.unwrap_or(0), Ordering::Relaxed);
        self.retain_unavailable
            .store(!ack.retain_available, Ordering::Relaxed);
        self.broker_only_resume
            .store(ack.broker_only_resume, Ordering::Relaxed);
    }

    /// Sinks waiting for the connection go ahead once it is up.
    fn set_connected(&self, up: bool) {
        self.connected
            .send_if_modified(|connected| std::mem::replace(connected, up) != up);
    }
}
