//! What wakes the MQTT event loop task besides its `poll`, and the futures it waits on for
//! them: each resolves when its cause is there and never while it is not, so one `select!`
//! can wait on all of them whatever the state of the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use crate::contracts::queue::RouteInput;

/// Resolves once the route holding up the dispatcher may have room (see
/// `Dispatcher::blocked_on`); never while none does.
pub(super) async fn room(blocked_on: Option<(&RouteInput, usize)>) {
    match blocked_on {
        Some((route, size)) => route.room(size).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; never resolves without one.
pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(super) type SubAckFuture = dyn Future<Output = Result<Vec<Option<String>>, String>> + Send;

/// What woke the event loop task, besides its `poll`.
pub(super) enum Step {
    Close,
    StopSources,
    /// The tracker released acks, or a message was let go of unconfirmed.
    Released,
    /// The route holding up the dispatcher may have room.
    Room,
    /// The backoff after a failure is over: poll (and so reconnect) again.
    Retry,
    /// The pause of a full queue is over: read again.
    Resume,
    /// A liveness timer fired (see `liveness`).
    Liveness,
    SubAck(Result<Vec<Option<String>>, String>),
}

/// Runs the `poll` in flight on to its end; never resolves without one. Dropping this leaves
/// the `poll` where it is, to go on with next time.
pub(super) async fn in_flight<F: Future>(poll: Pin<&mut Option<F>>) -> F::Output {
    match poll.as_pin_mut() {
        Some(poll) => poll.await,
        None => std::future::pending().await,
    }
}

/// Awaits the future if there is one; never resolves otherwise.
pub(super) async fn maybe<F: Future + Unpin>(future: Option<&mut F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// A wait polled only once something woke it (and on its first poll). The event loop task is
/// woken for every packet and every ack, and a `select!` polls each of its waits on every
/// wake-up: polling a cancellation token's wait takes its lock and its `Notify`'s (some 160
/// instructions), a `Notify`'s wait the one lock, though most stay pending for the
/// connection's lifetime. Behind this, each such poll is a flag check.
pub(super) struct Gated<F> {
    future: Pin<Box<F>>,
    woken: Arc<Woken>,
    /// Sets `woken.flag` and wakes the task; made once.
    waker: Waker,
}

struct Woken {
    /// Set when the wait's own waker fired: poll it.
    flag: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Gated<F> {
    pub(super) fn new(future: F) -> Self {
        let woken = Arc::new(Woken {
            flag: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Gated {
            future: Box::pin(future),
            waker: Waker::from(woken.clone()),
            woken,
        }
    }

    /// Waits for `future` instead (no allocation: it takes the place of the one before).
    pub(super) fn set(&mut self, future: F) {
        self.future.set(future);
        self.woken.flag.store(true, Ordering::Release);
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered before the flag is read: a wake-up in between sets the flag and wakes
        // the task again.
        this.woken.task.register(cx.waker());
        if !this.woken.flag.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Pending until `ready`; counts its polls and keeps the waker it was given.
    struct Counted {
        polls: Arc<AtomicUsize>,
        waker: Arc<Mutex<Option<Waker>>>,
        ready: Arc<AtomicBool>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            match self.ready.load(Ordering::SeqCst) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        }
    }

    /// Counts the wake-ups of the task.
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_gated_wait_is_polled_only_after_its_own_waker_fired() {
        let polls = Arc::new(AtomicUsize::new(0));
        let waker = Arc::new(Mutex::new(None::<Waker>));
        let ready = Arc::new(AtomicBool::new(false));
        let mut gated = Gated::new(Counted {
            polls: polls.clone(),
            waker: waker.clone(),
            ready: ready.clone(),
        });
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let mut poll = |gated: &mut Gated<Counted>| Pin::new(gated).poll(&mut cx).is_ready();

        assert!(!poll(&mut gated), "first poll: polled, pending");
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // The task woke for something else: the wait is not polled.
        assert!(!poll(&mut gated));
        assert!(!poll(&mut gated));
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Its cause came: its waker wakes the task, and the next poll polls it.
        ready.store(true, Ordering::SeqCst);
        waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut gated));
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_gated_wait_made_again_resolves_on_the_next_notification() {
        let notify = tokio::sync::Notify::new();
        let mut gated = Gated::new(notify.notified());
        notify.notify_one();
        (&mut gated).await;
        gated.set(notify.notified());
        notify.notify_one();
        tokio::time::timeout(std::time::Duration::from_secs(1), &mut gated)
            .await
            .expect("woken");
    }
}
