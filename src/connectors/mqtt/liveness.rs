//! Noticing a connection that claims to be up but is not: a subscription the broker silently
//! dropped, a TCP connection that carries nothing and reports no error, a write that never
//! completes.
//!
//! Two timers, both kept by the event loop task outside the client's `poll` (so they fire even
//! while `poll` is stuck in a write):
//! - the liveness probe (connections with sources): every `interval`, ferry publishes a probe
//!   on a private topic it subscribes to; if it has not come back within `timeout`, the
//!   subscription or the connection is silent.
//! - the stall watchdog (every connection with a keep-alive): `poll` reports something at
//!   least once per keep-alive when the connection works (a PINGREQ goes out, a PINGRESP comes
//!   in); nothing for two keep-alives means the event loop is stuck on the network.
//!
//! Either way the event loop tears the network connection down and builds it again,
//! subscriptions included. Neither timer runs while the event loop waits out a backoff (it
//! does not poll then); it reads all the time otherwise, full routes included.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// Every ferry's default probe topics live here; messages on them never reach routes, so the
/// probes of another ferry sharing a subscription (`$share/...`) are not relayed either.
pub const PROBE_PREFIX: &str = "ferry/probe/";

/// The probe and the watchdog of one connection.
pub struct Liveness {
    probe: Option<Probe>,
    /// How long `poll` may stay silent while reading before the connection counts as stalled.
    stall_after: Option<Duration>,
    /// When `poll` last reported something, or when reading (re)started.
    last_progress: Instant,
}

struct Probe {
    topic: String,
    interval: Duration,
    timeout: Duration,
    /// When to publish the next probe.
    next_at: Instant,
    /// The probe on its way: its payload, and when it must be back.
    outstanding: Option<(Bytes, Instant)>,
    sent: u64,
}

/// What a timer asks of the event loop.
#[derive(Debug, PartialEq)]
pub enum Due {
    Nothing,
    /// Publish this probe (QoS 0) on `Liveness::probe_topic`.
    SendProbe(Bytes),
    /// Tear the connection down and build it again, for this reason.
    Dead(String),
}

impl Liveness {
    /// `probe`: topic, interval and timeout, for a connection with sources. `keep_alive`: the
    /// connection's, zero when off.
    pub fn new(probe: Option<(String, Duration, Duration)>, keep_alive: Duration) -> Self {
        let now = Instant::now();
        Liveness {
            probe: probe.map(|(topic, interval, timeout)| Probe {
                topic,
                interval,
                timeout,
                next_at: now + interval,
                outstanding: None,
                sent: 0,
            }),
            stall_after: (!keep_alive.is_zero()).then(|| keep_alive * 2),
            last_progress: now,
        }
    }

    /// How long the event loop may pause reading (its queue is full) and still send its
    /// keep-alive in time: a quarter of it, at most 1 s.
    pub fn max_pause(&self) -> Duration {
        let most = Duration::from_secs(1);
        self.stall_after.map_or(most, |after| (after / 8).min(most))
    }

    pub fn probe_topic(&self) -> Option<&str> {
        self.probe.as_ref().map(|p| p.topic.as_str())
    }

    /// Whether a message on `topic` is a probe (ours or another ferry's): never for routes.
    pub fn is_probe_topic(&self, topic: &str) -> bool {
        topic.starts_with(PROBE_PREFIX) || self.probe_topic() == Some(topic)
    }

    /// A message on the probe topic arrived.
    pub fn probe_came_back(&mut self, payload: &[u8]) {
        if let Some(probe) = &mut self.probe
            && probe
                .outstanding
                .as_ref()
                .is_some_and(|(p, _)| p == payload)
        {
            probe.outstanding = None;
        }
    }

    /// `poll` reported something, or went on past it (at `at`, which may be earlier than a
    /// progress already noted).
    pub fn progress(&mut self, at: Instant) {
        self.last_progress = self.last_progress.max(at);
    }

    /// The timers only run while the connection is up and the event loop reads: otherwise
    /// this (called every turn) keeps them at rest. `subscribed`: the probe's subscription is
    /// in place.
    pub fn wake_at(
        &mut self,
        now: Instant,
        up: bool,
        reading: bool,
        subscribed: bool,
    ) -> Option<Instant> {
        if !(up && reading) {
            self.last_progress = now;
        }
        let probing = up && reading && subscribed;
        let probe = match &mut self.probe {
            Some(probe) if probing => Some(match &probe.outstanding {
                Some((_, deadline)) => *deadline,
                None => probe.next_at,
            }),
            Some(probe) => {
                probe.outstanding = None;
                probe.next_at = probe.next_at.max(now + probe.interval);
                None
            }
            None => None,
        };
        let stall = match self.stall_after {
            Some(after) if up && reading => Some(self.last_progress + after),
            _ => None,
        };
        match (probe, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A timer from `wake_at` fired.
    pub fn due(&mut self, now: Instant) -> Due {
        if let Some(after) = self.stall_after
            && now >= self.last_progress + after
        {
            return Due::Dead(format!(
                "nothing sent or received for {after:?} (twice the keep-alive): the connection \
                 is stalled"
            ));
        }
        let Some(probe) = &mut self.probe else {
            return Due::Nothing;
        };
        if let Some((_, deadline)) = &probe.outstanding {
            if now >= *deadline {
                probe.outstanding = None;
                return Due::Dead(format!(
                    "the liveness probe on {:?} did not come back within {:?}: the subscription \
                     or the connection is silent",
                    probe.topic, probe.timeout
                ));
            }
            return Due::Nothing;
        }
        if now < probe.next_at {
            return Due::Nothing;
        }
        probe.sent += 1;
        let payload = Bytes::from(format!("{}:{}", std::process::id(), probe.sent));
        probe.outstanding = Some((payload.clone(), now + probe.timeout));
        probe.next_at = now + probe.interval;
        Due::SendProbe(payload)
    }

    /// The probe could not be queued (the client's request queue is full): try again next
    /// interval rather than count it lost.
    pub fn probe_not_sent(&mut self) {
        if let Some(probe) = &mut self.probe {
            probe.outstanding = None;
        }
    }

    /// A new network connection: the timers start from now.
    pub fn restart(&mut self, now: Instant) {
        self.last_progress = now;
        if let Some(probe) = &mut self.probe {
            probe.outstanding = None;
            probe.next_at = now + probe.interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn probing() -> (Liveness, Instant) {
        let live = Liveness::new(Some(("ferry/probe/t".into(), 30 * S, 10 * S)), 20 * S);
        let now = live.last_progress;
        (live, now)
    }

    #[test]
    fn a_probe_goes_out_every_interval_and_must_come_back() {
        let (mut live, t0) = probing();
        assert_eq!(live.wake_at(t0, true, true, true), Some(t0 + 30 * S));
        let Due::SendProbe(payload) = live.due(t0 + 30 * S) else {
            panic!("a probe is due");
        };
        live.progress(t0 + 30 * S);
        // Waiting for it: the deadline comes first.
        assert_eq!(
            live.wake_at(t0 + 30 * S, true, true, true),
            Some(t0 + 40 * S)
        );
        live.probe_came_back(b"someone else's");
        live.probe_came_back(&payload);
        live.progress(t0 + 31 * S);
        assert_eq!(
            live.wake_at(t0 + 31 * S, true, true, true),
            Some(t0 + 60 * S)
        );
        assert_eq!(live.due(t0 + 45 * S), Due::Nothing);
    }

    #[test]
    fn a_probe_that_does_not_come_back_declares_the_connection_dead() {
        let (mut live, t0) = probing();
        assert!(matches!(live.due(t0 + 30 * S), Due::SendProbe(_)));
        live.progress(t0 + 35 * S);
        let Due::Dead(why) = live.due(t0 + 40 * S) else {
            panic!("dead");
        };
        assert!(why.contains("did not come back within 10s"), "{why}");
    }

    #[test]
    fn a_silent_poll_while_reading_is_a_stall() {
        let mut live = Liveness::new(None, 15 * S);
        let t0 = live.last_progress;
        assert_eq!(live.wake_at(t0, true, true, false), Some(t0 + 30 * S));
        live.progress(t0 + 10 * S);
        assert_eq!(live.due(t0 + 30 * S), Due::Nothing);
        assert!(matches!(live.due(t0 + 40 * S), Due::Dead(_)));
    }

    #[test]
    fn the_timers_rest_while_the_event_loop_does_not_read() {
        let (mut live, t0) = probing();
        assert!(matches!(live.due(t0 + 30 * S), Due::SendProbe(_)));
        // The queue filled up: reading stops for a minute. No probe, no stall.
        assert_eq!(live.wake_at(t0 + 31 * S, true, false, true), None);
        assert_eq!(live.wake_at(t0 + 90 * S, true, false, true), None);
        // Reading again: the outstanding probe was dropped, the next one is an interval away,
        // and the watchdog counts from now.
        assert_eq!(
            live.wake_at(t0 + 91 * S, true, true, true),
            Some(t0 + 120 * S)
        );
        assert_eq!(live.due(t0 + 100 * S), Due::Nothing);
    }

    #[test]
    fn nothing_runs_without_a_keep_alive_or_a_probe() {
        let mut live = Liveness::new(None, Duration::ZERO);
        let t0 = live.last_progress;
        assert_eq!(live.wake_at(t0, true, true, true), None);
        assert_eq!(live.due(t0 + 3600 * S), Due::Nothing);
    }

    #[test]
    fn probe_topics_are_recognised() {
        let (live, _) = probing();
        assert!(live.is_probe_topic("ferry/probe/t"));
        assert!(live.is_probe_topic("ferry/probe/another-ferry"));
        assert!(!live.is_probe_topic("ferry/probes"));
        let custom = Liveness::new(Some(("health/x".into(), S, S)), S);
        assert!(custom.is_probe_topic("health/x"));
    }
}
