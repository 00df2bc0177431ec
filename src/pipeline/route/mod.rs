//! A route's worker: takes messages from the route's queue in order, maps them, hands the
//! results to the sinks (and failures to the dead-letter sink), and confirms the source's ack
//! once the message is dealt with.
//!
//! A sink with a spool (`spool:` on the route) never holds the route up while it is
//! unreachable: its messages go to the spool on disk, the sources are confirmed once the spool
//! made them durable, and a forwarder task per spooled sink sends them on, in order, when the
//! sink is back. While a sink's spool holds anything, that sink's new messages go behind it.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

mod requests;
mod spooling;

pub use super::counters::{LATENCY_BUCKETS, RouteCounters, SinkLatency, SinkTiming};
pub use super::identity::{MessageIds, Suspects};
use super::spool::{AppendError, Spool};
use crate::config::Reconnect;
use crate::contracts::queue::RouteOutput;
use crate::contracts::status::{Backoff, RateLimitedLog};
use crate::contracts::supervisor::{self, OwnerRun};
use crate::contracts::{Confirmation, Sink, SinkError};
use crate::mapping::{Failure, Mapping, Outcome, Stage, Step};
use crate::message::{Ack, Message};

/// At most this many acks wait for one spool fsync (group commit), so a source that never
/// pauses still sees its acks.
const MAX_GROUP_COMMIT: usize = 4096;

/// The longest a spool's forwarder waits between two tries of an unavailable sink: a spool
/// exists to ride out outages, and its backlog should start moving soon after one ends.
const SPOOL_RETRY_MAX: Duration = Duration::from_secs(5);

/// One sink of a route.
pub struct RouteSink {
    pub connection: String,
    pub sink: Arc<dyn Sink>,
    /// Where its messages wait while it is unreachable, when the route has a spool. Boxed:
    /// most routes have none, and every route holds its sinks for as long as it runs.
    pub spool: Option<Box<Spool>>,
}

pub struct RouteWorker {
    pub name: Arc<str>,
    pub queue: RouteOutput,
    pub mapping: Mapping,
    /// In the order of the route's `to:`, as the mapping numbers them.
    pub sinks: Vec<RouteSink>,
    pub dead_letter: Option<RouteSink>,
    pub counters: Arc<RouteCounters>,
    /// Cancelled when the shutdown deadline passed (or a reload's, for this route): stop
    /// retrying unavailable sinks.
    pub abandon: CancellationToken,
    /// Cancelled when a reload replaces this worker: finish the message in hand, confirm what
    /// is durable, and return, leaving the queue to the next worker.
    pub stop: CancellationToken,
    pub tap: super::tap::Tap,
    /// End once this many messages were relayed (`ferry relay --count`).
    pub stop_after: Option<u64>,
    pub warnings: RateLimitedLog,
    /// `delivery: at-most-once`: the source is confirmed as soon as a message is taken.
    pub at_most_once: bool,
    /// Gives messages without an id of their own one, on routes where something reads it
    /// (see [`MessageIds`], [`Mapping::uses_message_ids`]).
    pub ids: Arc<MessageIds>,
    /// The messages that panicked this route's worker, kept across its restarts.
    pub suspects: Arc<Suspects>,
    /// Runs the filter and transform under the route's budget (none without them). Boxed,
    /// as most routes have neither and a worker is held by its task from the start.
    pub jq: Option<Box<super::jq_worker::JqWorker>>,
    /// A request route's `request:`: its worker asks and answers (`requests.rs`).
    pub request: Option<crate::config::Request>,
}

/// At most this many messages of a route are in flight at once: handed to their sinks'
/// protocol clients and waiting for confirmation. A route then pays a broker round trip (a
/// PUBACK, a flush) per batch rather than per message; the sources are still confirmed in
/// order.
const IN_FLIGHT: usize = 256;

/// A message taken from the queue whose outputs are on their way to the sinks.
struct InFlight {
    message: Message,
    /// The source's ack (none once confirmed at the take: `delivery: at-most-once`).
    ack: Option<Ack>,
    /// Queued publishes, in the order they were queued, waiting for confirmation: nearly
    /// always one, kept inline.
    outputs: smallvec::SmallVec<[QueuedOutput; 1]>,
    /// Counted as failed (and dead-lettered) already.
    failed: bool,
}

/// One publish queued with a sink's client.
struct QueuedOutput {
    /// The sink's index in the route's `to:`.
    sink: usize,
    /// What was published, to send again if the confirmation fails.
    message: Message,
    confirmation: Confirmation,
    started: Instant,
}

/// What the worker has taken from the queue and not finished with.
struct Outstanding {
    /// Messages in flight, oldest first: their sources are confirmed in this order.
    window: std::collections::VecDeque<InFlight>,
    /// Acks of messages finished with, waiting for a spool's fsync (see `make_durable`).
    waiting: Vec<Ack>,
    /// The worker's `abandon`, raced by every queueing and confirmation. Made once: a wait
    /// made for each of them would register with the token and unregister again, per message.
    abandoned: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Outstanding {
    fn new(abandon: &CancellationToken) -> Outstanding {
        Outstanding {
            window: Default::default(),
            waiting: Vec::new(),
            abandoned: Box::pin(abandon.clone().cancelled_owned()),
        }
    }
}

/// The shutdown deadline passed before a message was dealt with.
struct Abandoned;

/// How one publish ended.
enum Published {
    Sent,
    /// In the sink's spool, durable at the next [`RouteWorker::make_durable`].
    Spooled,
    Rejected(String),
    /// The shutdown deadline passed while the sink was unavailable.
    Abandoned,
}

impl RouteWorker {
    /// Runs until the queue is closed and drained (or the shutdown deadline passed). Each
    /// spooled sink gets a forwarder (a task of the route's `run`), which stops once the queue
    /// is done: what its spool still holds then waits on disk for the next start.
    /// The worker is boxed: a future keeps what it was given besides what it works on, and a
    /// worker in place would take that room twice.
    pub async fn run(self: Box<Self>, run: OwnerRun) {
        // Most of a route's task is the state of delivering (the window in flight, retries,
        // the spool), kilobytes that a route which never sees a message need not hold: until
        // its first message (or its stop) it waits in this small future, and the rest is
        // allocated then. A spooled sink's forwarder has work from the start.
        if !self.sinks.iter().any(|s| s.spool.is_some()) {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => {}
                _ = self.queue.wait_for_message() => {}
            }
        }
        match self.request.clone() {
            Some(request) => Box::pin(self.answer_requests(request)).await,
            None => Box::pin(self.deliver_all(run)).await,
        }
    }

    async fn deliver_all(self: Box<Self>, run: OwnerRun) {
        let worker: Arc<Self> = Arc::from(self);
        let forwarding = worker.abandon.child_token();
        let forwarders = run.tasks(forwarding.clone());
        for (index, sink) in worker.sinks.iter().enumerate() {
            if sink.spool.is_some() {
                forwarders.spawn(
                    "spool forwarder",
                    worker.clone().forward(index, forwarding.clone()),
                );
            }
        }
        forwarders.close();
        worker.take_messages().await;
        forwarding.cancel();
        forwarders.wait().await;
        worker.log_stopped();
    }

    async fn take_messages(&self) {
        // `ferry relay --count N` must not hand the sinks more than N messages.
        let in_flight = match self.stop_after {
            Some(_) => 1,
            None => IN_FLIGHT,
        };
        let mut outstanding = Outstanding::new(&self.abandon);
        // Made once, as `Outstanding::abandoned`.
        let mut stopped = std::pin::pin!(self.stop.cancelled());
        loop {
            if !outstanding.waiting.is_empty()
                && (outstanding.waiting.len() >= MAX_GROUP_COMMIT || self.queue.is_empty())
            {
                self.make_durable(&mut outstanding.waiting).await;
                continue;
            }
            if self.stop.is_cancelled() {
                break;
            }
            // Race the stop only when nothing else is to be done: waiting on the token
            // registers with it, which the hot path (a queue that always has the next
            // message) need not pay. With nothing queued, the oldest message in flight is
            // settled first.
            let next = match self.queue.try_pop() {
                Some(incoming) => Some(incoming),
                None if !outstanding.window.is_empty() => {
                    if !self.settle_oldest(&mut outstanding).await {
                        return self.give_up(outstanding).await;
                    }
                    continue;
                }
                None => tokio::select! {
                    biased;
                    () = &mut stopped => None,
                    next = self.queue.pop() => next,
                },
            };
            let Some(mut incoming) = next else {
                break;
            };
            self.counters.received.fetch_add(1, Ordering::Relaxed);
            self.counters.unconfirmed.fetch_add(1, Ordering::Relaxed);
            // An id only where something reads it (a tapper shows it too).
            if self.mapping.uses_message_ids() || self.tap.is_tapped() {
                self.ids.assign(&mut incoming.message);
            }
            self.tap.before(&incoming.message);
            let ack = match self.at_most_once {
                true => {
                    incoming.ack.confirm();
                    None
                }
                false => Some(incoming.ack),
            };
            let mut sending = InFlight {
                message: incoming.message,
                ack,
                outputs: Default::default(),
                failed: false,
            };
            let delivered = AssertUnwindSafe(self.deliver(&mut sending, &mut outstanding))
                .catch_unwind()
                .await;
            let delivered = match delivered {
                Ok(delivered) => delivered,
                Err(panic) => self.panicked(&mut sending, panic).await,
            };
            if !delivered {
                // Abandoned (the deadline passed): it is dropped unconfirmed, a nack.
                outstanding.window.push_back(sending);
                return self.give_up(outstanding).await;
            }
            outstanding.window.push_back(sending);
            if outstanding.window.len() >= in_flight && !self.settle_oldest(&mut outstanding).await
            {
                return self.give_up(outstanding).await;
            }
            if self
                .stop_after
                .is_some_and(|n| self.counters.sent.load(Ordering::Relaxed) >= n)
            {
                tracing::debug!(route = %self.name, "relayed the messages asked for; the route ends");
                break;
            }
        }
        while !outstanding.window.is_empty() {
            if !self.settle_oldest(&mut outstanding).await {
                return self.give_up(outstanding).await;
            }
        }
        self.make_durable(&mut outstanding.waiting).await;
    }

    /// Waits for the confirmations of the oldest message in flight (sending it again while
    /// its sink is unavailable, dead-lettering what a sink rejected), then confirms its source
    /// (after the spool's fsync, if a spool took messages before it). False when the shutdown
    /// deadline passed first: the message is back at the front of the window, unconfirmed.
    async fn settle_oldest(&self, outstanding: &mut Outstanding) -> bool {
        let Some(mut sending) = outstanding.window.pop_front() else {
            return true;
        };
        // On the deadline the whole window is given up: what is left of it needs no keeping.
        for output in std::mem::take(&mut sending.outputs) {
            let sink = &self.sinks[output.sink];
            let confirmed = tokio::select! {
                confirmed = output.confirmation.wait() => confirmed,
                () = outstanding.abandoned.as_mut() => {
                    outstanding.window.push_front(sending);
                    return false;
                }
            };
            let published = match confirmed {
                Ok(()) => {
                    self.observe_sent(sink, output.started);
                    Published::Sent
                }
                Err(SinkError::Rejected(reason)) => Published::Rejected(reason),
                Err(error) => self.publish_again(sink, &output.message, error).await,
            };
            let finished = match self.count(sink, published) {
                Ok(None) => true,
                Ok(Some(failure)) => self.failed(&mut sending, failure).await,
                Err(Abandoned) => false,
            };
            if !finished {
                outstanding.window.push_front(sending);
                return false;
            }
        }
        match sending.ack.take() {
            Some(ack) if !outstanding.waiting.is_empty() || self.spools().any(Spool::unsynced) => {
                outstanding.waiting.push(ack)
            }
            ack => {
                if let Some(ack) = ack {
                    ack.confirm();
                }
                self.counters.unconfirmed.fetch_sub(1, Ordering::Relaxed);
            }
        }
        true
    }

    /// The shutdown deadline passed: what a spool made durable is confirmed; every message
    /// still in flight is dropped unconfirmed (a nack: its source may send it again).
    async fn give_up(&self, mut outstanding: Outstanding) {
        self.make_durable(&mut outstanding.waiting).await;
        self.counters
            .unconfirmed
            .fetch_sub(outstanding.window.len() as u64, Ordering::Relaxed);
        drop(outstanding.window);
    }

    fn spools(&self) -> impl Iterator<Item = &Spool> {
        self.sinks.iter().filter_map(|s| s.spool.as_deref())
    }

    /// Makes what the spools took durable (one fsync each), then confirms the acks that
    /// waited for it, in order. If a spool cannot sync, they are dropped unconfirmed: the
    /// sources may send those messages again (and the spool may still forward them: at least
    /// once, never lost).
    async fn make_durable(&self, waiting: &mut Vec<Ack>) {
        if waiting.is_empty() && !self.spools().any(Spool::unsynced) {
            return;
        }
        let mut durable = true;
        for spool in self.spools() {
            if let Err(e) = spool.sync().await {
                durable = false;
                tracing::error!(
                    route = %self.name,
                    "cannot make the spool in {} durable: {e}; its messages stay unconfirmed at the source",
                    spool.dir().display()
                );
            }
        }
        let acks = std::mem::take(waiting);
        self.counters
            .unconfirmed
            .fetch_sub(acks.len() as u64, Ordering::Relaxed);
        tracing::debug!(
            route = %self.name,
            "{} message(s) confirmed after the spool's fsync ({} spooled so far)",
            acks.len(),
            self.counters.spooled.load(Ordering::Relaxed)
        );
        if durable {
            acks.into_iter().for_each(Ack::confirm);
        }
    }

    fn log_stopped(&self) {
        let c = &self.counters;
        let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let spool = match self.spools().next() {
            None => String::new(),
            Some(_) => format!(
                "; spool: {} spooled, {} forwarded, {} byte(s) kept for the next start, {} damaged record(s) set aside",
                n(&c.spooled),
                n(&c.forwarded),
                n(&c.spool_bytes),
                n(&c.spool_damaged)
            ),
        };
        tracing::info!(
            route = %self.name,
            "route stopped: {} received, {} sent, {} filtered, {} failed ({} dead-lettered), {} echoes suppressed, {} looped, {} dropped, {} left in queue{spool}",
            n(&c.received),
            n(&c.sent),
            n(&c.filtered),
            n(&c.failed),
            n(&c.dead_lettered),
            n(&c.echoes),
            n(&c.looped),
            self.queue.dropped(),
            self.queue.len(),
        );
    }

    /// The message in hand panicked the worker. The first time, the panic goes on: the worker
    /// ends, the supervisor restarts it, and what it had not confirmed (this message
    /// included) comes again from the source. The second time, the message is dead-lettered
    /// and the worker carries on. As [`Self::deliver`], false when abandoned.
    async fn panicked(&self, sending: &mut InFlight, panic: Box<dyn std::any::Any + Send>) -> bool {
        if !self.suspects.panicked_again(&sending.message) {
            std::panic::resume_unwind(panic);
        }
        let failure = Failure {
            stage: Stage::Worker,
            reason: format!(
                "it panicked the route worker twice ({})",
                supervisor::panic_text(panic.as_ref())
            ),
        };
        self.failed(sending, failure).await
    }

    /// Maps one message and hands the results to the sinks: queued with the protocol clients
    /// (their confirmations go in `sending.outputs`), or, for a sink with a spool, published
    /// or spooled at once. False when the message was abandoned (the shutdown deadline).
    async fn deliver(&self, sending: &mut InFlight, outstanding: &mut Outstanding) -> bool {
        let message = &sending.message;
        let steps = match self.map(message).await {
            Outcome::Filtered => {
                self.counters.filtered.fetch_add(1, Ordering::Relaxed);
                self.tap.filtered(message);
                return true;
            }
            Outcome::TooManyHops(hops) => {
                let looped = self.counters.looped.fetch_add(1, Ordering::Relaxed) + 1;
                self.warnings.warn(|| {
                    format!(
                        "route {}: dropped a message on `{}`{} after {hops} ferry hops (loop_guard.max_hops); ferry instances are relaying it in a loop ({looped} so far)",
                        self.name,
                        message.subject,
                        traced(message)
                    )
                });
                return true;
            }
            Outcome::Failed(failure) => return self.failed(sending, failure).await,
            Outcome::Mapped {
                steps,
                echoes,
                malformed_trace,
            } => {
                self.count_mapped(message, echoes, malformed_trace);
                steps
            }
        };
        // How many outputs each sink got so far: the second and later outputs of one message
        // for one sink get ids of their own (`<id>#<n>`). A message with one output needs no
        // count (and an empty vec allocates nothing).
        let mut outputs = vec![0usize; if steps.len() > 1 { self.sinks.len() } else { 0 }];
        for step in steps {
            let failure = match step {
                Step::Publish {
                    sink: index,
                    message: mut out,
                } => {
                    if let Some(count) = outputs.get_mut(index) {
                        if *count > 0
                            && let Some(id) = &mut out.id
                        {
                            id.push_str(&format!("#{count}"));
                        }
                        *count += 1;
                    }
                    let sink = &self.sinks[index];
                    // A tap opened after this message was taken: it still shows an id.
                    if out.id.is_none() && self.tap.is_tapped() {
                        self.ids.assign(&mut out);
                    }
                    self.tap.after(&sink.connection, &out);
                    let published = if sink.spool.is_some() {
                        self.publish_or_spool(sink, &out).await
                    } else {
                        let started = Instant::now();
                        let queued = tokio::select! {
                            queued = sink.sink.queue(&out) => queued,
                            () = outstanding.abandoned.as_mut() => return false,
                        };
                        match queued {
                            Ok(confirmation) => {
                                sending.outputs.push(QueuedOutput {
                                    sink: index,
                                    message: out,
                                    confirmation,
                                    started,
                                });
                                continue;
                            }
                            Err(SinkError::Rejected(reason)) => Published::Rejected(reason),
                            Err(error) => {
                                // Unavailable: what is in flight goes first, then this one,
                                // retried until it goes, so the order holds.
                                while !outstanding.window.is_empty() {
                                    if !self.settle_oldest(outstanding).await {
                                        return false;
                                    }
                                }
                                self.publish_again(sink, &out, error).await
                            }
                        }
                    };
                    match self.count(sink, published) {
                        Ok(None) => continue,
                        Ok(Some(failure)) => failure,
                        Err(Abandoned) => return false,
                    }
                }
                Step::Fail(failure) => failure,
            };
            if !self.failed(sending, failure).await {
                return false;
            }
        }
        true
    }

    /// What the route's mapping stage makes of `message` (its filter and transform in the
    /// route's jq worker, if it has them).
    async fn map(&self, message: &Message) -> Outcome {
        supervisor::fault::message(&message.payload);
        match &self.jq {
            None => self.mapping.apply(message),
            Some(jq) => match self.mapping.prepare(message) {
                Err(outcome) => outcome,
                Ok(pending) => {
                    let outputs = jq.run(pending.payload(), pending.vars.as_ref()).await;
                    self.mapping.finish(pending, outputs)
                }
            },
        }
    }

    /// A message is counted as failed, and dead-lettered, once, however many of its outputs
    /// or sinks failed; the later failures are only logged. False only when the shutdown
    /// deadline made us give up.
    async fn failed(&self, sending: &mut InFlight, failure: Failure) -> bool {
        if sending.failed {
            self.warnings.warn(|| {
                format!(
                    "route {}: message on `{}`: also {failure}",
                    self.name, sending.message.subject
                )
            });
            return true;
        }
        sending.failed = true;
        self.fail(&sending.message, failure).await
    }

    /// Counts how a publish on `sink` ended: `Ok(None)` when sent or spooled, the failure when
    /// the sink rejected the message, `Err` when the shutdown deadline came first.
    fn count(&self, sink: &RouteSink, published: Published) -> Result<Option<Failure>, Abandoned> {
        match published {
            Published::Sent => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Published::Spooled => Ok(None),
            Published::Rejected(reason) => Ok(Some(Failure {
                stage: Stage::Sink,
                reason: format!("{} rejected it: {reason}", sink.connection),
            })),
            Published::Abandoned => Err(Abandoned),
        }
    }

    /// Records how long `sink` took to confirm a publish (the dead-letter sink's are not
    /// counted).
    fn observe_sent(&self, sink: &RouteSink, started: Instant) {
        if !self
            .dead_letter
            .as_ref()
            .is_some_and(|d| std::ptr::eq(d, sink))
        {
            self.counters
                .sink_latency
                .observe(&sink.connection, started.elapsed());
        }
    }

    /// One try on one sink. `Err` when the sink is unavailable (the same message may succeed
    /// later); a send may take as long as its protocol allows (an HTTP request: the
    /// connection's `timeout`), but not past `give_up`.
    async fn send(
        &self,
        sink: &RouteSink,
        message: &Message,
        give_up: &CancellationToken,
    ) -> Result<Published, SinkError> {
        let started = Instant::now();
        let sent = tokio::select! {
            sent = sink.sink.send(message) => sent,
            _ = give_up.cancelled() => return Ok(Published::Abandoned),
        };
        match sent {
            Ok(()) => {
                self.observe_sent(sink, started);
                Ok(Published::Sent)
            }
            Err(SinkError::Rejected(reason)) => Ok(Published::Rejected(reason)),
            Err(error) => Err(error),
        }
    }

    /// Publishes on one sink, retrying with backoff while the sink is unavailable, until
    /// `give_up` (the shutdown deadline, or the end of a forwarder).
    async fn publish(
        &self,
        sink: &RouteSink,
        message: &Message,
        give_up: &CancellationToken,
        retry: &Reconnect,
    ) -> Published {
        let mut backoff = Backoff::new(retry);
        loop {
            let error = match self.send(sink, message, give_up).await {
                Ok(published) => return published,
                Err(error) => error,
            };
            if self
                .wait_to_retry(sink, error, &mut backoff, give_up)
                .await
                .is_err()
            {
                return Published::Abandoned;
            }
        }
    }

    /// Publishes a message whose first try failed with `error`: after the delay that error
    /// asks for, as [`Self::publish`] retries.
    async fn publish_again(
        &self,
        sink: &RouteSink,
        message: &Message,
        error: SinkError,
    ) -> Published {
        let retry = Reconnect::default();
        let mut backoff = Backoff::new(&retry);
        if self
            .wait_to_retry(sink, error, &mut backoff, &self.abandon)
            .await
            .is_err()
        {
            return Published::Abandoned;
        }
        self.publish(sink, message, &self.abandon, &retry).await
    }

    /// Waits before the next try of a sink that failed with `error` (logged, rate-limited;
    /// counted once the wait is over, as the try is then made). `Err` when `give_up` came
    /// first.
    async fn wait_to_retry(
        &self,
        sink: &RouteSink,
        error: SinkError,
        backoff: &mut Backoff,
        give_up: &CancellationToken,
    ) -> Result<(), ()> {
        // The server's own word on when to come back wins over our backoff (capped, so a
        // silly Retry-After cannot park the route for a day).
        let delay = match &error {
            SinkError::Busy { retry_after, .. } => (*retry_after).min(Duration::from_secs(600)),
            _ => backoff.next_delay(),
        };
        self.warnings.warn(|| {
            format!(
                "route {}: sink {} unavailable ({error}); retrying in {delay:?}",
                self.name, sink.connection
            )
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {
                // The failed try may still have reached the far side (a confirmation lost with
                // its connection): counted, so a duplicate there can be traced to this.
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            _ = give_up.cancelled() => Err(()),
        }
    }

    /// Counts and logs (rate-limited) a message that failed, and hands it to the dead-letter
    /// sink when the route has one. False only when the shutdown deadline made us give up.
    async fn fail(&self, original: &Message, failure: Failure) -> bool {
        let failed = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
        self.tap.failed(original, &failure);
        let mut fate = "";
        let mut finished = true;
        if let (Some(sink), Some(letter)) = (
            &self.dead_letter,
            self.mapping.dead_letter(original, &failure),
        ) {
            fate = match letter {
                Err(_) => "; the dead-letter sink cannot name it either",
                Ok(letter) => match self
                    .publish(sink, &letter, &self.abandon, &Reconnect::default())
                    .await
                {
                    Published::Sent => {
                        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        "; sent to the dead-letter sink"
                    }
                    Published::Rejected(_) => "; the dead-letter sink rejected it too",
                    Published::Abandoned | Published::Spooled => {
                        finished = false;
                        "; not dead-lettered before the shutdown deadline"
                    }
                },
            };
        }
        self.warnings.warn(|| {
            format!(
                "route {}: message on `{}`{} not delivered, {failure}{fate} ({failed} failed so far)",
                self.name,
                original.subject,
                traced(original)
            )
        });
        finished
    }

    /// Counts what the mapping of `message` left out (publishes the loop guard dropped) or
    /// replaced (a malformed `traceparent`), for the send loop and the request worker alike.
    fn count_mapped(&self, message: &Message, echoes: u32, malformed_trace: bool) {
        self.counters
            .echoes
            .fetch_add(echoes.into(), Ordering::Relaxed);
        if malformed_trace {
            self.malformed_trace(message);
        }
    }

    /// Counts and logs (rate-limited) a message whose `traceparent` was malformed: the mapping
    /// sent it on with a new trace, as the W3C specification says.
    fn malformed_trace(&self, message: &Message) {
        let n = self
            .counters
            .traces_replaced
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        self.warnings.warn(|| {
            format!(
                "route {}: message on `{}` had a malformed traceparent; sent on with a new trace ({n} so far)",
                self.name, message.subject
            )
        });
    }
}

/// ` (trace <id>)` for a message that belongs to a trace, so that an operator can find it
/// across hops; empty otherwise.
fn traced(message: &Message) -> String {
    match crate::mapping::trace::trace_id(&message.headers) {
        Some(id) => format!(" (trace {id})"),
        None => String::new(),
    }
}

// Last in the file: the spawn check reads a file only up to its first test attribute.
#[cfg(test)]
mod tests;
