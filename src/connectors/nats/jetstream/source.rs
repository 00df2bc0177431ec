//! A JetStream source: the reader that binds, pulls within the window and holds what it
//! gets, and the hand-over into the route's queue.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::JetStreamRoute;
use super::acks::{AckOut, Tracker, acknowledge};
use super::consumer::{Bound, Problem, bind};
use crate::config::Reconnect;
use crate::contracts::ConnectionContext;
use crate::contracts::queue::RouteInput;
use crate::contracts::status::Backoff;
use crate::message::{Incoming, Message};

/// Idle heartbeat asked of the server for each pull: two missed, and the pull stream is
/// rebuilt. Short, so a consumer lost on the server is noticed within seconds.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long an idle pull request waits before it is renewed (the client's own default).
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// Messages asked for per pull request, at most (the window may be smaller).
const MAX_BATCH: usize = 256;

/// Logs a problem once when it starts or changes, not on every retry, and once when it ends.
struct Trouble {
    /// `route R: JetStream consumer S/C`, what the log lines start with.
    what: String,
    current: Option<Problem>,
}

impl Trouble {
    fn report(&mut self, problem: Problem, retry_in: Duration) {
        match &problem {
            _ if self.current.as_ref() == Some(&problem) => {
                tracing::debug!(
                    "{}: still {}; retrying in {retry_in:?}",
                    self.what,
                    problem.text()
                );
            }
            Problem::Refused(why) => {
                tracing::error!("{}: {why}; retrying in {retry_in:?}", self.what);
            }
            Problem::Unavailable(why) => {
                tracing::warn!("{}: {why}; retrying with backoff", self.what);
            }
        }
        self.current = Some(problem);
    }

    /// The source reads again: logs it, if there was a problem.
    fn clear(&mut self) {
        if self.current.take().is_some() {
            tracing::info!("{}: pulling again", self.what);
        }
    }
}

/// What a JetStream source needs, handed over by its connection.
pub(in crate::connectors::nats) struct Source {
    pub route: JetStreamRoute,
    pub origin: Arc<str>,
    pub client: Client,
    pub jetstream: jetstream::Context,
    pub reconnect: Reconnect,
    /// Counts the sources bound at least once: the connection is up when all are.
    pub bound: watch::Sender<usize>,
}

impl Source {
    /// Spawns the source's tasks: the reader (binds, pulls, holds), the hand-over into the
    /// route's queue, and the acker.
    pub fn spawn(self, runtime: &ConnectionContext) {
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let tracker = Arc::new(Tracker::new(acks_tx, &self.route.config));
        let (hand_tx, hand_rx) = mpsc::unbounded_channel();
        runtime.tasks.spawn(
            "JetStream acker",
            acknowledge(
                self.client.clone(),
                tracker.clone(),
                acks_rx,
                runtime.close.clone(),
            ),
        );
        runtime.sources.spawn(
            "JetStream hand-over",
            hand_over(
                hand_rx,
                self.route.input.clone(),
                runtime.stop_sources.clone(),
            ),
        );
        let reader = Reader {
            trouble: Trouble {
                what: format!(
                    "route {}: JetStream consumer {}",
                    self.route.route,
                    self.route.name()
                ),
                current: None,
            },
            backoff: Backoff::new(&self.reconnect),
            source: self,
            tracker,
            hand: hand_tx,
            stop: runtime.stop_sources.clone(),
            bound_once: false,
        };
        runtime.sources.spawn("JetStream reader", reader.run());
    }
}

/// The task that binds to the consumer, pulls, and holds messages within the window.
struct Reader {
    source: Source,
    tracker: Arc<Tracker>,
    /// To the hand-over task.
    hand: mpsc::UnboundedSender<Incoming>,
    stop: CancellationToken,
    trouble: Trouble,
    backoff: Backoff,
    bound_once: bool,
}

/// How one binding ended.
enum Pulled {
    Stopped,
    Failed(Problem),
}

impl Reader {
    /// Binds and pulls until the sources stop; after any failure, binds again with backoff.
    async fn run(mut self) {
        loop {
            let problem = match self.pull().await {
                Pulled::Stopped => break,
                Pulled::Failed(problem) => problem,
            };
            let delay = self.backoff.next_delay();
            self.trouble.report(problem, delay);
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        // The pull subscription is gone (dropped with `pull`'s stream): the nacks may go.
        let _ = self.tracker.acks.send(AckOut::PullStopped);
    }

    /// One binding: binds, then pulls until the pull stream fails or the sources stop.
    async fn pull(&mut self) -> Pulled {
        let bound = tokio::select! {
            _ = self.stop.cancelled() => return Pulled::Stopped,
            bound = bind(&self.source.jetstream, &self.source.route) => bound,
        };
        let bound = match bound {
            Ok(bound) => bound,
            Err(problem) => return Pulled::Failed(problem),
        };
        self.tracker.set_limits(bound.window, bound.ack_wait);
        let mut pull = (bound.consumer.stream())
            .max_messages_per_batch(bound.window.min(MAX_BATCH))
            .heartbeat(HEARTBEAT);
        if let Some(group) = &self.source.route.config.priority_group {
            pull = pull.group(group.name.clone());
            if let Some(min) = group.min_pending {
                pull = pull.min_pending(min as usize);
            }
        }
        if let Some(ttl) = bound.pinned_ttl {
            // The server moves the pin off an instance whose pull requests stop for
            // `pinned_ttl`: an idle request is renewed well within it.
            let expires = (ttl / 3).min(PULL_EXPIRES);
            pull = pull.expires(expires).heartbeat(HEARTBEAT.min(expires / 2));
        }
        let mut messages = match pull.messages().await {
            Ok(messages) => messages,
            Err(e) => return Pulled::Failed(Problem::Unavailable(format!("cannot pull: {e}"))),
        };
        self.backoff.reset();
        if !std::mem::replace(&mut self.bound_once, true) {
            self.announce(&bound);
        } else {
            self.trouble.clear();
        }
        loop {
            // The window: pull only while fewer than max_ack_pending messages are held.
            while self.tracker.is_full() {
                tokio::select! {
                    _ = self.stop.cancelled() => {
                        give_back(&mut messages, &self.tracker);
                        return Pulled::Stopped;
                    }
                    _ = self.tracker.room.notified() => {}
                }
            }
            let next = tokio::select! {
                _ = self.stop.cancelled() => {
                    give_back(&mut messages, &self.tracker);
                    return Pulled::Stopped;
                }
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    self.trouble.clear();
                    self.hold(message);
                }
                Some(Err(e)) => {
                    let problem = format!("the pull stream failed ({e})");
                    return Pulled::Failed(Problem::Unavailable(problem));
                }
                None => {
                    let problem = "the pull stream ended".to_string();
                    return Pulled::Failed(Problem::Unavailable(problem));
                }
            }
        }
    }

    /// The first binding: logs what ferry reads through, and counts the source as bound.
    fn announce(&self, bound: &Bound) {
        let notes = if bound.notes.is_empty() {
            String::new()
        } else {
            format!(
                "; the consumer's own settings apply: {}",
                bound.notes.join(", ")
            )
        };
        let group = match &self.source.route.config.priority_group {
            Some(g) => format!(", priority group {} {}", g.name, g.policy.name()),
            None => String::new(),
        };
        tracing::info!(
            "{}: {} (filter `{}`, window {}, ack_wait {:?}{group}){notes}",
            self.trouble.what,
            if bound.created { "created" } else { "bound" },
            self.source.route.subject,
            bound.window,
            bound.ack_wait,
        );
        self.source.bound.send_modify(|n| *n += 1);
    }

    /// Holds a message until the route finishes with it, and hands it over.
    fn hold(&self, message: jetstream::Message) {
        let (id, sequence) = match message.info() {
            Ok(info) => (
                Some(format!("{}:{}", info.stream, info.stream_sequence)),
                info.stream_sequence,
            ),
            Err(_) => (None, 0),
        };
        let message = message.message;
        let Some(reply) = message.reply.clone() else {
            return; // not a JetStream delivery: nothing to ack
        };
        let ack = self.tracker.hold(reply);
        if super::super::probe::is_probe(&message.subject) {
            ack.confirm();
            return;
        }
        let mut m = Message::new(
            self.source.origin.clone(),
            message.subject.to_string(),
            message.payload,
        );
        m.headers = super::super::headers_of(message.headers.as_ref());
        m.id = id;
        if let Some(kv) = &self.source.route.kv {
            kv.read(&mut m, sequence);
        }
        // Fails only once the hand-over stopped (shutdown): the ack nacks on drop.
        let _ = self.hand.send(Incoming {
            message: m,
            ack,
            reply: None,
        });
    }
}

/// The sources stop: the messages the server already sent and ferry has not read yet are
/// nacked (once the subscription is gone), so they go out again at once instead of after
/// `ack_wait`.
fn give_back(messages: &mut pull::Stream, tracker: &Arc<Tracker>) {
    use futures_util::FutureExt;
    while let Some(Some(Ok(message))) = messages.next().now_or_never() {
        if let Some(reply) = message.message.reply {
            drop(tracker.hold(reply));
        }
    }
}

/// Moves held messages into the route's queue, in order. Stops with the sources: what it has
/// not handed over is nacked, for the server to hand out again.
async fn hand_over(
    mut held: mpsc::UnboundedReceiver<Incoming>,
    input: RouteInput,
    stop: CancellationToken,
) {
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => return,
            incoming = held.recv() => match incoming { Some(i) => i, None => return },
        };
        let pushed = tokio::select! {
            _ = stop.cancelled() => return,
            pushed = input.push(incoming) => pushed,
        };
        if !pushed {
            return;
        }
    }
}
