//! The liveness probe of a NATS connection that feeds routes.
//!
//! A connection can claim to be up while nothing reaches its subscriptions: a half-dead TCP
//! connection the kernel has not noticed, a server that lost ferry's interest. The client's own
//! pings catch a socket that stalled outright (`ping_interval`); the probe catches the rest.
//! ferry subscribes to a private subject on the connection, publishes a probe there every
//! `interval`, and expects it back within `timeout`. When one does not come back while the
//! connection is up, ferry logs it once and forces a reconnect, which rebuilds every
//! subscription. Probes never reach a route: sources skip probe subjects.

use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::Probe;
use crate::contracts::status::{ConnectionStatus, State};

/// Where default probe subjects live; a route whose subject covers them never sees them.
const PREFIX: &str = "_FERRY.probe.";

/// The probe subject of connection `name`, unless the config names one: private to this
/// connection of this process.
pub(super) fn subject(name: &str, probe: &Probe) -> String {
    match &probe.topic {
        Some(subject) => subject.clone(),
        None => format!("{PREFIX}{}.{:016x}", sanitize(name), fastrand::u64(..)),
    }
}

/// A connection name as one subject token (names are free text in YAML).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether a message on `subject` is a probe (this ferry's or another's), not a route's.
pub(super) fn is_probe(subject: &str) -> bool {
    subject.starts_with(PREFIX)
}

/// Probes the connection until it closes.
pub(super) async fn run(
    client: Client,
    subject: String,
    probe: Probe,
    status: ConnectionStatus,
    close: CancellationToken,
) {
    let name = status.name().to_string();
    let mut probes = match client.subscribe(subject.clone()).await {
        Ok(probes) => probes,
        Err(e) => {
            tracing::error!(connection = %name, "liveness probe not started: cannot subscribe to {subject}: {e}");
            return;
        }
    };
    // After a failed probe, the next failures are only debug lines until one comes back.
    let mut failing = false;
    for sequence in 0u64.. {
        tokio::select! {
            _ = close.cancelled() => return,
            _ = tokio::time::sleep(probe.interval) => {}
        }
        if status.state() != State::Up {
            continue; // the client is reconnecting already
        }
        let nonce = Bytes::from(sequence.to_string());
        if client
            .publish(subject.clone(), nonce.clone())
            .await
            .is_err()
        {
            continue;
        }
        let came_back = tokio::time::timeout(probe.timeout, async {
            while let Some(message) = probes.next().await {
                if message.payload == nonce {
                    return true;
                }
            }
            false
        });
        let came_back = tokio::select! {
            _ = close.cancelled() => return,
            came_back = came_back => matches!(came_back, Ok(true)),
        };
        if came_back {
            if std::mem::take(&mut failing) {
                tracing::info!(connection = %name, "liveness probe came back");
            }
            continue;
        }
        if status.state() != State::Up {
            continue; // it went down meanwhile: the client noticed by itself
        }
        if std::mem::replace(&mut failing, true) {
            tracing::debug!(connection = %name, "liveness probe lost again; reconnecting");
        } else {
            tracing::warn!(
                connection = %name,
                "liveness probe on {subject} did not come back within {:?} while the connection \
                 is up: reconnecting, so every subscription is rebuilt",
                probe.timeout
            );
        }
        if let Err(e) = client.force_reconnect().await {
            tracing::debug!(connection = %name, "cannot force a reconnect: {e}");
        }
        // Give the reconnect a moment before the next probe counts.
        tokio::select! {
            _ = close.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_subjects_are_private_and_recognised() {
        let probe = Probe::default();
        let a = subject("plant nats", &probe);
        let b = subject("plant nats", &probe);
        assert_ne!(
            a, b,
            "two processes (or connections) never share a probe subject"
        );
        assert!(a.starts_with("_FERRY.probe.plant_nats."), "{a}");
        assert!(crate::connectors::nats::names::subject(&a).is_ok(), "{a}");
        assert!(is_probe(&a));
        assert!(!is_probe("iot.kitchen"));
    }

    #[test]
    fn a_configured_subject_is_used_as_written() {
        let probe = Probe {
            topic: Some("health.ferry".into()),
            ..Probe::default()
        };
        assert_eq!(subject("core", &probe), "health.ferry");
    }
}
