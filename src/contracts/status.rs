//! Connection state as the supervisor sees it, logged once per change (not once per retry),
//! and a rate limiter for warnings that could otherwise flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The longest error text a connection keeps for `/readyz` and `/routes`.
const MAX_ERROR_CHARS: usize = 300;

/// Where a connection's supervisor stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not connected yet, first attempt under way.
    Connecting,
    Up,
    /// Lost or refused; retrying with backoff.
    Down,
}

impl State {
    /// The state as `/readyz`, `/routes` and `/metrics` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Up => "up",
            State::Down => "down",
        }
    }
}

struct Inner {
    name: String,
    protocol: &'static str,
    state: Mutex<Current>,
    /// Times the connection came back up after being down.
    reconnects: AtomicU64,
    /// Times what the server sent was past one of ferry's size limits.
    over_limit: AtomicU64,
}

/// The state and what came with its last change.
struct Current {
    state: State,
    since: SystemTime,
    /// Why it last went down, secrets in URLs masked.
    last_error: Option<String>,
}

/// A consistent copy of a connection's status, for the admin listener.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub state: State,
    /// When the state last changed (or the connection was opened).
    pub since: SystemTime,
    /// Times the connection came back up after being down.
    pub reconnects: u64,
    /// Why it last went down (kept after it is back up), URL passwords masked.
    pub last_error: Option<String>,
}

/// The shared, observable state of one connection. Cheap to clone.
#[derive(Clone)]
pub struct ConnectionStatus(Arc<Inner>);

impl ConnectionStatus {
    /// A connection named `name` speaking `protocol`, connecting for the first time.
    pub fn new(name: &str, protocol: &'static str) -> Self {
        ConnectionStatus(Arc::new(Inner {
            name: name.to_string(),
            protocol,
            state: Mutex::new(Current {
                state: State::Connecting,
                since: SystemTime::now(),
                last_error: None,
            }),
            reconnects: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
        }))
    }

    /// What the server sent was past one of ferry's size limits (an SSE line or event): the
    /// input was dropped. Counted for `/metrics`.
    pub fn over_limit(&self) {
        self.0.over_limit.fetch_add(1, Ordering::Relaxed);
    }

    /// Times what the server sent was past one of ferry's size limits.
    pub fn over_limit_count(&self) -> u64 {
        self.0.over_limit.load(Ordering::Relaxed)
    }

    /// The connection's name in the configuration.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// `mqtt`, `nats`, `sse`, `http`, `sse_server`.
    pub fn protocol(&self) -> &'static str {
        self.0.protocol
    }

    /// Where the connection stands now.
    pub fn state(&self) -> State {
        self.0.state.lock().expect("status lock").state
    }

    /// State, time of its last change, reconnects and last error, read together.
    pub fn snapshot(&self) -> Snapshot {
        let current = self.0.state.lock().expect("status lock");
        Snapshot {
            state: current.state,
            since: current.since,
            reconnects: self.0.reconnects.load(Ordering::Relaxed),
            last_error: current.last_error.clone(),
        }
    }

    /// Sets the state; returns the previous one. The time moves only on a change.
    fn set(&self, state: State, error: Option<String>) -> State {
        let mut current = self.0.state.lock().expect("status lock");
        let previous = current.state;
        if previous != state {
            current.state = state;
            current.since = SystemTime::now();
            if previous == State::Down && state == State::Up {
                self.0.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
        if error.is_some() {
            current.last_error = error;
        }
        previous
    }

    /// The connection is up (and subscribed). Logs only when it was not already up.
    pub fn up(&self, detail: &str) {
        let previous = self.set(State::Up, None);
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
        let error = error_text(error);
        let previous = self.set(State::Down, Some(error.clone()));
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
        let error = error_text(error);
        let previous = self.set(State::Down, Some(error.clone()));
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

/// An error as `/readyz`, `/routes` and the log show it: URL passwords masked (client errors
/// may quote the URL they failed on), on one line, and short. The text may come from a remote
/// server (an HTTP error body), so it is cut only at character boundaries.
pub fn error_text(error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    let mut out = String::with_capacity(text.len().min(4 * MAX_ERROR_CHARS));
    for (i, word) in text.split_whitespace().enumerate() {
        if out.len() > 4 * MAX_ERROR_CHARS {
            break;
        }
        if i > 0 {
            out.push(' ');
        }
        match word.find("://") {
            Some(at) => {
                // The URL starts after any quote or bracket before the scheme, and ends before
                // one after it. Both ends are found as character boundaries.
                let start = word[..at]
                    .char_indices()
                    .rev()
                    .find(|&(_, c)| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
                    .map_or(0, |(i, c)| i + c.len_utf8());
                // A URL is ASCII: a quote in any script (`»`) ends it too.
                let end = word[at..]
                    .find(|c: char| !c.is_ascii() || "\"')]>,".contains(c))
                    .map_or(word.len(), |i| at + i);
                out.push_str(&word[..start]);
                out.push_str(&crate::config::redact_url(&word[start..end]));
                out.push_str(&word[end..]);
            }
            None => out.push_str(word),
        }
    }
    if out.chars().count() > MAX_ERROR_CHARS {
        out = out.chars().take(MAX_ERROR_CHARS).collect::<String>() + "…";
    }
    out
}

/// Logs a warning at most once per interval; the ones in between are counted and reported with
/// the next one, so a flood of bad messages cannot flood the log.
#[derive(Default)]
pub struct RateLimitedLog {
    /// When the last warning was logged, and how many were suppressed since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    /// At most one warning in this long.
    const INTERVAL: Duration = Duration::from_secs(5);
}

impl RateLimitedLog {
    /// Logs `message()` as a warning unless one was logged within the interval.
    pub fn warn(&self, message: impl FnOnce() -> String) {
        let mut state = self.state.lock().expect("log lock");
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < Self::INTERVAL => state.1 += 1,
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
    fn errors_kept_for_the_admin_listener_mask_url_passwords() {
        let error = "cannot connect to 'nats://ferry:s3cret@10.0.0.1:4222' (refused)\nretry";
        let kept = error_text(&error);
        assert!(!kept.contains("s3cret"), "{kept}");
        assert_eq!(
            kept,
            "cannot connect to 'nats://ferry:***@10.0.0.1:4222' (refused) retry"
        );
    }

    #[test]
    fn errors_quoting_urls_in_any_script_keep_their_characters() {
        let error = "upstream failed: «http://u:pw@internal/x» is down";
        let kept = error_text(&error);
        assert_eq!(kept, "upstream failed: «http://u:***@internal/x» is down");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// Remote text (an HTTP error body, a broker's reason) never panics the formatter, and
        /// what it keeps is short and on one line.
        #[test]
        fn any_error_text_formats_without_panic(text in "(\\PC|://|«|»|@|:| |\n){0,300}") {
            let kept = error_text(&text);
            proptest::prop_assert!(kept.chars().count() <= MAX_ERROR_CHARS + 1);
            proptest::prop_assert!(!kept.contains('\n'));
        }

        #[test]
        fn any_bytes_as_error_text_format_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = error_text(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn status_counts_reconnects_and_remembers_the_last_error() {
        let status = ConnectionStatus::new("core", "nats");
        status.up("first");
        assert_eq!(status.snapshot().reconnects, 0);
        status.down(&"mqtt://u:pw@host:1883 went away", Duration::from_secs(1));
        status.down(&"again", Duration::from_secs(1));
        let down = status.snapshot();
        assert_eq!(down.state, State::Down);
        assert_eq!(down.last_error.as_deref(), Some("again"));
        status.up("back");
        let up = status.snapshot();
        assert_eq!((up.state, up.reconnects), (State::Up, 1));
        assert!(up.since >= down.since);
    }

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
