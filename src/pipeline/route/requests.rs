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

use super::RouteWorker;
use crate::config::Request;
use crate::mapping::{Failure, Outcome, Stage, Step};
use crate::message::{Answer, Incoming, Message};

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
        let nowhere = match &reply {
            None => Some("a request with no way back to its requester"),
            Some(reply) => reply.unanswerable(),
        };
        if let Some(why) = nowhere {
            let failure = Failure {
                stage: Stage::Decode,
                reason: why.into(),
            };
            self.fail(&message, failure).await;
        } else {
            let answer = self.answer(&message, timeout).await;
            if let Some(reply) = reply {
                reply.answer(answer);
            }
        }
        ack.confirm();
        self.counters.unconfirmed.fetch_sub(1, Ordering::Relaxed);
    }

    /// Maps the request, makes it on the route's sink, and says what the requester gets.
    async fn answer(&self, message: &Message, timeout: Duration) -> Answer {
        let request = match self.map(message).await {
            Outcome::Filtered => {
                self.counters.filtered.fetch_add(1, Ordering::Relaxed);
                self.tap.filtered(message);
                return Answer::Failed("the route's filter left the request out".into());
            }
            Outcome::TooManyHops(hops) => {
                self.counters.looped.fetch_add(1, Ordering::Relaxed);
                return Answer::Failed(format!("the request looped ({hops} ferry hops)"));
            }
            Outcome::Failed(failure) => return self.refused(message, failure).await,
            Outcome::Mapped { steps, echoes } => {
                self.counters
                    .echoes
                    .fetch_add(echoes.into(), Ordering::Relaxed);
                // One sink: the first output is the request (a transform yields one).
                match steps.into_iter().next() {
                    Some(Step::Publish { message, .. }) => message,
                    Some(Step::Fail(failure)) => return self.refused(message, failure).await,
                    None => return Answer::Failed("the loop guard left the request out".into()),
                }
            }
        };
        let sink = &self.sinks[0];
        self.tap.after(&sink.connection, &request);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match tokio::time::timeout(timeout, sink.sink.request(&request, timeout)).await {
            Ok(Ok(reply)) => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
                self.counters.replies.fetch_add(1, Ordering::Relaxed);
                self.observe_sent(sink, started);
                Answer::Reply(reply)
            }
            Ok(Err(error)) => {
                let failed = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
                self.warnings.warn(|| {
                    format!(
                        "route {}: request on `{}` failed: {error} ({failed} failed so far)",
                        self.name, request.subject
                    )
                });
                Answer::Failed(error.to_string())
            }
            Err(_) => {
                let timeouts = self.counters.timeouts.fetch_add(1, Ordering::Relaxed) + 1;
                self.warnings.warn(|| {
                    format!(
                        "route {}: no reply to a request on `{}` within {timeout:?} ({timeouts} so far)",
                        self.name, request.subject
                    )
                });
                Answer::TimedOut(timeout)
            }
        }
    }

    /// A request the mapping could not make: failed (dead-lettered if the route has a
    /// dead-letter sink), and the requester told why.
    async fn refused(&self, message: &Message, failure: Failure) -> Answer {
        let why = failure.to_string();
        self.fail(message, failure).await;
        Answer::Failed(why)
    }
}
