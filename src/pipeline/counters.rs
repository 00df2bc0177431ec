//! What a route counts: messages received, sent, filtered, failed, dead-lettered, dropped,
//! spooled, and how long each sink took to confirm. The admin listener reads these atomics at
//! scrape time; a reload that restarts a route's worker keeps them, so counters never go back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

/// What happened to a route's messages.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Taken from the queue.
    pub received: AtomicU64,
    /// Published, counted once per sink.
    pub sent: AtomicU64,
    /// Left out by `match:`, the filter, or a transform that yielded nothing.
    pub filtered: AtomicU64,
    /// Could not be mapped or published: not JSON, jq error, bad subject, rejected by a sink.
    pub failed: AtomicU64,
    /// Of the failed, how many the dead-letter sink took.
    pub dead_lettered: AtomicU64,
    /// Publishes the loop guard left out: the message had already been on that connection.
    pub echoes: AtomicU64,
    /// Dropped after `loop_guard.max_hops` ferry hops.
    pub looped: AtomicU64,
    /// Messages whose `traceparent` was malformed, sent on with a new trace instead.
    pub traces_replaced: AtomicU64,
    /// Publishes tried again after their sink failed to take or confirm them (unavailable, no
    /// confirmation in time, busy). What failed may still have reached the far side.
    pub retried: AtomicU64,
    /// Publishes that went to a sink's spool (the sink was unreachable, or its spool not empty).
    pub spooled: AtomicU64,
    /// Of the spooled, how many were forwarded to their sink since (also counted in `sent`).
    pub forwarded: AtomicU64,
    /// Messages taken from the queue whose source is not confirmed yet (being delivered, or
    /// waiting for the spool's fsync). With the queue's depth, the route's pending acks.
    pub unconfirmed: AtomicU64,
    /// Bytes the route's spools hold now, shared with the spools themselves (their
    /// `max_bytes` applies to this sum).
    pub spool_bytes: Arc<AtomicU64>,
    /// Damaged spool records set aside (to `.damaged` files) and skipped.
    pub spool_damaged: AtomicU64,
    /// A request route's requests made, replies handed back, requests that got no reply in
    /// time, and replies that came after that (dropped).
    pub requests: AtomicU64,
    pub replies: AtomicU64,
    pub timeouts: AtomicU64,
    pub late_replies: AtomicU64,
    /// How long each sink took to confirm the publishes it took (the dead-letter sink's are
    /// not counted here); a histogram's count is that sink's messages sent.
    pub sink_latency: SinkLatency,
}

/// The sink latency histograms' upper bounds, in seconds: 100 µs (a local broker) to 10 s
/// (an HTTP endpoint at its timeout).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram per sink of a route, by the sink's connection name (two sinks of a
/// route on one connection share one).
#[derive(Debug, Default)]
pub struct SinkLatency(RwLock<Vec<(String, Arc<SinkTiming>)>>);

/// One sink's confirmed publishes and how long each took.
#[derive(Debug)]
pub struct SinkTiming {
    /// Publishes the sink confirmed: the histogram's count.
    pub sent: AtomicU64,
    /// Seconds per confirmed publish, in [`LATENCY_BUCKETS`].
    pub seconds: Histogram,
}

impl SinkTiming {
    fn observe(&self, seconds: f64) {
        self.seconds.observe(seconds);
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
}

impl SinkLatency {
    /// Records one confirmed publish on the sink on connection `sink`.
    pub fn observe(&self, sink: &str, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some((_, timing)) = self
            .0
            .read()
            .expect("latency lock")
            .iter()
            .find(|(name, _)| name == sink)
        {
            timing.observe(seconds);
            return;
        }
        let mut sinks = self.0.write().expect("latency lock");
        match sinks.iter().find(|(name, _)| name == sink) {
            Some((_, timing)) => timing.observe(seconds),
            None => {
                let timing = Arc::new(SinkTiming {
                    sent: AtomicU64::new(0),
                    seconds: Histogram::new(LATENCY_BUCKETS),
                });
                timing.observe(seconds);
                sinks.push((sink.to_string(), timing));
            }
        }
    }

    /// Each sink's timing, in the order their first publish came.
    pub fn sinks(&self) -> Vec<(String, Arc<SinkTiming>)> {
        self.0.read().expect("latency lock").clone()
    }
}
