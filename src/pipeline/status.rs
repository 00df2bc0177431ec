//! Connection state as the supervisor sees it, logged once per change (not once per retry),
//! and a rate limiter for warnings that could otherwise flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
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
    reconnects: AtomicU64,
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
            reconnects: AtomicU64::new(0),
        }))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn state(&self) -> State {
        *self.0.state.lock().expect("status lock")
    }

    /// How many times the connection came back after being down.
    pub fn reconnects(&self) -> u64 {
        self.0.reconnects.load(Ordering::Relaxed)
    }

    /// The connection is up (and subscribed). Logs only when it was not already up.
    pub fn up(&self, detail: &str) {
        let previous = std::mem::replace(&mut *self.0.state.lock().expect("status lock"), State::Up);
        match previous {
            State::Up => {}
            State::Connecting => {
                tracing::info!(connection = %self.0.name, protocol = self.0.protocol, "connected {detail}")
            }
            State::Down => {
                self.0.reconnects.fetch_add(1, Ordering::Relaxed);
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

/// The delays between reconnection attempts: exponential with jitter, capped, never giving up.
pub struct Backoff {
    config: crate::config::Reconnect,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
}

impl Backoff {
    pub fn new(config: &crate::config::Reconnect) -> Self {
        Backoff {
            delays: Self::delays(config),
            config: config.clone(),
        }
    }

    fn delays(config: &crate::config::Reconnect) -> Box<dyn Iterator<Item = Duration> + Send> {
        use backon::BackoffBuilder;
        Box::new(
            backon::ExponentialBuilder::default()
                .with_min_delay(config.initial_delay)
                .with_max_delay(config.max_delay)
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.config.max_delay)
    }

    /// The connection worked: the next failure starts from the initial delay again.
    pub fn reset(&mut self) {
        self.delays = Self::delays(&self.config);
    }
}
