//! A route's jq programs (filter and transform) run in a worker process, under a budget.
//!
//! jaq has no fuel counter and no way to interrupt a run, and a failed allocation aborts a
//! Rust process: `def f: f; f` would spin a route's thread for ever, and `.s * .n` with a huge
//! `n` from a payload would take the whole daemon down (and, the message being redelivered,
//! again at every start). So each route with a filter or a transform hands its messages to a
//! child process, ferry itself as `ferry __jq-worker`, with its address space capped
//! (`transform_memory`, RLIMIT_AS): past the time budget (`transform_timeout`) the route kills
//! it (SIGKILL: its CPU comes back at once); one that dies, out of memory, is replaced. Either
//! way the message is dead-lettered with the reason and the route goes on with the next.
//! Routes without jq programs never start one.
//!
//! The hand-off: length-prefixed frames over the child's stdin and stdout; values cross in
//! [`jq_wire`]'s encoding. The child reads the payload itself (per the route's
//! `payload_format`), so a payload that takes too much memory to parse is caught as well.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use bytes::Bytes;
use jaq_json::Val;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::config::{PayloadFormat, TransformBudget};
use crate::mapping::jq::Program;
use crate::mapping::jq_wire::{self, Decoder};
use crate::mapping::{Failure, Stage, payload};

/// The hidden subcommand that runs a worker.
pub const SUBCOMMAND: &str = "__jq-worker";

/// The first frame to a worker: what to run, and how to read payloads.
struct Programs<'a> {
    format: PayloadFormat,
    filter: Option<&'a str>,
    transform: Option<&'a str>,
}

/// Replies.
const VALUES: u8 = 0;
const FAILED: u8 = 1;

fn format_code(format: PayloadFormat) -> u8 {
    match format {
        PayloadFormat::Json => 0,
        PayloadFormat::Text => 1,
        PayloadFormat::Bytes => 2,
    }
}

fn stage_code(stage: Stage) -> u8 {
    match stage {
        Stage::Decode => 0,
        Stage::Filter => 1,
        _ => 2,
    }
}

fn code_stage(code: u8) -> Stage {
    match code {
        0 => Stage::Decode,
        1 => Stage::Filter,
        _ => Stage::Transform,
    }
}

impl Programs<'_> {
    fn frame(&self) -> Vec<u8> {
        let mut out = vec![format_code(self.format)];
        for code in [self.filter, self.transform] {
            match code {
                None => out.push(0),
                Some(code) => {
                    out.push(1);
                    out.extend_from_slice(&(code.len() as u64).to_le_bytes());
                    out.extend_from_slice(code.as_bytes());
                }
            }
        }
        out
    }
}

/// Reads one frame: its length, then that many bytes. `Ok(false)` at the end of the input.
fn read_frame(input: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 8];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u64::from_le_bytes(len);
    buf.clear();
    input.take(len).read_to_end(buf)?;
    if buf.len() as u64 != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(true)
}

/// A frame's body after its 8-byte length, which `frame` starts with (zero till now).
fn seal(frame: &mut [u8]) {
    let len = (frame.len() - 8) as u64;
    frame[..8].copy_from_slice(&len.to_le_bytes());
}

/// `ferry __jq-worker`: compiles the programs of its first frame, then answers one frame per
/// message until its input ends. Its parent set its limits before it started.
pub fn serve() -> ExitCode {
    let mut input = BufReader::new(io::stdin().lock());
    let mut output = BufWriter::new(io::stdout().lock());
    let mut frame = Vec::new();
    let Ok(true) = read_frame(&mut input, &mut frame) else {
        return ExitCode::FAILURE;
    };
    let Some((format, filter, transform)) = compile(&frame) else {
        return ExitCode::FAILURE;
    };
    let mut reply = Vec::new();
    loop {
        match read_frame(&mut input, &mut frame) {
            Ok(true) => {}
            _ => return ExitCode::SUCCESS,
        }
        reply.clear();
        reply.extend_from_slice(&[0; 8]);
        match evaluate(
            &frame,
            format,
            filter.as_ref(),
            transform.as_ref(),
            &mut reply,
        ) {
            Ok(()) => {}
            Err(failure) => {
                reply.truncate(8);
                reply.push(FAILED);
                reply.push(stage_code(failure.stage));
                reply.extend_from_slice(failure.reason.as_bytes());
            }
        }
        seal(&mut reply);
        if output
            .write_all(&reply)
            .and_then(|()| output.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
    }
}

type Compiled = (PayloadFormat, Option<Program>, Option<Program>);

fn compile(frame: &[u8]) -> Option<Compiled> {
    let (&format, mut rest) = frame.split_first()?;
    let format = match format {
        0 => PayloadFormat::Json,
        1 => PayloadFormat::Text,
        _ => PayloadFormat::Bytes,
    };
    let mut program = || -> Option<Option<Program>> {
        let (&present, tail) = rest.split_first()?;
        rest = tail;
        if present == 0 {
            return Some(None);
        }
        let (len, tail) = rest.split_first_chunk::<8>()?;
        let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
        let code = std::str::from_utf8(tail.get(..len)?).ok()?;
        rest = &tail[len..];
        Program::compile(code).ok().map(Some)
    };
    let filter = program()?;
    let transform = program()?;
    Some((format, filter, transform))
}

/// One message: `[1, the 5 variables]` or `[0]`, then the payload. Appends the values to
/// `reply` (after a [`VALUES`] tag and their count).
fn evaluate(
    frame: &[u8],
    format: PayloadFormat,
    filter: Option<&Program>,
    transform: Option<&Program>,
    reply: &mut Vec<u8>,
) -> Result<(), Failure> {
    let broken = |reason: String| Failure {
        stage: Stage::Transform,
        reason: format!("bad frame from the route: {reason}"),
    };
    let (&has_vars, rest) = frame.split_first().ok_or_else(|| broken("empty".into()))?;
    let mut decoder = Decoder::new(rest);
    let mut vars: [Val; 5] = Default::default();
    if has_vars == 1 {
        for var in &mut vars {
            *var = decoder.value().map_err(broken)?;
        }
    }
    let input =
        payload::read(&Bytes::copy_from_slice(decoder.rest()), format).map_err(|reason| {
            Failure {
                stage: Stage::Decode,
                reason,
            }
        })?;
    if let Some(filter) = filter {
        match filter.matches(input.clone(), &vars) {
            Ok(true) => {}
            Ok(false) => {
                reply.push(VALUES);
                reply.extend_from_slice(&0u64.to_le_bytes());
                return Ok(());
            }
            Err(e) => {
                return Err(Failure {
                    stage: Stage::Filter,
                    reason: e.to_string(),
                });
            }
        }
    }
    let values = match transform {
        None => vec![input],
        Some(transform) => transform.run(input, &vars).map_err(|e| Failure {
            stage: Stage::Transform,
            reason: e.to_string(),
        })?,
    };
    reply.push(VALUES);
    reply.extend_from_slice(&(values.len() as u64).to_le_bytes());
    for value in &values {
        jq_wire::encode(value, reply).map_err(|reason| Failure {
            stage: Stage::Transform,
            reason: format!("an output cannot be published: {reason}"),
        })?;
    }
    Ok(())
}

/// A route's handle on its worker process (started at its first message, and again after
/// one was stopped).
pub struct JqWorker {
    /// The first frame every new worker gets.
    programs: Vec<u8>,
    budget: TransformBudget,
    /// The stage a stopped run is put down to: the transform when the route has one.
    stage: Stage,
    /// The program to run as `__jq-worker`: this very executable.
    executable: PathBuf,
    running: tokio::sync::Mutex<Option<Running>>,
}

impl std::fmt::Debug for JqWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JqWorker")
    }
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::BufReader<ChildStdout>,
    request: Vec<u8>,
    reply: Vec<u8>,
}

impl JqWorker {
    /// A worker for these programs (`None` when the route has neither). The programs are
    /// already known to compile: the configuration was checked.
    pub fn new(
        filter: Option<&str>,
        transform: Option<&str>,
        format: PayloadFormat,
        budget: TransformBudget,
    ) -> Option<JqWorker> {
        if filter.is_none() && transform.is_none() {
            return None;
        }
        Some(JqWorker {
            programs: Programs {
                format,
                filter,
                transform,
            }
            .frame(),
            budget,
            stage: match transform {
                Some(_) => Stage::Transform,
                None => Stage::Filter,
            },
            // Not `current_exe()`'s path: after an upgrade replaced the file, this still runs
            // the code this process runs.
            executable: PathBuf::from("/proc/self/exe"),
            running: Default::default(),
        })
    }

    /// Runs the worker as `executable` instead (a test or a benchmark is not ferry itself).
    pub fn with_executable(mut self, executable: PathBuf) -> JqWorker {
        self.executable = executable;
        self
    }

    /// Runs the filter and the transform on `payload`: the values to publish (none when
    /// filtered out), or why not, within the route's budget.
    pub async fn run(&self, payload: &[u8], vars: Option<&[Val; 5]>) -> Result<Vec<Val>, Failure> {
        let mut running = self.running.lock().await;
        if running.is_none() {
            *running = Some(self.start().await.map_err(|e| Failure {
                stage: self.stage,
                reason: format!("cannot start the jq worker process: {e}"),
            })?);
        }
        let worker = running.as_mut().expect("started above");
        let request = &mut worker.request;
        request.clear();
        request.extend_from_slice(&[0; 8]);
        match vars {
            None => request.push(0),
            Some(vars) => {
                request.push(1);
                for var in vars {
                    // The variables are the message's own names and headers: shallow.
                    let _ = jq_wire::encode(var, request);
                }
            }
        }
        request.extend_from_slice(payload);
        seal(request);
        let exchange = async {
            worker.stdin.write_all(&worker.request).await?;
            worker.stdin.flush().await?;
            let len = worker.stdout.read_u64_le().await?;
            if len > self.budget.memory {
                return Err(io::Error::other("a reply larger than the worker's memory"));
            }
            worker.reply.clear();
            (&mut worker.stdout)
                .take(len)
                .read_to_end(&mut worker.reply)
                .await?;
            if worker.reply.len() as u64 != len {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(())
        };
        let failure = match tokio::time::timeout(self.budget.timeout, exchange).await {
            Ok(Ok(())) => return self.read_reply(&worker.reply),
            Err(_) => format!(
                "time budget exceeded: the jq program ran longer than transform_timeout ({:?}) on this message and was stopped",
                self.budget.timeout
            ),
            Ok(Err(_)) => String::new(),
        };
        let mut stopped = running.take().expect("running");
        let _ = stopped.child.start_kill();
        let status = stopped.child.wait().await;
        if !failure.is_empty() {
            return Err(Failure {
                stage: self.stage,
                reason: failure,
            });
        }
        Err(Failure {
            stage: self.stage,
            reason: died(status, self.budget.memory),
        })
    }

    fn read_reply(&self, reply: &[u8]) -> Result<Vec<Val>, Failure> {
        let broken = |reason: String| Failure {
            stage: self.stage,
            reason: format!("the jq worker's reply is unreadable: {reason}"),
        };
        match reply.split_first() {
            Some((&VALUES, rest)) => {
                let (count, rest) = rest
                    .split_first_chunk::<8>()
                    .ok_or_else(|| broken("cut short".into()))?;
                let count = u64::from_le_bytes(*count);
                let mut decoder = Decoder::new(rest);
                // Every value takes at least a byte: the count cannot size more than that.
                let mut values = Vec::with_capacity((count as usize).min(rest.len()));
                for _ in 0..count {
                    values.push(decoder.value().map_err(broken)?);
                }
                Ok(values)
            }
            Some((&FAILED, [stage, reason @ ..])) => Err(Failure {
                stage: code_stage(*stage),
                reason: String::from_utf8_lossy(reason).into_owned(),
            }),
            _ => Err(broken("unknown reply".into())),
        }
    }

    async fn start(&self) -> io::Result<Running> {
        let mut command = tokio::process::Command::new(&self.executable);
        command
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // An aborting worker prints why (a failed allocation); the route says it better.
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let memory = self.budget.memory;
        // SAFETY: between fork and exec the closure makes only async-signal-safe system
        // calls (setrlimit, prctl, getppid) and allocates nothing.
        unsafe {
            command.pre_exec(move || limit_child(memory));
        }
        let mut child = command.spawn()?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut frame = vec![0; 8];
        frame.extend_from_slice(&self.programs);
        seal(&mut frame);
        stdin.write_all(&frame).await?;
        Ok(Running {
            child,
            stdin,
            stdout: tokio::io::BufReader::new(stdout),
            request: Vec::new(),
            reply: Vec::new(),
        })
    }
}

/// In the child, before exec: its memory cap, no core dump when it aborts at the cap, and
/// its end when ferry ends (a spinning worker would not notice its input close).
fn limit_child(memory: u64) -> io::Result<()> {
    let set = |resource, value: u64| {
        let limit = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: a plain system call on a valid struct.
        match unsafe { libc::setrlimit(resource, &limit) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    };
    set(libc::RLIMIT_AS, memory)?;
    set(libc::RLIMIT_CORE, 0)?;
    // SAFETY: plain system calls.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The parent may have ended before the line above.
        if libc::getppid() == 1 {
            return Err(io::Error::other("ferry has ended"));
        }
    }
    Ok(())
}

/// Why a worker ended in the middle of a message.
fn died(status: io::Result<std::process::ExitStatus>, memory: u64) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        // Rust aborts on a failed allocation, and on a stack overflow (deep recursion); the
        // kernel's OOM killer sends SIGKILL (ferry's own kill is the time budget, not here).
        Ok(s)
            if matches!(
                s.signal(),
                Some(libc::SIGABRT | libc::SIGSEGV | libc::SIGKILL)
            ) =>
        {
            format!(
                "memory budget exceeded: the jq program needed more than transform_memory ({} MiB) on this message and was stopped",
                memory >> 20
            )
        }
        Ok(s) => format!("the jq worker process ended in the middle of this message ({s})"),
        Err(e) => format!("the jq worker process ended in the middle of this message ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a worker answers for `payload`, read back as the route reads it (both sides of
    /// the hand-off without the process between them).
    fn answer(
        filter: Option<&str>,
        transform: Option<&str>,
        payload: &str,
    ) -> Result<Vec<String>, Failure> {
        let mut request = vec![0u8];
        request.extend_from_slice(payload.as_bytes());
        let values = round_trip(filter, transform, &request)?;
        Ok(values.iter().map(|v| v.to_string()).collect())
    }

    /// `request` (a request frame) evaluated by the worker's side, and its reply read back
    /// by the route's side.
    fn round_trip(
        filter: Option<&str>,
        transform: Option<&str>,
        request: &[u8],
    ) -> Result<Vec<Val>, Failure> {
        let programs = Programs {
            format: PayloadFormat::Json,
            filter,
            transform,
        }
        .frame();
        let (format, filter, transform) = compile(&programs).expect("compiles");
        let mut reply = Vec::new();
        evaluate(
            request,
            format,
            filter.as_ref(),
            transform.as_ref(),
            &mut reply,
        )?;
        let worker = JqWorker::new(None, Some("."), format, TransformBudget::default()).unwrap();
        worker.read_reply(&reply)
    }

    #[test]
    fn filters_transforms_and_failures_cross_as_they_were() {
        assert_eq!(
            answer(Some(".n > 1"), Some(".[]?, {m: .n}"), r#"{"n":2}"#).unwrap(),
            vec!["2", r#"{"m":2}"#]
        );
        assert_eq!(
            answer(Some(".n > 1"), None, r#"{"n":1}"#).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            answer(Some(".n > 1"), None, r#"{"n":5}"#).unwrap(),
            vec![r#"{"n":5}"#]
        );
        let e = answer(None, Some(".a.b"), "[1]").unwrap_err();
        assert_eq!(e.stage, Stage::Transform, "{e}");
        let e = answer(Some("error(\"no\")"), None, "1").unwrap_err();
        assert_eq!(e.stage, Stage::Filter, "{e}");
        let e = answer(None, Some("."), "not json").unwrap_err();
        assert_eq!(e.stage, Stage::Decode, "{e}");
        // Too deep to publish: a reason, not a stack overflow in either process.
        let e = answer(None, Some("reduce range(1000) as $i (null; [.])"), "1").unwrap_err();
        assert!(e.reason.contains("deeper than"), "{e}");
        let e = answer(None, Some("range(.)"), "1000000").unwrap_err();
        assert!(e.reason.contains("more than 10000 values"), "{e}");
    }

    #[test]
    fn the_variables_reach_the_programs() {
        let mut request = vec![1u8];
        let vars = [
            Val::from("a.b".to_string()),
            Val::Null,
            Val::obj(
                [(Val::from("h".to_string()), Val::from("é".to_string()))]
                    .into_iter()
                    .collect(),
            ),
            Val::Null,
            Val::Null,
        ];
        for v in &vars {
            jq_wire::encode(v, &mut request).unwrap();
        }
        request.extend_from_slice(b"null");
        let values = round_trip(None, Some("[$subject, $headers.h]"), &request).unwrap();
        assert_eq!(values[0].to_string(), r#"["a.b","é"]"#);
    }

    #[test]
    fn a_dead_worker_is_named_by_its_signal() {
        use std::os::unix::process::ExitStatusExt;
        let aborted = std::process::ExitStatus::from_raw(libc::SIGABRT);
        assert!(died(Ok(aborted), 128 << 20).contains("memory budget exceeded"));
        assert!(died(Ok(aborted), 128 << 20).contains("128 MiB"));
        let exited = std::process::ExitStatus::from_raw(1 << 8);
        assert!(died(Ok(exited), 128 << 20).contains("ended in the middle"));
    }

    proptest::proptest! {
        /// Frames from the other side are read without panicking, whatever they hold.
        #[test]
        fn arbitrary_frames_never_panic(frame in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            let worker = JqWorker::new(None, Some("."), PayloadFormat::Json, TransformBudget::default()).unwrap();
            let _ = worker.read_reply(&frame);
            let _ = compile(&frame);
            let transform = Program::compile(".[]?").unwrap();
            let mut reply = Vec::new();
            let _ = evaluate(&frame, PayloadFormat::Bytes, None, Some(&transform), &mut reply);
            let _ = evaluate(&frame, PayloadFormat::Json, None, Some(&transform), &mut reply);
        }
    }

    #[test]
    fn no_programs_no_worker() {
        assert!(
            JqWorker::new(None, None, PayloadFormat::Json, TransformBudget::default()).is_none()
        );
    }
}
