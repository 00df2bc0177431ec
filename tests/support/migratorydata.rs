//! [`MigratoryDataFake`]: a **fake** of MigratoryData's REST API, hand-written ONLY from the
//! public REST documentation (MigratoryData is a commercial server, and its
//! native client protocol is closed: no real one runs here). Everything else in tests/support
//! is the real program, bar [`super::RestdbFake`].
//!
//! What the documentation says (REST enabled by `Rest.Enable = true` on the server), and what
//! the fake does:
//!
//! | the documentation | the fake |
//! |---|---|
//! | `POST /rest/produce?token=T&subject=/a/b[&closure=C&retained=true\|false&qos=standard\|guaranteed]`, body = content | the same; the content is stored per subject with the next seq of the subject and the cluster's epoch |
//! | produce answer `{"subject", "closure", "status"}`, status `OK`, `FAILED`, `DENY`, `MESSAGE_SIZE_LIMIT_EXCEEDED` | the same; the closure given is echoed |
//! | `GET /rest/consume?token=T&subject=/a/b[&history=N \| &epoch=E&seq=S]` | the same |
//! | consume answer `{"subject", "messages": [{"message_type", "content", "closure", "retained", "compressed", "epoch", "seq"}]}`, `message_type` `SNAPSHOT`, `HISTORICAL` or `RECOVERED` | the same fields; `compressed` is always false unless [`MigratoryDataFake::publish_compressed`] stored the message |
//! | clients are given a list of servers and fail over between them | [`MigratoryDataFake::cluster`] starts several servers on one shared store; each can be stopped and started again |
//!
//! Where the documentation is silent the fake makes these choices:
//! - **token**: one token ([`MigratoryDataFake::token`]) is entitled to everything. A produce
//!   with another token (or none) answers `200` with status `DENY`; a consume with another
//!   token answers `403` with `{"subject", "status": "DENY"}`;
//! - **size**: content over [`FakeOptions::max_message_size`] bytes answers
//!   `MESSAGE_SIZE_LIMIT_EXCEEDED` (not stored);
//! - **forced statuses**: [`MigratoryDataFake::force`] makes the next N produces (optionally
//!   only those whose content contains a given text) answer a status; `FAILED`, `DENY` and
//!   `MESSAGE_SIZE_LIMIT_EXCEEDED` are not stored, `OK` is the normal path;
//! - **consume**: with `epoch=E&seq=S` and E the cluster's epoch, the messages *after* seq S
//!   (exclusive), typed `RECOVERED`; with another epoch, every stored message, `HISTORICAL`;
//!   with `history=N`, the last N, `HISTORICAL`; with neither, the subject's last retained
//!   message (`SNAPSHOT`) if there is one. At most [`FakeOptions::max_per_answer`] messages
//!   per answer, the oldest first, so a client pages by consuming again from the last seq;
//! - a subject that does not start with `/`, or a missing `subject`, answers `400` (text);
//! - the epoch is fixed per cluster ([`FakeOptions::epoch`]); seqs start at 1 per subject;
//! - the content is text (the body read as UTF-8, lossily).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How a fake cluster behaves; [`FakeOptions::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// The only token entitled to produce and consume.
    pub token: String,
    /// The epoch every stored message gets.
    pub epoch: u64,
    /// Larger content answers `MESSAGE_SIZE_LIMIT_EXCEEDED`.
    pub max_message_size: usize,
    /// The most messages one consume answer holds.
    pub max_per_answer: usize,
}

impl FakeOptions {
    pub fn new(token: &str) -> FakeOptions {
        FakeOptions {
            token: token.to_string(),
            epoch: 4242,
            max_message_size: 64 * 1024,
            max_per_answer: 100,
        }
    }
}

/// One message stored on a subject.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub subject: String,
    pub content: String,
    pub closure: String,
    pub retained: bool,
    pub compressed: bool,
    pub epoch: u64,
    pub seq: u64,
    /// The server (index in the cluster) that took it; `None` when the test stored it.
    pub server: Option<usize>,
}

/// One produce request a server answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Produce {
    /// The server (index in the cluster) that answered it.
    pub server: usize,
    pub subject: String,
    pub closure: Option<String>,
    pub content: String,
    pub retained: Option<String>,
    pub qos: Option<String>,
    /// The status answered.
    pub status: String,
}

/// One consume request a server answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Consume {
    pub server: usize,
    pub subject: String,
    pub history: Option<String>,
    pub epoch: Option<String>,
    pub seq: Option<String>,
    /// How many messages the answer held (0 for a refusal).
    pub answered: usize,
}

/// A status forced on coming produces.
struct Forced {
    status: String,
    remaining: usize,
    matching: Option<String>,
}

#[derive(Default)]
struct Store {
    messages: HashMap<String, Vec<Stored>>,
    produces: Vec<Produce>,
    consumes: Vec<Consume>,
    forced: Vec<Forced>,
    /// Every query string seen, for checks that the token went where it should.
    queries: Vec<String>,
}

struct Shared {
    options: FakeOptions,
    store: Mutex<Store>,
    changed: watch::Sender<u64>,
}

impl Shared {
    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// One fake MigratoryData server on 127.0.0.1 (see the module documentation). Servers of one
/// [`MigratoryDataFake::cluster`] share their store, as the members of a MigratoryData cluster
/// share subjects. Runs on the current tokio runtime; stops on drop.
pub struct MigratoryDataFake {
    index: usize,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl MigratoryDataFake {
    /// One server with `token` and the other defaults.
    pub fn start(token: &str) -> MigratoryDataFake {
        Self::cluster(FakeOptions::new(token), 1).remove(0)
    }

    /// `n` servers sharing one store; must be called inside a tokio runtime. Each listener is
    /// bound before this returns.
    pub fn cluster(options: FakeOptions, n: usize) -> Vec<MigratoryDataFake> {
        let shared = Arc::new(Shared {
            options,
            store: Mutex::new(Store::default()),
            changed: watch::Sender::new(0),
        });
        (0..n)
            .map(|index| {
                let listener = bind(([127, 0, 0, 1], 0).into());
                let addr = listener.local_addr().unwrap();
                let stop = CancellationToken::new();
                let server = Some(serve(listener, index, shared.clone(), stop.clone()));
                MigratoryDataFake {
                    index,
                    addr,
                    shared: shared.clone(),
                    stop,
                    server,
                }
            })
            .collect()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token(&self) -> &str {
        &self.shared.options.token
    }

    pub fn epoch(&self) -> u64 {
        self.shared.options.epoch
    }

    /// Makes the next `times` produces whose content contains `matching` (any produce when
    /// `None`) answer `status`. Forcings apply in the order they were made.
    pub fn force(&self, status: &str, times: usize, matching: Option<&str>) {
        self.shared.store.lock().unwrap().forced.push(Forced {
            status: status.to_string(),
            remaining: times,
            matching: matching.map(str::to_string),
        });
    }

    /// Stores `content` on `subject` as if a client had produced it; returns its seq.
    pub fn publish(&self, subject: &str, content: &str, retained: bool) -> u64 {
        store(&self.shared, None, subject, content, "", retained, false)
    }

    /// Stores a message flagged `compressed: true` (its content as given).
    pub fn publish_compressed(&self, subject: &str, content: &str) -> u64 {
        store(&self.shared, None, subject, content, "", false, true)
    }

    /// Every message stored on `subject`, oldest first.
    pub fn stored(&self, subject: &str) -> Vec<Stored> {
        let store = self.shared.store.lock().unwrap();
        store.messages.get(subject).cloned().unwrap_or_default()
    }

    /// Every produce answered, in order.
    pub fn produces(&self) -> Vec<Produce> {
        self.shared.store.lock().unwrap().produces.clone()
    }

    /// Every consume answered, in order.
    pub fn consumes(&self) -> Vec<Consume> {
        self.shared.store.lock().unwrap().consumes.clone()
    }

    /// Every query string received, in order.
    pub fn queries(&self) -> Vec<String> {
        self.shared.store.lock().unwrap().queries.clone()
    }

    /// Waits until `subject` holds at least `n` messages and returns them; panics after
    /// `timeout` with what it holds.
    pub async fn wait_for_stored(&self, subject: &str, n: usize, timeout: Duration) -> Vec<Stored> {
        let done = self
            .wait_until(timeout, |s| {
                s.messages.get(subject).map_or(0, Vec::len) >= n
            })
            .await;
        let stored = self.stored(subject);
        assert!(
            done,
            "migratorydata fake: expected {n} messages on {subject} within {timeout:?}, got {}: {:?}",
            stored.len(),
            stored.iter().map(|m| &m.content).collect::<Vec<_>>()
        );
        stored
    }

    /// Waits until at least `n` produces were answered `status`; panics after `timeout`.
    pub async fn wait_for_produces(
        &self,
        status: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Produce> {
        let done = self
            .wait_until(timeout, |s| {
                s.produces.iter().filter(|p| p.status == status).count() >= n
            })
            .await;
        assert!(
            done,
            "migratorydata fake: expected {n} produces answered {status} within {timeout:?}, got {:?}",
            self.produces()
        );
        self.produces()
    }

    /// Waits until at least `n` consumes of `subject` were answered; panics after `timeout`.
    /// Returns every consume (of any subject).
    pub async fn wait_for_consumes(
        &self,
        subject: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Consume> {
        let done = self
            .wait_until(timeout, |s| {
                s.consumes.iter().filter(|c| c.subject == subject).count() >= n
            })
            .await;
        assert!(
            done,
            "migratorydata fake: expected {n} consumes of {subject} within {timeout:?}, got {:?}",
            self.consumes()
        );
        self.consumes()
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Store) -> bool) -> bool {
        let mut changes = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.shared.store.lock().unwrap()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// Stops listening (requests in flight are answered first): clients' next requests are
    /// refused until [`Self::restart`]. The store is kept (it is the cluster's).
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Listens again on the same port after [`Self::stop`].
    pub fn restart(&mut self) {
        assert!(
            self.server.is_none(),
            "migratorydata fake: restart() without stop()"
        );
        let listener = bind(self.addr);
        self.stop = CancellationToken::new();
        self.server = Some(serve(
            listener,
            self.index,
            self.shared.clone(),
            self.stop.clone(),
        ));
    }
}

impl Drop for MigratoryDataFake {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let listener = std::net::TcpListener::bind(addr)
        .unwrap_or_else(|e| panic!("migratorydata fake: cannot listen on {addr}: {e}"));
    listener.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(listener).expect("migratorydata fake: needs a tokio runtime")
}

fn serve(
    listener: tokio::net::TcpListener,
    index: usize,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/rest/produce", post(produce))
        .route("/rest/consume", get(consume))
        .with_state((index, shared));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .expect("migratorydata fake: server failed");
    })
}

/// Stores a message with the subject's next seq; returns the seq.
fn store(
    shared: &Shared,
    server: Option<usize>,
    subject: &str,
    content: &str,
    closure: &str,
    retained: bool,
    compressed: bool,
) -> u64 {
    let mut s = shared.store.lock().unwrap();
    let list = s.messages.entry(subject.to_string()).or_default();
    let seq = list.last().map_or(1, |m| m.seq + 1);
    list.push(Stored {
        subject: subject.to_string(),
        content: content.to_string(),
        closure: closure.to_string(),
        retained,
        compressed,
        epoch: shared.options.epoch,
        seq,
        server,
    });
    drop(s);
    shared.bump();
    seq
}

fn bad_request(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, why.to_string()).into_response()
}

fn json_answer(status: StatusCode, value: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The subject of a request, or why it has none (for a `400`).
fn subject_of(query: &HashMap<String, String>) -> Result<String, &'static str> {
    match query.get("subject") {
        Some(s) if s.starts_with('/') => Ok(s.clone()),
        Some(_) => Err("a subject starts with /"),
        None => Err("subject is missing"),
    }
}

/// `POST /rest/produce`
async fn produce(
    State((index, shared)): State<(usize, Arc<Shared>)>,
    Query(query): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    shared
        .store
        .lock()
        .unwrap()
        .queries
        .push(uri.query().unwrap_or_default().to_string());
    let subject = match subject_of(&query) {
        Ok(s) => s,
        Err(why) => return bad_request(why),
    };
    let content = String::from_utf8_lossy(&body).into_owned();
    let closure = query.get("closure").cloned();
    let retained = query.get("retained").cloned();
    let status = {
        let mut s = shared.store.lock().unwrap();
        let forced = s
            .forced
            .iter_mut()
            .find(|f| f.remaining > 0 && f.matching.as_deref().is_none_or(|m| content.contains(m)));
        match forced {
            Some(f) => {
                f.remaining -= 1;
                f.status.clone()
            }
            None if query.get("token") != Some(&shared.options.token) => "DENY".into(),
            None if body.len() > shared.options.max_message_size => {
                "MESSAGE_SIZE_LIMIT_EXCEEDED".into()
            }
            None => "OK".into(),
        }
    };
    // Recorded before it is stored, so that a test waiting for stored messages sees every
    // produce that stored them.
    shared.store.lock().unwrap().produces.push(Produce {
        server: index,
        subject: subject.clone(),
        closure: closure.clone(),
        content: content.clone(),
        retained: retained.clone(),
        qos: query.get("qos").cloned(),
        status: status.clone(),
    });
    if status == "OK" {
        store(
            &shared,
            Some(index),
            &subject,
            &content,
            closure.as_deref().unwrap_or_default(),
            retained.as_deref() == Some("true"),
            false,
        );
    }
    shared.bump();
    json_answer(
        StatusCode::OK,
        json!({"subject": subject, "closure": closure.unwrap_or_default(), "status": status}),
    )
}

/// `GET /rest/consume`
async fn consume(
    State((index, shared)): State<(usize, Arc<Shared>)>,
    Query(query): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
) -> Response {
    let mut s = shared.store.lock().unwrap();
    s.queries.push(uri.query().unwrap_or_default().to_string());
    let subject = match subject_of(&query) {
        Ok(subject) => subject,
        Err(why) => return bad_request(why),
    };
    let mut record = Consume {
        server: index,
        subject: subject.clone(),
        history: query.get("history").cloned(),
        epoch: query.get("epoch").cloned(),
        seq: query.get("seq").cloned(),
        answered: 0,
    };
    if query.get("token") != Some(&shared.options.token) {
        s.consumes.push(record);
        drop(s);
        shared.bump();
        return json_answer(
            StatusCode::FORBIDDEN,
            json!({"subject": subject, "status": "DENY"}),
        );
    }
    let all = s.messages.get(&subject).cloned().unwrap_or_default();
    let number = |key: &str| query.get(key).and_then(|v| v.parse::<u64>().ok());
    let picked: Vec<(&Stored, &str)> = match (number("epoch"), number("seq"), number("history")) {
        (Some(epoch), Some(seq), _) if epoch == shared.options.epoch => all
            .iter()
            .filter(|m| m.seq > seq)
            .map(|m| (m, "RECOVERED"))
            .collect(),
        (Some(_), Some(_), _) => all.iter().map(|m| (m, "HISTORICAL")).collect(),
        (_, _, Some(n)) => all[all.len().saturating_sub(n as usize)..]
            .iter()
            .map(|m| (m, "HISTORICAL"))
            .collect(),
        _ => all
            .iter()
            .rev()
            .find(|m| m.retained)
            .map(|m| (m, "SNAPSHOT"))
            .into_iter()
            .collect(),
    };
    let messages: Vec<Value> = picked
        .into_iter()
        .take(shared.options.max_per_answer)
        .map(|(m, kind)| {
            json!({
                "message_type": kind,
                "content": m.content,
                "closure": m.closure,
                "retained": m.retained,
                "compressed": m.compressed,
                "epoch": m.epoch,
                "seq": m.seq,
            })
        })
        .collect();
    record.answered = messages.len();
    s.consumes.push(record);
    drop(s);
    shared.bump();
    json_answer(
        StatusCode::OK,
        json!({"subject": subject, "messages": messages}),
    )
}
