//! JetStream, the NATS server's persistence: a route's `jetstream:` source reads through a
//! durable pull consumer, and a `jetstream: true` sink publishes and waits for the stream's ack.
//!
//! The source, in the order things happen:
//! - **Binding.** ferry looks the durable consumer up on its stream. If it exists, ferry uses it
//!   as it is, once it checked that it can serve the route: a pull consumer (no deliver subject),
//!   explicit acks, and the route's `subject` as its filter. Anything else is refused, naming
//!   what differs and how to fix it: ferry never changes nor recreates a consumer someone else
//!   made. If it does not exist, ferry creates it from the route's settings. Several ferry
//!   instances bound to one durable consumer share its messages: that is JetStream's queue group.
//! - **Window.** The consumer's `max_ack_pending` caps the messages the server hands out and
//!   nobody acked yet. ferry holds at most that many (from the pull to the ack), so a slow sink
//!   stops the pulls, not ferry's memory.
//! - **Acks.** A message is acked (`+ACK`) only once the route confirmed it: every sink took it.
//!   While it waits (in the route's queue, or in a slow sink), ferry sends progress acks (`+WPI`)
//!   every third of `ack_wait`, so the server does not hand out again what ferry is still
//!   working on. A message the route gives up on (the shutdown deadline passed with it still
//!   queued or in a sink) is nacked (`-NAK`): the server hands it out again at once — to a
//!   peer ferry on the same consumer, or to this one after its restart — instead of after
//!   `ack_wait`. (A `when_full` drop policy does not nack: the route chose to lose it.)
//! - **Recovery.** When the pull stream fails or ends (a reconnect, a server restart, missed
//!   heartbeats, a consumer deleted under ferry), ferry binds again and rebuilds it, with
//!   backoff. The problem is logged once, and its end once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{
    self, AckPolicy, Consumer, DeliverPolicy, FromConsumer, pull,
};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, AckKind, ErrorCode};
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{self, JetStreamDeliver, Reconnect};
use crate::contracts::queue::RouteInput;
use crate::contracts::status::Backoff;
use crate::contracts::{Confirmation, ConnectionContext, SinkError};
use crate::message::{Ack, Incoming, Message};

/// Idle heartbeat asked of the server for each pull: two missed, and the pull stream is
/// rebuilt. Short, so a consumer lost on the server is noticed within seconds.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Messages asked for per pull request, at most (the window may be smaller).
const MAX_BATCH: usize = 256;
/// The window when neither the consumer nor the route set a positive `max_ack_pending`.
const DEFAULT_WINDOW: usize = 1000;
/// How long a JetStream API request, or a publish's ack, may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A route reading a JetStream consumer, registered before the connection starts.
pub(super) struct JetStreamRoute {
    pub route: String,
    /// The consumer's filter subject: the route's `subject`.
    pub subject: String,
    pub config: config::JetStreamSource,
    pub input: RouteInput,
}

impl JetStreamRoute {
    /// `stream/consumer`, as logs name it.
    fn name(&self) -> String {
        format!("{}/{}", self.config.stream, self.config.consumer)
    }
}

// ---------------------------------------------------------------------------------------------
// binding

/// The consumer ferry creates when the route's is absent.
pub(super) fn consumer_config(
    route: &str,
    subject: &str,
    wanted: &config::JetStreamSource,
) -> pull::Config {
    pull::Config {
        durable_name: Some(wanted.consumer.clone()),
        description: Some(format!("ferry route {route}")),
        filter_subject: subject.to_string(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: wanted.ack_wait,
        max_ack_pending: wanted.max_ack_pending,
        deliver_policy: match wanted.deliver {
            JetStreamDeliver::All => DeliverPolicy::All,
            JetStreamDeliver::New => DeliverPolicy::New,
        },
        ..Default::default()
    }
}

/// Whether an existing consumer can serve a route.
#[derive(Debug, PartialEq)]
pub(super) enum Fit {
    /// It can. Each note names a setting where the consumer differs from the route's config
    /// and the consumer's own applies.
    Usable(Vec<String>),
    /// It cannot: what differs, and what would fix it.
    Refused(String),
}

/// Checks an existing consumer against the route that wants to read through it.
pub(super) fn fit(
    existing: &consumer::Config,
    subject: &str,
    wanted: &config::JetStreamSource,
) -> Fit {
    let mut differs = Vec::new();
    if let Some(deliver_subject) = &existing.deliver_subject {
        differs.push(format!(
            "it is a push consumer (it delivers to `{deliver_subject}`); ferry reads through a \
             pull consumer"
        ));
    }
    if existing.ack_policy != AckPolicy::Explicit {
        let policy = match existing.ack_policy {
            AckPolicy::None => "none",
            AckPolicy::All => "all",
            AckPolicy::Explicit => "explicit",
        };
        differs.push(format!(
            "its ack policy is `{policy}`; ferry acks each message once its sinks have it \
             (ack policy explicit)"
        ));
    }
    if existing.filter_subject != subject {
        let filter = if existing.filter_subject.is_empty() {
            "it has no filter subject (or several)".to_string()
        } else {
            format!("it filters `{}`", existing.filter_subject)
        };
        differs.push(format!("{filter}, the route reads `{subject}`"));
    }
    if !differs.is_empty() {
        return Fit::Refused(format!(
            "JetStream consumer `{consumer}` on stream `{stream}` cannot serve this route: {}. \
             Delete it (`nats consumer rm {stream} {consumer}`) and ferry creates it as the \
             route says, or name another `consumer:`{}",
            differs.join("; "),
            if existing.filter_subject.is_empty() || existing.filter_subject == subject {
                String::new()
            } else {
                format!(
                    ", or set the route's `subject: {}`",
                    existing.filter_subject
                )
            },
            consumer = wanted.consumer,
            stream = wanted.stream,
        ));
    }
    let mut notes = Vec::new();
    if existing.ack_wait != wanted.ack_wait {
        notes.push(format!(
            "ack_wait {:?} (the route says {:?})",
            existing.ack_wait, wanted.ack_wait
        ));
    }
    if existing.max_ack_pending != wanted.max_ack_pending {
        notes.push(format!(
            "max_ack_pending {} (the route says {})",
            existing.max_ack_pending, wanted.max_ack_pending
        ));
    }
    Fit::Usable(notes)
}

/// The messages ferry may hold at once: the consumer's `max_ack_pending`, or the route's when
/// smaller (a consumer may allow any number, -1).
fn window(consumer: i64, route: i64) -> usize {
    [consumer, route]
        .into_iter()
        .filter(|n| *n > 0)
        .min()
        .map_or(DEFAULT_WINDOW, |n| n as usize)
}

/// Why a source cannot read now. Either way ferry tries again later; the difference is what
/// the log says.
#[derive(Debug, PartialEq)]
enum Problem {
    /// The consumer exists and does not fit the route: someone must change it (an error).
    Refused(String),
    /// The stream, JetStream or the server cannot be reached, is not there (yet), or the pull
    /// stream failed (a warning).
    Unavailable(String),
}

impl Problem {
    fn text(&self) -> &str {
        match self {
            Problem::Refused(text) | Problem::Unavailable(text) => text,
        }
    }
}

/// A consumer ferry can read through.
struct Bound {
    consumer: Consumer<pull::Config>,
    created: bool,
    /// The consumer's own `ack_wait` and window, which apply whatever the route says.
    ack_wait: Duration,
    window: usize,
    notes: Vec<String>,
}

async fn bind(js: &jetstream::Context, route: &JetStreamRoute) -> Result<Bound, Problem> {
    let wanted = &route.config;
    let stream = js
        .get_stream_no_info(&wanted.stream)
        .await
        .map_err(|e| Problem::Refused(format!("stream `{}`: {e}", wanted.stream)))?;
    let info = match stream.consumer_info(&wanted.consumer).await {
        Ok(info) => info,
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            let config = consumer_config(&route.route, &route.subject, wanted);
            let consumer = stream.create_consumer(config).await.map_err(|e| {
                Problem::Unavailable(format!(
                    "cannot create JetStream consumer `{}` on stream `{}`: {e}",
                    wanted.consumer, wanted.stream
                ))
            })?;
            let info = consumer.cached_info();
            return Ok(Bound {
                ack_wait: info.config.ack_wait,
                window: window(info.config.max_ack_pending, wanted.max_ack_pending),
                consumer,
                created: true,
                notes: Vec::new(),
            });
        }
        Err(e) => {
            return Err(Problem::Unavailable(match e.kind() {
                ConsumerInfoErrorKind::StreamNotFound => format!(
                    "JetStream stream `{}` does not exist on the server: create it (e.g. `nats \
                     stream add {} --subjects '{}'`)",
                    wanted.stream, wanted.stream, route.subject
                ),
                ConsumerInfoErrorKind::NoResponders => {
                    "JetStream does not answer on this connection (not enabled on the server, \
                     or not for this account)"
                        .to_string()
                }
                _ => format!(
                    "cannot look up JetStream consumer `{}` on stream `{}`: {e}",
                    wanted.consumer, wanted.stream
                ),
            }));
        }
    };
    let notes = match fit(&info.config, &route.subject, wanted) {
        Fit::Usable(notes) => notes,
        Fit::Refused(why) => return Err(Problem::Refused(why)),
    };
    let config = pull::Config::try_from_consumer_config(info.config.clone())
        .map_err(|e| Problem::Refused(e.to_string()))?;
    Ok(Bound {
        ack_wait: info.config.ack_wait,
        window: window(info.config.max_ack_pending, wanted.max_ack_pending),
        consumer: Consumer::new(config, info, js.clone()),
        created: false,
        notes,
    })
}

// ---------------------------------------------------------------------------------------------
// acks

/// The messages ferry holds and has not acked yet, and the channel their acks leave through.
struct Tracker {
    inflight: Mutex<Inflight>,
    /// Signalled when a message is finished, so the reader may pull again.
    room: Notify,
    acks: mpsc::UnboundedSender<AckOut>,
}

/// What goes to the acker.
#[derive(Debug)]
enum AckOut {
    /// An ack (or nack) for one delivery.
    Send(Subject, AckKind),
    /// The reader dropped its pull subscription for good: nacks may go out now. Sent earlier,
    /// a nack would make the server hand the message straight back to that subscription,
    /// where nobody reads it any more, and it would wait `ack_wait` after all.
    PullStopped,
}

struct Inflight {
    next_id: u64,
    /// By a local id: a message the server handed out twice is held twice.
    pending: HashMap<u64, Pending>,
    window: usize,
    ack_wait: Duration,
}

struct Pending {
    /// Where its acks go: the server's `$JS.ACK...` subject for this delivery.
    reply: Subject,
    /// When ferry got it, or last sent a progress ack for it.
    since: Instant,
}

impl Tracker {
    fn new(acks: mpsc::UnboundedSender<AckOut>, wanted: &config::JetStreamSource) -> Self {
        Tracker {
            inflight: Mutex::new(Inflight {
                next_id: 0,
                pending: HashMap::new(),
                window: window(wanted.max_ack_pending, wanted.max_ack_pending),
                ack_wait: wanted.ack_wait,
            }),
            room: Notify::new(),
            acks,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inflight> {
        self.inflight.lock().expect("tracker lock")
    }

    /// The consumer's settings, once bound.
    fn set_limits(&self, window: usize, ack_wait: Duration) {
        let mut inflight = self.lock();
        inflight.window = window;
        inflight.ack_wait = ack_wait;
        drop(inflight);
        self.room.notify_one();
    }

    fn is_full(&self) -> bool {
        let inflight = self.lock();
        inflight.pending.len() >= inflight.window
    }

    /// How often held messages get a progress ack: a third of `ack_wait`.
    fn progress_period(&self) -> Duration {
        (self.lock().ack_wait / 3).max(Duration::from_millis(100))
    }

    /// Holds a message until the route finishes with it; the returned [`Ack`] acks it (or
    /// nacks it, when dropped unconfirmed).
    fn hold(self: &Arc<Self>, reply: Subject) -> Ack {
        let id = {
            let mut inflight = self.lock();
            let id = inflight.next_id;
            inflight.next_id += 1;
            inflight.pending.insert(
                id,
                Pending {
                    reply,
                    since: Instant::now(),
                },
            );
            id
        };
        let tracker = self.clone();
        Ack::new(move |delivered| tracker.finish(id, delivered))
    }

    fn finish(&self, id: u64, delivered: bool) {
        let Some(pending) = self.lock().pending.remove(&id) else {
            return;
        };
        self.room.notify_one();
        let kind = if delivered {
            AckKind::Ack
        } else {
            AckKind::Nak(None)
        };
        // Fails only once the connection closed: the server redelivers after ack_wait.
        let _ = self.acks.send(AckOut::Send(pending.reply, kind));
    }

    /// The messages held for at least `age` since they came or since their last progress ack;
    /// they count as progressed from now.
    fn due_for_progress(&self, age: Duration) -> Vec<Subject> {
        let now = Instant::now();
        let mut inflight = self.lock();
        inflight
            .pending
            .values_mut()
            .filter(|p| now.duration_since(p.since) >= age)
            .map(|p| {
                p.since = now;
                p.reply.clone()
            })
            .collect()
    }
}

/// Sends the acks the route's confirmations produce, and progress acks for what is still held.
/// Runs until the connection closes, then sends what is left and flushes.
async fn acknowledge(
    client: Client,
    tracker: Arc<Tracker>,
    mut acks: mpsc::UnboundedReceiver<AckOut>,
    close: CancellationToken,
) {
    let send = |reply: Subject, kind: AckKind| {
        let client = client.clone();
        async move {
            if let Err(e) = client.publish(reply, Bytes::from(kind)).await {
                tracing::debug!("JetStream ack not sent: {e}");
            }
        }
    };
    let mut period = tracker.progress_period();
    let mut progress = tokio::time::interval(period);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Nacks wait here until the pull subscription is gone (see `AckOut::PullStopped`).
    let mut nacks = Some(Vec::new());
    loop {
        tokio::select! {
            biased;
            _ = close.cancelled() => break,
            Some(out) = acks.recv() => match out {
                AckOut::Send(reply, kind @ AckKind::Nak(_)) if nacks.is_some() => {
                    nacks.as_mut().expect("checked").push((reply, kind));
                }
                AckOut::Send(reply, kind) => send(reply, kind).await,
                AckOut::PullStopped => {
                    for (reply, kind) in nacks.take().unwrap_or_default() {
                        send(reply, kind).await;
                    }
                }
            },
            _ = progress.tick() => {
                // A message that came just before a tick waits for the next one.
                for reply in tracker.due_for_progress(period / 2) {
                    send(reply, AckKind::Progress).await;
                }
                let now = tracker.progress_period();
                if now != period {
                    period = now;
                    progress = tokio::time::interval(period);
                    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
            }
        }
    }
    // The connection closes: whatever is left goes now (the reader has stopped by then).
    for (reply, kind) in nacks.take().unwrap_or_default() {
        send(reply, kind).await;
    }
    while let Ok(out) = acks.try_recv() {
        if let AckOut::Send(reply, kind) = out {
            send(reply, kind).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(4), client.flush()).await;
}

// ---------------------------------------------------------------------------------------------
// the source

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
pub(super) struct Source {
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
        let mut messages = match bound
            .consumer
            .stream()
            .max_messages_per_batch(bound.window.min(MAX_BATCH))
            .heartbeat(HEARTBEAT)
            .messages()
            .await
        {
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
        tracing::info!(
            "{}: {} (filter `{}`, window {}, ack_wait {:?}){notes}",
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
        let id = message
            .info()
            .map(|info| format!("{}:{}", info.stream, info.stream_sequence))
            .ok();
        let message = message.message;
        let Some(reply) = message.reply.clone() else {
            return; // not a JetStream delivery: nothing to ack
        };
        let ack = self.tracker.hold(reply);
        if super::probe::is_probe(&message.subject) {
            ack.confirm();
            return;
        }
        let mut m = Message::new(
            self.source.origin.clone(),
            message.subject.to_string(),
            message.payload,
        );
        m.headers = super::headers_of(message.headers.as_ref());
        m.id = id;
        // Fails only once the hand-over stopped (shutdown): the ack nacks on drop.
        let _ = self.hand.send(Incoming { message: m, ack });
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

// ---------------------------------------------------------------------------------------------
// the sink

/// The `Nats-Msg-Id` of a message: its origin connection and the origin's id for it, so the
/// stream drops a message sent again (within its duplicate window) however it came back.
pub(super) fn message_id(message: &Message) -> Option<String> {
    message
        .id
        .as_ref()
        .map(|id| format!("{}/{id}", message.origin))
}

/// Headers of the original publish that would change what this one means: its id (ferry sets
/// its own) and its expectations of the stream it went to (`Nats-Expected-Stream`, ...).
pub(super) fn is_publish_control(header: &str) -> bool {
    const EXPECTED: &str = "nats-expected-";
    header.eq_ignore_ascii_case("nats-msg-id")
        || header
            .get(..EXPECTED.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(EXPECTED))
}

/// Publishes to JetStream and waits for the stream's ack. `headers` are the message's own,
/// without [`is_publish_control`] ones; `Nats-Msg-Id` is set here.
///
/// A disconnect while the ack is awaited ends the wait at once (the request went down with
/// the connection, or its answer did): the route sends the message again, and the stream
/// drops the copy if the first one was stored.
pub(super) async fn publish(
    jetstream: &jetstream::Context,
    message: &Message,
    mut headers: HeaderMap,
    mut disconnects: watch::Receiver<u64>,
) -> Result<Confirmation, SinkError> {
    if let Some(id) = message_id(message) {
        headers.insert("Nats-Msg-Id", id.as_str());
    }
    disconnects.borrow_and_update();
    let subject = message.subject.clone();
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT * 2;
    let lost = |subject: &str| {
        SinkError::Unavailable(format!(
            "the connection was lost before JetStream acknowledged the message to `{subject}`"
        ))
    };
    let timed_out = |subject: &str| {
        SinkError::Unavailable(format!(
            "no ack from JetStream for `{subject}` within {:?}",
            REQUEST_TIMEOUT * 2
        ))
    };
    let sent = jetstream.publish_with_headers(subject.clone(), headers, message.payload.clone());
    let ack = tokio::select! {
        sent = tokio::time::timeout_at(deadline, sent) => match sent {
            Ok(Ok(ack)) => ack,
            Ok(Err(e)) => return Err(publish_error(&subject, &e)),
            Err(_) => return Err(timed_out(&subject)),
        },
        _ = disconnects.changed() => return Err(lost(&subject)),
    };
    Ok(Confirmation::Pending(Box::pin(async move {
        tokio::select! {
            acked = tokio::time::timeout_at(deadline, ack) => match acked {
                Ok(Ok(_ack)) => Ok(()),
                Ok(Err(e)) => Err(publish_error(&subject, &e)),
                Err(_) => Err(timed_out(&subject)),
            },
            _ = disconnects.changed() => Err(lost(&subject)),
        }
    })))
}

/// Server refusals that may pass: its resources, its cluster, a full stream that discards new
/// messages.
const TRANSIENT: &[ErrorCode] = &[
    ErrorCode::STREAM_STORE_FAILED,
    ErrorCode::INSUFFICIENT_RESOURCES,
    ErrorCode::STORAGE_RESOURCES_EXCEEDED,
    ErrorCode::MEMORY_RESOURCES_EXCEEDED,
    ErrorCode::ACCOUNT_RESOURCES_EXCEEDED,
    ErrorCode::CLUSTER_NOT_AVAILABLE,
    ErrorCode::STREAM_OFFLINE,
    ErrorCode::JETSTREAM_NOT_ENABLED,
    ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT,
];

/// What a failed JetStream publish means for the route: try again later (the server, the
/// stream or the connection is not there now), or give up on the message (it is too large, or
/// the stream refuses it for what it is).
fn publish_error(subject: &str, error: &PublishError) -> SinkError {
    match error.kind() {
        PublishErrorKind::StreamNotFound => SinkError::Unavailable(format!(
            "no JetStream stream captures subject `{subject}` (no responders): create one, \
             check the sink's subject, or wait for JetStream if the server is starting"
        )),
        PublishErrorKind::MaxPayloadExceeded => {
            SinkError::Rejected(format!("message to `{subject}`: {error}"))
        }
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            SinkError::Rejected(format!(
                "JetStream refused the message to `{subject}`: {error}"
            ))
        }
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => {
            SinkError::Unavailable(format!("JetStream publish to `{subject}`: {error}"))
        }
        PublishErrorKind::Other => {
            let server = std::error::Error::source(error)
                .and_then(|source| source.downcast_ref::<jetstream::Error>());
            let text = format!("JetStream refused the message to `{subject}`: {error}");
            match server {
                Some(e)
                    if e.code() < 500
                        && e.code() != 429
                        && !TRANSIENT.contains(&e.error_code()) =>
                {
                    SinkError::Rejected(text)
                }
                _ => SinkError::Unavailable(text),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> config::JetStreamSource {
        config::JetStreamSource {
            stream: "IOT".into(),
            consumer: "ferry-iot".into(),
            max_ack_pending: 1000,
            ack_wait: Duration::from_secs(30),
            deliver: JetStreamDeliver::All,
        }
    }

    /// The consumer ferry would create, as the server describes it.
    fn created(subject: &str) -> consumer::Config {
        use async_nats::jetstream::consumer::IntoConsumerConfig;
        consumer_config("iot", subject, &wanted()).into_consumer_config()
    }

    #[test]
    fn the_consumer_ferry_creates_fits_its_route() {
        let config = created("iot.>");
        assert_eq!(config.durable_name.as_deref(), Some("ferry-iot"));
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
        assert_eq!(config.deliver_policy, DeliverPolicy::All);
        assert!(config.deliver_subject.is_none());
        assert_eq!(fit(&config, "iot.>", &wanted()), Fit::Usable(vec![]));
        let new = config::JetStreamSource {
            deliver: JetStreamDeliver::New,
            ..wanted()
        };
        assert_eq!(
            consumer_config("iot", "iot.>", &new).deliver_policy,
            DeliverPolicy::New
        );
    }

    #[test]
    fn another_filter_subject_is_refused_with_both_fixes() {
        let Fit::Refused(why) = fit(&created("other.>"), "iot.>", &wanted()) else {
            panic!("accepted a consumer with another filter");
        };
        assert!(
            why.contains("it filters `other.>`, the route reads `iot.>`"),
            "{why}"
        );
        assert!(why.contains("nats consumer rm IOT ferry-iot"), "{why}");
        assert!(why.contains("set the route's `subject: other.>`"), "{why}");
    }

    #[test]
    fn a_push_consumer_or_other_ack_policy_is_refused() {
        let mut push = created("iot.>");
        push.deliver_subject = Some("deliver.here".into());
        push.ack_policy = AckPolicy::None;
        push.filter_subject = String::new();
        let Fit::Refused(why) = fit(&push, "iot.>", &wanted()) else {
            panic!("accepted a push consumer");
        };
        assert!(
            why.contains("push consumer (it delivers to `deliver.here`)"),
            "{why}"
        );
        assert!(why.contains("ack policy is `none`"), "{why}");
        assert!(why.contains("no filter subject"), "{why}");
        assert!(!why.contains("set the route's `subject"), "{why}");
    }

    #[test]
    fn other_limits_are_used_as_the_consumer_has_them_and_noted() {
        let mut config = created("iot.>");
        config.ack_wait = Duration::from_secs(10);
        config.max_ack_pending = 20;
        let Fit::Usable(notes) = fit(&config, "iot.>", &wanted()) else {
            panic!("refused a usable consumer");
        };
        assert_eq!(
            notes,
            [
                "ack_wait 10s (the route says 30s)",
                "max_ack_pending 20 (the route says 1000)"
            ]
        );
        assert_eq!(window(20, 1000), 20);
        assert_eq!(
            window(-1, 1000),
            1000,
            "an unlimited consumer: the route's bound"
        );
        assert_eq!(window(5000, 1000), 1000);
        assert_eq!(window(0, 0), DEFAULT_WINDOW);
    }

    #[test]
    fn the_tracker_holds_a_window_acks_and_nacks() {
        let (tx, mut acks) = mpsc::unbounded_channel();
        let tracker = Arc::new(Tracker::new(tx, &wanted()));
        tracker.set_limits(2, Duration::from_secs(3));
        assert_eq!(tracker.progress_period(), Duration::from_secs(1));
        let first = tracker.hold(Subject::from("$JS.ACK.1"));
        let second = tracker.hold(Subject::from("$JS.ACK.2"));
        assert!(tracker.is_full());
        assert_eq!(tracker.due_for_progress(Duration::ZERO).len(), 2);
        assert!(tracker.due_for_progress(Duration::from_secs(60)).is_empty());

        first.confirm();
        assert!(!tracker.is_full());
        let AckOut::Send(reply, kind) = acks.try_recv().unwrap() else {
            panic!("not an ack")
        };
        assert_eq!(reply.as_str(), "$JS.ACK.1");
        assert_eq!(Bytes::from(kind), Bytes::from_static(b"+ACK"));

        drop(second); // given up on: the server may hand it out again at once
        let AckOut::Send(reply, kind) = acks.try_recv().unwrap() else {
            panic!("not a nack")
        };
        assert_eq!(reply.as_str(), "$JS.ACK.2");
        assert_eq!(Bytes::from(kind), Bytes::from_static(b"-NAK"));
        assert!(tracker.due_for_progress(Duration::ZERO).is_empty());
    }

    #[test]
    fn message_ids_name_the_origin_and_publish_controls_are_dropped() {
        let mut message = Message::new("plant".into(), "s", "p");
        assert_eq!(message_id(&message), None);
        message.id = Some("IN:42#2".into());
        assert_eq!(message_id(&message).as_deref(), Some("plant/IN:42#2"));
        assert!(is_publish_control("Nats-Msg-Id"));
        assert!(is_publish_control("nats-expected-stream"));
        assert!(!is_publish_control("Nats-Sequence"));
        assert!(!is_publish_control("content-type"));
    }

    #[test]
    fn publish_errors_say_whether_to_retry() {
        let server = |code: usize, err_code: u64, text: &str| -> PublishError {
            let error: jetstream::Error = serde_json::from_value(serde_json::json!({
                "code": code, "err_code": err_code, "description": text
            }))
            .unwrap();
            PublishError::with_source(PublishErrorKind::Other, error)
        };
        let retry = |e: &SinkError| matches!(e, SinkError::Unavailable(_));
        let no_stream = publish_error(
            "out.x",
            &PublishError::new(PublishErrorKind::StreamNotFound),
        );
        assert!(retry(&no_stream));
        assert!(
            no_stream
                .to_string()
                .contains("no JetStream stream captures subject `out.x`")
        );
        assert!(retry(&publish_error(
            "out.x",
            &PublishError::new(PublishErrorKind::TimedOut)
        )));
        assert!(!retry(&publish_error(
            "out.x",
            &PublishError::new(PublishErrorKind::MaxPayloadExceeded)
        )));
        let too_large = server(400, 10054, "message size exceeds maximum allowed");
        assert!(!retry(&publish_error("out.x", &too_large)));
        let full = server(503, 10077, "maximum messages exceeded");
        assert!(retry(&publish_error("out.x", &full)));
        let storage = server(500, 10047, "insufficient storage resources available");
        assert!(retry(&publish_error("out.x", &storage)));
    }
}
