//! The integration-test harness: real brokers, a real ferry process, and real peers.
//!
//! Every integration test file pulls this in with `mod support;`. Nothing here is a mock:
//! - [`Mosquitto`] and [`NatsServer`] run the real broker binaries on free loopback ports,
//!   each in its own temporary directory, and can be killed (`kill -9`), restarted on the same
//!   ports, paused (`SIGSTOP`) and resumed (`SIGCONT`); they, nginx and PocketBase all run
//!   as a [`ServerProcess`], tied to the test process so none outlives it;
//! - [`TestPki`] makes a CA, a server certificate signed by it and an unrelated second CA;
//! - [`Ferry`] runs the ferry binary built by cargo on a YAML file and watches its log;
//! - [`MqttPeer`] and [`NatsPeer`] are the test's own clients, publishing and collecting
//!   messages into an [`Inbox`] (or, for JetStream, reading a whole stream back), and
//!   [`Tally`] counts what arrived of a numbered load (lost, duplicated, reordered);
//! - [`Scenario`] starts the brokers a test names, and ferry on routes between them, so a
//!   test states only its routes and what it checks;
//! - [`Load`] drives a numbered load through ferry, the publisher held to a window, and
//!   records which subject each message came on, for tests that kill an instance under load;
//! - [`NatsOutage`] runs a spooled MQTT → NATS route through a nats-server crash, counting
//!   what reached NATS in a JetStream stream;
//! - [`parse_exposition`] reads `/metrics` with the official Prometheus parsers;
//! - [`TcpProxy`] sits between ferry and a broker and can stop forwarding without closing;
//! - [`Nchan`] (nginx + nchan) and [`PocketBase`] are real SSE servers, [`WebhookServer`] a
//!   recording HTTP receiver with scripted answers, [`SseClient`] a real `curl` subscriber
//!   with a WHATWG SSE parser, and [`RestdbFake`] and [`MigratoryDataFake`] the two
//!   hand-written fakes (restdb.io is a hosted service, MigratoryData a commercial server;
//!   restdb.rs and migratorydata.rs say what documentation each follows).
//!
//! Waiting is always bounded and always on an event (a server's own socket listens on its
//! port, a log line appears, a SUBACK or a probe message arrives); a wait that runs out panics
//! and says what did not happen.

#![allow(dead_code)]

// First, so its `derefs_to_process!` macro is visible in the modules after it.
#[macro_use]
mod process;
mod brokers;
mod certs;
mod ferry;
mod load;
mod migratorydata;
mod nats_outage;
mod peers;
mod prometheus;
mod proxy;
mod restdb;
mod scenario;
mod servers;

#[allow(unused_imports)]
pub use brokers::*;
#[allow(unused_imports)]
pub use certs::*;
#[allow(unused_imports)]
pub use ferry::*;
#[allow(unused_imports)]
pub use load::*;
#[allow(unused_imports)]
pub use migratorydata::*;
#[allow(unused_imports)]
pub use nats_outage::*;
#[allow(unused_imports)]
pub use peers::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use prometheus::*;
#[allow(unused_imports)]
pub use proxy::*;
#[allow(unused_imports)]
pub use restdb::*;
#[allow(unused_imports)]
pub use scenario::*;
#[allow(unused_imports)]
pub use servers::*;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shorthand for durations in seconds.
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Shorthand for durations in milliseconds.
pub const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A loopback TCP port nobody listens on right now (the kernel picks it: we bind to port 0).
/// Ports handed out by this process are never handed out twice.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap();
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        if given.insert(port) {
            return port;
        }
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
///
/// A connection whose local end is the port itself does not count: when nothing listens yet
/// and the kernel happens to pick the same ephemeral port for the client side, TCP connects
/// the socket to itself ("self-connect"), which looks like success.
pub fn port_accepts(port: u16) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    match TcpStream::connect_timeout(&addr, millis(200)) {
        Ok(stream) => stream
            .local_addr()
            .map(|local| local != addr)
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Finds a program on PATH or in the sbin directories Debian installs brokers into; panics
/// with what to install when it is missing (a missing broker is a failure, never a skip).
pub fn require_binary(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for extra in [
        "/usr/sbin",
        "/usr/local/sbin",
        "/sbin",
        "/usr/local/bin",
        "/usr/bin",
    ] {
        dirs.push(PathBuf::from(extra));
    }
    for dir in dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!(
        "`{name}` not found on PATH or in /usr/sbin: the integration tests need a real {name}. \
         Run scripts/setup, or install it with \
         `apt-get install -y {package}` (Debian/Ubuntu)."
    );
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// True when the tests run as root: then mosquitto would switch to the `mosquitto` user and
/// nginx run its workers as `nobody`, who may not read the test's private temporary files, so
/// their configs say to stay root. `id -u` avoids libc.
fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Sends a signal (`"TERM"`, `"KILL"`, `"STOP"`, `"CONT"`, ...) to a process with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
    if signal == "STOP" {
        // kill(2) returns before the process has stopped: wait until every thread has, so a
        // test acting right after `pause()` really acts on a paused process.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "process {pid} did not stop within 10s of SIGSTOP"
            );
            std::thread::sleep(millis(1));
        }
    }
}

/// True when every thread of `pid` is in state `T` (stopped) per /proc/PID/task/*/stat.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            // The state follows the command name, which is in parentheses.
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(true) // a thread that vanished is not running either
    })
}

/// Resident memory of a process in KiB, from /proc/PID/status (None once it is gone).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's resident memory every 50 ms in the background, keeping the peak.
pub struct RssSampler {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `pid` (needs a tokio runtime).
    pub fn start(pid: u32) -> RssSampler {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            while let Some(kib) = rss_kib(pid) {
                p.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(millis(50)).await;
            }
        });
        RssSampler { peak, task }
    }

    /// The highest resident memory seen so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The last `n` lines of a text file (for failure messages).
pub(crate) fn tail_file(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// 1-based (line, column) of the `occurrence`-th (0-based) appearance of `needle` in `text`:
/// used to check the positions ferry reports in its config errors.
pub fn position_of(text: &str, needle: &str, occurrence: usize) -> (usize, usize) {
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(at) = line[from..].find(needle) {
            if seen == occurrence {
                return (i + 1, line[..from + at].chars().count() + 1);
            }
            seen += 1;
            from += at + needle.len();
        }
    }
    panic!("`{needle}` (occurrence {occurrence}) is not in the text:\n{text}");
}

/// `yaml` with each placeholder (`@MQTT@`, `@NATS@`, ...) replaced by its value. Placeholders
/// instead of `format!` keep the YAML (and its `{{ templates }}`) readable.
pub fn fill(yaml: &str, values: &[(&str, String)]) -> String {
    let mut out = yaml.to_string();
    for (placeholder, value) in values {
        assert!(
            out.contains(placeholder),
            "{placeholder} is not in the YAML"
        );
        out = out.replace(placeholder, value);
    }
    out
}
