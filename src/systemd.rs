//! The systemd service notification protocol (sd_notify(3)), as `ferry run` speaks it.
//!
//! systemd starts a `Type=notify` service with `NOTIFY_SOCKET` naming a datagram socket; the
//! service tells it, one datagram per state change, that it is ready (`READY=1`), reloading
//! (`RELOADING=1`), stopping (`STOPPING=1`), alive (`WATCHDOG=1`), and what it is doing
//! (`STATUS=...`, shown by `systemctl status`). Without `NOTIFY_SOCKET` (ferry run by hand, in
//! a container, under another supervisor) every function here does nothing.
//!
//! The datagrams are built and sent by the `sd-notify` crate; this module names the few
//! messages ferry sends and makes a failed send a logged warning, never an error: a daemon
//! that relays messages must not stop because its supervisor's socket went away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// `READY=1` with a status line: startup (or a reload) is over, the service is running.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC=` (the current `CLOCK_MONOTONIC` time, which systemd
/// 253 and later require with `RELOADING=1` to tell this reload from an earlier one; older
/// versions ignore it), and a status line. [`ready`] ends the reload.
pub fn reloading(status: &str) {
    let mut states = vec![NotifyState::Reloading];
    match NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        Err(e) => tracing::debug!("cannot read CLOCK_MONOTONIC for MONOTONIC_USEC: {e}"),
    }
    states.push(NotifyState::Status(status));
    send(&states);
}

/// `STOPPING=1` with a status line: shutdown has begun.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// `STATUS=...` alone: what `systemctl status` shows, without a state change.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `WATCHDOG=1`: the service is alive and well; systemd restarts it when these stop coming
/// for `WatchdogSec=`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often systemd expects [`watchdog`] pings at the latest: `WATCHDOG_USEC`, when systemd
/// set it for this process. `WATCHDOG_PID`, when set, must be ferry's own pid (the variable
/// may have been inherited from a parent that systemd watches); when absent, as
/// sd_watchdog_enabled(3) documents, the interval applies to whichever process reads it.
/// `None` when no watchdog is asked for, or `WATCHDOG_USEC` is 0 or not a number.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|interval| !interval.is_zero())
}

/// Sends one notification; a failure is logged once at warn (it would repeat with every
/// watchdog ping otherwise), and again at debug each time after.
fn send(states: &[NotifyState]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(states) {
        let socket = std::env::var_os("NOTIFY_SOCKET").unwrap_or_default();
        let what = states
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        if WARNED.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                "cannot notify systemd ({what}) on {}: {e}",
                socket.to_string_lossy()
            );
        } else {
            tracing::warn!(
                "cannot notify systemd ({what}) on NOTIFY_SOCKET={}: {e}; ferry keeps running, \
                 but systemd may consider it not ready or hung",
                socket.to_string_lossy()
            );
        }
    }
}

/// True when stderr is the journal stream systemd connected to this service: `JOURNAL_STREAM`
/// (`DEVICE:INODE`, set by systemd) names stderr's own device and inode. That check, which
/// systemd.exec(5) recommends, keeps a variable inherited by a child whose stderr goes
/// elsewhere (a terminal, a file) from switching the log format there.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(device), Ok(inode)) = (device.parse::<u64>(), inode.parse::<u64>()) else {
        return false;
    };
    stderr_device_inode() == Some((device, inode))
}

/// The device and inode numbers of the file, pipe or socket behind stderr.
fn stderr_device_inode() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    // fstat(2) through a duplicate of the descriptor: std offers it safely only on a File.
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let metadata = std::fs::File::from(fd).metadata().ok()?;
    Some((metadata.dev(), metadata.ino()))
}

/// Wraps a log line formatter for the journal: every line of an event (a config error spans
/// several) starts with its level as a syslog priority, `<3>` error, `<4>` warn, `<6>` info,
/// `<7>` debug and trace, which journald strips and stores as the entry's PRIORITY
/// (sd-daemon(3)), so `journalctl -p warning` finds ferry's warnings.
pub struct JournalPrefix<F>(pub F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPrefix<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        let priority = syslog_priority(event.metadata().level());
        for (i, part) in line.lines().enumerate() {
            // The level is padded to a common width (" INFO"); the journal needs no alignment.
            let part = if i == 0 { part.trim_start() } else { part };
            writeln!(writer, "<{priority}>{part}")?;
        }
        Ok(())
    }
}

/// The syslog priority (sd-daemon(3)'s `SD_ERR` ... `SD_DEBUG`) for a log level.
fn syslog_priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}
