//! Closing an MQTT connection cleanly, once the routes are done: the acks of what was
//! delivered go out first, then DISCONNECT, which the client sends once what the sinks queued
//! before it is out and the publishes in flight are acknowledged; then the socket is closed
//! once the broker closed its side (`socket`), so the broker read the last acks. All of it
//! within `CLOSE_TIMEOUT` of close. How close finds the event loop (a `poll` possibly in
//! flight, which it lets run on) is the event loop's (`event_loop`).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;
use tokio::time::error::Elapsed;

use super::client::{AckToken, Event, EventLoop};
use super::event_loop::EventLoopTask;

/// On close, how long the publishes the sinks queued may take to reach the broker, DISCONNECT
/// included. The daemon gives its connections 5 s to close.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the client's DISCONNECT waits for the PUBACKs of publishes in flight: most of
/// `CLOSE_TIMEOUT`, leaving the broker time to close its side.
pub const DISCONNECT_DRAIN: Duration = Duration::from_secs(3);

/// Where close found the connection.
pub struct Closing {
    /// Everything, DISCONNECT and the broker closing its side included, is over by then.
    pub deadline: Instant,
    /// What the `poll` in flight at close returned (`Err` when it did not in time).
    pub polled: Option<Result<anyhow::Result<Event>, Elapsed>>,
    /// DISCONNECT is queued on the client already.
    pub disconnect_queued: bool,
}

impl EventLoopTask {
    /// Closes the connection: first sends the acks of what was delivered, then DISCONNECT,
    /// which the client sends once what the sinks queued before it is out and the publishes in
    /// flight are acknowledged (within `DISCONNECT_DRAIN`); then closes the socket once the
    /// broker closed its side (see `socket`), all within `CLOSE_TIMEOUT` of close. Without a
    /// connection there is nothing to send (and the acks would be for a connection that is
    /// gone).
    pub(super) async fn disconnect(
        self,
        mut eventloop: EventLoop,
        connected: bool,
        mut acks: VecDeque<AckToken>,
        closing: Closing,
    ) {
        if !connected {
            match eventloop.unsent() {
                0 => tracing::debug!(connection = %self.name, "closed"),
                unsent => tracing::warn!(
                    connection = %self.name,
                    "closed while disconnected: {unsent} publish(es) never reached the broker"
                ),
            }
            return;
        }
        let Closing {
            deadline,
            polled,
            mut disconnect_queued,
        } = closing;
        let closed = match polled {
            Some(Err(_)) => Err(format!("timed out after {CLOSE_TIMEOUT:?}")),
            polled => tokio::time::timeout_at(deadline, async {
                let mut polled = polled.and_then(Result::ok);
                loop {
                    if let Some(event) = polled.take()
                        && let Event::Disconnected = event?
                    {
                        return Ok(());
                    }
                    self.send_acks(&mut acks);
                    if acks.is_empty() && !disconnect_queued {
                        anyhow::ensure!(
                            self.client.disconnect(DISCONNECT_DRAIN),
                            "the client is gone"
                        );
                        disconnect_queued = true;
                    }
                    polled = Some(eventloop.poll(None).await);
                }
            })
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {CLOSE_TIMEOUT:?}")))
            .map_err(|error| error.to_string()),
        };
        let why = match closed {
            Ok(()) => {
                tracing::debug!(
                    connection = %self.name,
                    "DISCONNECT sent; waiting for the broker to close the connection"
                );
                // The client's own handle on the socket goes: ours stays until the broker
                // closed its side.
                drop(eventloop);
                match self.socket.close_after_broker(deadline).await {
                    Ok(()) => tracing::debug!(connection = %self.name, "disconnected"),
                    Err(why) => tracing::warn!(
                        connection = %self.name,
                        "closed after DISCONNECT, but {why}: if it had not read the acks of the \
                         last messages delivered yet, it delivers those again"
                    ),
                }
                return;
            }
            Err(why) => why,
        };
        tracing::warn!(
            connection = %self.name,
            "closed without a clean DISCONNECT ({why}); {} publish(es) and {} ack(s) never \
             reached the broker",
            eventloop.unsent(),
            acks.len()
        );
    }
}
