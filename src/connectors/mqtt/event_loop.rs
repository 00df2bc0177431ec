//! The connection's event loop task, supervised; it hands incoming messages straight to the
//! routes' queues (`dispatch`), with no task in between.
//!
//! The event loop task is the only one polling the MQTT client: it connects, (re)subscribes,
//! backs off after failures, sends what sinks queued on the client, and sends the acks of
//! delivered messages (see `acks`). It never waits on a route: a message a full route queue
//! cannot take yet (`when_full: block`) waits in the event loop's own queue while the event
//! loop keeps polling: reading the PUBACKs the sinks wait for, sending the acks the routes
//! release. So a route that reads a connection and publishes back through it cannot stall it.
//!
//! Memory and slow routes: on MQTT 5 ferry asks the broker for at most `RECEIVE_MAXIMUM`
//! unacknowledged QoS 1/2 messages, and acks wait for the sinks, so a broker that keeps to it
//! never has more than that many messages inside ferry. Not every broker keeps to it
//! (mosquitto 2.0.11 sends on after any ack), QoS 0 has no flow control, and MQTT 3.1.1 has no
//! receive maximum; so the event loop's queue has a cap (`dispatch::PENDING_LIMIT` messages,
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
//! The client's `poll` is never dropped half-way. It is not cancel-safe: inside it the client
//! takes a request off its queue and updates its session state before writing the packet, and
//! a write waits when the socket is full; it reads a PUBACK, frees the publish's slot and only
//! completes the publish's notice after flushing. Dropped at such a point, a PUBACK or a
//! PUBLISH taken from the queue is never written (the broker then holds the message
//! unacknowledged, or the sink waits for a PUBACK that cannot come), a PINGREQ the client
//! counts as sent never goes out (the next keep-alive fails the connection), and a sink's
//! PUBACK already read is reported as lost (the route publishes the message again). A frame
//! half read or half written is safe: the codec keeps what it read, and its write buffer moves
//! on by what the socket took. So each `poll` runs to its end: the other things this task waits
//! for (released acks, room in a full route queue, timers, close) are handled while the
//! same `poll` stays pinned, through the client's handle (acks and probes go into its request
//! queue, which wakes the `poll`). What needs the event loop itself waits for `poll` to return,
//! which it does after every batch of requests it sent and every packet it read, except that
//! while the task has nothing to do between two `poll`s (`Turn::quiet`) it goes on past the
//! events that need nothing of it: the PUBLISHes and PUBACKs it writes, the PUBACKs it reads
//! (`client::Quiet`). Tearing a
//! connection down on purpose while a `poll` is in flight shuts its socket down (`socket`), and
//! `poll` fails and cleans up as after any lost connection. Close queues the last acks, then
//! DISCONNECT, and lets the same `poll` send them. A `poll` is dropped only where nothing is
//! left to lose: one still connecting, at close (it has taken nothing from the queues yet); one
//! that did not finish within the close timeout; and, as a last resort, one on a connection
//! being torn down whose socket could not be shut down.
//!
//! Shutdown: when the sources stop, the event loop takes no more messages (what arrives is
//! never acknowledged, so the broker delivers it again next time), hands over what it already
//! received (shutdown waits for that before it closes the route queues), and keeps running for
//! the sinks and the acks until close. At close, the acks of what was delivered go out before
//! DISCONNECT.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Link;
use super::acks::AckTracker;
use super::client::{
    AckError, AckToken, Client, ConnAck, Event, EventLoop, Quiet, Received, Subscription,
};
use super::close::{CLOSE_TIMEOUT, Closing, DISCONNECT_DRAIN};
use super::dispatch::{Arrival, Dispatcher, Pending, RouteSource};
use super::liveness::{Due, Liveness};
use super::socket::SocketHandle;
use super::subscribe::{Fed, Subscribing};
use super::wake::{Gated, Step, SubAckFuture, in_flight, maybe, room, sleep_until};
use crate::contracts::ConnectionContext;
use crate::contracts::status::{Backoff, ConnectionStatus, RateLimitedLog};
use crate::message::Message;

/// How long a connection torn down on purpose waits for the broker to read the last acks
/// and close its side (see `reconnect`).
const TEARDOWN_GRACE: Duration = Duration::from_secs(1);

/// Everything the event loop task owns but the client's event loop, which `run` keeps apart:
/// a `poll` in flight borrows it while the rest goes on.
pub struct EventLoopTask {
    pub name: Arc<str>,
    /// The broker URL (without credentials), for logs.
    pub url: String,
    pub client: Client,
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
    /// Hands messages to the routes; `None` without routes.
    dispatcher: Option<Dispatcher>,
    /// The sources have not stopped, and there are routes: messages are taken.
    taking: bool,
    /// Received, waiting for the routes to have room, behind the one the dispatcher holds.
    pending: Pending,
    /// Held by a task in the connection's sources group, which shutdown waits for before it
    /// closes the route queues: dropped once what was received before the sources stopped is
    /// handed over.
    handing_over: Option<oneshot::Sender<()>>,
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
    /// Why the socket was shut down under a `poll` in flight: that `poll` fails next, and this
    /// is what the log says.
    cut: Option<String>,
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

/// How a turn ends.
enum Flow {
    /// `poll` returned this.
    Polled(anyhow::Result<Event>),
    /// Nothing was polled; look again at what to do.
    Again,
    /// Tear the connection down, for this reason.
    Reconnect(String),
    /// Close, and how far it got while a `poll` was in flight.
    Close(Closing),
}

impl EventLoopTask {
    /// Spawns the event loop task, which hands what it receives to `routes` itself.
    pub fn spawn(
        self,
        eventloop: EventLoop,
        routes: Vec<RouteSource>,
        runtime: &ConnectionContext,
    ) {
        let tracker = AckTracker::new();
        let (dispatcher, handing_over) = if routes.is_empty() {
            (None, None)
        } else {
            // Shutdown waits for the sources group: this task stands there for the event loop
            // until it handed over what it received (see `Turn::handing_over`).
            let (handing_over, handed_over) = oneshot::channel::<()>();
            runtime.sources.spawn("hand-over", async move {
                let _ = handed_over.await;
            });
            let dispatcher = Dispatcher::new(self.name.clone(), routes);
            (Some(dispatcher), Some(handing_over))
        };
        runtime.tasks.spawn(
            "event loop",
            self.run(
                eventloop,
                dispatcher,
                handing_over,
                tracker,
                runtime.clone(),
            ),
        );
    }

    async fn run(
        mut self,
        mut eventloop: EventLoop,
        dispatcher: Option<Dispatcher>,
        handing_over: Option<oneshot::Sender<()>>,
        tracker: Arc<AckTracker<AckToken>>,
        runtime: ConnectionContext,
    ) {
        let mut turn = Turn {
            taking: dispatcher.is_some(),
            dispatcher,
            pending: Pending::default(),
            handing_over,
            acks: VecDeque::new(),
            connected: false,
            subscribed: false,
            subscribing: None,
            suback: None,
            retry_at: None,
            cut: None,
            left_with_broker: 0,
            held_back: 0,
            full_since: None,
            qos0_dropped: 0,
            qos0_dropped_log: RateLimitedLog::default(),
        };
        // The liveness timer, armed for the earliest time it may be due. Its deadlines move
        // with every packet (see `liveness`); re-arming it that often would cost a timer
        // operation per message, so a timer that fires early finds nothing due and is armed
        // again for the later time.
        let mut liveness_timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut liveness_armed: Option<Instant> = None;
        // Made once and kept across turns: a wait made anew on every turn registers with its
        // token or the tracker each time, and unregisters when the turn ends, a lock pair per
        // message. The tracker's wait, once it fired, is made again.
        // Gated: polled only when they fired, not on every wake-up of the task.
        let mut close = Gated::new(runtime.close.cancelled());
        let mut stop_sources = Gated::new(runtime.stop_sources.cancelled());
        let mut released = Gated::new(tracker.wait_released());
        let quiet = Quiet::new();
        let closing = loop {
            // Between two `poll`s: the only time the event loop itself is at hand.
            tracker.take_released(&mut turn.acks);
            self.send_acks(&mut turn.acks);
            self.feed_subscriptions(&mut turn);
            if let Some(why) = self.teardown_due(&turn, &tracker, &eventloop) {
                self.reconnect(&mut eventloop, &mut turn, &tracker, &why)
                    .await;
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
            let flow = {
                let mut poll = std::pin::pin!(polling.then(|| eventloop.poll(Some(&quiet))));
                loop {
                    // Whether `poll` may go on past the next events is decided again after
                    // each step.
                    quiet.set(turn.quiet());
                    // A connection being torn down is watched no more.
                    let watched = polling && turn.cut.is_none();
                    let wake = self.liveness.wake_at(
                        Instant::now(),
                        turn.connected,
                        watched,
                        turn.subscribed,
                    );
                    match wake {
                        Some(at) if liveness_armed.is_none_or(|armed| at < armed) => {
                            liveness_timer.as_mut().reset(at);
                            liveness_armed = Some(at);
                        }
                        Some(_) => {}
                        None => liveness_armed = None,
                    }
                    let step = tokio::select! {
                        biased;
                        () = &mut close => Step::Close,
                        () = &mut stop_sources, if turn.taking => Step::StopSources,
                        () = &mut released => {
                            released.set(tracker.wait_released());
                            Step::Released
                        }
                        result = maybe(turn.suback.as_mut()) => Step::SubAck(result),
                        () = room(turn.dispatcher.as_ref().and_then(Dispatcher::blocked_on)) => {
                            Step::Room
                        }
                        () = sleep_until(turn.retry_at), if turn.retry_at.is_some() => Step::Retry,
                        // Outside `poll`, so it fires even while `poll` is stuck on the network.
                        () = &mut liveness_timer, if liveness_armed.is_some() => {
                            liveness_armed = None;
                            Step::Liveness
                        }
                        () = sleep_until(pause_until), if pause_until.is_some() => Step::Resume,
                        event = in_flight(poll.as_mut()), if polling => {
                            break Flow::Polled(event);
                        }
                    };
                    // `poll` may have gone on past events while this `select!` waited: the
                    // stall watchdog (`Step::Liveness`) must count them.
                    if let Some(at) = quiet.passed() {
                        self.liveness.progress(at);
                    }
                    if let Step::Close = step {
                        // Close goes on from the next event `poll` returns, whatever it is.
                        quiet.set(false);
                        let closing = self.close_during_poll(poll.as_mut(), &mut turn, &tracker);
                        break Flow::Close(closing.await);
                    }
                    match self.on_step(step, &mut turn, &tracker, polling) {
                        None if polling => continue,
                        None => break Flow::Again,
                        Some(flow) => break flow,
                    }
                }
            };
            match flow {
                Flow::Polled(event) => {
                    self.liveness.progress(Instant::now());
                    self.on_polled(event, &mut eventloop, &mut turn, &tracker);
                }
                Flow::Again => {}
                Flow::Reconnect(why) => {
                    self.reconnect(&mut eventloop, &mut turn, &tracker, &why)
                        .await
                }
                Flow::Close(polled) => break polled,
            }
        };
        turn.taking = false;
        turn.handing_over = None;
        tracker.take_released(&mut turn.acks);
        let left = tracker.unacknowledged() + turn.left_with_broker + turn.held_back;
        if left > 0 && turn.connected {
            tracing::info!(
                connection = %self.name,
                "{left} received message(s) not delivered stay unacknowledged: the broker \
                 delivers them again"
            );
        }
        let connected = turn.connected && turn.cut.is_none();
        self.disconnect(eventloop, connected, turn.acks, closing)
            .await;
    }

    /// Between two `poll`s: why to tear the connection down now, if it must be.
    fn teardown_due(
        &self,
        turn: &Turn,
        tracker: &AckTracker<AckToken>,
        eventloop: &EventLoop,
    ) -> Option<String> {
        if !turn.connected {
            return None;
        }
        if turn.taking && tracker.blocked() {
            // Only shutdown lets go of messages unconfirmed, and the sources have not
            // stopped: whatever did, the broker must deliver it again.
            return Some(NACKED.to_string());
        }
        // The hole waits for the routes to confirm what came before it, and for those acks to
        // leave the client; `poll` returns once it wrote them, and this is asked again.
        (turn.held_back > 0
            && tracker.unacknowledged() == 0
            && turn.acks.is_empty()
            && !eventloop.requests_queued())
        .then(|| {
            format!(
                "{} message(s) arrived while the routes were full and were left with the \
                 broker; reconnecting so that it sends them again",
                turn.held_back
            )
        })
    }

    /// Handles what woke the task, without the event loop (a `poll` may be in flight). `None`
    /// to go on waiting.
    fn on_step(
        &mut self,
        step: Step,
        turn: &mut Turn,
        tracker: &AckTracker<AckToken>,
        polling: bool,
    ) -> Option<Flow> {
        match step {
            Step::Close => unreachable!("close is handled by the caller"),
            // What was received so far is still handed over (shutdown waits for it, see
            // `Turn::handing_over`); what comes now is never taken, nor acknowledged: the
            // broker delivers it again to the next session.
            Step::StopSources => {
                turn.taking = false;
                turn.hand_over();
            }
            // The acks go into the client's request queue, which wakes the `poll` in flight.
            // They are of the current connection: when one fails, `poll` drains the queue and
            // returns the failure in the same wake-up (see `lose_connection`).
            Step::Released => {
                tracker.take_released(&mut turn.acks);
                self.send_acks(&mut turn.acks);
                if turn.connected && turn.taking && tracker.blocked() {
                    return self.tear_down(turn, polling, NACKED.to_string());
                }
            }
            Step::Room => turn.hand_over(),
            Step::Retry => turn.retry_at = None,
            Step::Resume => {}
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
                    return self.tear_down(turn, polling, why);
                }
            },
            Step::SubAck(result) => {
                turn.suback = None;
                if self.on_suback(result) {
                    turn.subscribed = true;
                }
            }
        }
        None
    }

    /// Tears the connection down. With a `poll` in flight, by shutting its socket down: that
    /// `poll` fails, and the connection is lost as any other (see the module doc). Without a
    /// `poll`, or if the socket could not be shut down, the turn ends and the caller drops the
    /// connection (and the `poll`, if one was in flight).
    fn tear_down(&mut self, turn: &mut Turn, polling: bool, why: String) -> Option<Flow> {
        if turn.cut.is_some() {
            return None;
        }
        if polling && self.socket.shut_down() {
            turn.cut = Some(why);
            return None;
        }
        Some(Flow::Reconnect(why))
    }

    /// Close came while a `poll` may be in flight: if it is, and the connection is up, queues
    /// the released acks and DISCONNECT (once every ack is queued) and lets that `poll` run
    /// until it returns, within `CLOSE_TIMEOUT`; `disconnect` goes on from there. A `poll`
    /// still connecting, or on a socket already shut down, is dropped: it took nothing from the
    /// queues, or what it took belonged to a connection that is gone.
    async fn close_during_poll<F: Future<Output = anyhow::Result<Event>>>(
        &mut self,
        poll: Pin<&mut Option<F>>,
        turn: &mut Turn,
        tracker: &AckTracker<AckToken>,
    ) -> Closing {
        let mut closing = Closing {
            deadline: Instant::now() + CLOSE_TIMEOUT,
            polled: None,
            disconnect_queued: false,
        };
        if poll.is_none() || !turn.connected || turn.cut.is_some() {
            return closing;
        }
        tracker.take_released(&mut turn.acks);
        self.send_acks(&mut turn.acks);
        if turn.acks.is_empty() {
            // The client gone, `poll` returns at once.
            closing.disconnect_queued = self.client.disconnect(DISCONNECT_DRAIN);
        }
        closing.polled = Some(tokio::time::timeout_at(closing.deadline, in_flight(poll)).await);
        closing
    }

    /// What `poll` returned.
    fn on_polled(
        &mut self,
        event: anyhow::Result<Event>,
        eventloop: &mut EventLoop,
        turn: &mut Turn,
        tracker: &Arc<AckTracker<AckToken>>,
    ) {
        let received = match event {
            Ok(Event::ConnAck(ack)) => {
                if eventloop.release_held_ids(&ack) {
                    // Nothing was taken on this connection; the next `poll` connects again. A
                    // publish queued before fails as after a session reset: its route retries.
                    self.socket.forget();
                    return;
                }
                eventloop.forget_session_store();
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
                return;
            }
            Ok(Event::Publish(received)) => received,
            Ok(Event::Disconnected | Event::Other) => return,
            Err(error) => {
                match turn.cut.take() {
                    Some(why) => self.lose_connection(turn, tracker, &why),
                    None => self.lose_connection(turn, tracker, &error),
                }
                return;
            }
        };
        if self.liveness.is_probe_topic(&received.topic) {
            // Probes never reach routes, and are never acknowledged (QoS 0).
            self.liveness.probe_came_back(&received.payload);
            return;
        }
        // After the sources stopped, or on a connection being torn down, nothing more is
        // taken (nor acknowledged): the broker delivers it again.
        if !turn.taking || turn.cut.is_some() {
            turn.left_with_broker += usize::from(received.ack.is_some() && turn.cut.is_none());
            return;
        }
        let acknowledged = received.ack.is_some();
        if acknowledged && turn.held_back > 0 {
            turn.held_back += 1;
            return;
        }
        if turn.pending.is_full() {
            if acknowledged {
                tracing::debug!(
                    connection = %self.name,
                    "the routes are full: leaving QoS 1/2 messages with the broker until they \
                     caught up"
                );
                turn.held_back = 1;
            } else {
                turn.qos0_dropped += 1;
                let dropped = turn.qos0_dropped;
                turn.qos0_dropped_log.warn(|| {
                    format!(
                        "connection {}: QoS 0 message dropped: the routes are full ({dropped} \
                         dropped since the start)",
                        self.name
                    )
                });
            }
            return;
        }
        let arrival = self.arrival(received, tracker);
        turn.pending.push(arrival);
        turn.hand_over();
    }

    /// Tears the network connection down on purpose (between two `poll`s) and builds it again
    /// after the backoff, like a failed one. Closing a socket with unread data in it (held-back
    /// messages) resets it, and a broker reset before it read the last acks delivers their
    /// messages again, out of order: ferry's own handle half-closes it and waits for the
    /// broker to close its side, as a clean stop does.
    async fn reconnect(
        &mut self,
        eventloop: &mut EventLoop,
        turn: &mut Turn,
        tracker: &AckTracker<AckToken>,
        why: &(dyn std::fmt::Display + Sync),
    ) {
        eventloop.drop_connection();
        let grace = Instant::now() + TEARDOWN_GRACE;
        if let Err(late) = self.socket.close_after_broker(grace).await {
            tracing::debug!(connection = %self.name, "torn down, but {late}");
        }
        turn.cut = None;
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
        //   connection. Only this task queues acks, and only while no `poll` runs: between
        //   two, or while one waits. A `poll` that finds its connection failed runs `clean`
        //   and returns the failure without waiting in between (the session checkpoint after
        //   it waits on nothing: ferry's session store answers at once, and later there is
        //   none), and this task learns of it before it queues anything else; so every ack it
        //   queued for the old connection was in the client before that `clean` ran;
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
    pub(super) fn send_acks(&self, acks: &mut VecDeque<AckToken>) {
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
            response: received.response,
        }
    }
}

impl Turn {
    /// Nothing to do between two `poll`s but to start the next: no acks waiting for room in
    /// the client, no SUBSCRIBE to queue, no hole to close, no full queue to pause reading for,
    /// no teardown under way. Then `poll` goes on past the events that need nothing of this
    /// task (see `EventLoop::poll`), and a nack tears the connection down from its step.
    fn quiet(&self) -> bool {
        self.connected
            && self.cut.is_none()
            && self.acks.is_empty()
            && self.subscribing.is_none()
            && self.held_back == 0
            && !self.pending.is_full()
    }

    /// Hands what waits to the routes, as far as they take it now. Once the sources stopped
    /// and everything received before is handed over, shutdown may close the route queues.
    fn hand_over(&mut self) {
        let Some(dispatcher) = &mut self.dispatcher else {
            return;
        };
        let pending = &mut self.pending;
        let all = dispatcher.hand_over(|| pending.pop_front());
        if all && !self.taking {
            self.handing_over = None;
        }
    }
}

/// Why the event loop reconnects when a route let go of a message unconfirmed.
const NACKED: &str = "a route let go of a message without confirming it: reconnecting, so the \
                      broker delivers it (and what came after it) again";

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
