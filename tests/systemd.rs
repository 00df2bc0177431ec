//! ferry under systemd: the unit files pass `systemd-analyze verify` and score a low exposure
//! in `systemd-analyze security`; `ferry run` speaks the notify protocol (READY, WATCHDOG,
//! RELOADING, STOPPING, in that order) on the socket systemd would give it; and its log goes
//! to the journal with `<N>` priority prefixes and without timestamps.
//!
//! systemd is not PID 1 where these tests run, so the test itself plays systemd's part: it
//! binds the Unix datagram socket that `NOTIFY_SOCKET` names and reads what ferry sends.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;
use tempfile::TempDir;
use tokio::net::UnixDatagram;

/// One route on one mosquitto: `in/X` is relayed to `out/X`.
const RELAY: &str = r#"
startup_timeout: 20s
connections:
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-systemd-test }
routes:
  - name: relay
    from: { connection: mq, topic: "in/+", qos: 1 }
    to: { connection: mq, topic: "out/{{ topic[1] }}", qos: 1 }
"#;

/// The socket systemd listens on for a service's notifications, played by the test.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: TempDir,
    /// Every notification other than a lone `WATCHDOG=1`, in arrival order.
    states: Vec<String>,
    /// When each `WATCHDOG=1` arrived.
    pings: Vec<Instant>,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::Builder::new()
            .prefix("ferry-notify-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            path,
            _dir: dir,
            states: Vec::new(),
            pings: Vec::new(),
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The next datagram, or None after `timeout`.
    async fn recv(&mut self, timeout: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(timeout, self.socket.recv(&mut buf))
            .await
            .ok()?
            .expect("read the notify socket");
        let text = String::from_utf8(buf[..n].to_vec()).expect("notifications are UTF-8");
        if text == "WATCHDOG=1\n" {
            self.pings.push(Instant::now());
        } else {
            eprintln!("[notify] {}", text.trim_end().replace('\n', " | "));
            self.states.push(text.clone());
        }
        Some(text)
    }

    /// The next notification that is not a watchdog ping; panics after `timeout`, saying
    /// what was `expected`.
    async fn next_state(&mut self, expected: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some(text) if text != "WATCHDOG=1\n" => return text,
                Some(_) => {}
                None => panic!(
                    "no {expected} notification within {timeout:?}; notifications so far: {:?}",
                    self.states
                ),
            }
        }
    }

    /// Reads for `window`; returns how many watchdog pings arrived.
    async fn pings_during(&mut self, window: Duration) -> usize {
        let before = self.pings.len();
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || self.recv(left).await.is_none() {
                return self.pings.len() - before;
            }
        }
    }

    /// The first line of each state notification so far (`READY=1`, `RELOADING=1`, ...).
    fn state_names(&self) -> Vec<String> {
        self.states
            .iter()
            .map(|s| s.lines().next().unwrap_or_default().to_string())
            .collect()
    }
}

/// The value of `KEY=` in a notification.
fn field<'a>(notification: &'a str, key: &str) -> Option<&'a str> {
    notification
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn assert_state(notification: &str, state: &str) {
    assert_eq!(
        notification.lines().next(),
        Some(state),
        "expected {state} first in the notification {notification:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The unit files

/// A unit from systemd/ copied into a temporary directory under `name`, its `/usr/bin/ferry`
/// replaced by the ferry cargo built (verify checks that the program exists).
fn installed_unit(dir: &Path, source: &str, name: &str) -> PathBuf {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(source);
    let text = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("{source}: {e}"));
    assert!(
        text.contains("/usr/bin/ferry "),
        "{source} runs /usr/bin/ferry"
    );
    let path = dir.join(name);
    std::fs::write(
        &path,
        text.replace("/usr/bin/ferry ", &format!("{} ", ferry_bin())),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn systemd_analyze(args: &[&str], dir: &Path) -> (bool, String) {
    let program = require_binary("systemd-analyze", "systemd");
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_PAGER", "")
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("$ systemd-analyze {}\n{text}", args.join(" "));
    (out.status.success(), text)
}

/// Both units load without a single warning, and the sandbox they describe leaves ferry
/// little: `systemd-analyze security` rates the exposure below 2 (of 10; "OK").
#[test]
fn units_pass_systemd_analyze_verify_and_security() {
    let dir = tempfile::Builder::new()
        .prefix("ferry-units-")
        .tempdir()
        .unwrap();
    let units = [
        installed_unit(dir.path(), "ferry.service", "ferry.service"),
        // A template is checked through an instance, as systemctl would load it.
        installed_unit(dir.path(), "ferry@.service", "ferry@plant.service"),
    ];
    for unit in &units {
        let name = unit.file_name().unwrap().to_str().unwrap();
        let (ok, text) = systemd_analyze(&["verify", unit.to_str().unwrap()], dir.path());
        let about_ours: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(name) || l.contains(dir.path().to_str().unwrap()))
            .collect();
        assert!(
            ok && about_ours.is_empty(),
            "systemd-analyze verify {name} complained:\n{text}"
        );

        let (ok, text) = systemd_analyze(
            &["security", "--offline=yes", unit.to_str().unwrap()],
            dir.path(),
        );
        assert!(ok, "systemd-analyze security {name} failed:\n{text}");
        let overall = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no overall exposure level for {name}:\n{text}"));
        let score: f64 = overall
            .split(':')
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the score in {overall:?}"));
        println!("{name}: exposure {score} ({})", overall.trim());
        assert!(
            score < 2.0,
            "{name}: exposure {score} is too high (want below 2.0):\n{text}"
        );
    }

    // What the notify protocol test below relies on, and what keeps instances apart.
    let service = std::fs::read_to_string(&units[0]).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus=2",
        "StateDirectory=ferry\n",
        // The admin listener caps its connections at half the open-file limit; brokers'
        // reconnects need descriptors too.
        "LimitNOFILE=65536",
    ] {
        assert!(service.contains(line), "ferry.service lacks {line:?}");
    }
    let template = std::fs::read_to_string(&units[1]).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "StateDirectory=ferry/%i\n",
        "-c /etc/ferry/%i.yaml",
        "LimitNOFILE=65536",
    ] {
        assert!(template.contains(line), "ferry@.service lacks {line:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The notify protocol

/// The whole life of a ferry under systemd, as systemd sees it: READY once the connection is
/// up, WATCHDOG pings at half of WATCHDOG_USEC, RELOADING then READY on SIGHUP (also for a
/// bad file, which leaves the old configuration relaying), STOPPING on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_protocol_ready_watchdog_reload_stop_in_order() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let mut notify = NotifySocket::bind();
    let yaml = fill(RELAY, &[("@MQTT@", mosquitto.url())]);
    // No WATCHDOG_PID: systemd sets it to the service's pid, which a test cannot know before
    // the spawn; without it the interval applies to the process that reads it.
    let mut ferry = Ferry::start_with_env(
        &yaml,
        &[
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );

    let ready = notify.next_state("READY=1", secs(30)).await;
    assert_state(&ready, "READY=1");
    assert_eq!(
        field(&ready, "STATUS"),
        Some("relaying 1 route(s); every connection is up"),
        "READY=1 came before the connection was up: {ready:?}"
    );
    // ferry logs this when the connection is up, just before it sends READY=1.
    ferry.wait_ready().await;

    // 400 ms watchdog: a ping every 200 ms (half the interval, as sd_watchdog_enabled(3)
    // advises). The median gap is robust to the odd ping a busy machine delays.
    let from = notify.pings.len();
    let pings = notify.pings_during(millis(1_500)).await;
    assert!(
        pings >= 4,
        "only {pings} watchdog pings in 1.5 s with WATCHDOG_USEC=400000"
    );
    let mut gaps: Vec<Duration> = notify.pings[from..]
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        (millis(150)..=millis(300)).contains(&median),
        "watchdog pings every {median:?}; expected every 200 ms (half of WATCHDOG_USEC)"
    );

    // A reload of the same, good file.
    let mark = ferry.lines().len();
    ferry.signal("HUP");
    let reloading = notify.next_state("RELOADING=1", secs(10)).await;
    assert_state(&reloading, "RELOADING=1");
    let first_usec: u64 = field(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"));
    let ready = notify
        .next_state("READY=1 after the reload", secs(30))
        .await;
    assert_state(&ready, "READY=1");
    ferry
        .wait_for_line_since(mark, "reloaded bridges.yaml", secs(10))
        .await;

    // A reload of a bad file: refused, every error logged, the old routes keep running.
    std::fs::write(
        &ferry.config,
        yaml.replace(
            "connection: mq, topic: \"out",
            "connection: nowhere, topic: \"out",
        ),
    )
    .unwrap();
    let mark = ferry.lines().len();
    ferry.signal("HUP");
    let reloading = notify.next_state("RELOADING=1", secs(10)).await;
    assert_state(&reloading, "RELOADING=1");
    let second_usec: u64 = field(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"));
    assert!(
        second_usec > first_usec,
        "MONOTONIC_USEC must tell reloads apart: {first_usec} then {second_usec}"
    );
    let ready = notify
        .next_state("READY=1 after the refused reload", secs(30))
        .await;
    assert_state(&ready, "READY=1");
    assert!(
        field(&ready, "STATUS").is_some_and(|s| s.contains("reload refused")),
        "the status should say the reload was refused: {ready:?}"
    );
    ferry
        .wait_for_line_since(mark, "bridges.yaml:", secs(10))
        .await;
    let refused = ferry
        .wait_for_line_since(mark, "reload refused", secs(10))
        .await;
    assert!(
        refused.contains("previous configuration keeps running"),
        "{refused}"
    );
    assert!(
        ferry.is_running(),
        "a bad file on SIGHUP must not stop ferry"
    );

    let mut peer = MqttPeer::connect(&mosquitto.url()).await;
    peer.subscribe("out/#", 1).await;
    peer.publish("in/after-bad-reload", "still relaying", 1, false)
        .await;
    let got = peer
        .inbox
        .recv(secs(10))
        .await
        .expect("the old configuration should still relay after a refused reload");
    assert_eq!(
        (got.topic.as_str(), got.text().as_str()),
        ("out/after-bad-reload", "still relaying")
    );
    // The reloads did not stop the watchdog.
    assert!(
        notify.pings_during(millis(500)).await >= 1,
        "no watchdog ping after the reloads"
    );

    ferry.signal("TERM");
    let stopping = notify.next_state("STOPPING=1", secs(10)).await;
    assert_state(&stopping, "STOPPING=1");
    let status = ferry.wait_exit(secs(30)).await;
    assert!(status.success(), "ferry exited with {status} after SIGTERM");

    assert_eq!(
        notify.state_names(),
        [
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "STOPPING=1"
        ],
        "notifications out of order"
    );
}

/// A connection that does not come up does not keep ferry from being started: after
/// `startup_timeout` READY=1 comes anyway, and the log and the status name the connection.
/// A WATCHDOG_PID of another process means the watchdog is not ferry's: no pings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_startup_timeout_names_the_connection_that_is_not_up() {
    let mut notify = NotifySocket::bind();
    let yaml = absent_broker("ferry-systemd-absent");
    let started = Instant::now();
    let mut ferry = Ferry::start_with_env(
        &yaml,
        &[
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    let ready = notify.next_state("READY=1", secs(15)).await;
    let waited = started.elapsed();
    assert_state(&ready, "READY=1");
    assert!(
        waited >= millis(900),
        "READY=1 after {waited:?}, before startup_timeout (1s) passed"
    );
    let status = field(&ready, "STATUS").unwrap_or_default();
    assert!(
        status.contains("not up: plant"),
        "the status should name the connection that is not up: {status:?}"
    );
    let warning = ferry.wait_for_line("startup_timeout", secs(5)).await;
    assert!(
        warning.contains("WARN") && warning.contains("plant"),
        "the warning should name the connection: {warning}"
    );
    assert!(
        notify.pings.is_empty() && notify.pings_during(millis(600)).await == 0,
        "WATCHDOG_PID=1 is not ferry: it must not ping"
    );
    ferry.signal("TERM");
    let stopping = notify.next_state("STOPPING=1", secs(10)).await;
    assert_state(&stopping, "STOPPING=1");
    ferry.wait_exit(secs(30)).await;
}

// ---------------------------------------------------------------------------------------------
// The journal

/// Whether `line` starts with a timestamp as tracing-subscriber writes them
/// (`2025-01-31T12:34:56.789Z`), after an optional `<N>` prefix.
fn has_timestamp(line: &str) -> bool {
    let rest = line
        .get(3..)
        .filter(|_| line.starts_with('<'))
        .unwrap_or(line);
    let re = regex::Regex::new(r"^\s*\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}").unwrap();
    re.is_match(rest)
}

/// On the journal stream, each line carries its level as a `<N>` syslog prefix (so
/// `journalctl -p` filters work) and no timestamp (the journal keeps its own); a multi-line
/// error keeps the prefix on every line. Where JOURNAL_STREAM names another file, the log is
/// the usual one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_lines_carry_priority_prefixes_and_no_timestamps() {
    let yaml = absent_broker("ferry-journal-test");
    let mut ferry = Ferry::start_as_journal_stream(&yaml, &[]);
    let warning = ferry.wait_for_line("startup_timeout", secs(15)).await;
    assert!(
        warning.starts_with("<4>WARN "),
        "a warning is <4>: {warning}"
    );
    // The file goes bad; the reload is refused with a multi-line error.
    std::fs::write(&ferry.config, "connections: {}\nroutes:\n  - name: x\n").unwrap();
    let mark = ferry.lines().len();
    ferry.signal("HUP");
    let refused = ferry
        .wait_for_line_since(mark, "reload refused", secs(10))
        .await;
    assert!(refused.starts_with("<3>"), "an error is <3>: {refused}");
    let detail = ferry
        .wait_for_line_since(mark, "bridges.yaml:", secs(10))
        .await;
    assert!(
        detail.starts_with("<3>"),
        "every line of a multi-line error is <3>: {detail}"
    );
    ferry.terminate().await;
    let lines = ferry.lines();
    assert!(
        lines.iter().any(|l| l.starts_with("<6>")),
        "no info line (<6>) in:\n{}",
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.starts_with("<7>")),
        "no debug line (<7>) with RUST_LOG=ferry=debug in:\n{}",
        lines.join("\n")
    );
    let priority = regex::Regex::new(r"^<[3467]>").unwrap();
    for line in &lines {
        assert!(
            priority.is_match(line),
            "a journal line without a <N> prefix: {line:?}"
        );
        assert!(
            !has_timestamp(line),
            "a journal line with a timestamp: {line:?}"
        );
        assert!(
            !line.contains('\u{1b}'),
            "a journal line with colours: {line:?}"
        );
    }

    // JOURNAL_STREAM inherited from somewhere else (stderr is not that stream): the usual log.
    let mut ferry = Ferry::start_with_env(&yaml, &[("JOURNAL_STREAM", "0:0")]);
    let warning = ferry.wait_for_line("startup_timeout", secs(15)).await;
    assert!(
        !warning.starts_with('<') && has_timestamp(&warning),
        "with stderr not the journal stream, lines keep their timestamp and get no prefix: \
         {warning}"
    );
    ferry.terminate().await;
}

/// A config whose one MQTT connection (client id `client_id`) points at a free port where no
/// broker listens, with `startup_timeout: 1s`.
fn absent_broker(client_id: &str) -> String {
    fill(
        r#"
startup_timeout: 1s
connections:
  plant:
    mqtt: { url: "mqtt://127.0.0.1:@PORT@", client_id: @ID@ }
routes:
  - name: relay
    from: { connection: plant, topic: "in/+" }
    to: { connection: plant, topic: "out/{{ topic[1] }}" }
"#,
        &[
            ("@PORT@", free_port().to_string()),
            ("@ID@", client_id.to_string()),
        ],
    )
}
