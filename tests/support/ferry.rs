//! The ferry binary under test, run as a user would run it: `ferry run -c bridges.yaml`.
//!
//! The YAML goes into a temporary directory as `bridges.yaml`, and ferry runs with that
//! directory as its working directory, so its errors name the file `bridges.yaml` exactly as
//! in docs/operations.md. Its stderr and stdout are read by a background thread into a shared list of
//! lines (also echoed to the test's stderr as `[ferry] ...`, shown when a test fails), on which
//! tests wait for log lines such as `ferry ready` or `reconnected`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::watch;

use super::{millis, rss_kib, secs, send_signal};

/// Path of the ferry binary cargo built for these tests.
pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// Lines ferry printed so far, shared with the reader threads.
struct Log {
    lines: Mutex<Vec<String>>,
    /// Bumped on every new line and when a stream closes.
    changed: watch::Sender<usize>,
    /// Streams (stdout, stderr) still open.
    open: Mutex<usize>,
}

impl Log {
    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap();
        lines.push(line);
        let n = lines.len();
        drop(lines);
        self.changed.send_replace(n);
    }

    fn close_stream(&self) {
        *self.open.lock().unwrap() -= 1;
        self.changed.send_modify(|_| {});
    }

    fn closed(&self) -> bool {
        *self.open.lock().unwrap() == 0
    }
}

/// A running `ferry run` process; killed on drop.
pub struct Ferry {
    child: Child,
    pid: u32,
    log: Arc<Log>,
    status: Option<ExitStatus>,
    dir: TempDir,
    pub config: PathBuf,
    /// Everything ferry wrote on stdout, byte for byte, for [`Ferry::relay`] (which writes
    /// messages there); empty otherwise, where stdout lines go to the log.
    stdout: Arc<Mutex<Vec<u8>>>,
}

impl Ferry {
    /// Writes `yaml` to `bridges.yaml` in a fresh temporary directory and starts
    /// `ferry run -c bridges.yaml` there with `RUST_LOG=ferry=debug`.
    pub fn start(yaml: &str) -> Ferry {
        Self::start_with_env(yaml, &[])
    }

    /// [`Ferry::start`], then waits until it is ready ([`Self::wait_ready`]).
    pub async fn start_ready(yaml: &str) -> Ferry {
        let mut ferry = Ferry::start(yaml);
        ferry.wait_ready().await;
        ferry
    }

    /// Like [`Ferry::start`], with extra environment variables.
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Ferry {
        Self::launch(&["run", "-c", "bridges.yaml"], yaml, env, false, None)
    }

    /// Like [`Ferry::start`], with the process's open-file limit (soft and hard) at `nofile`,
    /// set by util-linux `prlimit`, which then executes ferry (the pid is ferry's).
    pub fn start_with_open_file_limit(yaml: &str, nofile: u64) -> Ferry {
        let limit = format!("--nofile={nofile}:{nofile}");
        let prlimit = super::require_binary("prlimit", "util-linux");
        let args = [
            limit.as_str(),
            "--",
            ferry_bin(),
            "run",
            "-c",
            "bridges.yaml",
        ];
        Self::launch_program(&prlimit, &args, yaml, &[], false, None)
    }

    /// Starts `ferry relay ARGS` (in a fresh temporary directory, `RUST_LOG=ferry=info` so that
    /// `ferry ready` shows), with `stdin` as its standard input (then closed; none: empty).
    /// Its stdout is kept byte for byte ([`Ferry::stdout`]).
    pub fn relay(args: &[&str], stdin: Option<Vec<u8>>) -> Ferry {
        let mut all = vec!["relay"];
        all.extend_from_slice(args);
        Self::launch(&all, "", &[("RUST_LOG", "ferry=info")], false, Some(stdin))
    }

    /// What ferry wrote on stdout so far (for [`Ferry::relay`]).
    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    /// Like [`Ferry::start_with_env`], with stderr connected the way systemd connects a
    /// service to the journal, as far as ferry can tell: `JOURNAL_STREAM` names the device and
    /// inode of the pipe its stderr is (systemd uses a socket; ferry compares only the
    /// numbers). The test reads the lines from that pipe, `<N>` prefixes included.
    pub fn start_as_journal_stream(yaml: &str, env: &[(&str, &str)]) -> Ferry {
        Self::launch(&["run", "-c", "bridges.yaml"], yaml, env, true, None)
    }

    /// `relay_stdin`: a relay, fed this standard input; its stdout is kept raw.
    fn launch(
        args: &[&str],
        yaml: &str,
        env: &[(&str, &str)],
        journal: bool,
        relay_stdin: Option<Option<Vec<u8>>>,
    ) -> Ferry {
        Self::launch_program(
            Path::new(ferry_bin()),
            args,
            yaml,
            env,
            journal,
            relay_stdin,
        )
    }

    /// [`Ferry::launch`] through `program` (ferry itself, or a wrapper that executes it).
    fn launch_program(
        program: &Path,
        args: &[&str],
        yaml: &str,
        env: &[(&str, &str)],
        journal: bool,
        relay_stdin: Option<Option<Vec<u8>>>,
    ) -> Ferry {
        let dir = tempfile::Builder::new()
            .prefix("ferry-run-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("bridges.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(dir.path())
            .env("RUST_LOG", "ferry=debug")
            .env("NO_COLOR", "1")
            .stdin(match relay_stdin {
                Some(Some(_)) => Stdio::piped(),
                _ => Stdio::null(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let journal_reader = journal.then(|| {
            use std::os::fd::AsFd;
            use std::os::unix::fs::MetadataExt;
            let (reader, writer) = std::io::pipe().expect("create a pipe for ferry's stderr");
            let fd = writer.as_fd().try_clone_to_owned().unwrap();
            let stat = std::fs::File::from(fd).metadata().unwrap();
            command
                .env("JOURNAL_STREAM", format!("{}:{}", stat.dev(), stat.ino()))
                .stderr(Stdio::from(writer));
            reader
        });
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", ferry_bin()));
        // The parent's copy of the pipe's write end goes with the command, so the reader sees
        // the end of the stream when ferry exits.
        drop(command);
        let pid = child.id();
        let (changed, _) = watch::channel(0);
        let log = Arc::new(Log {
            lines: Mutex::new(Vec::new()),
            changed,
            open: Mutex::new(2),
        });
        match journal_reader {
            Some(reader) => spawn_reader(reader, log.clone(), "[ferry journal]"),
            None => spawn_reader(child.stderr.take().unwrap(), log.clone(), "[ferry]"),
        }
        let stdout = Arc::new(Mutex::new(Vec::new()));
        match &relay_stdin {
            None => spawn_reader(child.stdout.take().unwrap(), log.clone(), "[ferry stdout]"),
            Some(_) => {
                let (mut out, kept, log) =
                    (child.stdout.take().unwrap(), stdout.clone(), log.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = out.read(&mut buf) {
                        kept.lock().unwrap().extend_from_slice(&buf[..n]);
                        log.changed.send_modify(|_| {});
                    }
                    log.close_stream();
                });
            }
        }
        if let Some(Some(input)) = relay_stdin {
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(&input);
                // Dropped here: ferry sees the end of its input.
            });
        }
        eprintln!(
            "[harness] started ferry (pid {pid}) with {}",
            config.display()
        );
        Ferry {
            child,
            pid,
            log,
            status: None,
            dir,
            config,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The directory holding bridges.yaml (ferry's working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every line ferry printed so far (stderr and stdout, ANSI colours removed).
    pub fn lines(&self) -> Vec<String> {
        self.log.lines.lock().unwrap().clone()
    }

    /// Asserts that no line ferry printed so far contains `secret`.
    pub fn assert_never_logged(&self, secret: &str) {
        let leaked: Vec<String> = (self.lines().into_iter())
            .filter(|l| l.contains(secret))
            .collect();
        assert!(leaked.is_empty(), "a secret is in ferry's log: {leaked:?}");
    }

    /// The number of lines printed so far: pass it to the `*_since` waits to look only at
    /// what comes after an action (e.g. `reconnected` after a broker restart).
    pub fn mark(&self) -> usize {
        self.log.lines.lock().unwrap().len()
    }

    /// Waits for `ferry ready` (every connection up and subscribed), 30 s at most.
    pub async fn wait_ready(&mut self) -> String {
        self.wait_for_line("ferry ready", secs(30)).await
    }

    /// Waits until a line containing `needle` appears; panics after `timeout`, or as soon as
    /// ferry exits without printing it, with ferry's last lines.
    pub async fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line_since(0, needle, timeout).await
    }

    /// [`Self::wait_for_line`], looking only at lines printed after `mark`.
    pub async fn wait_for_line_since(
        &mut self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> String {
        let what = format!("a line containing `{needle}`");
        self.wait_for_match_since(mark, &what, |l| l.contains(needle), timeout)
            .await
    }

    /// Waits until a line printed after `mark` satisfies `pred` (`what` describes it).
    pub async fn wait_for_match_since(
        &mut self,
        mark: usize,
        what: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        match self.wait_for_match_or_exit(mark, what, pred, timeout).await {
            Some(line) => line,
            None => {
                let status = self.wait_exit(secs(5)).await;
                panic!(
                    "ferry exited ({status}) without printing {what}; its last lines:\n{}",
                    self.tail(40)
                );
            }
        }
    }

    /// Waits until a line printed after `mark` satisfies `pred` (`what` describes it), or
    /// ferry's output ends (it exited): `None`. Panics after `timeout`.
    pub async fn wait_for_match_or_exit(
        &mut self,
        mark: usize,
        what: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.log.changed.subscribe();
        let mut from = mark;
        loop {
            changed.borrow_and_update();
            {
                let lines = self.log.lines.lock().unwrap();
                if let Some(line) = lines.iter().skip(from).find(|l| pred(l)) {
                    return Some(line.clone());
                }
                from = from.max(lines.len());
            }
            if self.log.closed() {
                return None;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                panic!(
                    "ferry did not print {what} within {timeout:?}; its last lines:\n{}",
                    self.tail(40)
                );
            }
        }
    }

    /// The last `n` lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.log.lines.lock().unwrap();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(status);
                false
            }
            _ => true,
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`, `STOP`, `CONT`, ...).
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid, signal);
    }

    /// Kills ferry with SIGKILL, as a crash would, and waits until it is gone (10 s at most).
    pub async fn kill9(&mut self) {
        self.signal("KILL");
        self.wait_exit(secs(10)).await;
    }

    /// Waits (bounded) for the process to exit; panics with the last lines if it does not.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                // Let the reader threads pick up the last lines.
                let mut changed = self.log.changed.subscribe();
                let until = tokio::time::Instant::now() + secs(2);
                while !self.log.closed() {
                    if tokio::time::timeout_at(until, changed.changed())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                return self.status.unwrap();
            }
            if Instant::now() > deadline {
                panic!(
                    "ferry did not exit within {timeout:?}; its last lines:\n{}",
                    self.tail(40)
                );
            }
            tokio::time::sleep(millis(20)).await;
        }
    }

    /// SIGTERM, then waits (30 s at most) for ferry to exit and returns its exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        if self.is_running() {
            self.signal("TERM");
        }
        self.wait_exit(secs(30)).await
    }

    /// Resident memory in KiB (None once the process is gone).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn_reader(stream: impl Read + Send + 'static, log: Arc<Log>, prefix: &'static str) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = strip_ansi(&String::from_utf8_lossy(&buf));
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    eprintln!("{prefix} {line}");
                    log.push(line);
                }
            }
        }
        log.close_stream();
    });
}

/// Removes ANSI escape sequences (colours), in case ferry colours its log anyway.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// What a ferry command that ran to completion printed, and how it exited.
#[derive(Debug)]
pub struct Output {
    /// The exit code (None if a signal killed it).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout and stderr together, for assertions that do not care which one.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `ferry check -c bridges.yaml` on `yaml` (in a temporary directory, as the working
/// directory): exit code and output. 30 s at most.
pub fn ferry_check(yaml: &str) -> Output {
    ferry_command(&["check", "-c", "bridges.yaml"], yaml, secs(30))
}

/// `ferry run -c bridges.yaml` on a config that must be refused: waits (`timeout` at most)
/// for ferry to exit and returns what it printed. A ferry that keeps running is a failure.
pub fn ferry_run_until_exit(yaml: &str, timeout: Duration) -> Output {
    ferry_command(&["run", "-c", "bridges.yaml"], yaml, timeout)
}

/// Runs ferry with `args` in a temporary directory holding `yaml` as bridges.yaml.
pub fn ferry_command(args: &[&str], yaml: &str, timeout: Duration) -> Output {
    ferry_command_with_env(args, yaml, &[], timeout)
}

/// [`ferry_command`] with extra environment variables (the `${ENV}` a config names).
pub fn ferry_command_with_env(
    args: &[&str],
    yaml: &str,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let dir = tempfile::Builder::new()
        .prefix("ferry-cmd-")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("bridges.yaml"), yaml).unwrap();
    let mut child = Command::new(ferry_bin())
        .args(args)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", ferry_bin()));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
            panic!(
                "`ferry {}` did not exit within {timeout:?}; \
                 stderr:\n{stderr}",
                args.join(" ")
            );
        }
        std::thread::sleep(millis(10));
    };
    let stdout = strip_ansi(&String::from_utf8_lossy(&out_reader.join().unwrap()));
    let stderr = strip_ansi(&String::from_utf8_lossy(&err_reader.join().unwrap()));
    eprintln!(
        "[harness] `ferry {}` exited with {status}\n--- stdout\n{stdout}--- stderr\n{stderr}---",
        args.join(" ")
    );
    Output {
        code: status.code(),
        stdout,
        stderr,
    }
}
