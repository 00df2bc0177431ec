//! [`RestdbFake`]: a **fake** of restdb.io's realtime API, the one hand-written server in the
//! harness. restdb.io is a hosted service, so no real one can run here; everything else in
//! tests/support is the real program.
//!
//! It follows restdb.io's public documentation, "Realtime Messaging"
//! (restdb.io/docs/realtime-messaging) and "API keys and CORS" (restdb.io/docs/apikeys-and-cors),
//! and restdb.io's own example client (github.com/RestDB/clientexamples, `realtime-react`):
//!
//! | what | the documentation | the fake |
//! |---|---|---|
//! | stream | `GET https://<db>.restdb.io/realtime`, an EventSource (`text/event-stream`) | `GET /realtime` |
//! | key | "an apikey … must be supplied, either as a query parameter or as a https header field (`x-apikey`)"; the EventSource example uses `?apikey=` | either; anything else gets `401` |
//! | database changes | typed events `post`, `put`, `delete` | the same names |
//! | their data (JSON) | post `{event: "post", collection, data: {_id, …}}`; put `{event: "put", collection, data: "ID"}`; delete `{event: "delete", collection, data: ["ID1", …]}` | [`RestdbFake::emit_post`], [`RestdbFake::emit_put`], [`RestdbFake::emit_delete`] build exactly these; [`RestdbFake::emit`] sends any event |
//! | custom events | `db.publish(event, data)` in the JavaScript API; received as typed event `publish` | `POST /realtime` with `{"event": NAME, "data": ANY}` (same key rules) is broadcast as event `publish` with data `{"event": NAME, "data": ANY}` |
//! | keep-alive | the example client listens for `ping` and reads its data as a date (`new Date(e.data)`), reloading when none came for 20 s | `ping` events every [`RestdbOptions::ping_interval`] (default 10 s), data an RFC 3339 UTC time |
//!
//! Where the documentation is silent the fake makes these choices, and says so:
//! - the exact data of a `publish` event, the path and body of the REST publish call and its
//!   answer (`200 {"ok":true}`; a body that is not such an object gets `400`), and the body of
//!   the `401` (`{"message":"invalid or missing apikey"}`);
//! - **`id:`, `retry:` and `Last-Event-ID` are not documented by restdb.io.** The fake adds them
//!   so that resuming can be tested: every event but `ping` gets an `id:` (1, 2, 3, … as
//!   decimal text); a new stream starts with a `retry:` block ([`RestdbOptions::retry`]); a
//!   client that sends `Last-Event-ID` first gets every event after that id still in a bounded
//!   history ([`RestdbOptions::history`] events), then the live ones. An id that is not in the
//!   history (too old, or never issued) replays the whole history. `ping` events carry no `id:`,
//!   so they never move a client's Last-Event-ID.
//!
//! This file depends on nothing else in tests/support, so `examples/restdb-fake.rs` runs the
//! same server by hand (`cargo run --example restdb-fake -- --help`).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How a [`RestdbFake`] behaves; [`RestdbOptions::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct RestdbOptions {
    /// The only key accepted (`x-apikey` header or `apikey` query parameter).
    pub api_key: String,
    /// Port on 127.0.0.1; 0 (the default) lets the kernel pick a free one.
    pub port: u16,
    /// How often each stream gets a `ping` event.
    pub ping_interval: Duration,
    /// The `retry:` sent at the start of each stream (the client's reconnection delay).
    pub retry: Duration,
    /// How many events (not pings) are kept for `Last-Event-ID` replay.
    pub history: usize,
}

impl RestdbOptions {
    pub fn new(api_key: &str) -> Self {
        RestdbOptions {
            api_key: api_key.to_string(),
            port: 0,
            ping_interval: Duration::from_secs(10),
            retry: Duration::from_millis(1000),
            history: 1000,
        }
    }
}

/// One event the fake sent (or would send) on its streams: `id:`, `event:` and `data:`.
#[derive(Clone, Debug, PartialEq)]
pub struct RestdbEvent {
    pub id: u64,
    pub event: String,
    /// The data, JSON on one line.
    pub data: String,
}

/// One `GET /realtime` that was let in.
#[derive(Clone, Debug)]
pub struct RestdbConnection {
    /// The `Last-Event-ID` header it sent, if any.
    pub last_event_id: Option<String>,
    /// True if the key came as the `x-apikey` header, false if as `?apikey=`.
    pub key_in_header: bool,
    /// Still connected (the fake has not noticed the stream go away).
    pub open: bool,
    pub at: Instant,
}

/// A custom event a client published with `POST /realtime`.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub event: String,
    pub data: Value,
}

/// A fake restdb.io realtime server on 127.0.0.1 (see the module documentation for what it
/// follows and what it adds). Runs on the current tokio runtime; stops on drop.
pub struct RestdbFake {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

struct Shared {
    options: RestdbOptions,
    state: Mutex<Inner>,
    /// Bumped whenever a connection opens or closes, a publish arrives, or a request is
    /// refused: what the `wait_for_*` methods wait on.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    history: VecDeque<RestdbEvent>,
    /// Open streams: connection index and the sender feeding its body.
    listeners: Vec<(usize, mpsc::UnboundedSender<Bytes>)>,
    connections: Vec<RestdbConnection>,
    published: Vec<Published>,
    refused: usize,
}

impl Shared {
    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

impl RestdbFake {
    /// Starts the fake with `api_key` and the other defaults of [`RestdbOptions::new`].
    pub fn start(api_key: &str) -> RestdbFake {
        Self::start_with(RestdbOptions::new(api_key))
    }

    /// Starts the fake; must be called inside a tokio runtime. The listener is bound before
    /// this returns, so the server accepts connections at once.
    pub fn start_with(options: RestdbOptions) -> RestdbFake {
        let addr: SocketAddr = ([127, 0, 0, 1], options.port).into();
        let listener = bind(addr);
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            options,
            state: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            changed: watch::Sender::new(0),
        });
        let stop = CancellationToken::new();
        let server = Some(serve(listener, shared.clone(), stop.clone()));
        RestdbFake {
            addr,
            shared,
            stop,
            server,
        }
    }

    /// `http://127.0.0.1:PORT` (the stream is at `/realtime`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/realtime`
    pub fn realtime_url(&self) -> String {
        format!("http://{}/realtime", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn api_key(&self) -> &str {
        &self.shared.options.api_key
    }

    /// Sends event `event` with `data` (serialised as JSON on one line) to every open stream
    /// and keeps it for replay; returns its id. For the documented shapes of database changes
    /// use [`Self::emit_post`], [`Self::emit_put`] and [`Self::emit_delete`].
    pub fn emit(&self, event: &str, data: Value) -> u64 {
        broadcast(&self.shared, event, &data)
    }

    /// A record created in `collection`: event `post`,
    /// data `{"event":"post","collection":C,"data":RECORD}`.
    pub fn emit_post(&self, collection: &str, record: Value) -> u64 {
        broadcast_raw(
            &self.shared,
            "post",
            ordered("post", Some(collection), &record),
        )
    }

    /// A record changed in `collection`: event `put`,
    /// data `{"event":"put","collection":C,"data":"ID"}`.
    pub fn emit_put(&self, collection: &str, id: &str) -> u64 {
        broadcast_raw(
            &self.shared,
            "put",
            ordered("put", Some(collection), &json!(id)),
        )
    }

    /// Records deleted from `collection`: event `delete`,
    /// data `{"event":"delete","collection":C,"data":["ID1",…]}`.
    pub fn emit_delete(&self, collection: &str, ids: &[&str]) -> u64 {
        broadcast_raw(
            &self.shared,
            "delete",
            ordered("delete", Some(collection), &json!(ids)),
        )
    }

    /// Every event sent so far that is still in the history, oldest first.
    pub fn history(&self) -> Vec<RestdbEvent> {
        self.shared
            .state
            .lock()
            .unwrap()
            .history
            .iter()
            .cloned()
            .collect()
    }

    /// The custom events received with `POST /realtime`, in order.
    pub fn published(&self) -> Vec<Published> {
        self.shared.state.lock().unwrap().published.clone()
    }

    /// Every stream that was let in, in order, open or not, with the `Last-Event-ID` it sent.
    pub fn connections(&self) -> Vec<RestdbConnection> {
        self.shared.state.lock().unwrap().connections.clone()
    }

    /// How many streams are open now.
    pub fn open_connections(&self) -> usize {
        self.shared.state.lock().unwrap().listeners.len()
    }

    /// How many requests were refused with `401` (no key or a wrong one).
    pub fn refused(&self) -> usize {
        self.shared.state.lock().unwrap().refused
    }

    /// A receiver that changes whenever a connection opens or closes, a publish arrives or a
    /// request is refused.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// Waits until at least `n` streams have been let in (in all, not at once) and returns
    /// them; panics after `timeout`, saying how many were.
    pub async fn wait_for_connections(&self, n: usize, timeout: Duration) -> Vec<RestdbConnection> {
        self.wait_until(timeout, |inner| inner.connections.len() >= n)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "restdb fake: expected {n} realtime connections within {timeout:?}, got {:?}",
                    self.connections()
                )
            });
        self.connections()
    }

    /// Waits until at least `n` custom events have been published and returns them all;
    /// panics after `timeout`, with those that were.
    pub async fn wait_for_published(&self, n: usize, timeout: Duration) -> Vec<Published> {
        self.wait_until(timeout, |inner| inner.published.len() >= n)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "restdb fake: expected {n} published events within {timeout:?}, got {:?}",
                    self.published()
                )
            });
        self.published()
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Inner) -> bool) -> Option<()> {
        let mut changes = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.shared.state.lock().unwrap()) {
                return Some(());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Ends every open stream from the server's side (the connections close cleanly), as a
    /// restdb.io restart or a proxy timeout would; clients are expected to reconnect.
    pub fn disconnect_all(&self) {
        let mut inner = self.shared.state.lock().unwrap();
        inner.listeners.clear(); // dropping the senders ends the bodies
    }

    /// Stops listening and ends every stream: clients see the server go away and their
    /// reconnects are refused until [`Self::restart`]. The history is kept.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        self.disconnect_all();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Listens again on the same port after [`Self::stop`], with the same history, so a client
    /// that reconnects with `Last-Event-ID` gets what it missed.
    pub fn restart(&mut self) {
        assert!(
            self.server.is_none(),
            "restdb fake: restart() without stop()"
        );
        let listener = bind(self.addr);
        self.stop = CancellationToken::new();
        self.server = Some(serve(listener, self.shared.clone(), self.stop.clone()));
    }
}

impl Drop for RestdbFake {
    fn drop(&mut self) {
        self.stop.cancel();
        self.disconnect_all();
    }
}

fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let listener = std::net::TcpListener::bind(addr)
        .unwrap_or_else(|e| panic!("restdb fake: cannot listen on {addr}: {e}"));
    listener.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(listener).expect("restdb fake: needs a tokio runtime")
}

fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/realtime", get(stream).post(publish))
        .with_state(shared);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .expect("restdb fake: server failed");
    })
}

/// Checks the key: `Some(true)` from the header, `Some(false)` from the query, `None` refused.
fn authorised(
    shared: &Shared,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Option<bool> {
    let key = shared.options.api_key.as_str();
    if headers.get("x-apikey").and_then(|v| v.to_str().ok()) == Some(key) {
        Some(true)
    } else if query.get("apikey").map(String::as_str) == Some(key) {
        Some(false)
    } else {
        None
    }
}

fn refuse(shared: &Shared) -> Response {
    shared.state.lock().unwrap().refused += 1;
    shared.bump();
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"message":"invalid or missing apikey"}"#,
    )
        .into_response()
}

/// `GET /realtime`: the event stream.
async fn stream(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(key_in_header) = authorised(&shared, &headers, &query) else {
        return refuse(&shared);
    };
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let (tx, rx) = mpsc::unbounded_channel();
    let mut first = VecDeque::new();
    first.push_back(Bytes::from(format!(
        "retry: {}\n\n",
        shared.options.retry.as_millis()
    )));
    let index = {
        // Replay and registration under one lock: no event is missed or sent twice.
        let mut inner = shared.state.lock().unwrap();
        // A client without Last-Event-ID gets only what happens from now on.
        if let Some(id) = &last_event_id {
            let after = id
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|id| inner.history.iter().any(|e| e.id == *id));
            for event in inner
                .history
                .iter()
                .filter(|e| after.is_none_or(|a| e.id > a))
            {
                first.push_back(frame(Some(event.id), &event.event, &event.data));
            }
        }
        let index = inner.connections.len();
        inner.connections.push(RestdbConnection {
            last_event_id,
            key_in_header,
            open: true,
            at: Instant::now(),
        });
        inner.listeners.push((index, tx));
        index
    };
    shared.bump();

    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + shared.options.ping_interval,
        shared.options.ping_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Connection {
        first,
        rx,
        ping,
        _guard: Guard { shared, index },
    };
    let body = futures_util::stream::unfold(state, |mut c| async move {
        if let Some(bytes) = c.first.pop_front() {
            return Some((Ok::<_, Infallible>(bytes), c));
        }
        tokio::select! {
            bytes = c.rx.recv() => bytes.map(|b| (Ok(b), c)),
            _ = c.ping.tick() => {
                let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
                Some((Ok(frame(None, "ping", &now)), c))
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One stream's state: what to send first (retry, replay), then live events and pings.
struct Connection {
    first: VecDeque<Bytes>,
    rx: mpsc::UnboundedReceiver<Bytes>,
    ping: tokio::time::Interval,
    _guard: Guard,
}

/// Marks the connection closed when hyper drops its body (the client went away, or the stream
/// ended).
struct Guard {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut inner = self.shared.state.lock().unwrap();
        inner.connections[self.index].open = false;
        inner.listeners.retain(|(i, _)| *i != self.index);
        drop(inner);
        self.shared.bump();
    }
}

/// `POST /realtime` with `{"event": NAME, "data": ANY}`: a custom event for every stream.
async fn publish(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if authorised(&shared, &headers, &query).is_none() {
        return refuse(&shared);
    }
    let parsed: Option<(String, Value)> =
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| match v {
                Value::Object(mut o) => {
                    let event = o.get("event")?.as_str()?.to_string();
                    Some((event, o.remove("data").unwrap_or(Value::Null)))
                }
                _ => None,
            });
    let Some((event, data)) = parsed else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"message":"expected a JSON object {\"event\": NAME, \"data\": ANY}"}"#,
        )
            .into_response();
    };
    broadcast_raw(&shared, "publish", ordered(&event, None, &data));
    shared
        .state
        .lock()
        .unwrap()
        .published
        .push(Published { event, data });
    shared.bump();
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"ok":true}"#,
    )
        .into_response()
}

/// `{"event":EVENT,"collection":COLLECTION,"data":DATA}` with the keys in the documented order
/// (serde_json's maps would sort them), without `collection` when it is None.
fn ordered(event: &str, collection: Option<&str>, data: &Value) -> String {
    let mut out = format!("{{\"event\":{}", json!(event));
    if let Some(collection) = collection {
        out.push_str(&format!(",\"collection\":{}", json!(collection)));
    }
    out.push_str(&format!(",\"data\":{data}}}"));
    out
}

fn broadcast(shared: &Shared, event: &str, data: &Value) -> u64 {
    broadcast_raw(shared, event, data.to_string())
}

fn broadcast_raw(shared: &Shared, event: &str, data: String) -> u64 {
    let mut inner = shared.state.lock().unwrap();
    let id = inner.next_id;
    inner.next_id += 1;
    let bytes = frame(Some(id), event, &data);
    inner
        .listeners
        .retain(|(_, tx)| tx.send(bytes.clone()).is_ok());
    inner.history.push_back(RestdbEvent {
        id,
        event: event.to_string(),
        data,
    });
    while inner.history.len() > shared.options.history {
        inner.history.pop_front();
    }
    id
}

/// `id: N` (if any), `event: NAME`, one `data:` line per line of `data`, a blank line.
fn frame(id: Option<u64>, event: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 40);
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    out.push_str(&format!("event: {event}\n"));
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}
