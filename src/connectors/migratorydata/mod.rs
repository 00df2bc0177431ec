//! MigratoryData through its public REST API: a sink that produces each message, and a source
//! that polls a subject.
//!
//! MigratoryData's native client protocol is closed (and its SDK licence forbids reverse
//! engineering it), so ferry speaks the REST API the server documents (see [`rest`]). Its
//! other public interface, MQTT, needs no connector of its own: an `mqtt` connection to the
//! server's MQTT listener (docs/connectors/migratorydata.md).
//!
//! - **Servers.** A connection lists its servers; requests go to one at a time and fail over
//!   to the next on a connection failure, back to the first after `reconnect.stable_after`
//!   ([`servers`]).
//! - **Sink.** One `POST /rest/produce` per message, its payload the body, with a `closure`:
//!   the message's id, which the route gives every message (a counter for one without); the
//!   answer must carry the same closure,
//!   so an outcome is never taken for another message's. `OK` confirms the message; `FAILED`
//!   is [`SinkError::Unavailable`], so the route retries it with backoff; `DENY` and
//!   `MESSAGE_SIZE_LIMIT_EXCEEDED` are [`SinkError::Rejected`] with the status in the reason,
//!   so the route's dead-letter sink gets the message (`DENY` is also logged, rate-limited,
//!   as an entitlement problem). Sends share nothing but the client and the failover
//!   position: several may be in flight at once.
//! - **Source.** One poller per subject (whatever the number of routes reading it) asks
//!   `GET /rest/consume` for what came after its cursor, the epoch and sequence number of the
//!   last message received; without a cursor, for `history: N` past messages (without
//!   `history:`, for the last message only to learn where the subject stands: ferry starts
//!   from there and delivers what comes after). Each
//!   message goes to every route reading the subject with its message type, retained flag,
//!   closure, epoch and seq as headers (`MigratoryData-*`). The cursor is saved under the
//!   state directory only once every route confirmed the message (the SSE source's
//!   [`cursor`](super::sse::cursor) tracker and file), so after a restart ferry resumes
//!   after the last delivered message. A poll that brought nothing waits `poll_interval`;
//!   one that brought messages is followed by the next at once.
//! - **Compressed content.** The documentation says a message's content may be compressed
//!   (`compressed: true`) but not how: ferry cannot decode it, so it does not forward it as
//!   if it were the payload. It is logged (rate-limited) as not delivered and skipped.
//! - **The token** goes in every request's query. It is never logged: ferry logs servers by
//!   origin only, and reqwest's errors lose their URL ([`http_client::describe`]).

pub mod config;
pub mod protocol;
mod read;
mod rest;
mod servers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::http_client::{self, Timeouts};
use super::sse::cursor::{self, CursorFile, Tracker};
use super::{Connection, Sinks};
use crate::config::{MigratoryDataQos, Reconnect, Retain, SinkSpec, SourceSpec};
use crate::contracts::queue::RouteInput;
use crate::contracts::status::{Backoff, ConnectionStatus, RateLimitedLog};
use crate::contracts::{BoxFuture, ConnectionContext, Sink, SinkError};
use crate::message::{Ack, Incoming, Message};
use rest::{ConsumedMessage, Cursor};
use servers::Servers;

/// How many past messages a poll asks for while ferry has no cursor and the subject was
/// empty when it started: all of them are new. More come with the next polls, from the cursor.
const CATCH_UP: u32 = 1000;

/// How much of an error answer goes into a reason (logs, `Ferry-Error`).
const EXCERPT_BYTES: usize = 300;

/// The headers a consumed message carries its MigratoryData attributes in.
pub const MESSAGE_TYPE_HEADER: &str = "MigratoryData-Message-Type";
pub const RETAINED_HEADER: &str = "MigratoryData-Retained";
pub const CLOSURE_HEADER: &str = "MigratoryData-Closure";
pub const EPOCH_HEADER: &str = "MigratoryData-Epoch";
pub const SEQ_HEADER: &str = "MigratoryData-Seq";

/// The closure of the next produce of a message without an id: unique within the process.
static NEXT_CLOSURE: AtomicU64 = AtomicU64::new(1);

/// A MigratoryData server, or a cluster of them, through the REST API.
pub struct MigratoryDataConnection {
    name: Arc<str>,
    config: crate::config::MigratoryDataConnection,
    reconnect: Reconnect,
    status: ConnectionStatus,
    state_dir: PathBuf,
    /// Built on first use, so that a bad URL or TLS file stops `ferry run`.
    endpoint: Option<Arc<Endpoint>>,
    /// The subjects routes read, by subject.
    subjects: BTreeMap<String, Subject>,
}

impl MigratoryDataConnection {
    pub fn new(
        name: &str,
        config: crate::config::MigratoryDataConnection,
        reconnect: Reconnect,
        status: ConnectionStatus,
        state_dir: &Path,
    ) -> Self {
        MigratoryDataConnection {
            name: name.into(),
            config,
            reconnect,
            status,
            state_dir: state_dir.to_path_buf(),
            endpoint: None,
            subjects: BTreeMap::new(),
        }
    }

    fn endpoint(&mut self) -> anyhow::Result<Arc<Endpoint>> {
        if let Some(endpoint) = &self.endpoint {
            return Ok(endpoint.clone());
        }
        let c = &self.config;
        let bases = c
            .servers
            .iter()
            .map(|s| Url::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("connection {}: a server is not a URL", self.name))?;
        let client = http_client::sender(
            &c.tls,
            &self.name,
            Timeouts {
                connect: Some(self.reconnect.connect_timeout),
                request: Some(c.timeout),
                read: None,
            },
        )?;
        let endpoint = Arc::new(Endpoint {
            servers: Servers::new(
                self.name.clone(),
                bases,
                self.reconnect.stable_after,
                self.status.clone(),
            ),
            name: self.name.clone(),
            client,
            token: c.token.clone(),
            timeout: c.timeout,
            connect_timeout: self.reconnect.connect_timeout,
            max_response_size: c.max_response_size,
            status: self.status.clone(),
            denied: RateLimitedLog::default(),
        });
        self.endpoint = Some(endpoint.clone());
        Ok(endpoint)
    }
}

impl Connection for MigratoryDataConnection {
    fn add_source(
        &mut self,
        _route: &str,
        source: &SourceSpec,
        input: RouteInput,
    ) -> anyhow::Result<()> {
        let SourceSpec::MigratoryData(source) = source else {
            anyhow::bail!(
                "connection {} is MigratoryData, the source is not",
                self.name
            );
        };
        self.endpoint()?;
        if let Some(subject) = self.subjects.get_mut(&source.subject) {
            subject.history = subject.history.max(source.history);
            subject.routes.push(input);
            return Ok(());
        }
        let hint = format!(
            "ferry keeps the MigratoryData resume cursor (the epoch and seq of the last delivered \
             message of each subject) there. Set `state_dir:` in bridges.yaml to a directory \
             ferry may write, or run ferry under systemd with `StateDirectory=ferry` (then it is \
             /var/lib/ferry); connection {}",
            self.name
        );
        let dir = self
            .state_dir
            .join("migratorydata")
            .join(cursor::file_name(&self.name));
        let (file, saved) = CursorFile::open_in(
            &dir,
            &subject_file_name(&source.subject),
            self.name.clone(),
            format!("migratorydata subject {}", source.subject),
            hint,
        )?;
        self.subjects.insert(
            source.subject.clone(),
            Subject {
                history: source.history,
                routes: vec![input],
                tracker: Tracker::new(self.name.clone(), saved),
                file,
            },
        );
        Ok(())
    }

    fn sinks(&mut self) -> Arc<dyn Sinks> {
        Arc::new(MigratoryDataSinks {
            name: self.name.clone(),
            endpoint: self.endpoint().map_err(|e| format!("{e:#}")),
        })
    }

    /// Starts one poller per subject read. A connection only written to has no session: it
    /// counts as up until a request cannot reach any server.
    fn start(self: Box<Self>, runtime: &ConnectionContext) {
        let Some(endpoint) = self.endpoint else {
            return;
        };
        if self.subjects.is_empty() {
            endpoint.status.up(&format!(
                "to {} (REST: one request per message)",
                endpoint.servers.origin(endpoint.servers.pick().0)
            ));
            return;
        }
        for (subject, s) in self.subjects {
            runtime.tasks.spawn(
                "cursor writer",
                s.file.keep(s.tracker.subscribe(), runtime.close.clone()),
            );
            let poller = Poller {
                endpoint: endpoint.clone(),
                subject,
                history: s.history,
                routes: s.routes,
                tracker: s.tracker,
                poll_interval: self.config.poll_interval,
                reconnect: self.reconnect.clone(),
                skipped: RateLimitedLog::default(),
            };
            runtime
                .sources
                .spawn("poller", poller.run(runtime.stop_sources.clone()));
        }
    }
}

/// A subject routes read, before the connection starts.
struct Subject {
    history: Option<u32>,
    routes: Vec<RouteInput>,
    tracker: Arc<Tracker>,
    file: CursorFile,
}

/// What the sinks and pollers of one connection share.
struct Endpoint {
    name: Arc<str>,
    servers: Servers,
    client: reqwest::Client,
    token: crate::config::Secret,
    timeout: Duration,
    connect_timeout: Duration,
    /// `max_response_size`: the most of an answer ferry reads.
    max_response_size: usize,
    status: ConnectionStatus,
    /// `DENY` warnings, at most one every few seconds.
    denied: RateLimitedLog,
}

impl Endpoint {
    /// Reads an answer's body, at most `max_response_size` of it; `Err` says why there is no
    /// whole answer to judge.
    async fn answer(&self, response: &mut reqwest::Response) -> Result<Vec<u8>, String> {
        let body = http_client::read_body(response, self.max_response_size).await;
        match body.end {
            http_client::BodyEnd::Whole => Ok(body.bytes),
            http_client::BodyEnd::OverLimit => Err(format!(
                "the answer is larger than the connection's max_response_size ({} bytes): {}",
                self.max_response_size,
                http_client::excerpt(&body.bytes, EXCERPT_BYTES, false)
            )),
            http_client::BodyEnd::Broken(error) => Err(format!(
                "the answer broke off: {}",
                self.request_failed(error)
            )),
        }
    }

    /// Why a request got no answer, in words that hold no URL (the token is in its query).
    fn request_failed(&self, error: reqwest::Error) -> String {
        if error.is_connect() && error.is_timeout() {
            format!("cannot connect within {:?}", self.connect_timeout)
        } else if error.is_connect() {
            format!("cannot connect: {}", http_client::describe(error))
        } else if error.is_timeout() {
            format!(
                "no answer within {:?} (the connection's `timeout`)",
                self.timeout
            )
        } else {
            http_client::describe(error)
        }
    }
}

/// Makes the sinks of one connection: each shares its endpoint.
struct MigratoryDataSinks {
    name: Arc<str>,
    /// Or why it could not be built (a bad TLS file).
    endpoint: Result<Arc<Endpoint>, String>,
}

impl Sinks for MigratoryDataSinks {
    fn add_sink(&self, sink: &SinkSpec) -> anyhow::Result<Arc<dyn Sink>> {
        let SinkSpec::MigratoryData(sink) = sink else {
            anyhow::bail!("connection {} is MigratoryData, the sink is not", self.name);
        };
        Ok(Arc::new(MigratoryDataSink {
            endpoint: self.endpoint.clone().map_err(|e| anyhow::anyhow!(e))?,
            retained: sink.retained,
            qos: sink.qos,
        }))
    }
}

/// Produces a route's messages on one subject (the message's rendered `subject`).
struct MigratoryDataSink {
    endpoint: Arc<Endpoint>,
    retained: Retain,
    qos: MigratoryDataQos,
}

impl Sink for MigratoryDataSink {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let e = &*self.endpoint;
            // The message's own id (the route gives every message one, the same on each
            // try), so a server's answer names the message it is about.
            let closure = match &message.id {
                Some(id) => id.clone(),
                None => format!("ferry-{}", NEXT_CLOSURE.fetch_add(1, Ordering::Relaxed)),
            };
            let retained = match self.retained {
                Retain::Fixed(r) => r,
                Retain::FromSource => message.retain,
            };
            let mut last = String::new();
            // Each server at most once per send; the route's backoff paces the next round.
            for _ in 0..e.servers.len() {
                let (index, base) = e.servers.pick();
                let url = rest::produce_url(
                    base,
                    e.token.expose(),
                    &message.subject,
                    &closure,
                    retained,
                    self.qos,
                );
                let response = e
                    .client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(message.payload.clone())
                    .send()
                    .await;
                let response = match response {
                    Ok(r) if r.status().is_server_error() => Err(format!("HTTP {}", r.status())),
                    Ok(r) => Ok(r),
                    Err(error) => Err(e.request_failed(error)),
                };
                match response {
                    Ok(response) => {
                        e.servers.succeeded(index);
                        return self.outcome(response, &closure, message).await;
                    }
                    Err(reason) => {
                        e.servers.failed(index, &reason);
                        last = format!("{}: {reason}", e.servers.origin(index));
                    }
                }
            }
            Err(SinkError::Unavailable(last))
        })
    }
}

impl MigratoryDataSink {
    /// What the server's answer means for the message.
    async fn outcome(
        &self,
        mut response: reqwest::Response,
        closure: &str,
        message: &Message,
    ) -> Result<(), SinkError> {
        let status = response.status();
        let body = self
            .endpoint
            .answer(&mut response)
            .await
            .map_err(SinkError::Unavailable)?;
        let outcome = judge(status, &body, closure, message);
        if let Err(SinkError::Rejected(reason)) = &outcome
            && reason.starts_with("MigratoryData answered DENY")
        {
            let e = &self.endpoint;
            e.denied.warn(|| {
                format!(
                    "connection {}: {reason} (an entitlement problem: check what the server entitles this token to); the message goes to the dead-letter sink",
                    e.name
                )
            });
        }
        outcome
    }
}

/// What a produce answer (`status`, `body`) means for `message`, sent with `closure`.
fn judge(
    status: reqwest::StatusCode,
    body: &[u8],
    closure: &str,
    message: &Message,
) -> Result<(), SinkError> {
    let excerpt = || http_client::excerpt(body, EXCERPT_BYTES, true);
    if !status.is_success() {
        // Not a documented answer: a 4xx is the server refusing this request as it is.
        return Err(SinkError::Rejected(format!("HTTP {status}: {}", excerpt())));
    }
    let answer: rest::ProduceAnswer = serde_json::from_slice(body).map_err(|_| {
        SinkError::Unavailable(format!(
            "the answer is not a MigratoryData produce answer: {}",
            excerpt()
        ))
    })?;
    if answer.closure.as_deref() != Some(closure) {
        return Err(SinkError::Unavailable(format!(
            "the answer's closure {:?} is not the request's {closure:?}, so it says nothing about this message",
            answer.closure.unwrap_or_default()
        )));
    }
    let subject = &message.subject;
    match answer.status.as_str() {
        "OK" => Ok(()),
        "FAILED" => Err(SinkError::Unavailable(format!(
            "MigratoryData answered FAILED for {subject}"
        ))),
        "DENY" => Err(SinkError::Rejected(format!(
            "MigratoryData answered DENY for {subject}: the token is not entitled to publish on it"
        ))),
        "MESSAGE_SIZE_LIMIT_EXCEEDED" => Err(SinkError::Rejected(format!(
            "MigratoryData answered MESSAGE_SIZE_LIMIT_EXCEEDED for {subject} ({} bytes)",
            message.payload.len()
        ))),
        other => Err(SinkError::Rejected(format!(
            "MigratoryData answered {other:?}, which ferry does not know, for {subject}"
        ))),
    }
}

/// How one poll went.
enum Poll {
    Messages(Vec<ConsumedMessage>),
    /// No answer from this server (or a 5xx): fail over.
    Unreachable(String),
    /// An answer, but not messages (a 4xx, or not JSON): retry later on the same server.
    Refused(String),
}

/// Reads one subject for every route that takes it.
struct Poller {
    endpoint: Arc<Endpoint>,
    subject: String,
    history: Option<u32>,
    routes: Vec<RouteInput>,
    tracker: Arc<Tracker>,
    poll_interval: Duration,
    reconnect: Reconnect,
    /// Compressed messages not delivered, at most one warning every few seconds.
    skipped: RateLimitedLog,
}

impl Poller {
    async fn run(self, stop: CancellationToken) {
        let e = &*self.endpoint;
        let mut cursor = self.tracker.cursor().and_then(|text| {
            let cursor = Cursor::parse(&text);
            if cursor.is_none() {
                tracing::warn!(connection = %e.name, "the saved cursor {text:?} of {} is not EPOCH:SEQ; starting without one", self.subject);
            }
            cursor
        });
        // `history: N` (N > 0): the first poll delivers the last N messages. Without it, the
        // first poll asks for the last message only to learn where the subject stands, and
        // delivers nothing of it: ferry starts from now.
        let past = self.history.filter(|n| *n > 0);
        // The first poll without a cursor found the subject empty: everything after is new.
        let mut empty_at_start = false;
        let mut backoff = Backoff::new(&self.reconnect);
        let mut failing = false;
        let mut tried = 0;
        'poll: loop {
            let (index, base) = e.servers.pick();
            let history = match cursor {
                Some(_) => None,
                None if empty_at_start => Some(CATCH_UP),
                None => Some(past.unwrap_or(1)),
            };
            let url = rest::consume_url(base, e.token.expose(), &self.subject, cursor, history);
            let poll = tokio::select! {
                _ = stop.cancelled() => break,
                poll = self.poll(url) => poll,
            };
            let messages = match poll {
                Poll::Messages(messages) => messages,
                Poll::Unreachable(reason) => {
                    e.servers.failed(index, &reason);
                    tried += 1;
                    if tried < e.servers.len() {
                        continue; // the next server, at once
                    }
                    tried = 0;
                    failing = true;
                    let delay = backoff.next_delay();
                    tracing::debug!(connection = %e.name, "no server answered a consume of {}; next round in {delay:?}", self.subject);
                    if sleep_or_stop(delay, &stop).await {
                        break;
                    }
                    continue;
                }
                Poll::Refused(reason) => {
                    failing = true;
                    let delay = backoff.next_delay();
                    e.status.down(
                        &format_args!(
                            "{} refused to consume {}: {reason}",
                            e.servers.origin(index),
                            self.subject
                        ),
                        delay,
                    );
                    if sleep_or_stop(delay, &stop).await {
                        break;
                    }
                    continue;
                }
            };
            e.servers.succeeded(index);
            tried = 0;
            if failing {
                failing = false;
                backoff.reset();
            }
            if cursor.is_none() && !empty_at_start {
                match messages.last() {
                    None => empty_at_start = true,
                    Some(last) if past.is_none() => {
                        // Where the subject stands: the cursor, settled at once (not delivered).
                        let at = Cursor {
                            epoch: last.epoch,
                            seq: last.seq,
                        };
                        cursor = Some(at);
                        drop(self.tracker.begin(Some(at.to_text()), 0));
                        if sleep_or_stop(self.poll_interval, &stop).await {
                            break;
                        }
                        continue;
                    }
                    Some(_) => {}
                }
            }
            let mut new = 0;
            for m in messages {
                if cursor.is_some_and(|c| c.covers(m.epoch, m.seq)) {
                    continue; // a server that answers from the cursor itself, inclusive
                }
                let at = Cursor {
                    epoch: m.epoch,
                    seq: m.seq,
                };
                cursor = Some(at);
                new += 1;
                if !self.deliver(m, at).await {
                    break 'poll;
                }
            }
            if new == 0 && sleep_or_stop(self.poll_interval, &stop).await {
                break;
            }
        }
        tracing::debug!(connection = %e.name, "stopped reading {}", self.subject);
    }

    /// One consume on the server at `url`.
    async fn poll(&self, url: Url) -> Poll {
        let e = &*self.endpoint;
        let mut response = match e.client.get(url).send().await {
            Ok(response) => response,
            Err(error) => return Poll::Unreachable(e.request_failed(error)),
        };
        let status = response.status();
        if status.is_server_error() {
            return Poll::Unreachable(format!("HTTP {status}"));
        }
        let body = match e.answer(&mut response).await {
            Ok(body) => body,
            Err(why) => return Poll::Unreachable(why),
        };
        let excerpt = || http_client::excerpt(&body, EXCERPT_BYTES, true);
        if !status.is_success() {
            return Poll::Refused(format!("HTTP {status}: {}", excerpt()));
        }
        match serde_json::from_slice::<rest::ConsumeAnswer>(&body) {
            Ok(answer) => Poll::Messages(answer.messages),
            Err(error) => Poll::Refused(format!(
                "the answer is not a MigratoryData consume answer ({error}): {}",
                excerpt()
            )),
        }
    }

    /// Hands one message to every route reading the subject, waiting while a queue is full.
    /// False when a route no longer takes messages (shutdown).
    async fn deliver(&self, m: ConsumedMessage, at: Cursor) -> bool {
        let id = Some(at.to_text());
        if m.compressed {
            // Settled at once: the cursor moves past it, it is not replayed after a restart.
            drop(self.tracker.begin(id, 0));
            self.skipped.warn(|| {
                format!(
                    "connection {}: a message of {} (epoch {}, seq {}) has compressed content, which ferry cannot decode: not delivered",
                    self.endpoint.name, self.subject, m.epoch, m.seq
                )
            });
            return true;
        }
        let mut message = Message::new(
            self.endpoint.name.clone(),
            self.subject.clone(),
            Bytes::from(m.content),
        );
        message.retain = m.retained;
        message.headers = vec![
            (MESSAGE_TYPE_HEADER.into(), m.message_type),
            (RETAINED_HEADER.into(), m.retained.to_string()),
        ];
        if let Some(closure) = m.closure.filter(|c| !c.is_empty()) {
            message.headers.push((CLOSURE_HEADER.into(), closure));
        }
        message
            .headers
            .push((EPOCH_HEADER.into(), m.epoch.to_string()));
        message.headers.push((SEQ_HEADER.into(), m.seq.to_string()));
        let mut acks = self.tracker.begin(id, self.routes.len());
        for route in &self.routes {
            let ack = acks.pop().unwrap_or_else(Ack::none);
            let incoming = Incoming {
                message: message.clone(),
                ack,
                reply: None,
            };
            if !route.push(incoming).await {
                return false;
            }
        }
        true
    }
}

/// A subject as the name of its cursor file, one to one: letters, digits and `.` stay, `/`
/// becomes `_`, any other byte `-` and its two hex digits (`/a_b` is `_a-5fb`, `/a/b` is
/// `_a_b`), so two subjects never share a file.
fn subject_file_name(subject: &str) -> String {
    let mut name = String::with_capacity(subject.len());
    for b in subject.bytes() {
        match b {
            b'/' => name.push('_'),
            b'.' => name.push('.'),
            b if b.is_ascii_alphanumeric() => name.push(b as char),
            b => name.push_str(&format!("-{b:02x}")),
        }
    }
    name
}

/// Sleeps `delay`; true when `stop` came first.
async fn sleep_or_stop(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn kind(status: u16, body: &str) -> String {
        let message = Message::new("src".into(), "/a/b", Bytes::from_static(b"12345"));
        match judge(
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
            "ferry-7",
            &message,
        ) {
            Ok(()) => "ok".into(),
            Err(SinkError::Unavailable(r)) => format!("retry: {r}"),
            Err(SinkError::Rejected(r)) => format!("refuse: {r}"),
            Err(SinkError::Busy { reason, .. }) => format!("busy: {reason}"),
        }
    }

    fn answer(closure: &str, status: &str) -> String {
        serde_json::json!({"subject": "/a/b", "closure": closure, "status": status}).to_string()
    }

    #[test]
    fn subjects_name_their_cursor_files_one_to_one() {
        assert_eq!(subject_file_name("/server/status"), "_server_status");
        assert_eq!(subject_file_name("/a_b"), "_a-5fb");
        assert_eq!(subject_file_name("/a-b/c.d"), "_a-2db_c.d");
        assert_eq!(subject_file_name("/é"), "_-c3-a9");
    }

    #[test]
    fn statuses_map_to_delivered_retry_or_dead_letter() {
        assert_eq!(kind(200, &answer("ferry-7", "OK")), "ok");
        assert_eq!(
            kind(200, &answer("ferry-7", "FAILED")),
            "retry: MigratoryData answered FAILED for /a/b"
        );
        assert_eq!(
            kind(200, &answer("ferry-7", "DENY")),
            "refuse: MigratoryData answered DENY for /a/b: the token is not entitled to publish on it"
        );
        assert_eq!(
            kind(200, &answer("ferry-7", "MESSAGE_SIZE_LIMIT_EXCEEDED")),
            "refuse: MigratoryData answered MESSAGE_SIZE_LIMIT_EXCEEDED for /a/b (5 bytes)"
        );
        assert!(kind(200, &answer("ferry-7", "MAYBE")).starts_with("refuse: "));
    }

    #[test]
    fn an_answer_for_another_closure_or_not_an_answer_is_retried() {
        let other = kind(200, &answer("ferry-8", "OK"));
        assert!(
            other.starts_with("retry: the answer's closure \"ferry-8\""),
            "{other}"
        );
        let missing = kind(200, r#"{"status":"OK"}"#);
        assert!(missing.starts_with("retry: "), "{missing}");
        let garbage = kind(200, "<html>proxy</html>");
        assert!(garbage.starts_with("retry: the answer is not"), "{garbage}");
        assert_eq!(
            kind(400, "bad subject"),
            "refuse: HTTP 400 Bad Request: bad subject"
        );
    }
}
