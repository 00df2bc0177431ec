//! The messages a JetStream source holds until its route confirms them, and the task that acks
//! them: `+ACK` once confirmed, `-NAK` once given up on, `+WPI` while they wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::{Client, Subject};
use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::consumer::window;
use crate::config;
use crate::message::Ack;

/// The messages ferry holds and has not acked yet, and the channel their acks leave through.
pub(super) struct Tracker {
    inflight: Mutex<Inflight>,
    /// Signalled when a message is finished, so the reader may pull again.
    pub(super) room: Notify,
    pub(super) acks: mpsc::UnboundedSender<AckOut>,
}

/// What goes to the acker.
#[derive(Debug)]
pub(super) enum AckOut {
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
    pub(super) fn new(
        acks: mpsc::UnboundedSender<AckOut>,
        wanted: &config::JetStreamSource,
    ) -> Self {
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
    pub(super) fn set_limits(&self, window: usize, ack_wait: Duration) {
        let mut inflight = self.lock();
        inflight.window = window;
        inflight.ack_wait = ack_wait;
        drop(inflight);
        self.room.notify_one();
    }

    pub(super) fn is_full(&self) -> bool {
        let inflight = self.lock();
        inflight.pending.len() >= inflight.window
    }

    /// How often held messages get a progress ack: a third of `ack_wait`.
    fn progress_period(&self) -> Duration {
        (self.lock().ack_wait / 3).max(Duration::from_millis(100))
    }

    /// Holds a message until the route finishes with it; the returned [`Ack`] acks it (or
    /// nacks it, when dropped unconfirmed).
    pub(super) fn hold(self: &Arc<Self>, reply: Subject) -> Ack {
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
pub(super) async fn acknowledge(
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

#[cfg(test)]
mod tests {
    use super::super::consumer::tests::wanted;
    use super::*;

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
}
