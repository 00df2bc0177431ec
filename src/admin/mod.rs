//! ferry's own HTTP listener (`admin: {listen: ...}`): the `sse_server` streams, `/healthz`,
//! `/readyz`, `/metrics`, `/routes` and the route taps `ferry tap` reads. Off unless
//! configured.
//!
//! The listener is bound while the pipeline starts, before any connection runs, so a port
//! that is taken fails `ferry run` at once (exit 1) instead of leaving a daemon that serves
//! nothing. It serves until the connections close (`Runtime::close`), i.e. through the
//! shutdown drain, so streams and health checks keep answering while queues empty.
//!
//! Every request reads the pipeline's current [`View`](crate::pipeline::observe::View), so
//! what it answers follows a reload.

mod metrics;
mod routes;
mod tap_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::config::Admin;
use crate::connectors::Runtime;
use crate::pipeline::observe::Observed;
use crate::pipeline::status::State as ConnectionState;

pub use tap_client::{AdminAddress, TapError, TapOptions, tap};

/// HTTP routes a connection contributes to the admin listener.
pub type Routes = axum::Router;

/// Paths the admin listener answers itself; an `sse_server` stream cannot take them (the
/// config parser refuses them, and any path under `/routes/`, which is what keeps
/// [`Router::merge`] from meeting a clash).
pub const OWN_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics", "/routes"];

/// What every handler of the admin listener shares.
#[derive(Clone)]
struct Shared {
    observed: Observed,
    metrics: Arc<metrics::Metrics>,
    /// Cancelled when the listener stops: ends the taps, which would otherwise hold the
    /// graceful shutdown up.
    closing: CancellationToken,
}

/// The admin listener, bound and routed but not serving yet.
pub struct AdminListener {
    listener: TcpListener,
    router: Router,
    addr: SocketAddr,
    closing: CancellationToken,
}

impl AdminListener {
    /// Binds `config.listen` now and routes the listener's own paths plus `streams` (each
    /// connection's [`Routes`]). Must run inside the tokio runtime.
    pub fn bind(
        config: &Admin,
        streams: impl IntoIterator<Item = Routes>,
        observed: Observed,
    ) -> anyhow::Result<AdminListener> {
        let addr = config.listen;
        let listener = listen(addr).map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr}: {e} (admin.listen in the config)")
        })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let closing = CancellationToken::new();
        let shared = Shared {
            metrics: Arc::new(metrics::Metrics::new(observed.clone(), SystemTime::now())),
            observed,
            closing: closing.clone(),
        };
        let mut router = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics::serve))
            .route("/routes", get(routes::list))
            .route("/routes/{route}/tap", get(routes::tap))
            .with_state(shared);
        for routes in streams {
            router = router.merge(routes);
        }
        Ok(AdminListener {
            listener,
            router,
            addr,
            closing,
        })
    }

    /// Serves on `runtime.tasks` until `runtime.close`; then stops accepting and waits for the
    /// requests in flight (the streams and taps end on `close` too). Should the server end
    /// before that, the supervisor binds the address again and serves on, after a backoff.
    pub fn serve(self, runtime: &Runtime) {
        let AdminListener {
            listener,
            router,
            addr,
            closing,
        } = self;
        tracing::info!("admin listener on http://{addr}");
        let close = runtime.close.clone();
        let mut bound = Some(listener);
        runtime.tasks.spawn_restarting("admin listener", move || {
            let listener = bound.take();
            let (router, close, closing) = (router.clone(), close.clone(), closing.clone());
            async move {
                let listener = match listener.map_or_else(|| listen(addr), Ok) {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::error!("admin listener: cannot listen on {addr} again: {e}");
                        return;
                    }
                };
                let shutdown = async move {
                    close.cancelled().await;
                    closing.cancel();
                };
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!("admin listener on http://{addr} stopped: {e}");
                }
            }
        });
    }
}

/// A listening socket with `SO_REUSEADDR`, so that a restarted ferry can take its port back
/// while the previous one's closed connections linger in TIME_WAIT. (It does not let two
/// listeners share a port: a port someone listens on still fails.)
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// `GET /healthz`: the process is up and serving HTTP.
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 `ready` when every connection is up and no task waits for its restart;
/// otherwise 503 with one line per connection that is not up (its state, since when, and why
/// it last failed) and per connection or route whose task failed (which task, why).
async fn readyz(State(shared): State<Shared>) -> Response {
    let view = shared.observed.view();
    let now = SystemTime::now();
    let mut not_up = Vec::new();
    for connection in &view.connections {
        let status = connection.snapshot();
        if status.state == ConnectionState::Up {
            continue;
        }
        let mut line = format!(
            "{} ({}): {} since {} ({} ago)",
            connection.name(),
            connection.protocol(),
            status.state.as_str(),
            humantime::format_rfc3339_seconds(status.since),
            humantime::format_duration(std::time::Duration::from_secs(
                now.duration_since(status.since)
                    .unwrap_or_default()
                    .as_secs()
            )),
        );
        if let Some(error) = &status.last_error {
            line.push_str(&format!(": {error}"));
        }
        not_up.push(line);
    }
    // Connections and routes whose task failed, waiting for their restart.
    let mut restarting = Vec::new();
    for (owner, down) in view.supervisor.down() {
        let mut line = format!(
            "{owner}: task `{}` {}; {} since {}",
            down.task,
            down.why,
            if down.restart_failed.is_some() {
                "cannot be restarted"
            } else {
                "restarting"
            },
            humantime::format_rfc3339_seconds(down.since),
        );
        if let Some(why) = &down.restart_failed {
            line.push_str(&format!(": {why}"));
        }
        restarting.push(line);
    }
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if not_up.is_empty() && restarting.is_empty() {
        return (StatusCode::OK, plain, "ready\n").into_response();
    }
    let mut body = format!(
        "not ready: {} of {} connection(s) not up",
        not_up.len(),
        view.connections.len()
    );
    if !restarting.is_empty() {
        body.push_str(&format!(
            ", {} restarting after a task failed",
            restarting.len()
        ));
    }
    body.push('\n');
    for line in not_up.iter().chain(&restarting) {
        body.push_str(line);
        body.push('\n');
    }
    (StatusCode::SERVICE_UNAVAILABLE, plain, body).into_response()
}
