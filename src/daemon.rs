//! `ferry run`: the daemon loop around a [`Pipeline`], and what it tells systemd.
//!
//! 1. Start the pipeline (every connection and route).
//! 2. Wait until every connection is up, or `startup_timeout` passed (then warn, naming the
//!    connections that are not up), and send `READY=1`. Until then a SIGTERM stops at once.
//! 3. While it runs, a watchdog task pings systemd (`WATCHDOG=1`) at half of `WatchdogSec=`,
//!    but only while the pipeline says it is healthy, so systemd restarts a ferry whose
//!    supervisor died while the process lives on.
//! 4. SIGHUP reloads: `RELOADING=1`, read and validate the file, apply it or keep the old
//!    configuration running, `READY=1`.
//! 5. SIGINT or SIGTERM: `STOPPING=1`, then the pipeline drains and shuts down.

use std::path::Path;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::admin::AdminListener;
use crate::config::Config;
use crate::contracts::supervisor::{self, Owner};
use crate::pipeline::{Health, Pipeline};
use crate::systemd;

/// Runs ferry until SIGINT or SIGTERM, on the configuration `config` read from `path` (read
/// again on every SIGHUP). `Err` when the pipeline cannot start (a taken admin port, a spool
/// directory ferry may not write): `ferry run` then exits 1.
pub async fn run(path: &Path, config: Config) -> anyhow::Result<()> {
    // Before anything else: SIGHUP's default action ends the process, and a reload asked
    // for while ferry starts must not kill it.
    let mut signals = Signals::install()?;

    let mut pipeline = Pipeline::start(&config, AdminListener::start)?;
    // The pipeline keeps its own copy (its routes shared with this one), which reloads replace:
    // this one would hold the first routes for as long as ferry runs.
    let startup_timeout = config.startup_timeout;
    drop(config);
    let stop_watchdog = CancellationToken::new();
    if let Some(interval) = systemd::watchdog_interval() {
        // From the start, not from READY: systemd's watchdog runs from the moment it started
        // the process, and `startup_timeout` may be longer than `WatchdogSec=`.
        let health = pipeline.health();
        let watchdog_tasks = pipeline
            .supervisor()
            .run_of(Owner::Ferry, &Default::default())
            .tasks(stop_watchdog.clone());
        let stop = stop_watchdog.clone();
        watchdog_tasks.spawn_restarting("systemd watchdog", move || {
            watchdog(health.clone(), interval, stop.clone())
        });
    }
    let _stop_watchdog = stop_watchdog.drop_guard();

    // Startup: wait for every connection (bounded). A SIGHUP meanwhile is remembered and done
    // once ferry is ready: a reload replaces part of the pipeline that is starting.
    let deadline = tokio::time::Instant::now() + startup_timeout;
    let mut reload_asked = false;
    loop {
        let mut failed = None;
        tokio::select! {
            biased;
            event = signals.next() => match event {
                Event::Stop => {
                    stop(pipeline).await;
                    return Ok(());
                }
                Event::Reload => reload_asked = true,
            },
            owners = pipeline.failed() => failed = Some(owners),
            up = tokio::time::timeout_at(deadline, pipeline.ready()) => {
                if up.is_err() {
                    tracing::warn!(
                        "not every connection is up after startup_timeout ({}); ready anyway, \
                         and the routes over these connections wait for them: {}",
                        humantime::format_duration(startup_timeout),
                        pipeline.not_up().join(", ")
                    );
                }
                break;
            }
        }
        if let Some(owners) = failed {
            pipeline.recover(owners).await;
        }
    }
    systemd::ready(&ready_status(&pipeline));

    loop {
        if !reload_asked {
            let owners = tokio::select! {
                biased;
                event = signals.next() => match event {
                    Event::Stop => break,
                    Event::Reload => None,
                },
                owners = pipeline.failed() => Some(owners),
            };
            if let Some(owners) = owners {
                // A task failed and its backoff passed: restart what it belongs to.
                pipeline.recover(owners).await;
                continue;
            }
        }
        reload_asked = false;
        // SIGHUPs that arrive while this reload runs are kept by the signal stream as one
        // pending signal: the next turn of the loop makes exactly one more reload of them.
        reload(path, &mut pipeline).await;
    }
    stop(pipeline).await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM, for commands that only stop on a signal (`ferry relay`).
/// The handlers are installed now, so a signal that comes before the first poll still counts.
pub fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut signals = Signals::install()?;
    Ok(async move {
        while let Event::Reload = signals.next().await {
            tracing::debug!("SIGHUP ignored: a relay has no file to re-read");
        }
    })
}

/// What a signal asks the daemon to do.
enum Event {
    /// SIGINT or SIGTERM.
    Stop,
    /// SIGHUP.
    Reload,
}

/// The signals the daemon acts on, registered once, before the pipeline starts.
struct Signals {
    hangup: Signal,
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| anyhow::anyhow!("cannot install the {name} handler: {e}"))
        };
        Ok(Signals {
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// The next signal; a stop wins over a reload that is pending at the same time.
    async fn next(&mut self) -> Event {
        tokio::select! {
            biased;
            _ = self.terminate.recv() => {
                tracing::info!("SIGTERM received");
                Event::Stop
            }
            _ = self.interrupt.recv() => {
                tracing::info!("SIGINT received");
                Event::Stop
            }
            _ = self.hangup.recv() => Event::Reload,
        }
    }
}

/// `STOPPING=1`, then the pipeline's own shutdown (drain within `shutdown_timeout`).
async fn stop(pipeline: Pipeline) {
    systemd::stopping("shutting down: draining queued messages");
    pipeline.shutdown().await;
}

/// One reload: `RELOADING=1`, read and validate the file, apply it if it is good, keep the
/// running configuration if it is not, `READY=1` either way (ferry is running).
async fn reload(path: &Path, pipeline: &mut Pipeline) {
    systemd::reloading(&format!("reloading {}", path.display()));
    tracing::info!("SIGHUP: reloading {}", path.display());
    // Reading the file (and `${file:...}` secrets) is blocking I/O; keep it off the runtime's
    // worker threads, which carry the routes.
    let owned = path.to_path_buf();
    let loaded = supervisor::blocking(move || crate::config::load(&owned)).await;
    let status = match loaded {
        Ok(Ok(config)) => {
            let summary = pipeline.reload(config).await;
            tracing::info!("reloaded {}: {summary}", path.display());
            format!("reloaded; {}", ready_status(pipeline))
        }
        Ok(Err(errors)) => {
            let n = errors.errors.len();
            tracing::error!(
                "{errors}\nreload refused: {n} error{} in {}; the previous configuration keeps \
                 running unchanged",
                if n == 1 { "" } else { "s" },
                errors.file
            );
            format!(
                "reload refused ({n} error{} in {}); running the previous configuration",
                if n == 1 { "" } else { "s" },
                path.display()
            )
        }
        Err(e) => {
            tracing::error!(
                "reload failed ({e}); the previous configuration keeps running unchanged"
            );
            "reload failed; running the previous configuration".to_string()
        }
    };
    systemd::ready(&status);
}

/// The short line `systemctl status` shows while ferry runs.
fn ready_status(pipeline: &Pipeline) -> String {
    let routes = pipeline.route_count();
    let not_up = pipeline.not_up();
    if not_up.is_empty() {
        format!("relaying {routes} route(s); every connection is up")
    } else {
        format!("relaying {routes} route(s); not up: {}", not_up.join(", "))
    }
}

/// Pings systemd's watchdog every half `interval` while `health` says the pipeline is healthy.
async fn watchdog(health: Health, interval: Duration, stop: CancellationToken) {
    tracing::debug!(
        "systemd watchdog: pinging every {:?} (WatchdogSec={:?})",
        interval / 2,
        interval
    );
    keep_alive(move || health.check(), systemd::watchdog, interval, stop).await;
}

/// Every half `interval`, `ping`s if `check` passes; logs once when the pings stop (and why)
/// and once when they resume, rather than at every tick. Separate from [`watchdog`] so that
/// its logic can be tested without systemd.
async fn keep_alive(
    check: impl Fn() -> Result<(), String>,
    ping: impl Fn(),
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match check() {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("healthy again: the systemd watchdog pings resume");
                    systemd::status("healthy again");
                }
                ping();
            }
            Err(why) => {
                if !failing {
                    tracing::error!(
                        "unhealthy: {why}; the systemd watchdog pings stop, so systemd restarts \
                         ferry after WatchdogSec={}",
                        humantime::format_duration(interval)
                    );
                    systemd::status(&format!("unhealthy: {why}"));
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::mpsc;

    #[derive(Debug, PartialEq)]
    enum Seen {
        /// The health check ran and passed (`true`) or failed.
        Checked(bool),
        Pinged,
    }

    async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("the watchdog ticks every 10 ms")
            .unwrap()
    }

    /// The watchdog pings only right after a passing check, never while the check fails, and
    /// resumes when it passes again.
    #[tokio::test]
    async fn keep_alive_pings_only_while_healthy() {
        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, mut seen) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_alive(
            {
                let healthy = healthy.clone();
                let tx = tx.clone();
                move || {
                    let ok = healthy.load(Ordering::SeqCst);
                    let _ = tx.send(Seen::Checked(ok));
                    if ok {
                        Ok(())
                    } else {
                        Err("route worker ended".to_string())
                    }
                }
            },
            move || {
                let _ = tx.send(Seen::Pinged);
            },
            Duration::from_millis(20),
            stop.clone(),
        ));
        let mut last_check = None;
        let mut pings = 0;
        let mut failed_checks = 0;
        let mut pings_after_recovery = 0;
        while pings_after_recovery < 2 {
            match next(&mut seen).await {
                Seen::Checked(ok) => {
                    last_check = Some(ok);
                    if !ok {
                        failed_checks += 1;
                    }
                }
                Seen::Pinged => {
                    assert_eq!(last_check, Some(true), "a ping without a passing check");
                    pings += 1;
                    if failed_checks >= 3 {
                        pings_after_recovery += 1;
                    }
                }
            }
            if pings == 3 && failed_checks == 0 {
                healthy.store(false, Ordering::SeqCst);
            }
            if failed_checks == 3 {
                healthy.store(true, Ordering::SeqCst);
            }
        }
        stop.cancel();
        task.await.unwrap();
    }
}
