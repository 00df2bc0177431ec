//! A request route's worker: each message is a request its one sink makes, and the reply
//! (or what became of the request) goes back to the requester by the way its source gave.
//!
//! Requests are asked side by side, up to the route's `request.max_in_flight`, so one slow
//! service does not hold up the next request. The mapping stage applies to the request as on
//! any route; the reply goes back as the service sent it, without ferry's loop marker. The
//! source's ack is confirmed once the answer was handed back, whatever the route's delivery.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::{RouteWorker, traced};
use crate::config::Request;
use crate::mapping::{Failure, Outcome, Stage, Step};
use crate::message::{Ack, Answer, Incoming, Message, Reply};

impl RouteWorker {
    /// Takes requests from the queue until it closes (or the worker is stopped), at most
    /// `max_in_flight` waiting for their replies at once. Once told to stop, what was asked
    /// is still answered, each within its timeout; past the shutdown deadline the rest are
    /// dropped, and their requesters told ferry stopped.
    pub(super) async fn answer_requests(self: Box<Self>, request: Request) {
        let mut waiting = FuturesUnordered::new();
        loop {
            let next = tokio::select! {
                biased;
                Some(()) = waiting.next(), if !waiting.is_empty() => continue,
                _ = self.stop.cancelled() => break,
                next = self.queue.pop(), if waiting.len() < request.max_in_flight => next,
            };
            let Some(incoming) = next else {
                break;
            };
            waiting.push(self.ask(incoming, request.timeout));
        }
        tokio::select! {
            _ = async { while waiting.next().await.is_some() {} } => {}
            _ = self.abandon.cancelled() => {}
        }
        drop(waiting);
        self.log_stopped();
    }

    /// One request: mapped, asked, answered, and its source confirmed.
    async fn ask(&self, incoming: Incoming, timeout: Duration) {
        let Incoming {
            mut message,
            ack,
            reply,
        } = incoming;
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        self.counters.unconfirmed.fetch_add(1, Ordering::Relaxed);
        if self.mapping.uses_message_ids() || self.tap.is_tapped() {
            self.ids.assign(&mut message);
        }
        self.tap.before(&message);
        let reply = match reply {
            Some(reply) if reply.unanswerable().is_none() => reply,
            unanswerable => {
                let why = (unanswerable.as_ref().and_then(|r| r.unanswerable()))
                    .unwrap_or("a request with no way back to its requester");
                let failure = Failure {
                    stage: Stage::Decode,
                    reason: why.into(),
                };
                self.fail(&message, failure).await;
                return self.settled(ack);
            }
        };
        match self.prepare(&message).await {
            Ok(request) => self.make(&request, timeout, reply, ack).await,
            Err(answer) => {
                reply.answer(answer);
                self.settled(ack);
            }
        }
    }

    /// The request's source is confirmed: its answer was handed back (or it had none).
    fn settled(&self, ack: Ack) {
        ack.confirm();
        self.counters.unconfirmed.fetch_sub(1, Ordering::Relaxed);
    }

    /// Maps the request: what to ask the sink, or what the requester gets instead.
    async fn prepare(&self, message: &Message) -> Result<Message, Answer> {
        match self.map(message).await {
            Outcome::Filtered => {
                self.counters.filtered.fetch_add(1, Ordering::Relaxed);
                self.tap.filtered(message);
                Err(Answer::Failed(
                    "the route's filter left the request out".into(),
                ))
            }
            Outcome::TooManyHops(hops) => {
                let looped = self.counters.looped.fetch_add(1, Ordering::Relaxed) + 1;
                self.warnings.warn(|| {
                    format!(
                        "route {}: answered a request on `{}`{} as failed after {hops} ferry hops (loop_guard.max_hops); ferry instances are relaying it in a loop ({looped} so far)",
                        self.name,
                        message.subject,
                        traced(message)
                    )
                });
                Err(Answer::Failed(format!(
                    "the request looped ({hops} ferry hops)"
                )))
            }
            Outcome::Failed(failure) => Err(self.refused(message, failure).await),
            Outcome::Mapped {
                steps,
                echoes,
                malformed_trace,
            } => {
                self.count_mapped(message, echoes, malformed_trace);
                // One sink: the first output is the request (a transform yields one).
                match steps.into_iter().next() {
                    Some(Step::Publish { message, .. }) => Ok(message),
                    Some(Step::Fail(failure)) => Err(self.refused(message, failure).await),
                    None => Err(Answer::Failed("the loop guard left the request out".into())),
                }
            }
        }
    }

    /// Makes the request on the route's sink, answers the requester and confirms the source.
    /// A request that timed out is still outstanding at the service: it keeps its place in
    /// `max_in_flight` for as long again, and a reply that comes then is counted late (and
    /// dropped).
    async fn make(&self, request: &Message, timeout: Duration, reply: Reply, ack: Ack) {
        let sink = &self.sinks[0];
        self.tap.after(&sink.connection, request);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let mut asking = sink.sink.request(request, timeout);
        let answer = match tokio::time::timeout(timeout, &mut asking).await {
            Ok(Ok(answered)) => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
                self.counters.replies.fetch_add(1, Ordering::Relaxed);
                self.observe_sent(sink, started);
                Answer::Reply(answered)
            }
            Ok(Err(error)) => {
                let failed = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
                self.warnings.warn(|| {
                    format!(
                        "route {}: request on `{}`{} failed: {error} ({failed} failed so far)",
                        self.name,
                        request.subject,
                        traced(request)
                    )
                });
                Answer::Failed(error.to_string())
            }
            Err(_) => {
                let timeouts = self.counters.timeouts.fetch_add(1, Ordering::Relaxed) + 1;
                self.warnings.warn(|| {
                    format!(
                        "route {}: no reply to a request on `{}`{} within {timeout:?} ({timeouts} so far)",
                        self.name,
                        request.subject,
                        traced(request)
                    )
                });
                reply.answer(Answer::TimedOut(timeout));
                self.settled(ack);
                let late = tokio::select! {
                    late = tokio::time::timeout(timeout, asking) => matches!(late, Ok(Ok(_))),
                    _ = self.abandon.cancelled() => false,
                };
                if late {
                    self.counters.late_replies.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        reply.answer(answer);
        self.settled(ack);
    }

    /// A request the mapping could not make: failed (dead-lettered if the route has a
    /// dead-letter sink), and the requester told why.
    async fn refused(&self, message: &Message, failure: Failure) -> Answer {
        let why = failure.to_string();
        self.fail(message, failure).await;
        Answer::Failed(why)
    }
}
