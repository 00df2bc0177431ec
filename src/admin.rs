//! ferry's own HTTP listener (`admin: {listen: ...}`): the `sse_server` streams, `/healthz`,
//! and (issue 6) readiness and metrics. Off unless configured.
//!
//! The listener is bound while the pipeline starts, before any connection runs, so a port
//! that is taken fails `ferry run` at once (exit 1) instead of leaving a daemon that serves
//! nothing. It serves until the connections close (`Runtime::close`), i.e. through the
//! shutdown drain, so streams and health checks keep answering while queues empty.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tokio::net::{TcpListener, TcpSocket};

use crate::config::Admin;
use crate::connectors::Runtime;
use crate::pipeline::observe::Observed;

/// HTTP routes a connection contributes to the admin listener.
pub type Routes = axum::Router;

/// Paths the admin listener answers itself; an `sse_server` stream cannot take them (the
/// config parser refuses them, which is what keeps [`Router::merge`] from meeting a clash).
pub const OWN_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// The admin listener, bound and routed but not serving yet.
pub struct AdminListener {
    listener: TcpListener,
    router: Router,
    addr: SocketAddr,
}

impl AdminListener {
    /// Binds `config.listen` now and routes the listener's own paths plus `streams` (each
    /// connection's [`Routes`]). Must run inside the tokio runtime.
    pub fn bind(
        config: &Admin,
        streams: impl IntoIterator<Item = Routes>,
        observed: Observed,
    ) -> anyhow::Result<AdminListener> {
        let _ = observed;
        let addr = config.listen;
        let listener = listen(addr).map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr}: {e} (admin.listen in the config)")
        })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let mut router = Router::new().route("/healthz", get(healthz));
        for routes in streams {
            router = router.merge(routes);
        }
        Ok(AdminListener {
            listener,
            router,
            addr,
        })
    }

    /// Serves on `runtime.tasks` until `runtime.close`; then stops accepting and waits for the
    /// requests in flight (the streams end on `close` too).
    pub fn serve(self, runtime: &Runtime) {
        let AdminListener {
            listener,
            router,
            addr,
        } = self;
        tracing::info!("admin listener on http://{addr}");
        let close = runtime.close.clone();
        runtime.tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(close.cancelled_owned())
                .await
            {
                tracing::error!("admin listener on http://{addr} stopped: {e}");
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
