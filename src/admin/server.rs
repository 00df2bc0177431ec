//! The admin listener's accept loop: each connection served by hyper under ferry's limits.
//!
//! `axum::serve` accepts without limit and never times a connection out, so a few hundred
//! sockets that send nothing used up ferry's file descriptors (and with them its broker
//! reconnects). Here:
//! - at most `max_connections` are served at once, and never more than half of the process's
//!   open-file limit, so the brokers keep descriptors to reconnect with;
//! - at the cap, a new connection closes the oldest one that has not sent a whole request
//!   yet: a pile of silent sockets cannot keep a health check out. When every connection is
//!   in a request, the new one waits in the kernel's backlog until one ends;
//! - a request's headers must arrive within `header_read_timeout`, which also bounds how long
//!   a kept-alive connection may wait for its next request (hyper's timer);
//! - a connection on which no byte moved either way for `idle_timeout` is closed: a reader
//!   that stopped reading a stream or a tap lets its socket buffer fill, and goes.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use futures_util::FutureExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::contracts::supervisor::Tasks;

/// The longest a connection may take to finish its request once the listener stops (the
/// whole shutdown waits 5s for every connection and task).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How the listener bounds its connections (from `admin:`).
#[derive(Clone, Debug)]
pub(super) struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Limits {
    /// `max_connections`, held under half of the soft open-file limit (when it can be read),
    /// so that the listener alone cannot use up the descriptors the brokers need.
    pub(super) fn effective_max_connections(&self) -> usize {
        match open_file_limit() {
            Some(limit) if (limit / 2) < self.max_connections as u64 => {
                let cap = (limit / 2).max(1) as usize;
                tracing::warn!(
                    "admin listener: serving at most {cap} connections, not max_connections {}: the open-file limit is {limit} (raise it, e.g. LimitNOFILE= in the unit)",
                    self.max_connections
                );
                cap
            }
            _ => self.max_connections,
        }
    }
}

/// The soft limit on open files, from /proc/self/limits (Linux).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// One served connection, as the accept loop sees it.
struct Slot {
    opened: Instant,
    /// A whole request head arrived on it at least once (set by its service).
    requested: Arc<AtomicBool>,
    close: CancellationToken,
}

/// The connections being served.
#[derive(Default)]
struct Served {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Served {
    /// Closes the oldest connection that has not sent a whole request; false if there is none.
    fn evict_one(&self) -> bool {
        let slots = self.slots.lock().expect("admin slots lock");
        let oldest = slots
            .values()
            .filter(|s| !s.requested.load(Ordering::Relaxed) && !s.close.is_cancelled())
            .min_by_key(|s| s.opened);
        match oldest {
            Some(slot) => {
                slot.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// Accepts and serves until `stop` is cancelled; then asks each connection to finish its
/// request and close. Connections run as tasks of `tasks`, which shutdown waits for.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    tasks: Tasks,
    stop: CancellationToken,
) {
    let cap = limits.effective_max_connections();
    let permits = Arc::new(Semaphore::new(cap));
    let served = Arc::new(Served::default());
    let mut next_id = 0u64;
    let mut emfile_logged = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (or a connection reset before accept): wait a moment
                // rather than spin; connections ending free descriptors.
                if !emfile_logged {
                    tracing::warn!("admin listener: cannot accept a connection: {e}");
                    emfile_logged = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        emfile_logged = false;
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !served.evict_one() {
                    tracing::debug!(
                        "admin listener: all {cap} connections are in requests; a new one waits"
                    );
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.expect("never closed"),
                    () = stop.cancelled() => return,
                }
            }
        };
        next_id += 1;
        let slot = Arc::new(Slot {
            opened: Instant::now(),
            requested: Arc::new(AtomicBool::new(false)),
            close: stop.child_token(),
        });
        served
            .slots
            .lock()
            .expect("admin slots lock")
            .insert(next_id, slot.clone());
        let (router, limits, tls, served, id) = (
            router.clone(),
            limits.clone(),
            tls.clone(),
            served.clone(),
            next_id,
        );
        tasks.spawn_finite("admin connection", async move {
            // A handler that panics ends its own connection, as with any HTTP server; it is no
            // failure of ferry's (the supervisor would otherwise mark ferry itself down).
            let serve = connection(stream, router, &limits, tls, &slot, permit);
            if let Err(panic) = AssertUnwindSafe(serve).catch_unwind().await {
                tracing::error!(
                    "admin listener: a request handler panicked: {}",
                    crate::contracts::supervisor::panic_text(panic.as_ref())
                );
            }
            served.slots.lock().expect("admin slots lock").remove(&id);
        });
    }
}

/// Serves one connection until it ends, is evicted, idles out or the listener stops.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: &Limits,
    tls: Option<TlsAcceptor>,
    slot: &Slot,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let stream = Watched {
        inner: stream,
        activity: activity.clone(),
    };
    match tls {
        None => http(stream, router, limits, slot, &activity).await,
        Some(acceptor) => {
            // The handshake is bounded like a request's headers.
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!("admin listener: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                },
                () = slot.close.cancelled() => return,
            };
            http(stream, router, limits, slot, &activity).await;
        }
    }
}

/// HTTP/1.1 over `io` with the router.
async fn http<I>(io: I, router: Router, limits: &Limits, slot: &Slot, activity: &Activity)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requested = slot.requested.clone();
    let service = {
        let requested = requested.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            requested.store(true, Ordering::Relaxed);
            let mut router = router.clone();
            async move { router.call(request.map(axum::body::Body::new)).await }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // Set when the listener stops: the request in flight has until then to be written out
    // (a client that stopped reading would otherwise hold the shutdown up).
    let mut finish_by: Option<Instant> = None;
    loop {
        let idle_at = activity.last() + limits.idle_timeout;
        let finishing = finish_by.is_some();
        let finish_at = finish_by.unwrap_or(idle_at);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = slot.close.cancelled(), if !finishing => {
                if !requested.load(Ordering::Relaxed) {
                    // Evicted, or stopping with no request made: nothing to finish.
                    return;
                }
                // The listener stops: finish the request in flight (streams end on close).
                conn.as_mut().graceful_shutdown();
                finish_by = Some(Instant::now() + limits.header_read_timeout.min(STOP_GRACE));
            }
            () = tokio::time::sleep_until(finish_at.into()), if finishing => return,
            () = tokio::time::sleep_until(idle_at.into()) => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    tracing::debug!("admin listener: closing a connection idle for {:?}", limits.idle_timeout);
                    return;
                }
            }
        }
    }
}

/// When a byte last moved on a connection.
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// A socket that notes when bytes move on it.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
