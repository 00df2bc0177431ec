//! A route's worker: takes messages from the route's queue in order, maps them, hands the
//! results to the sinks (and failures to the dead-letter sink), and confirms the source's ack
//! once the message is dealt with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::queue::RouteOutput;
use super::status::{Backoff, RateLimitedLog};
use crate::config::Reconnect;
use crate::connectors::{Sink, SinkError};
use crate::mapping::{Failure, Mapping, Outcome, Stage, Step};
use crate::message::Message;

/// What happened to a route's messages.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Taken from the queue.
    pub received: AtomicU64,
    /// Published, counted once per sink.
    pub sent: AtomicU64,
    /// Left out by `match:`, the filter, or a transform that yielded nothing.
    pub filtered: AtomicU64,
    /// Could not be mapped or published: not JSON, jq error, bad subject, rejected by a sink.
    pub failed: AtomicU64,
    /// Of the failed, how many the dead-letter sink took.
    pub dead_lettered: AtomicU64,
    /// Publishes the loop guard left out: the message had already been on that connection.
    pub echoes: AtomicU64,
    /// Dropped after `loop_guard.max_hops` ferry hops.
    pub looped: AtomicU64,
}

/// One sink of a route.
pub struct RouteSink {
    pub connection: String,
    pub sink: Arc<dyn Sink>,
}

pub struct RouteWorker {
    pub name: Arc<str>,
    pub queue: RouteOutput,
    pub mapping: Mapping,
    /// In the order of the route's `to:`, as the mapping numbers them.
    pub sinks: Vec<RouteSink>,
    pub dead_letter: Option<RouteSink>,
    pub counters: Arc<RouteCounters>,
    /// Cancelled when the shutdown deadline passed: stop retrying unavailable sinks.
    pub abandon: CancellationToken,
    pub warnings: RateLimitedLog,
    /// `delivery: at-most-once`: the source is confirmed as soon as a message is taken.
    pub at_most_once: bool,
    /// Gives messages without an id of their own one (see [`MessageIds`]).
    pub ids: Arc<MessageIds>,
}

/// Ids for messages whose source gave none (MQTT, core NATS), unique across processes: the
/// time this process started and a counter. A sink derives an idempotency key from
/// `Message.id` (JetStream's `Nats-Msg-Id`), so a message re-sent after a failed confirmation is
/// recognised, and two different messages never share a key.
#[derive(Debug)]
pub struct MessageIds {
    boot: String,
    next: AtomicU64,
}

impl Default for MessageIds {
    fn default() -> Self {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        MessageIds {
            boot: format!("{micros:x}.{:x}", std::process::id()),
            next: AtomicU64::new(0),
        }
    }
}

impl MessageIds {
    /// Gives `message` an id if its source did not.
    pub fn assign(&self, message: &mut Message) {
        if message.id.is_none() {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            message.id = Some(format!("{}.{n}", self.boot));
        }
    }
}

/// How one publish ended.
enum Published {
    Sent,
    Rejected(String),
    /// The shutdown deadline passed while the sink was unavailable.
    Abandoned,
}

impl RouteWorker {
    /// Runs until the queue is closed and drained (or the shutdown deadline passed).
    pub async fn run(self) {
        while let Some(mut incoming) = self.queue.pop().await {
            self.counters.received.fetch_add(1, Ordering::Relaxed);
            self.ids.assign(&mut incoming.message);
            let ack = match self.at_most_once {
                true => {
                    incoming.ack.confirm();
                    None
                }
                false => Some(incoming.ack),
            };
            let finished = self.deliver(&incoming.message).await;
            if finished {
                if let Some(ack) = ack {
                    ack.confirm();
                }
            } else if self.abandon.is_cancelled() {
                break;
            }
        }
        let c = &self.counters;
        let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        tracing::info!(
            route = %self.name,
            "route stopped: {} received, {} sent, {} filtered, {} failed ({} dead-lettered), {} echoes suppressed, {} looped, {} dropped, {} left in queue",
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

    /// Maps one message and publishes the results. True when the message is finished with
    /// (delivered, filtered, or failed and dead-lettered/counted); false when it was abandoned.
    async fn deliver(&self, message: &Message) -> bool {
        let steps = match self.mapping.apply(message) {
            Outcome::Filtered => {
                self.counters.filtered.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Outcome::TooManyHops(hops) => {
                let looped = self.counters.looped.fetch_add(1, Ordering::Relaxed) + 1;
                self.warnings.warn(|| {
                    format!(
                        "route {}: dropped a message on `{}` after {hops} ferry hops (loop_guard.max_hops); ferry instances are relaying it in a loop ({looped} so far)",
                        self.name, message.subject
                    )
                });
                return true;
            }
            Outcome::Failed(failure) => return self.fail(message, failure).await,
            Outcome::Mapped { steps, echoes } => {
                self.counters
                    .echoes
                    .fetch_add(echoes.into(), Ordering::Relaxed);
                steps
            }
        };
        // A message is counted as failed, and dead-lettered, once, however many of its
        // outputs or sinks failed; the later failures are only logged.
        let mut failed = false;
        // How many outputs each sink got so far: the second and later outputs of one message
        // for one sink get ids of their own (`<id>#<n>`).
        let mut outputs = vec![0usize; self.sinks.len()];
        for step in steps {
            let failure = match step {
                Step::Publish {
                    sink,
                    message: mut out,
                } => {
                    if outputs[sink] > 0
                        && let Some(id) = &mut out.id
                    {
                        id.push_str(&format!("#{}", outputs[sink]));
                    }
                    outputs[sink] += 1;
                    let sink = &self.sinks[sink];
                    match self.publish(sink, &out).await {
                        Published::Sent => {
                            self.counters.sent.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Published::Rejected(reason) => Failure {
                            stage: Stage::Sink,
                            reason: format!("{} rejected it: {reason}", sink.connection),
                        },
                        Published::Abandoned => return false,
                    }
                }
                Step::Fail(failure) => failure,
            };
            if failed {
                self.warnings.warn(|| {
                    format!(
                        "route {}: message on `{}`: also {failure}",
                        self.name, message.subject
                    )
                });
            } else if !self.fail(message, failure).await {
                return false;
            }
            failed = true;
        }
        true
    }

    /// Publishes on one sink, retrying with backoff while the sink is unavailable.
    async fn publish(&self, sink: &RouteSink, message: &Message) -> Published {
        let mut backoff = Backoff::new(&Reconnect::default());
        loop {
            // A send may take as long as its protocol allows (an HTTP request: the connection's
            // `timeout`); past the shutdown deadline, stop waiting for it.
            let sent = tokio::select! {
                sent = sink.sink.send(message) => sent,
                _ = self.abandon.cancelled() => return Published::Abandoned,
            };
            match sent {
                Ok(()) => return Published::Sent,
                Err(SinkError::Rejected(reason)) => return Published::Rejected(reason),
                Err(error) => {
                    // The server's own word on when to come back wins over our backoff (capped,
                    // so a silly Retry-After cannot park the route for a day).
                    let delay = match &error {
                        SinkError::Busy { retry_after, .. } => {
                            (*retry_after).min(Duration::from_secs(600))
                        }
                        _ => backoff.next_delay(),
                    };
                    self.warnings.warn(|| {
                        format!(
                            "route {}: sink {} unavailable ({error}); retrying in {delay:?}",
                            self.name, sink.connection
                        )
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.abandon.cancelled() => return Published::Abandoned,
                    }
                }
            }
        }
    }

    /// Counts and logs (rate-limited) a message that failed, and hands it to the dead-letter
    /// sink when the route has one. False only when the shutdown deadline made us give up.
    async fn fail(&self, original: &Message, failure: Failure) -> bool {
        let failed = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fate = "";
        let mut finished = true;
        if let (Some(sink), Some(letter)) = (
            &self.dead_letter,
            self.mapping.dead_letter(original, &failure),
        ) {
            fate = match letter {
                Err(_) => "; the dead-letter sink cannot name it either",
                Ok(letter) => match self.publish(sink, &letter).await {
                    Published::Sent => {
                        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        "; sent to the dead-letter sink"
                    }
                    Published::Rejected(_) => "; the dead-letter sink rejected it too",
                    Published::Abandoned => {
                        finished = false;
                        "; not dead-lettered before the shutdown deadline"
                    }
                },
            };
        }
        self.warnings.warn(|| {
            format!(
                "route {}: message on `{}` not delivered, {failure}{fate} ({failed} failed so far)",
                self.name, original.subject
            )
        });
        finished
    }
}
