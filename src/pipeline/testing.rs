//! In-memory sources and sinks for the pipeline's unit tests: small real implementations of
//! the connector contracts whose behaviour each test scripts, so that a sink fault (a
//! rejection, an outage, a late confirmation, a hang, a panic) is tested without a server.
//!
//! Both record what happened to them, and a test waits for what it expects with
//! [`ScriptedSink::wait_until`] / [`MemorySource::wait_until`]: bounded, woken by the event
//! itself rather than by polling on a timer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::contracts::{BoxFuture, Confirmation, Sink, SinkError};
use crate::message::{Ack, Incoming, Message};
use crate::pipeline::queue::RouteInput;

/// How long a test waits for what it expects before it fails, saying what did not happen.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// What a [`ScriptedSink`] does with one try of a message (one `queue` or `send` call).
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// Takes the message and confirms it at once.
    Confirm,
    /// Takes the message; its confirmation waits until the test lets it go
    /// ([`ScriptedSink::release`]), as a PUBACK that is slow to come.
    ConfirmLater,
    /// Takes the message, but its confirmation fails as unavailable (the connection dropped
    /// before the broker confirmed it).
    LoseConfirmation,
    /// Refuses the message for good: [`SinkError::Rejected`] with this reason.
    Reject(&'static str),
    /// Cannot take it now: [`SinkError::Unavailable`] (the same message may succeed later).
    Unavailable,
    /// Asks to be left alone for this long: [`SinkError::Busy`] (an HTTP 429 with
    /// `Retry-After`).
    Busy(Duration),
    /// Never answers.
    Hang,
    /// Panics, as a protocol client with a bug would.
    Panic,
}

/// One try a sink saw: the message as it was handed over, what the sink did, and when.
#[derive(Clone, Debug)]
pub struct Try {
    pub message: Message,
    pub attempt: Attempt,
    pub at: Instant,
}

/// What a [`ScriptedSink`] saw so far.
#[derive(Debug, Default)]
pub struct SinkLog {
    /// Every try, in the order the sink saw them.
    pub tries: Vec<Try>,
    /// The messages whose confirmation the route received, in that order.
    pub confirmed: Vec<Message>,
    /// How many confirmations of `ConfirmLater` tries the sink handed out.
    pub held: usize,
    /// Of those, how many the test let go (the first `released` resolve).
    pub released: usize,
    /// The held confirmations (by number) the route has started waiting for, in that order.
    pub waited_on: Vec<usize>,
}

impl SinkLog {
    /// The payloads of the confirmed messages, as text, in order.
    pub fn confirmed_payloads(&self) -> Vec<String> {
        self.confirmed.iter().map(payload).collect()
    }

    /// Held confirmations not let go yet: what is outstanding at the sink.
    pub fn outstanding(&self) -> usize {
        self.held - self.released
    }
}

struct SinkState {
    script: VecDeque<Attempt>,
    /// What every try after the script does.
    otherwise: Attempt,
    log: SinkLog,
}

struct SinkShared {
    state: Mutex<SinkState>,
    /// Bumped at every change of the log, to wake the waits.
    changed: watch::Sender<()>,
}

impl SinkShared {
    fn lock(&self) -> MutexGuard<'_, SinkState> {
        self.state.lock().expect("scripted sink lock")
    }

    fn update(&self, change: impl FnOnce(&mut SinkLog)) {
        change(&mut self.lock().log);
        self.changed.send_replace(());
    }
}

/// A sink that does, try by try, what its test scripted, then `otherwise` (confirm, unless
/// told), and records every try and every confirmation. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct ScriptedSink(Arc<SinkShared>);

impl Default for ScriptedSink {
    fn default() -> Self {
        ScriptedSink::new()
    }
}

impl ScriptedSink {
    /// A sink that confirms every message at once.
    pub fn new() -> ScriptedSink {
        ScriptedSink(Arc::new(SinkShared {
            state: Mutex::new(SinkState {
                script: VecDeque::new(),
                otherwise: Attempt::Confirm,
                log: SinkLog::default(),
            }),
            changed: watch::Sender::new(()),
        }))
    }

    /// The next `times` tries do `attempt` (after what was scripted before).
    pub fn then(self, attempt: Attempt, times: usize) -> ScriptedSink {
        let mut state = self.0.lock();
        state.script.extend(std::iter::repeat_n(attempt, times));
        drop(state);
        self
    }

    /// Every try after the script does `attempt`.
    pub fn otherwise(self, attempt: Attempt) -> ScriptedSink {
        self.0.lock().otherwise = attempt;
        self
    }

    /// Lets the next `n` held confirmations (`ConfirmLater`) resolve, oldest first.
    pub fn release(&self, n: usize) {
        self.0.update(|log| log.released += n);
    }

    /// Reads what the sink saw so far.
    pub fn log<T>(&self, read: impl FnOnce(&SinkLog) -> T) -> T {
        read(&self.0.lock().log)
    }

    /// The payloads the sink confirmed, as text, in order.
    pub fn confirmed(&self) -> Vec<String> {
        self.log(SinkLog::confirmed_payloads)
    }

    /// Waits until `done` holds of the sink's log; fails the test, saying `what` did not
    /// happen, after [`PATIENCE`].
    pub async fn wait_until(&self, what: &str, done: impl Fn(&SinkLog) -> bool) {
        let mut changed = self.0.changed.subscribe();
        let waited = tokio::time::timeout(PATIENCE, async {
            while !self.log(&done) {
                changed
                    .changed()
                    .await
                    .expect("the sink outlives its waits");
            }
        });
        if waited.await.is_err() {
            let seen = self.log(|log| format!("{log:?}"));
            panic!("the sink did not see {what} within {PATIENCE:?}; it saw {seen}");
        }
    }

    /// One try: records it, then does what the script says.
    async fn attempt(&self, message: &Message) -> Result<Confirmation, SinkError> {
        let shared = &self.0;
        let (attempt, ticket) = {
            let mut state = shared.lock();
            let attempt = match state.script.pop_front() {
                Some(attempt) => attempt,
                None => state.otherwise.clone(),
            };
            state.log.tries.push(Try {
                message: message.clone(),
                attempt: attempt.clone(),
                at: Instant::now(),
            });
            let ticket = state.log.held;
            if attempt == Attempt::ConfirmLater {
                state.log.held += 1;
            }
            (attempt, ticket)
        };
        shared.changed.send_replace(());
        match attempt {
            Attempt::Confirm => {
                shared.update(|log| log.confirmed.push(message.clone()));
                Ok(Confirmation::Done)
            }
            Attempt::ConfirmLater => Ok(Confirmation::Pending(Box::pin(
                self.clone().held(ticket, message.clone()),
            ))),
            Attempt::LoseConfirmation => Ok(Confirmation::Pending(Box::pin(async {
                Err(SinkError::Unavailable(
                    "connection lost before the confirmation".into(),
                ))
            }))),
            Attempt::Reject(reason) => Err(SinkError::Rejected(reason.into())),
            Attempt::Unavailable => Err(SinkError::Unavailable("scripted outage".into())),
            Attempt::Busy(retry_after) => Err(SinkError::Busy {
                reason: "scripted 429".into(),
                retry_after,
            }),
            Attempt::Hang => std::future::pending().await,
            Attempt::Panic => panic!("scripted sink panic"),
        }
    }

    /// The confirmation of held try number `ticket`: resolves once the test released it.
    async fn held(self, ticket: usize, message: Message) -> Result<(), SinkError> {
        let mut changed = self.0.changed.subscribe();
        self.0.update(|log| log.waited_on.push(ticket));
        while self.log(|log| log.released <= ticket) {
            changed
                .changed()
                .await
                .expect("the sink outlives its confirmations");
        }
        self.0.update(|log| log.confirmed.push(message));
        Ok(())
    }
}

impl Sink for ScriptedSink {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { self.attempt(message).await?.wait().await })
    }

    fn queue<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<Confirmation, SinkError>> {
        Box::pin(self.attempt(message))
    }
}

/// What became of one message a [`MemorySource`] handed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub payload: String,
    /// Confirmed (every sink has it); false: dropped unconfirmed, a nack.
    pub confirmed: bool,
}

/// A source that hands given messages to a route's queue, each with an ack that records what
/// became of it. Cheap to clone: clones share the record.
#[derive(Clone)]
pub struct MemorySource {
    settled: Arc<Mutex<Vec<Settled>>>,
    changed: watch::Sender<()>,
    origin: Arc<str>,
}

impl MemorySource {
    /// A source on the connection named `origin`.
    pub fn new(origin: &str) -> MemorySource {
        MemorySource {
            settled: Default::default(),
            changed: watch::Sender::new(()),
            origin: origin.into(),
        }
    }

    /// A message on `subject` with `payload`, whose ack reports to this source.
    pub fn message(&self, subject: &str, payload: &str) -> Incoming {
        let (settled, changed) = (self.settled.clone(), self.changed.clone());
        let text = payload.to_string();
        Incoming {
            message: Message::new(self.origin.clone(), subject, payload.as_bytes().to_vec()),
            ack: Ack::new(move |confirmed| {
                let payload = text;
                settled
                    .lock()
                    .expect("source lock")
                    .push(Settled { payload, confirmed });
                changed.send_replace(());
            }),
            reply: None,
        }
    }

    /// Pushes a message per payload on `subject` into `input`, in order (waiting for room
    /// when the queue blocks); fails the test if the route no longer takes messages.
    pub async fn feed<P: AsRef<str>>(
        &self,
        input: &RouteInput,
        subject: &str,
        payloads: impl IntoIterator<Item = P>,
    ) {
        for payload in payloads {
            let payload = payload.as_ref();
            let what = format!("room in the queue for {payload}");
            let pushed = within(&what, input.push(self.message(subject, payload))).await;
            assert!(pushed, "the route refused {payload}: its queue is closed");
        }
    }

    /// What became of the messages so far, in the order it happened.
    pub fn settled(&self) -> Vec<Settled> {
        self.settled.lock().expect("source lock").clone()
    }

    /// The payloads confirmed so far, in order.
    pub fn confirmed(&self) -> Vec<String> {
        self.settled_as(true)
    }

    /// The payloads dropped unconfirmed (nacked) so far, in order.
    pub fn nacked(&self) -> Vec<String> {
        self.settled_as(false)
    }

    fn settled_as(&self, confirmed: bool) -> Vec<String> {
        (self.settled().into_iter())
            .filter(|s| s.confirmed == confirmed)
            .map(|s| s.payload)
            .collect()
    }

    /// Waits until `done` holds of what was settled; fails the test, saying `what` did not
    /// happen, after [`PATIENCE`].
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Settled]) -> bool) {
        let mut changed = self.changed.subscribe();
        let waited = tokio::time::timeout(PATIENCE, async {
            while !done(&self.settled()) {
                changed
                    .changed()
                    .await
                    .expect("the source outlives its waits");
            }
        });
        if waited.await.is_err() {
            panic!(
                "the source did not see {what} within {PATIENCE:?}; it saw {:?}",
                self.settled()
            );
        }
    }

    /// Waits until `n` messages in all were confirmed.
    pub async fn wait_confirmed(&self, n: usize) {
        self.wait_until(&format!("{n} confirmations"), |s| {
            s.iter().filter(|s| s.confirmed).count() >= n
        })
        .await;
    }
}

/// Awaits `future`; fails the test, saying `what` did not happen, after [`PATIENCE`].
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not happen within {PATIENCE:?}"),
    }
}

/// A message's payload, as text.
pub fn payload(message: &Message) -> String {
    String::from_utf8_lossy(&message.payload).into_owned()
}

/// `prefix-0`, `prefix-1`, ...: numbered payloads, so order and loss show.
pub fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}
