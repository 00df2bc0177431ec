//! ferry relays messages between MQTT, NATS (and, later, SSE and HTTP) from declarative routes.
//!
//! The message flow: a [`connectors::Connection`] (supervised) receives a message and pushes it
//! into its route's bounded queue ([`pipeline::queue`]); the route's worker filters and
//! transforms it ([`mapping`]), renders each sink's subject, and hands it to every
//! [`connectors::Sink`]; once every sink took it, the source's [`message::Ack`] is confirmed.

pub mod admin;
pub mod config;
pub mod connectors;
pub mod explain;
pub mod mapping;
pub mod message;
pub mod pipeline;

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
