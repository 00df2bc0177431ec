//! What wakes the MQTT event loop task besides its `poll`, and the futures it waits on for
//! them: each resolves when its cause is there and never while it is not, so one `select!`
//! can wait on all of them whatever the state of the connection.

use std::future::Future;
use std::pin::Pin;

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
