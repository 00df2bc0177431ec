//! The spool side of a route's worker: a publish that goes to the sink's spool while the sink
//! is unreachable (or its spool holds anything, so order holds), and the forwarder that sends
//! the spool on, oldest first, once the sink is back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::*;

impl RouteWorker {
    /// Publishes on one sink; if the sink has a spool, spools instead while the sink is
    /// unreachable or its spool holds anything (so order holds). A full spool blocks the route
    /// until the forwarder makes room, as a sink without a spool would.
    pub(super) async fn publish_or_spool(&self, sink: &RouteSink, message: &Message) -> Published {
        let Some(spool) = &sink.spool else {
            return self
                .publish(sink, message, &self.abandon, &Reconnect::default())
                .await;
        };
        loop {
            if spool.is_empty() {
                match self.send(sink, message, &self.abandon).await {
                    Err(error) => tracing::warn!(
                        route = %self.name,
                        "sink {} unavailable ({error}); spooling its messages in {} until it is back",
                        sink.connection,
                        spool.dir().display()
                    ),
                    Ok(published) => return published,
                }
            }
            let room = spool.room();
            let error = match spool.append(message) {
                Ok(_) => {
                    self.counters.spooled.fetch_add(1, Ordering::Relaxed);
                    return Published::Spooled;
                }
                Err(error) => error,
            };
            if spool.is_empty() {
                // Larger than what the spool may hold, or the route's other spools hold it
                // all, or the disk refuses: wait for the sink itself.
                self.warnings.warn(|| {
                    format!(
                        "route {}: spool for sink {} cannot take a message ({error}); waiting for the sink",
                        self.name, sink.connection
                    )
                });
                return self
                    .publish(sink, message, &self.abandon, &Reconnect::default())
                    .await;
            }
            match &error {
                AppendError::Full { .. } => {
                    if spool.newly_full() {
                        tracing::warn!(
                            route = %self.name,
                            "spool for sink {}: {error}; the route waits for room (its source is not read meanwhile)",
                            sink.connection
                        );
                    }
                }
                AppendError::Io(_) => self.warnings.warn(|| {
                    format!(
                        "route {}: spool for sink {}: {error}; retrying",
                        self.name, sink.connection
                    )
                }),
            }
            tokio::select! {
                _ = room => {}
                // A disk error may pass without anything forwarded.
                _ = tokio::time::sleep(Duration::from_secs(1)), if matches!(error, AppendError::Io(_)) => {}
                _ = self.abandon.cancelled() => return Published::Abandoned,
            }
        }
    }

    /// Sends sink `index`'s spooled messages on, oldest first, each once the one before was
    /// confirmed, retrying while the sink is unavailable; until `stop`.
    pub(super) async fn forward(self: Arc<Self>, index: usize, stop: CancellationToken) {
        let sink = &self.sinks[index];
        let spool = sink
            .spool
            .as_ref()
            .expect("only spooled sinks have a forwarder");
        if !spool.is_empty() {
            tracing::info!(
                route = %self.name,
                "sink {}: {} byte(s) spooled in {} before this start; forwarding them first",
                sink.connection,
                spool.pending_bytes(),
                spool.dir().display()
            );
        }
        let retry = Reconnect {
            max_delay: SPOOL_RETRY_MAX,
            ..Reconnect::default()
        };
        let mut forwarded = 0u64;
        // Damage found when the spool opened, then as it is read, counted for /metrics.
        let mut damaged = 0u64;
        loop {
            let (records, _) = spool.damaged();
            if records > damaged {
                (self.counters.spool_damaged).fetch_add(records - damaged, Ordering::Relaxed);
                damaged = records;
            }
            let next = tokio::select! {
                next = spool.next() => next,
                _ = stop.cancelled() => break,
            };
            let message = match next {
                Ok(message) => message,
                Err(e) => {
                    self.warnings.warn(|| {
                        format!(
                            "route {}: cannot read the spool in {}: {e}; retrying",
                            self.name,
                            spool.dir().display()
                        )
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            };
            let failure = match self.mapping.check_spooled(index, &message) {
                Err(failure) => Some(failure),
                Ok(()) => match self.publish(sink, &message, &stop, &retry).await {
                    Published::Sent => {
                        self.counters.sent.fetch_add(1, Ordering::Relaxed);
                        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Published::Rejected(reason) => Some(Failure {
                        stage: Stage::Sink,
                        reason: format!("{} rejected it: {reason}", sink.connection),
                    }),
                    Published::Abandoned | Published::Spooled => break,
                },
            };
            // The spooled output stands in for the original: it is all the spool has.
            if let Some(failure) = failure
                && !self.fail(&message, failure).await
            {
                break;
            }
            if let Err(e) = spool.forwarded() {
                tracing::error!(
                    route = %self.name,
                    "cannot update the spool in {}: {e}",
                    spool.dir().display()
                );
            }
            forwarded += 1;
            if spool.is_empty() {
                tracing::info!(
                    route = %self.name,
                    "sink {} is back: {forwarded} spooled message(s) forwarded, its spool is empty",
                    sink.connection
                );
                forwarded = 0;
            }
        }
        if let Err(e) = spool.close() {
            tracing::error!(
                route = %self.name,
                "cannot close the spool in {}: {e}",
                spool.dir().display()
            );
        }
    }
}
