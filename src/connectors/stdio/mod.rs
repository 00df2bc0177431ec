//! Standard input and output as a connection, for `ferry relay -`: every line of standard
//! input is a message, every message is a line on standard output.
//!
//! # The line format (JSON lines, the default)
//!
//! One JSON object per line:
//!
//! ```json
//! {"subject":"sensors/kitchen/temp","protocol":"mqtt","payload":"21.5","headers":{"site":"plant-1","via":["a","b"]},"time":"2026-11-22T10:00:00.000123Z"}
//! {"subject":"blob","protocol":"mqtt","payload":"AAEC/w==","payload_base64":true,"headers":{},"time":"2026-11-22T10:00:01.000000Z"}
//! ```
//!
//! Written (standard output), keys always in this order:
//! - `subject`: the MQTT topic, NATS subject or SSE event the message had (or the sink's
//!   rendered subject);
//! - `protocol`: whose syntax `subject` follows (`mqtt`, `nats`, `sse`, ...: the source's), so
//!   that a capture replays onto either broker;
//! - `payload`: the payload as text when it is UTF-8, else in base64 with
//!   `"payload_base64": true` right after it; always base64 when the connection asks for it;
//! - `headers`: an object, `{}` when there are none; a name that repeats has an array of its
//!   values, in order;
//! - `time`: when ferry received the message, RFC 3339 in UTC with microseconds.
//!
//! Read (standard input):
//! - `subject` is required (a string); `payload` is optional (missing or `null`: empty); a
//!   string payload is the text itself, or base64 when `"payload_base64": true`; any other
//!   JSON value (`{"x": 1}`) is taken as its JSON text, so hand-written lines need no escaping;
//! - `protocol` is optional: a `mqtt` subject replayed onto NATS (or a `nats` one onto MQTT) is
//!   converted by nats-server's rules (`cap/text` → `cap.text`); without it, the subject is
//!   taken to follow the sink's own syntax (hand-written lines name what they publish to);
//! - `headers` is optional; a value is a string, an array of strings (one header each), or a
//!   number or boolean (its JSON text); `null` values are skipped;
//! - `time`, when it is an RFC 3339 string, becomes the message's received time, so a replayed
//!   capture keeps the times it was captured with (templates and envelopes see them, and
//!   capture → replay → capture writes identical lines). Anything else there is ignored and the
//!   time is when the line was read;
//! - unknown keys are ignored, so lines written by other tools work;
//! - blank lines are skipped; a line that is not such an object is counted, reported (by line
//!   number, rate-limited, never with its content) and skipped: it never ends the relay.
//!
//! Written lines read back as the same messages, byte for byte: capture → replay → capture
//! gives identical subjects, payloads and headers (a repeated header comes back after the
//! other names only if it was written so: the object groups a name's values).
//!
//! # Raw lines
//!
//! With `LineFormat::Raw`, a line read is the payload, without its `\n` (and without the `\r`
//! of a `\r\n`); its subject is empty, the sink's own subject names it. A message written is
//! its payload then `\n`: a payload that contains `\n` is written as is, so it reads back as
//! several lines.
//!
//! # Limits and ends
//!
//! A line may be up to 16 MiB; a longer one is reported and skipped. At the end of standard
//! input the route delivers what is queued and ends. When standard output is closed (`| head
//! -5`), ferry ends with exit status 0, as `cat` does.
//!
//! Standard input is read by a thread of its own (a read from a terminal cannot be cancelled,
//! and must not hold up shutdown), in batches handed to the route; standard output is written
//! by another, which writes every line queued at that moment in one write and flushes, and a
//! `send` resolves only once its line is written to the file descriptor.

pub mod config;
pub mod protocol;
mod read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Connection, Sinks};
use crate::config::{LineFormat, Protocol, SinkSpec, SourceSpec};
use crate::contracts::queue::RouteInput;
use crate::contracts::status::{ConnectionStatus, RateLimitedLog};
use crate::contracts::supervisor;
use crate::contracts::{BoxFuture, ConnectionContext, Sink, SinkError};
use crate::mapping::codec;
use crate::message::{Headers, Incoming, Message};

pub mod url_form;

/// The longest line read or written as one message.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// A batch of lines read is handed over once it holds this many messages...
const BATCH_MESSAGES: usize = 256;
/// ... or this many payload bytes, or when no more input is buffered right now.
const BATCH_BYTES: usize = 1024 * 1024;

/// Lines of standard input skipped so far (not JSON, no subject, too long), for the relay's
/// summary. Process-wide, as standard input is.
static SKIPPED_LINES: AtomicU64 = AtomicU64::new(0);

/// How many lines of standard input were skipped as unreadable so far.
pub fn skipped_lines() -> u64 {
    SKIPPED_LINES.load(Ordering::Relaxed)
}

/// Standard input (as a source) and standard output (as a sink).
pub struct StdioConnection {
    name: Arc<str>,
    config: config::StdioConnection,
    status: ConnectionStatus,
    /// The routes reading standard input (in practice one: the relay's).
    inputs: Vec<(String, RouteInput)>,
}

impl StdioConnection {
    pub fn new(name: &str, config: config::StdioConnection, status: ConnectionStatus) -> Self {
        StdioConnection {
            name: name.into(),
            config,
            status,
            inputs: Vec::new(),
        }
    }
}

impl Connection for StdioConnection {
    fn add_source(
        &mut self,
        route: &str,
        source: &SourceSpec,
        input: RouteInput,
    ) -> anyhow::Result<()> {
        match source {
            SourceSpec::Stdio => {}
            _ => anyhow::bail!("route {route}: standard input takes only a stdio source"),
        }
        if !self.inputs.is_empty() {
            anyhow::bail!("route {route}: standard input can feed one route only");
        }
        self.inputs.push((route.to_string(), input));
        Ok(())
    }

    fn sinks(&mut self) -> Arc<dyn Sinks> {
        Arc::new(StdoutSinks(self.config.lines))
    }

    fn start(self: Box<Self>, runtime: &ConnectionContext) {
        self.status.up("(standard input/output)");
        for (route, input) in self.inputs {
            let lines = spawn_reader(std::io::stdin(), self.config.lines, self.name.clone());
            let stop = runtime.stop_sources.clone();
            // Standard input ends by itself: only a panic is a failure.
            runtime.sources.spawn_finite("standard input", async move {
                let read = feed(lines, &input, &stop).await;
                tracing::info!(
                    route = %route,
                    "standard input: {} message(s) read, {} line(s) skipped{}",
                    read.messages,
                    read.skipped,
                    if read.ended { "; input ended" } else { "" }
                );
            });
        }
    }
}

/// Makes the sinks of standard output: all write through one writer, so lines never mix.
struct StdoutSinks(LineFormat);

impl Sinks for StdoutSinks {
    fn add_sink(&self, sink: &SinkSpec) -> anyhow::Result<Arc<dyn Sink>> {
        match sink {
            SinkSpec::Stdio(_) => {}
            _ => anyhow::bail!("standard output takes only a stdio sink"),
        }
        static STDOUT: OnceLock<LineWriter> = OnceLock::new();
        let writer = STDOUT
            .get_or_init(|| {
                LineWriter::spawn(std::io::stdout(), || {
                    tracing::debug!("standard output is closed; ending, as `cat` does");
                    std::process::exit(0);
                })
            })
            .clone();
        Ok(Arc::new(LineSink::new(writer, self.0)))
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// One line of input, as the reader thread hands it over.
pub type ReadLine = Result<Message, BadLine>;

/// A line that is not a message.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    /// 1-based line number in the input.
    pub line: u64,
    pub reason: String,
}

/// What [`feed`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FeedSummary {
    /// Messages handed to the route.
    pub messages: u64,
    /// Lines skipped as unreadable.
    pub skipped: u64,
    /// The input ended (rather than the sources being stopped or the route closing).
    pub ended: bool,
}

/// Starts a thread that reads `reader` line by line and sends the messages, in batches, over
/// a small bounded channel. A thread rather than tokio's stdin: a read of a terminal cannot be
/// cancelled, and a blocked tokio blocking task would hold up the runtime's shutdown. The
/// thread ends at the end of input, on a read error, or once the receiver is gone.
pub fn spawn_reader<R: Read + Send + 'static>(
    reader: R,
    format: LineFormat,
    origin: Arc<str>,
) -> mpsc::Receiver<Vec<ReadLine>> {
    let (tx, rx) = mpsc::channel(2);
    // Reads of 64 KiB pass std's own 8 KiB stdin buffer by.
    let started = supervisor::thread("ferry-stdin", move || {
        read_lines(
            BufReader::with_capacity(64 * 1024, reader),
            format,
            origin,
            tx,
        )
    });
    if let Err(e) = started {
        // The channel's sender is gone with the closure: the route sees its input end.
        tracing::error!("cannot start the standard input thread: {e}");
    }
    rx
}

fn read_lines<R: Read>(
    mut reader: BufReader<R>,
    format: LineFormat,
    origin: Arc<str>,
    tx: mpsc::Sender<Vec<ReadLine>>,
) {
    let mut buf = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut number = 0u64;
    loop {
        let read = next_line(&mut reader, &mut buf, MAX_LINE);
        let end = match read {
            Ok(None) => true,
            Err(e) => {
                tracing::error!("cannot read standard input: {e}; taking it as its end");
                true
            }
            Ok(Some(length)) => {
                number += 1;
                let parsed = match length {
                    Line::TooLong(n) => Some(Err(BadLine {
                        line: number,
                        reason: format!("the line is {n} bytes long, more than 16 MiB"),
                    })),
                    Line::Complete => decode_line(&buf, format, &origin).transpose(),
                };
                match parsed {
                    Some(Ok(message)) => {
                        bytes += message.payload.len();
                        batch.push(Ok(message));
                    }
                    Some(Err(mut bad)) => {
                        bad.line = number;
                        batch.push(Err(bad));
                    }
                    None => {}
                }
                false
            }
        };
        // Hand over when the batch is large, or when nothing more is buffered (the next read
        // may wait for a person typing: what was typed goes at once).
        // Only what is buffered: asking for more would wait for it.
        let idle = reader.buffer().is_empty();
        if !batch.is_empty()
            && (end || idle || batch.len() >= BATCH_MESSAGES || bytes >= BATCH_BYTES)
        {
            bytes = 0;
            if tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                return;
            }
        }
        if end {
            return;
        }
    }
}

/// How [`next_line`] found a line.
enum Line {
    /// The line is in the buffer, without its line break.
    Complete,
    /// Longer than the limit: skipped up to its end; the buffer holds a part of it.
    TooLong(usize),
}

/// Reads the next line into `buf` (without `\n` or `\r\n`), reading at most `max` bytes of it
/// into memory. `None` at the end of input. A last line without `\n` is a line.
fn next_line<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut length = 0usize;
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        any = true;
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if length + chunk.len() <= max {
            buf.extend_from_slice(chunk);
        }
        length += chunk.len();
        let consumed = found.unwrap_or(chunk.len());
        reader.consume(consumed);
        if found.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if length > max {
        return Ok(Some(Line::TooLong(length)));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(Line::Complete))
}

/// Hands the messages the reader thread sends to the route, until the input ends (then the
/// route finishes: it delivers what is queued and ends), the sources stop, or the route no
/// longer takes messages. Backpressure: while `push` waits for room, the channel fills and the
/// reader thread stops reading.
pub async fn feed(
    mut lines: mpsc::Receiver<Vec<ReadLine>>,
    input: &RouteInput,
    stop: &CancellationToken,
) -> FeedSummary {
    let log = RateLimitedLog::default();
    let mut summary = FeedSummary::default();
    loop {
        let batch = tokio::select! {
            biased;
            _ = stop.cancelled() => return summary,
            batch = lines.recv() => batch,
        };
        let Some(batch) = batch else {
            summary.ended = true;
            input.finish();
            return summary;
        };
        for line in batch {
            match line {
                Ok(message) => {
                    let pushed = tokio::select! {
                        biased;
                        _ = stop.cancelled() => return summary,
                        pushed = input.push(Incoming::unacked(message)) => pushed,
                    };
                    if !pushed {
                        return summary;
                    }
                    summary.messages += 1;
                }
                Err(bad) => {
                    summary.skipped += 1;
                    SKIPPED_LINES.fetch_add(1, Ordering::Relaxed);
                    log.warn(|| {
                        format!("standard input line {}: {}; skipped", bad.line, bad.reason)
                    });
                }
            }
        }
    }
}

/// The JSON object of one line read. Borrows from the line where it can.
#[derive(Deserialize)]
struct JsonLineIn<'a> {
    #[serde(borrow)]
    subject: Cow<'a, str>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    payload_base64: Option<bool>,
    #[serde(default)]
    headers: Option<HeaderList>,
    #[serde(default, borrow)]
    time: Option<&'a RawValue>,
    /// The syntax `subject` follows (`mqtt`, `nats`, ...), as standard output writes it.
    #[serde(default, borrow)]
    protocol: Option<Cow<'a, str>>,
}

/// Headers from a JSON object, in the order written; an array value is one header per item.
struct HeaderList(Headers);

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = HeaderList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of header names and values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderList, A::Error> {
                use serde::de::Error;
                let mut headers = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
                    let mut one = |v: serde_json::Value| {
                        let value = match v {
                            serde_json::Value::String(s) => s,
                            serde_json::Value::Null => return Ok(()),
                            v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                                v.to_string()
                            }
                            _ => {
                                return Err(A::Error::custom(format!(
                                    "header `{name}` must be a string or an array of strings"
                                )));
                            }
                        };
                        headers.push((name.clone(), value));
                        Ok(())
                    };
                    match value {
                        serde_json::Value::Array(values) => {
                            for v in values {
                                one(v)?;
                            }
                        }
                        v => one(v)?,
                    }
                }
                Ok(HeaderList(headers))
            }
        }
        deserializer.deserialize_map(ListVisitor)
    }
}

/// Decodes one line (without its line break) into a message from connection `origin`. `None`
/// for a blank JSON line (skipped quietly). A `BadLine` from here has line number 0: the
/// reader knows the number.
pub fn decode_line(
    line: &[u8],
    format: LineFormat,
    origin: &Arc<str>,
) -> Result<Option<Message>, BadLine> {
    let bad = |reason: String| BadLine { line: 0, reason };
    match format {
        LineFormat::Raw => Ok(Some(Message::new(
            origin.clone(),
            "",
            Bytes::copy_from_slice(line),
        ))),
        LineFormat::Json { .. } => {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            // serde would also take an array as the fields in order: only objects are lines.
            if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                return Err(bad(
                    "not a JSON line with a subject (not a JSON object)".into()
                ));
            }
            let parsed: JsonLineIn = serde_json::from_slice(line).map_err(|e| {
                // serde_json says "at line 1 column N": only the column means anything here.
                let text = e.to_string();
                let reason = text.rsplit_once(" at line ").map_or(&*text, |(r, _)| r);
                bad(format!(
                    "not a JSON line with a subject ({reason}, column {})",
                    e.column()
                ))
            })?;
            let payload = match parsed.payload.map(RawValue::get) {
                None | Some("null") => Bytes::new(),
                Some(raw) if raw.starts_with('"') => {
                    let text: Cow<str> = serde_json::from_str(raw)
                        .map_err(|e| bad(format!("the payload is not a JSON string: {e}")))?;
                    match parsed.payload_base64 {
                        Some(true) => Bytes::from(BASE64.decode(text.as_bytes()).map_err(|e| {
                            bad(format!(
                                "`payload_base64` is true but the payload is not base64: {e}"
                            ))
                        })?),
                        _ => Bytes::from(text.into_owned()),
                    }
                }
                Some(_) if parsed.payload_base64 == Some(true) => {
                    return Err(bad(
                        "`payload_base64` is true but the payload is not a string".into(),
                    ));
                }
                // A JSON value: its text, as written.
                Some(raw) => Bytes::copy_from_slice(raw.as_bytes()),
            };
            let LineFormat::Json { names, .. } = format else {
                unreachable!("raw lines returned above")
            };
            let subject = match (parsed.protocol.as_deref(), names) {
                (Some("mqtt"), Protocol::Nats) => codec::topic_to_subject(&parsed.subject),
                (Some("nats"), Protocol::Mqtt) => codec::subject_to_topic(&parsed.subject),
                _ => parsed.subject.into_owned(),
            };
            let mut message = Message::new(origin.clone(), subject, payload);
            if let Some(HeaderList(headers)) = parsed.headers {
                message.headers = headers;
            }
            if let Some(time) = parsed
                .time
                .and_then(|raw| serde_json::from_str::<Cow<str>>(raw.get()).ok())
                .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
            {
                message.received = time;
            }
            Ok(Some(message))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Encodes `message` as one line (with its `\n`) into `out`.
pub fn encode_line(message: &Message, format: LineFormat, out: &mut Vec<u8>) {
    let base64 = match format {
        LineFormat::Raw => {
            out.extend_from_slice(&message.payload);
            out.push(b'\n');
            return;
        }
        LineFormat::Json { base64, names } => {
            out.extend_from_slice(b"{\"subject\":");
            serde_json::to_writer(&mut *out, &message.subject).expect("a string serialises");
            out.extend_from_slice(b",\"protocol\":");
            serde_json::to_writer(&mut *out, names.name()).expect("a string serialises");
            base64
        }
    };
    let string = |out: &mut Vec<u8>, s: &str| {
        serde_json::to_writer(&mut *out, s).expect("a string serialises");
    };
    out.extend_from_slice(b",\"payload\":");
    match std::str::from_utf8(&message.payload) {
        Ok(text) if !base64 => string(out, text),
        _ => {
            out.push(b'"');
            let start = out.len();
            let encoded = base64::encoded_len(message.payload.len(), true).unwrap_or(0);
            out.resize(start + encoded, 0);
            let n = BASE64
                .encode_slice(&message.payload, &mut out[start..])
                .expect("room for the base64");
            out.truncate(start + n);
            out.extend_from_slice(b"\",\"payload_base64\":true");
        }
    }
    out.extend_from_slice(b",\"headers\":{");
    // Names in the order they first appear; a repeated name gets an array of its values.
    let headers = &message.headers;
    let mut first = true;
    for (i, (name, value)) in headers.iter().enumerate() {
        if headers[..i].iter().any(|(n, _)| n == name) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        string(out, name);
        out.push(b':');
        let repeats = headers[i + 1..].iter().any(|(n, _)| n == name);
        if repeats {
            out.push(b'[');
            let mut first_value = true;
            for (_, v) in headers[i..].iter().filter(|(n, _)| n == name) {
                if !first_value {
                    out.push(b',');
                }
                first_value = false;
                string(out, v);
            }
            out.push(b']');
        } else {
            string(out, value);
        }
    }
    out.extend_from_slice(b"},\"time\":\"");
    let _ = write!(
        out,
        "{}",
        humantime::format_rfc3339_micros(message.received)
    );
    out.extend_from_slice(b"\"}\n");
}

/// A line to write and who waits for it.
struct Pending {
    line: Vec<u8>,
    written: oneshot::Sender<Result<(), String>>,
}

/// The thread that writes lines to an output, shared by every sink on it.
#[derive(Clone)]
pub struct LineWriter {
    lines: mpsc::UnboundedSender<Pending>,
}

impl LineWriter {
    /// Starts the writer thread on `output`. Each turn it writes every line queued by then in
    /// one go and flushes, then tells each sender its line is out. When the output is closed
    /// (a broken pipe) it calls `closed` (for standard output: end the process, exit 0) and
    /// ends; sends fail from then on. Unbounded, as each sender waits for its line: there are
    /// never more lines queued than sends in flight.
    pub fn spawn<W, F>(mut output: W, closed: F) -> LineWriter
    where
        W: Write + Send + 'static,
        F: FnOnce() + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
        let started = supervisor::thread("ferry-stdout", move || {
            let mut batch = Vec::new();
            let mut out = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                batch.push(first);
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                    if batch.len() >= BATCH_MESSAGES {
                        break;
                    }
                }
                out.clear();
                for p in &batch {
                    out.extend_from_slice(&p.line);
                }
                let result = output.write_all(&out).and_then(|()| output.flush());
                match result {
                    Ok(()) => {
                        for p in batch.drain(..) {
                            let _ = p.written.send(Ok(()));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        closed();
                        return;
                    }
                    Err(e) => {
                        let reason = format!("cannot write to standard output: {e}");
                        for p in batch.drain(..) {
                            let _ = p.written.send(Err(reason.clone()));
                        }
                    }
                }
            }
        });
        if let Err(e) = started {
            // Every write then fails with the channel closed: the route retries, then stops.
            tracing::error!("cannot start the standard output thread: {e}");
        }
        LineWriter { lines: tx }
    }

    /// Writes `line` (a whole line with its `\n`); resolves once it is written and flushed.
    pub async fn write(&self, line: Vec<u8>) -> Result<(), SinkError> {
        let (written, done) = oneshot::channel();
        let gone = || SinkError::Unavailable("standard output is closed".into());
        self.lines
            .send(Pending { line, written })
            .map_err(|_| gone())?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(SinkError::Unavailable(reason)),
            Err(_) => Err(gone()),
        }
    }
}

/// A route's sink on an output: each message one line.
pub struct LineSink {
    writer: LineWriter,
    format: LineFormat,
}

impl LineSink {
    /// A sink writing `format` lines through `writer`.
    pub fn new(writer: LineWriter, format: LineFormat) -> LineSink {
        LineSink { writer, format }
    }
}

impl Sink for LineSink {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if message.payload.len() > MAX_LINE {
                return Err(SinkError::Rejected(format!(
                    "the payload is {} bytes, more than a line may hold (16 MiB)",
                    message.payload.len()
                )));
            }
            let mut line = Vec::with_capacity(message.payload.len() + 128);
            encode_line(message, self.format, &mut line);
            self.writer.write(line).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const JSON: LineFormat = LineFormat::Json {
        base64: false,
        names: Protocol::Mqtt,
    };

    fn origin() -> Arc<str> {
        "stdin".into()
    }

    fn decode(line: &str) -> Result<Option<Message>, BadLine> {
        decode_line(line.as_bytes(), JSON, &origin())
    }

    fn encode(message: &Message, format: LineFormat) -> String {
        let mut out = Vec::new();
        encode_line(message, format, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    #[test]
    fn writes_keys_in_order_with_text_payload_and_utc_time() {
        let mut m = Message::new(origin(), "a/b", "héllo \"q\"\n");
        m.headers = vec![("site".into(), "p1".into())];
        m.received = at(1_700_000_000, 123_456);
        assert_eq!(
            encode(&m, JSON),
            "{\"subject\":\"a/b\",\"protocol\":\"mqtt\",\"payload\":\"héllo \\\"q\\\"\\n\",\"headers\":{\"site\":\"p1\"},\"time\":\"2023-11-14T22:13:20.123456Z\"}\n"
        );
    }

    #[test]
    fn non_utf8_payload_goes_base64_and_base64_mode_always() {
        let mut m = Message::new(origin(), "s", Bytes::from_static(&[0, 1, 2, 0xff]));
        m.received = at(0, 0);
        let line = encode(&m, JSON);
        assert!(line.contains("\"payload\":\"AAEC/w==\",\"payload_base64\":true,\"headers\":{}"));
        let text = Message::new(origin(), "s", "hi");
        let line = encode(
            &text,
            LineFormat::Json {
                base64: true,
                names: Protocol::Mqtt,
            },
        );
        assert!(
            line.contains("\"payload\":\"aGk=\",\"payload_base64\":true"),
            "{line}"
        );
        let back = decode(line.trim_end()).unwrap().unwrap();
        assert_eq!(back.payload, "hi");
    }

    #[test]
    fn repeated_headers_become_an_array_and_read_back_in_order() {
        let mut m = Message::new(origin(), "s", "");
        m.headers = vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ];
        let line = encode(&m, JSON);
        assert!(
            line.contains("\"headers\":{\"a\":[\"1\",\"3\"],\"b\":\"2\"}"),
            "{line}"
        );
        let back = decode(line.trim_end()).unwrap().unwrap();
        assert_eq!(
            back.headers,
            vec![
                ("a".to_string(), "1".to_string()),
                ("a".to_string(), "3".to_string()),
                ("b".to_string(), "2".to_string()),
            ]
        );
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let payloads: Vec<Bytes> = vec![
            Bytes::from_static(b""),
            Bytes::from_static(b"plain"),
            Bytes::from_static("ünï\u{2028}\t\r\n\\\"".as_bytes()),
            Bytes::from_static(&[0xc3, 0x28, 0, 10, 13]),
            Bytes::from(vec![7u8; 100_000]),
        ];
        for format in [
            JSON,
            LineFormat::Json {
                base64: true,
                names: Protocol::Mqtt,
            },
        ] {
            for p in &payloads {
                let mut m = Message::new(origin(), "sensors/ü/#", p.clone());
                m.headers = vec![("k".into(), "v\u{1}".into()), ("k".into(), "w".into())];
                m.received = at(1_800_000_000, 999_999);
                let first = encode(&m, format);
                let back = decode_line(first.trim_end_matches('\n').as_bytes(), format, &origin())
                    .unwrap()
                    .unwrap();
                assert_eq!(back.payload, *p);
                assert_eq!(back.subject, m.subject);
                assert_eq!(back.headers, m.headers);
                assert_eq!(back.received, m.received);
                assert_eq!(encode(&back, format), first);
            }
        }
    }

    #[test]
    fn reads_lines_from_other_tools() {
        let m = decode(r#"{"subject":"x","extra":[1,{"y":2}],"payload":{"v": 1},"headers":{"n":3,"t":true,"z":null,"l":["a","b"]},"time":1234}"#)
            .unwrap()
            .unwrap();
        assert_eq!(m.subject, "x");
        assert_eq!(m.payload, r#"{"v": 1}"#);
        assert_eq!(
            m.headers,
            vec![
                ("n".to_string(), "3".to_string()),
                ("t".to_string(), "true".to_string()),
                ("l".to_string(), "a".to_string()),
                ("l".to_string(), "b".to_string()),
            ]
        );
        // A time that is not RFC 3339 leaves the time of reading.
        assert!(m.received.elapsed().unwrap() < Duration::from_secs(60));
        let m = decode(r#"{"subject":"x"}"#).unwrap().unwrap();
        assert!(m.payload.is_empty() && m.headers.is_empty());
        let m = decode(r#"{"subject":"x","payload":null,"time":"2024-01-02T03:04:05Z"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(m.received, at(1_704_164_645, 0));
    }

    #[test]
    fn bad_lines_say_why_without_their_content() {
        for (line, why) in [
            ("not json", "not a JSON line"),
            (r#"{"payload":"secret"}"#, "missing field `subject`"),
            (r#"{"subject":5}"#, "invalid type"),
            (
                r#"{"subject":"s","payload":"%%%","payload_base64":true}"#,
                "not base64",
            ),
            (
                r#"{"subject":"s","payload":[1],"payload_base64":true}"#,
                "not a string",
            ),
            (r#"{"subject":"s","headers":{"h":{"x":1}}}"#, "header `h`"),
            (r#"["subject"]"#, "not a JSON line"),
        ] {
            let e = decode(line).unwrap_err();
            assert!(e.reason.contains(why), "{line}: {}", e.reason);
            assert!(!e.reason.contains("secret"), "{}", e.reason);
        }
        assert!(decode("   ").unwrap().is_none());
    }

    #[test]
    fn raw_lines_are_payloads() {
        let m = decode_line(b"a \xff b", LineFormat::Raw, &origin())
            .unwrap()
            .unwrap();
        assert_eq!(m.subject, "");
        assert_eq!(m.payload, &b"a \xff b"[..]);
        let mut m = Message::new(origin(), "ignored", "two\nlines");
        m.headers = vec![("h".into(), "v".into())];
        assert_eq!(encode(&m, LineFormat::Raw), "two\nlines\n");
    }

    fn lines_of(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, usize>> {
        let mut reader = std::io::BufReader::with_capacity(4, Cursor::new(input.to_vec()));
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(line) = next_line(&mut reader, &mut buf, max).unwrap() {
            out.push(match line {
                Line::Complete => Ok(buf.clone()),
                Line::TooLong(n) => Err(n),
            });
        }
        out
    }

    #[test]
    fn splits_lines_on_lf_and_crlf_and_skips_long_ones() {
        assert_eq!(
            lines_of(b"ab\r\ncd\n\nlast", 100),
            vec![
                Ok(b"ab".to_vec()),
                Ok(b"cd".to_vec()),
                Ok(vec![]),
                Ok(b"last".to_vec())
            ]
        );
        assert_eq!(
            lines_of(b"short\n0123456789abc\nok\r\n", 10),
            vec![Ok(b"short".to_vec()), Err(13), Ok(b"ok".to_vec())]
        );
        // A lone \r inside a line stays; only the one before \n goes.
        assert_eq!(lines_of(b"a\rb\r\r\n", 10), vec![Ok(b"a\rb\r".to_vec())]);
        assert!(lines_of(b"", 10).is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 2000,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// Text with the characters that matter to a JSON line: quotes, escapes, controls,
        /// line breaks, non-ASCII, as well as anything else.
        fn text() -> impl Strategy<Value = String> {
            let tricky = prop::sample::select(vec![
                '"', '\\', '\n', '\r', '\t', '\0', '\u{1b}', '\u{7f}', 'a', 'é', '€', '😀', ' ',
            ]);
            prop_oneof![
                any::<String>(),
                prop::collection::vec(tricky, 0..12).prop_map(String::from_iter),
            ]
        }

        /// `headers` grouped by name in the order each name first appears: what a JSON line
        /// (an object, one key per name) keeps of their order.
        fn grouped(headers: &[(String, String)]) -> Vec<(String, String)> {
            let mut names: Vec<&String> = Vec::new();
            for (name, _) in headers {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            names
                .into_iter()
                .flat_map(|name| headers.iter().filter(move |(n, _)| n == name).cloned())
                .collect()
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn reading_lines_never_panics_and_keeps_within_the_limit(
                input in prop::collection::vec(
                    prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..200),
                max in 0usize..20,
            ) {
                let lines = lines_of(&input, max);
                let breaks = input.iter().filter(|&&b| b == b'\n').count();
                let unterminated = !input.is_empty() && input.last() != Some(&b'\n');
                prop_assert_eq!(lines.len(), breaks + usize::from(unterminated));
                for line in lines {
                    match line {
                        Ok(line) => {
                            prop_assert!(line.len() <= max);
                            prop_assert!(!line.contains(&b'\n'));
                        }
                        Err(length) => prop_assert!(length > max),
                    }
                }
            }

            #[test]
            fn decoding_any_bytes_never_panics(
                line in prop::collection::vec(any::<u8>(), 0..100),
                text in text(),
                nats in any::<bool>(),
            ) {
                let names = if nats { Protocol::Nats } else { Protocol::Mqtt };
                let json = LineFormat::Json { base64: false, names };
                let _ = decode_line(&line, json, &origin());
                let _ = decode_line(text.as_bytes(), json, &origin());
                // A JSON object whose fields hold arbitrary text.
                let object = format!(
                    "{{\"subject\":{0},\"protocol\":{0},\"payload\":{0},\"headers\":{{{0}:{0}}},\"time\":{0}}}",
                    serde_json::to_string(&text).unwrap()
                );
                let _ = decode_line(object.as_bytes(), json, &origin());
                let raw = decode_line(&line, LineFormat::Raw, &origin()).unwrap().unwrap();
                prop_assert_eq!(&raw.payload[..], &line[..]);
            }

            #[test]
            fn a_written_line_reads_back_as_the_message(
                subject in text(),
                payload in prop::collection::vec(any::<u8>(), 0..64),
                utf8 in text(),
                use_text in any::<bool>(),
                headers in prop::collection::vec((text(), text()), 0..5),
                base64 in any::<bool>(),
            ) {
                let payload = if use_text { utf8.into_bytes() } else { payload };
                let mut message = Message::new(origin(), subject.clone(), payload.clone());
                message.headers = headers.clone();
                let format = LineFormat::Json { base64, names: Protocol::Mqtt };
                let mut out = Vec::new();
                encode_line(&message, format, &mut out);
                prop_assert_eq!(out.last(), Some(&b'\n'));
                prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
                let read = decode_line(&out[..out.len() - 1], format, &origin())
                    .unwrap()
                    .unwrap();
                prop_assert_eq!(read.subject, subject);
                prop_assert_eq!(&read.payload[..], &payload[..]);
                prop_assert_eq!(read.headers, grouped(&headers));
            }
        }
    }
}
