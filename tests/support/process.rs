//! The one wrapper for every server process a test starts (mosquitto, nats-server, nginx with
//! nchan, PocketBase): started from files in its own temporary directory, its output in a log
//! file there, tied to the test process so that nothing outlives the test, and able to crash
//! (`kill -9`), come back on the same ports ([`ServerProcess::restart`]), stop gracefully and
//! stay down for a while ([`ServerProcess::stop`], [`ServerProcess::start_again`]), pause and
//! resume.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{millis, port_accepts, secs, send_signal, tail_file};

/// The shell wrapper that ties a process to the test process (see [`tied_command`]).
const TIE: &str = r#"exec 3<&0 </dev/null
( read _ <&3; kill -KILL 0 ) >/dev/null 2>&1 &
exec "$@" 3<&-"#;

/// `program args...` wrapped so that it cannot outlive the test process: `sh` puts a watcher
/// in the background that reads the child's stdin (a pipe from the test process, which must be
/// `Stdio::piped()` and kept open) and, when it reaches end of file, kills the whole process
/// group; then `sh` execs the program, which keeps the wrapper's pid. The watcher holds none
/// of the program's output pipes, so they end when the program does. The command starts a
/// process group of its own, so killing the group kills the program, whatever it forked
/// (nginx's workers) and the watcher, and nothing of the test's. The pipe ends when the test
/// drops it or dies in any way (even `kill -9`): no orphaned server is left behind.
pub fn tied_command(program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(TIE)
        .arg("sh")
        .arg(program)
        .stdin(Stdio::piped())
        .process_group(0);
    command
}

/// `kill -KILL -PGID`: the whole process group.
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Pids of the live (not zombie) processes in process group `pgid`, from /proc.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name in parentheses: state, ppid, pgrp, ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

/// When a freshly (re)started server counts as ready.
pub(crate) struct Readiness {
    /// Every port it listens on must accept TCP connections.
    pub ports: Vec<u16>,
    /// Then, for an HTTP server, `GET path` on the first port must answer 200 (a listening
    /// socket is not yet a server that answers).
    pub http_health: Option<&'static str>,
    /// How long each of those may take before the start fails, with the log.
    pub within: Duration,
}

/// A server process started with [`tied_command`] from a config in its own temporary
/// directory (also its working directory), with its output in a log file there. Every server
/// wrapper derefs to it for what they share: `pid`, `processes`, `kill9`, `restart`, `pause`,
/// `resume`, `log`, `dir`. Dropping it kills the process group.
pub struct ServerProcess {
    what: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    ready: Readiness,
    child: Option<Child>,
    /// The pipe whose end kills the group (see [`tied_command`]).
    tie: Option<ChildStdin>,
    dir: TempDir,
}

impl ServerProcess {
    /// Starts `program args...` in `dir`, its output appended to `dir/log`, and returns once
    /// it is `ready` (panics otherwise, with the log).
    pub(crate) fn start(
        what: String,
        program: PathBuf,
        args: Vec<String>,
        dir: TempDir,
        log: &str,
        ready: Readiness,
    ) -> Self {
        let mut process = ServerProcess {
            what,
            program,
            args,
            log: dir.path().join(log),
            ready,
            child: None,
            tie: None,
            dir,
        };
        process.spawn();
        process.wait_ready();
        process
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open server log");
        let mut child = tied_command(&self.program)
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", self.program.display()));
        self.tie = child.stdin.take();
        self.child = Some(child);
    }

    /// Ok while the process runs; the reason (exit status and log tail) once it is gone.
    fn alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            None => Err("it was never started or was killed".into()),
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => Err(format!(
                "it exited with {status}; its log ends with:\n{}",
                tail_file(&self.log, 30)
            )),
            Some(Err(e)) => Err(format!("wait failed: {e}")),
        }
    }

    fn wait_ready(&mut self) {
        let ports = self.ready.ports.clone();
        let within = self.ready.within;
        let group = self.pid();
        for &port in &ports {
            // "The port accepts" alone is not enough: the port was free when the harness
            // picked it, but another process (an outgoing connection's ephemeral port, a
            // benchmark's broker) may have taken it since, and then this server is about to
            // fail to bind while someone else answers.
            self.wait_until(
                within,
                &format!("127.0.0.1:{port} did not accept connections on a socket of its own"),
                || port_accepts(port) && listens_in_group(port, group),
            );
        }
        if let (Some(path), Some(&port)) = (self.ready.http_health, ports.first()) {
            self.wait_until(within, &format!("GET {path} did not answer 200"), || {
                http_get_blocking(port, path).is_some_and(|(status, _)| status == 200)
            });
        }
    }

    /// Polls (bounded) until `ready` says yes, failing at once if the process died.
    fn wait_until(&mut self, timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Err(why) = self.alive() {
                panic!("{} is not running: {why}", self.what);
            }
            if ready() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: {what} within {timeout:?}; its log ends with:\n{}",
                    self.what,
                    tail_file(&self.log, 30)
                );
            }
            std::thread::sleep(millis(20));
        }
    }

    /// Pid of the program (for nginx, the master), also its process group's id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.what))
            .id()
    }

    /// Every live process of its group: the program, whatever it forked (nginx's worker) and
    /// the watcher of [`tied_command`].
    pub fn processes(&self) -> Vec<u32> {
        group_members(self.pid())
    }

    /// `kill -9` of the whole group (the program, its children, the watcher): the server
    /// vanishes without a goodbye, as in a crash. Reaps the program and returns once every
    /// process of the group is gone (10 s at most: SIGKILL is delivered asynchronously, and a
    /// dying nginx worker still holds the listening socket that a restart needs).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id();
            kill_group(pgid);
            let _ = child.wait();
            let deadline = Instant::now() + secs(10);
            while !group_members(pgid).is_empty() {
                if Instant::now() > deadline {
                    // No panic: this runs in drop, maybe while a test is already panicking.
                    eprintln!(
                        "{}: processes {:?} still alive 10s after SIGKILL",
                        self.what,
                        group_members(pgid)
                    );
                    break;
                }
                kill_group(pgid);
                std::thread::sleep(millis(5));
            }
        }
        self.tie = None;
    }

    /// Starts the server again with the same config on the same ports (after [`Self::kill9`];
    /// kills it first if it still runs) and returns once it is ready. What it kept only in
    /// memory is gone.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_ready();
    }

    /// `SIGTERM`, as a service manager stops a server: it finishes what it does on the way out
    /// (mosquitto writes its persistence file) and exits. Waits for that (15 s at most, then
    /// `kill -9`) and for the rest of its group. The server stays down, its directory and
    /// ports kept, until [`Self::start_again`].
    pub fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        send_signal(child.id(), "TERM");
        let deadline = Instant::now() + secs(15);
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                eprintln!("{}: still running 15s after SIGTERM; kill -9", self.what);
                break;
            }
            std::thread::sleep(millis(10));
        }
        // Reaps it and takes the watcher of `tied_command` with it.
        self.kill9();
    }

    /// Starts the server again after [`Self::stop`] or [`Self::kill9`], with the same config,
    /// ports and data directory, and returns once it is ready.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "{} is still running: stop() it first",
            self.what
        );
        self.spawn();
        self.wait_ready();
    }

    /// `SIGSTOP`: the server keeps its sockets open but stops reading and writing, so a
    /// client's writes pile up in socket buffers and then block.
    pub fn pause(&self) {
        send_signal(self.pid(), "STOP");
    }

    /// `SIGCONT` after [`Self::pause`].
    pub fn resume(&self) {
        send_signal(self.pid(), "CONT");
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its temporary directory: config, log, data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// True when a listening TCP socket on `port` (any address) is held by a process of group
/// `pgid`: the inodes of the listening sockets in /proc/net/tcp and tcp6, against the socket
/// descriptors the group's processes hold (/proc/PID/fd).
pub fn listens_in_group(port: u16, pgid: u32) -> bool {
    let listening: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit_once(':')?.1;
                    let listens = *fields.get(3)? == "0A";
                    let inode = fields.get(9)?;
                    (listens && u16::from_str_radix(local_port, 16).ok()? == port)
                        .then(|| format!("socket:[{inode}]"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    !listening.is_empty()
        && group_members(pgid).into_iter().any(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| listening.iter().any(|l| target.as_os_str() == l.as_str()))
        })
}

/// `GET path` on 127.0.0.1:`port` with a plain blocking socket (HTTP/1.0): the status and the
/// body, or None if nothing answered. For readiness checks, before any runtime is involved.
fn http_get_blocking(port: u16, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, millis(500)).ok()?;
    stream.set_read_timeout(Some(secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Every server wrapper derefs to its [`ServerProcess`] (`pid`, `processes`, `kill9`,
/// `restart`, `pause`, `resume`, `log`, `dir`); the wrapper keeps it in a field `process`.
macro_rules! derefs_to_process {
    ($server:ty) => {
        impl std::ops::Deref for $server {
            type Target = super::ServerProcess;
            fn deref(&self) -> &super::ServerProcess {
                &self.process
            }
        }
        impl std::ops::DerefMut for $server {
            fn deref_mut(&mut self) -> &mut super::ServerProcess {
                &mut self.process
            }
        }
    };
}

/// Runs `command` to completion and returns its output; if it takes longer than `timeout`, kills
/// it and whatever it started (its own process group) and panics saying what did not finish.
/// For one-shot tools a test drives (packaging, `man`), not servers.
pub fn output_within(command: &mut Command, timeout: Duration) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {command:?}: {e}"));
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    match done_rx.recv_timeout(timeout) {
        Ok(output) => output.unwrap_or_else(|e| panic!("{command:?}: {e}")),
        Err(_) => {
            kill_group(pid);
            panic!("{command:?} did not finish within {timeout:?}");
        }
    }
}
