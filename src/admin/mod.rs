//! ferry's own HTTP listener (`admin: {listen: ...}`): the `sse_server` streams, `/healthz`,
//! `/readyz`, `/metrics`, `/routes` and the route taps `ferry tap` reads. Off unless
//! configured.
//!
//! The listener is bound while the pipeline starts, before any connection runs, so a port
//! that is taken fails `ferry run` at once (exit 1) instead of leaving a daemon that serves
//! nothing. It serves until the connections close (`ConnectionContext::close`), i.e. through the
//! shutdown drain, so streams and health checks keep answering while queues empty.
//!
//! Every request reads the pipeline's current [`View`](crate::pipeline::observe::View), so
//! what it answers follows a reload.
//!
//! Locked down by `admin:` settings: requests must name an allowed `Host` (guard.rs),
//! `/metrics`, `/routes` and the taps need the token when one is set, the taps are off unless
//! `taps: true`, and connections are capped and timed out (server.rs).

mod guard;
mod metrics;
mod routes;
mod server;
mod tap_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::Admin;
use crate::connectors::HttpRoutes;
use crate::contracts::ConnectionContext;
use crate::contracts::status::State as ConnectionState;
use crate::pipeline::observe::Observed;

pub use tap_client::{AdminAddress, TapError, TapOptions, escape_controls, tap};

/// What every handler of the admin listener shares.
#[derive(Clone)]
struct Shared {
    observed: Observed,
    metrics: Arc<metrics::Metrics>,
    /// Cancelled when the listener stops: ends the taps, which would otherwise hold the
    /// graceful shutdown up.
    closing: CancellationToken,
    /// `admin.taps`: the taps answer only when it is on.
    taps: bool,
    tap_lines: Arc<routes::TapLines>,
}

/// The admin listener, bound and routed but not serving yet.
pub struct AdminListener {
    listener: TcpListener,
    router: Router,
    addr: SocketAddr,
    closing: CancellationToken,
    limits: server::Limits,
    tls: Option<TlsAcceptor>,
}

impl AdminListener {
    /// Binds the listener and serves it on `context`'s tasks: what the pipeline calls when
    /// it starts (see [`crate::pipeline::ServeAdmin`]).
    pub fn start(
        config: &Admin,
        streams: Vec<HttpRoutes>,
        observed: Observed,
        context: &ConnectionContext,
    ) -> anyhow::Result<()> {
        AdminListener::bind(config, streams, observed)?.serve(context);
        Ok(())
    }

    /// Binds `config.listen` now and routes the listener's own paths plus `streams` (each
    /// connection's [`HttpRoutes`]). Must run inside the tokio runtime.
    pub fn bind(
        config: &Admin,
        streams: impl IntoIterator<Item = HttpRoutes>,
        observed: Observed,
    ) -> anyhow::Result<AdminListener> {
        let addr = config.listen;
        let listener = listen(addr).map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr}: {e} (admin.listen in the config)")
        })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let tls = match &config.tls {
            Some(tls) => Some(tls_acceptor(tls)?),
            None => None,
        };
        if !addr.ip().is_loopback() && config.token.is_none() {
            tracing::warn!(
                "admin listener on {addr} is reachable beyond this machine and has no token: anyone who reaches it reads /metrics and /routes{}; set admin.token (e.g. `token: ${{file:/etc/ferry/admin-token}}`)",
                if config.taps {
                    " and every route's live messages (taps)"
                } else {
                    ""
                }
            );
        }
        let closing = CancellationToken::new();
        let shared = Shared {
            metrics: Arc::new(metrics::Metrics::new(observed.clone(), SystemTime::now())),
            observed,
            closing: closing.clone(),
            taps: config.taps,
            tap_lines: Arc::default(),
        };
        let guard = guard::Guard::new(config.allowed_hosts.clone(), config.token.clone());
        let protected = Router::new()
            .route("/metrics", get(metrics::serve))
            .route("/routes", get(routes::list))
            .route("/routes/{route}/tap", get(routes::tap))
            .route_layer(from_fn_with_state(guard.clone(), guard::require_token));
        let mut router = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .merge(protected)
            .with_state(shared);
        for routes in streams {
            router = router.merge(routes);
        }
        let router = router.layer(from_fn_with_state(guard, guard::check_host));
        Ok(AdminListener {
            listener,
            router,
            addr,
            closing,
            limits: server::Limits {
                max_connections: config.max_connections,
                header_read_timeout: config.header_read_timeout,
                idle_timeout: config.idle_timeout,
            },
            tls,
        })
    }

    /// Serves on `runtime.tasks` until `runtime.close`; then stops accepting, closes the
    /// connections that are between requests and lets each one in a request finish it (the
    /// streams and taps end on `close` too): every connection is a task of `runtime.tasks`,
    /// which shutdown waits for. Should the server end before that, the supervisor binds the
    /// address again and serves on, after a backoff.
    pub fn serve(self, runtime: &ConnectionContext) {
        let AdminListener {
            listener,
            router,
            addr,
            closing,
            limits,
            tls,
        } = self;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("admin listener on {scheme}://{addr}");
        let close = runtime.close.clone();
        let tasks = runtime.tasks.clone();
        let mut bound = Some(listener);
        runtime.tasks.spawn_restarting("admin listener", move || {
            let listener = bound.take();
            let (router, close, closing) = (router.clone(), close.clone(), closing.clone());
            let (limits, tls, tasks) = (limits.clone(), tls.clone(), tasks.clone());
            async move {
                let listener = match listener.map_or_else(|| listen(addr), Ok) {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::error!("admin listener: cannot listen on {addr} again: {e}");
                        return;
                    }
                };
                let stop = CancellationToken::new();
                let serving = server::serve(listener, router, limits, tls, tasks, stop.clone());
                tokio::select! {
                    () = serving => {}
                    () = close.cancelled() => {
                        closing.cancel();
                        stop.cancel();
                    }
                }
            }
        });
    }
}

/// The rustls server side of `admin.tls`, with the one crypto provider every client uses.
fn tls_acceptor(tls: &crate::config::AdminTls) -> anyhow::Result<TlsAcceptor> {
    crate::connectors::tls::install_crypto_provider();
    let certs = crate::connectors::tls::read_certs(&tls.cert)?;
    let key = crate::connectors::tls::read_key(&tls.key)?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "admin.tls: {} and {} are not a certificate and its key",
                tls.cert.display(),
                tls.key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
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
