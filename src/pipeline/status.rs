//! Connection state as the supervisor sees it, logged once per change (not once per retry),
//! and a rate limiter for warnings that could otherwise flood the log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not connected yet, first attempt under way.
    Connecting,
    Up,
    /// Lost or refused; retrying with backoff.
    Down,
}

struct Inner {
    name: String,
    protocol: &'static str,
    state: Mutex<State>,
}

/// The shared, observable state of one connection. Cheap to clone.
#[derive(Clone)]
pub struct ConnectionStatus(Arc<Inner>);

impl ConnectionStatus {
    pub fn new(name: &str, protocol: &'static str) -> Self {
        ConnectionStatus(Arc::new(Inner {
            name: name.to_string(),
            protocol,
            state: Mutex::new(State::Connecting),
        }))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn state(&self) -> State {
        *self.0.state.lock().expect("status lock")
    }

    /// The connection is up (and subscribed). Logs only when it was not already up.
    pub fn up(&self, detail: &str) {
        let previous =
            std::mem::replace(&mut *self.0.state.lock().expect("status lock"), State::Up);
        match previous {
            State::Up => {}
            State::Connecting => {
                tracing::info!(connection = %self.0.name, protocol = self.0.protocol, "connected {detail}")
            }
            State::Down => {
                tracing::info!(connection = %self.0.name, protocol = self.0.protocol, "reconnected {detail}")
            }
        }
    }

    /// The connection failed. Logs a warning on the change, and only debug on later retries.
    pub fn down(&self, error: &dyn std::fmt::Display, retry_in: Duration) {
        let previous =
            std::mem::replace(&mut *self.0.state.lock().expect("status lock"), State::Down);
        if previous == State::Down {
            tracing::debug!(connection = %self.0.name, "still down: {error}; retrying in {retry_in:?}");
        } else {
            tracing::warn!(
                connection = %self.0.name,
                protocol = self.0.protocol,
                "connection down: {error}; retrying with backoff (next in {retry_in:?})"
            );
        }
    }

    /// The connection failed, for a connection without a session of its own to re-establish
    /// (HTTP): each route retries its message on its own backoff, so there is no single next
    /// attempt to announce. Logs like [`Self::down`]: a warning on the change, debug after.
    pub fn unreachable(&self, error: &dyn std::fmt::Display) {
        let previous =
            std::mem::replace(&mut *self.0.state.lock().expect("status lock"), State::Down);
        if previous == State::Down {
            tracing::debug!(connection = %self.0.name, "still down: {error}");
        } else {
            tracing::warn!(
                connection = %self.0.name,
                protocol = self.0.protocol,
                "connection down: {error}; routes retry their messages with backoff"
            );
        }
    }
}

/// Logs a warning at most once per interval; the ones in between are counted and reported with
/// the next one, so a flood of bad messages cannot flood the log.
pub struct RateLimitedLog {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Default for RateLimitedLog {
    fn default() -> Self {
        RateLimitedLog {
            interval: Duration::from_secs(5),
            state: Mutex::new((None, 0)),
        }
    }
}

impl RateLimitedLog {
    /// Logs `message()` as a warning unless one was logged within the interval.
    pub fn warn(&self, message: impl FnOnce() -> String) {
        let mut state = self.state.lock().expect("log lock");
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.interval => state.1 += 1,
            _ => {
                let suppressed = std::mem::take(&mut state.1);
                state.0 = Some(now);
                drop(state);
                if suppressed > 0 {
                    tracing::warn!("{} ({suppressed} similar suppressed)", message());
                } else {
                    tracing::warn!("{}", message());
                }
            }
        }
    }
}

/// The delay before reconnection attempt `attempt` (0-based): doubling from `initial_delay`,
/// capped at `max_delay`, with jitter (50-100 % of the step) so that many ferries restarted
/// together do not all knock at once. A pure function of the attempt number, because the NATS
/// client asks for delays that way; [`Backoff`] uses it too.
pub fn reconnect_delay(config: &crate::config::Reconnect, attempt: u32) -> Duration {
    let step = config
        .initial_delay
        .saturating_mul(1u32 << attempt.min(20))
        .min(config.max_delay);
    step.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// The delays between reconnection attempts of one connection, never giving up.
///
/// The delay starts over only once a connection has stayed up for `stable_after`: a broker that
/// accepts each connection and drops it at once (a bad ACL, a crash loop, a load balancer with
/// no backend) sees the delays grow to `max_delay`, not a storm of reconnects.
pub struct Backoff {
    config: crate::config::Reconnect,
    attempt: u32,
    /// When the current connection came up, if it is up.
    up_since: Option<Instant>,
}

impl Backoff {
    pub fn new(config: &crate::config::Reconnect) -> Self {
        Backoff {
            config: config.clone(),
            attempt: 0,
            up_since: None,
        }
    }

    /// The delay before the next attempt (the connection just failed).
    pub fn next_delay(&mut self) -> Duration {
        if let Some(since) = self.up_since.take()
            && since.elapsed() >= self.config.stable_after
        {
            self.attempt = 0;
        }
        let delay = reconnect_delay(&self.config, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// The connection is up. If it stays up for `stable_after`, the next failure starts from
    /// the initial delay again.
    pub fn reset(&mut self) {
        self.up_since = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_over_only_after_a_stable_connection() {
        let config = crate::config::Reconnect {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            stable_after: Duration::from_millis(50),
        };
        let mut backoff = Backoff::new(&config);
        for _ in 0..4 {
            backoff.next_delay();
        }
        // Up, and down again at once: the delays keep growing (at least half of 1.6 s).
        backoff.reset();
        assert!(backoff.next_delay() >= Duration::from_millis(800));
        // Up for longer than stable_after: the next failure starts from the initial delay.
        backoff.reset();
        std::thread::sleep(Duration::from_millis(60));
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
