//! A route's worker: takes messages from the route's queue in order, maps them, hands them to
//! every sink, and confirms the source's ack once every sink took the message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use super::queue::RouteOutput;
use super::status::{Backoff, RateLimitedLog};
use crate::config::Reconnect;
use crate::connectors::{Sink, SinkError};
use crate::mapping::{Mapping, SinkTarget};
use crate::message::Message;

/// What happened to a route's messages.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Taken from the queue.
    pub received: AtomicU64,
    /// Published, counted once per sink.
    pub sent: AtomicU64,
    /// Dropped by the filter (or a transform that yielded nothing).
    pub filtered: AtomicU64,
    /// Could not be mapped or published: not JSON, jq error, bad subject, rejected by a sink.
    pub failed: AtomicU64,
}

/// One sink of a route with the way it names its subjects.
pub struct RouteSink {
    pub connection: String,
    pub sink: Arc<dyn Sink>,
    pub target: SinkTarget,
}

pub struct RouteWorker {
    pub name: Arc<str>,
    pub queue: RouteOutput,
    pub mapping: Mapping,
    pub sinks: Vec<RouteSink>,
    pub counters: Arc<RouteCounters>,
    /// Cancelled when the shutdown deadline passed: stop retrying unavailable sinks.
    pub abandon: CancellationToken,
    pub warnings: RateLimitedLog,
}

impl RouteWorker {
    /// Runs until the queue is closed and drained (or the shutdown deadline passed).
    pub async fn run(self) {
        while let Some(incoming) = self.queue.pop().await {
            self.counters.received.fetch_add(1, Ordering::Relaxed);
            let delivered = self.deliver(&incoming.message).await;
            if delivered {
                incoming.ack.confirm();
            } else if self.abandon.is_cancelled() {
                break;
            }
        }
        let c = &self.counters;
        let dropped = self.queue.dropped();
        tracing::info!(
            route = %self.name,
            "route stopped: {} received, {} sent, {} filtered, {} failed, {} dropped, {} left in queue",
            c.received.load(Ordering::Relaxed),
            c.sent.load(Ordering::Relaxed),
            c.filtered.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            dropped,
            self.queue.len(),
        );
    }

    /// Maps one message and publishes the result on every sink. True when the message is
    /// finished with (delivered, filtered, or failed for good); false when it was abandoned.
    async fn deliver(&self, message: &Message) -> bool {
        let outputs = match self.mapping.apply(message) {
            Ok(outputs) => outputs,
            Err(e) => {
                self.fail(message, &e.to_string());
                return true;
            }
        };
        if outputs.is_empty() {
            self.counters.filtered.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        // One copy of the message per output; the sinks take turns with it, each under the
        // subject rendered for it (all rendered first, from the source's subject).
        for payload in outputs {
            let mut out = Message {
                payload,
                ..message.clone()
            };
            let subjects: Vec<_> = self
                .sinks
                .iter()
                .map(|sink| sink.target.render(&out, &self.name))
                .collect();
            for (sink, subject) in self.sinks.iter().zip(subjects) {
                out.subject = match subject {
                    Ok(subject) => subject,
                    Err(e) => {
                        self.fail(
                            message,
                            &format!("cannot name the subject for {}: {e}", sink.connection),
                        );
                        continue;
                    }
                };
                if !self.publish(sink, &out).await {
                    return false;
                }
            }
        }
        true
    }

    /// Publishes on one sink, retrying with backoff while the sink is unavailable. False only
    /// when the shutdown deadline made us give up.
    async fn publish(&self, sink: &RouteSink, message: &Message) -> bool {
        let mut backoff = Backoff::new(&Reconnect::default());
        loop {
            match sink.sink.send(message).await {
                Ok(()) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(SinkError::Rejected(reason)) => {
                    self.fail(
                        message,
                        &format!("{} rejected it: {reason}", sink.connection),
                    );
                    return true;
                }
                Err(SinkError::Unavailable(reason)) => {
                    let delay = backoff.next_delay();
                    tracing::debug!(route = %self.name, "sink {} unavailable ({reason}); retrying in {delay:?}", sink.connection);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.abandon.cancelled() => return false,
                    }
                }
            }
        }
    }

    fn fail(&self, message: &Message, reason: &str) {
        let failed = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
        self.warnings.warn(|| {
            format!(
                "route {}: message on `{}` not delivered: {reason} ({failed} failed so far)",
                self.name, message.subject
            )
        });
    }
}
