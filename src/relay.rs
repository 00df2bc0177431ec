//! `ferry relay FROM TO`: a one-shot relay from the shell. The route `config::endpoints` builds from
//! the two URLs runs on the same [`Pipeline`] as `ferry run`; this module only decides when it
//! ends (the input ended, `--count` messages were relayed, `--timeout` passed, or SIGINT /
//! SIGTERM), shows progress on a terminal, and sums up.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::admin::AdminListener;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::pipeline::route::RouteCounters;

/// How long a relay waits for its connections before it gives up (exit 1): a one-shot command
/// should say at once that a broker is not there, not retry like a daemon.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// When a relay ends, besides the end of its input.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Stop after this many messages were relayed (also set on the route as `stop_after`, so
    /// no more are taken).
    pub count: Option<u64>,
    /// Stop after this long.
    pub timeout: Option<Duration>,
    /// Show a live counter on standard error (only when it is a terminal).
    pub progress: bool,
}

/// Why a relay ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// `--count` messages were relayed.
    Count,
    /// The source ended (standard input reached its end).
    InputEnded,
    /// `--timeout` passed.
    Timeout,
    /// SIGINT or SIGTERM.
    Interrupted,
}

/// What a relay did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ended: Ended,
    /// Messages published to the sink.
    pub relayed: u64,
    pub received: u64,
    pub filtered: u64,
    /// Could not be mapped or published.
    pub failed: u64,
    /// Lines of standard input that were not messages (skipped, reported by line number).
    pub skipped: u64,
    pub elapsed: Duration,
    /// `--count`, when given.
    pub count: Option<u64>,
}

impl Outcome {
    /// Whether the relay did what was asked: no message failed, and `--count` (if given) was
    /// reached unless the input ended or the user interrupted first.
    pub fn succeeded(&self) -> bool {
        let short =
            matches!(self.count, Some(n) if self.relayed < n) && self.ended == Ended::Timeout;
        self.failed == 0 && self.skipped == 0 && !short
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            self.relayed as f64 / seconds
        } else {
            0.0
        };
        let why = match self.ended {
            Ended::Count => "count reached",
            Ended::InputEnded => "input ended",
            Ended::Timeout => "timeout",
            Ended::Interrupted => "interrupted",
        };
        write!(f, "ferry relay: {} relayed", self.relayed)?;
        if let Some(n) = self.count {
            write!(f, " of {n}")?;
        }
        write!(
            f,
            ", {} received, {} filtered, {} failed",
            self.received, self.filtered, self.failed
        )?;
        if self.skipped > 0 {
            write!(f, ", {} input line(s) skipped", self.skipped)?;
        }
        write!(f, " in {seconds:.1}s ({rate:.0} msg/s); {why}")
    }
}

/// Runs the relay `config` describes (one route) until it ends; then shuts the pipeline down
/// as `ferry run` does (what is queued is delivered within `shutdown_timeout`). `Err` when the
/// relay could not start or a connection did not come up within 10 s.
pub async fn run(config: &Config, limits: &Limits) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut pipeline = Pipeline::start(config, AdminListener::start)?;
    let mut stop = std::pin::pin!(crate::daemon::stop_signal()?);
    let connect_within = limits
        .timeout
        .map_or(CONNECT_WITHIN, |t| t.min(CONNECT_WITHIN));
    tokio::select! {
        up = tokio::time::timeout(connect_within, pipeline.ready()) => {
            if up.is_err() {
                let down = pipeline.not_up().join(", ");
                pipeline.shutdown().await;
                anyhow::bail!("cannot connect within {connect_within:?}: {down}");
            }
        }
        _ = &mut stop => {
            pipeline.shutdown().await;
            return Ok(outcome(&[], Ended::Interrupted, started, limits));
        }
    }
    let counters: Vec<_> = (pipeline.observed().view().routes.iter())
        .map(|r| r.counters.clone())
        .collect();
    let progress = limits.progress.then(|| Progress::start(limits.count));
    let deadline = limits
        .timeout
        .map(|t| tokio::time::Instant::from_std(started + t));
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    let ended = loop {
        let mut failed = None;
        tokio::select! {
            owners = pipeline.failed() => failed = Some(owners),
            _ = pipeline.finished() => {
                let relayed = sum(&counters, |c| &c.sent);
                break match limits.count {
                    Some(n) if relayed >= n => Ended::Count,
                    _ => Ended::InputEnded,
                };
            }
            _ = sleep_until(deadline) => break Ended::Timeout,
            _ = &mut stop => break Ended::Interrupted,
            _ = ticks.tick() => {
                if let Some(p) = &progress {
                    p.show(&counters, started);
                }
            }
        }
        if let Some(owners) = failed {
            pipeline.recover(owners).await;
        }
    };
    pipeline.shutdown().await;
    if let Some(p) = progress {
        p.finish();
    }
    Ok(outcome(&counters, ended, started, limits))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn sum(
    counters: &[std::sync::Arc<RouteCounters>],
    field: fn(&RouteCounters) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    counters
        .iter()
        .map(|c| field(c).load(Ordering::Relaxed))
        .sum()
}

fn outcome(
    counters: &[std::sync::Arc<RouteCounters>],
    ended: Ended,
    started: Instant,
    limits: &Limits,
) -> Outcome {
    Outcome {
        ended,
        relayed: sum(counters, |c| &c.sent),
        received: sum(counters, |c| &c.received),
        filtered: sum(counters, |c| &c.filtered),
        failed: sum(counters, |c| &c.failed),
        skipped: crate::connectors::stdio::skipped_lines(),
        elapsed: started.elapsed(),
        count: limits.count,
    }
}

/// The live counter on a terminal's standard error.
struct Progress(indicatif::ProgressBar);

impl Progress {
    fn start(count: Option<u64>) -> Progress {
        let bar = match count {
            Some(n) => indicatif::ProgressBar::new(n).with_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} relayed  {msg}")
                    .expect("a valid template"),
            ),
            None => indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template("{spinner} {pos} relayed  {msg}")
                    .expect("a valid template"),
            ),
        };
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        Progress(bar)
    }

    fn show(&self, counters: &[std::sync::Arc<RouteCounters>], started: Instant) {
        let relayed = sum(counters, |c| &c.sent);
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        self.0.set_position(relayed);
        self.0.set_message(format!(
            "{:.0} msg/s  {} filtered  {} errors",
            relayed as f64 / seconds,
            sum(counters, |c| &c.filtered),
            sum(counters, |c| &c.failed)
        ));
        self.0.tick();
    }

    fn finish(self) {
        self.0.finish_and_clear();
    }
}
