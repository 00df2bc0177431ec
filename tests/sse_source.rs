//! The SSE source: ferry reads a server-sent-events stream and relays its events to real
//! brokers. What the user relies on: every event's type, id and data arrive exactly as sent,
//! whatever the framing; `events:` filters; one stream serves every route; a broken, silent or
//! not-yet-listening server is reconnected, resuming with `Last-Event-ID`; a restart resumes
//! from the last delivered event (exactly once with a server that replays); handshakes
//! (PocketBase) work; API keys never reach the log.
//!
//! Servers: real mosquitto and nats-server, real nginx+nchan and PocketBase (tests/support),
//! the restdb.io fake (tests/support, labelled a fake there), and [`ScriptedSse`] below, the
//! test's own SSE server, which writes exactly the bytes a test gives it: the only way to
//! check framing (CRLF, split chunks, comments) and to make a server fall silent.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use support::*;
use tokio::sync::{mpsc, watch};

// ---------------------------------------------------------------------------------------------
// The test's own SSE server

/// One request the [`ScriptedSse`] server received.
#[derive(Clone, Debug)]
struct SseRequest {
    method: String,
    /// Path and query.
    uri: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl SseRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct ScriptState {
    requests: Vec<SseRequest>,
    /// Feeds the body of the newest stream; dropping it ends that stream.
    current: Option<mpsc::UnboundedSender<Bytes>>,
}

/// An SSE server (axum) that answers every request with `200 text/event-stream` and then
/// writes exactly the chunks the test hands to [`ScriptedSse::send`], to the newest stream.
/// It records each request (method, URI, headers, body) so a test can check `Last-Event-ID`.
struct ScriptedSse {
    addr: SocketAddr,
    state: Arc<Mutex<ScriptState>>,
    changed: watch::Sender<usize>,
    server: tokio::task::JoinHandle<()>,
}

impl ScriptedSse {
    /// Listens on a free loopback port.
    async fn start() -> ScriptedSse {
        Self::start_on(0).await
    }

    /// Listens on 127.0.0.1:`port`.
    async fn start_on(port: u16) -> ScriptedSse {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the scripted SSE server");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ScriptState::default()));
        let (changed, _) = watch::channel(0);
        let shared = (state.clone(), changed.clone());
        let app = Router::new().fallback(stream).with_state(shared);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ScriptedSse {
            addr,
            state,
            changed,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<SseRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until `n` requests came in (bounded) and returns them all.
    async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<SseRequest> {
        let mut changed = self.changed.subscribe();
        let wait = async {
            loop {
                if self.requests().len() >= n {
                    return;
                }
                changed.changed().await.unwrap();
            }
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            panic!(
                "the SSE server got {} request(s), not {n}, within {timeout:?}",
                self.requests().len()
            );
        }
        self.requests()
    }

    /// Writes raw bytes to the newest stream.
    fn send(&self, bytes: &str) {
        let state = self.state.lock().unwrap();
        state
            .current
            .as_ref()
            .expect("no stream is open")
            .send(Bytes::from(bytes.to_string()))
            .expect("the stream is gone");
    }

    /// Writes raw bytes to the newest stream, if one is open; false if none is.
    fn try_send(&self, bytes: &str) -> bool {
        let state = self.state.lock().unwrap();
        state
            .current
            .as_ref()
            .is_some_and(|tx| tx.send(Bytes::from(bytes.to_string())).is_ok())
    }

    /// Ends the newest stream (the response body finishes: a clean close).
    fn close_stream(&self) {
        self.state.lock().unwrap().current = None;
    }
}

impl Drop for ScriptedSse {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Shared = (Arc<Mutex<ScriptState>>, watch::Sender<usize>);

async fn stream(
    State((state, changed)): State<Shared>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    {
        let mut state = state.lock().unwrap();
        state.requests.push(SseRequest {
            method: method.to_string(),
            uri: uri.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        state.current = Some(tx);
        changed.send_replace(state.requests.len());
    }
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(chunks))
        .unwrap()
}

/// What the tests against a [`ScriptedSse`] server start with.
struct ScriptedRun {
    mosquitto: Mosquitto,
    server: ScriptedSse,
    ferry: Ferry,
    /// Subscribed to every topic (`#`, QoS 1).
    peer: MqttPeer,
    /// ferry's first request to the server.
    first: SseRequest,
}

/// Starts mosquitto (with `options`), a [`ScriptedSse`] server and ferry running `yaml`
/// (`@SSE@` filled in by the server's URL with `path`, `@MQTT@` by the broker's, then
/// `values`; `env` in its environment), subscribes a peer to everything, and returns once
/// ferry's first request reached the server and ferry is ready.
async fn scripted_run(
    options: MosquittoOptions,
    path: &str,
    yaml: &str,
    values: &[(&str, String)],
    env: &[(&str, &str)],
) -> ScriptedRun {
    let mosquitto = Mosquitto::start(options);
    let server = ScriptedSse::start().await;
    let mut all = vec![("@SSE@", server.url(path)), ("@MQTT@", mosquitto.url())];
    all.extend(values.iter().cloned());
    let mut ferry = Ferry::start_with_env(&fill(yaml, &all), env);
    let peer = MqttPeer::connect(&mosquitto.url()).await;
    peer.subscribe("#", 1).await;
    let first = server.wait_for_requests(1, secs(15)).await.remove(0);
    ferry.wait_ready().await;
    ScriptedRun {
        mosquitto,
        server,
        ferry,
        peer,
        first,
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing, filtering, routes

/// Every framing the SSE format allows, byte for byte from the server, arrives on MQTT with
/// the event type as topic and the data, lines joined, as payload: `event:`/`id:`/`retry:`,
/// with and without a space after the colon, multi-line and empty `data:` lines, comments,
/// LF, CRLF and lone CR line endings, an event split across TCP chunks mid-line, an event
/// without `event:` (type `message`), and events without data (never dispatched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_arrives_exactly_as_sent() {
    let ScriptedRun {
        mosquitto: _mosquitto,
        server,
        mut ferry,
        mut peer,
        ..
    } = scripted_run(
        MosquittoOptions::default(),
        "/stream",
        r#"
connections:
  feed:
    sse: { url: "@SSE@", resume: false }
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-sse-parse }
routes:
  - name: events
    from: { connection: feed }
    to: { connection: mq, qos: 1 }
"#,
        &[],
        &[],
    )
    .await;

    server.send(": a comment, then a retry on its own\n\nretry: 250\n\n");
    server.send("event: greeting\nid: 1\ndata: hello\n\n");
    server.send("event:nospace\r\nid:2\r\ndata:no space after the colon\r\n\r\n");
    server.send("data: line one\ndata:  two, one space kept\ndata:\ndata: four\n\n");
    server.send(":keep-alive\r\n");
    server.send("event: split\nda");
    server.send("ta: across chu");
    server.send("nks\n\n");
    server.send("event: cr\rdata: lone CR endings\r\r");
    server.send("event: empty\n\n");
    server.send("event: nodata\nid: 3\n\n");
    server.send("event: json\ndata: {\"n\": 3,\ndata:  \"ok\": true}\n\n");
    server.send("event: end\ndata: end\n\n");

    let got = peer.inbox.collect_until_topic("end", secs(15)).await;
    assert_messages(
        &got,
        &[
            ("greeting", "hello"),
            ("nospace", "no space after the colon"),
            ("message", "line one\n two, one space kept\n\nfour"),
            ("split", "across chunks"),
            ("cr", "lone CR endings"),
            ("json", "{\"n\": 3,\n \"ok\": true}"),
            ("end", "end"),
        ],
    );
    peer.inbox.expect_nothing(millis(300)).await;
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

/// Two routes read one connection, each with its own `events:`; one HTTP stream serves both.
/// The topic defaults to the event type; templates see `event` and `id`. Events no route
/// takes go nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_filter_and_two_routes_share_one_stream() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let server = ScriptedSse::start().await;
    let mut ferry = Ferry::start(&fill(
        r#"
connections:
  feed:
    sse: { url: "@SSE@", resume: false }
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-sse-filter }
  nc:
    nats: { url: "@NATS@" }
routes:
  - name: changes
    from: { connection: feed, events: [post, put] }
    to: { connection: mq, topic: "db/{{ event }}/{{ id }}", qos: 1 }
  - name: deletes
    from: { connection: feed, events: delete }
    to: { connection: nc }
"#,
        &[
            ("@SSE@", server.url("/changes")),
            ("@MQTT@", mosquitto.url()),
            ("@NATS@", nats.url()),
        ],
    ));
    let mut mqtt = MqttPeer::connect(&mosquitto.url()).await;
    mqtt.subscribe("#", 1).await;
    let nats_peer = NatsPeer::connect(&nats.url()).await;
    let mut deletes = nats_peer.subscribe(">").await;
    ferry.wait_ready().await;

    server.send("event: post\nid: 1\ndata: {\"a\":1}\n\n");
    server.send("event: ping\nid: 2\ndata: ping\n\n");
    server.send("event: put\nid: 3\ndata: {\"a\":2}\n\n");
    server.send("event: delete\nid: 4\ndata: [\"x\"]\n\n");
    server.send("id: 5\ndata: no type\n\n");
    server.send("event: post\nid: 6\ndata: {\"a\":3}\n\n");
    server.send("event: delete\nid: 7\ndata: end\n\n");

    let changes = mqtt.inbox.collect_until_topic("db/post/6", secs(15)).await;
    assert_messages(
        &changes,
        &[
            ("db/post/1", "{\"a\":1}"),
            ("db/put/3", "{\"a\":2}"),
            ("db/post/6", "{\"a\":3}"),
        ],
    );
    let deleted = deletes
        .collect_until("the last delete", |m| m.text() == "end", secs(15))
        .await;
    assert_messages(&deleted, &[("delete", "[\"x\"]"), ("delete", "end")]);
    mqtt.inbox.expect_nothing(millis(300)).await;
    deletes.expect_nothing(millis(100)).await;
    assert_eq!(server.requests().len(), 1, "one stream for both routes");
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

/// `method: POST` with a body, headers and query parameters: the server receives exactly
/// those. The API key in the query string (from `${ENV}`) and the header values never show
/// in ferry's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_with_body_headers_and_query_and_no_key_in_the_log() {
    let key = "sse-key-0d9f7c";
    let ScriptedRun {
        mosquitto: _mosquitto,
        server,
        mut ferry,
        mut peer,
        first: request,
    } = scripted_run(
        MosquittoOptions::default(),
        "/subscribe?v=2",
        r#"
connections:
  feed:
    sse:
      url: "@SSE@"
      method: POST
      body: '{"subscribe": ["orders"]}'
      headers: { content-type: application/json, x-tenant: "${TENANT_KEY}" }
      query: { apikey: "${TENANT_KEY}", channel: "a b" }
      resume: false
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-sse-post }
routes:
  - name: events
    from: { connection: feed }
    to: { connection: mq, qos: 1 }
"#,
        &[],
        &[("TENANT_KEY", key)],
    )
    .await;
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.uri,
        format!("/subscribe?v=2&apikey={key}&channel=a+b")
    );
    assert_eq!(request.body, r#"{"subscribe": ["orders"]}"#);
    assert_eq!(request.header("x-tenant"), Some(key));
    assert_eq!(request.header("content-type"), Some("application/json"));
    server.send("event: order\ndata: 1\n\n");
    peer.inbox
        .expect_messages(&[("order", "1")], secs(10))
        .await;
    // A failure and its reconnection are logged too: still no key.
    server.close_stream();
    server.wait_for_requests(2, secs(10)).await;
    ferry.wait_for_line("reconnected to", secs(10)).await;
    assert_eq!(ferry.terminate().await.code(), Some(0));
    for line in ferry.lines() {
        assert!(!line.contains(key), "the key leaked: {line}");
    }
}

// ---------------------------------------------------------------------------------------------
// Reconnecting

/// The server ends the stream: ferry reconnects and sends the id of the last event it
/// received as `Last-Event-ID` (UTF-8, as the id came), waiting the `retry:` the server asked for. The server then
/// falls silent (no byte at all): after `idle_timeout` ferry takes the stream for dead and
/// reconnects, again with `Last-Event-ID`. Events sent on each new stream arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_with_last_event_id_after_a_close_and_after_silence() {
    let state = tempfile::tempdir().unwrap();
    let ScriptedRun {
        mosquitto: _mosquitto,
        server,
        mut ferry,
        mut peer,
        first,
    } = scripted_run(
        MosquittoOptions::default(),
        "/stream",
        r#"
state_dir: "@STATE@"
connections:
  feed:
    sse:
      url: "@SSE@"
      idle_timeout: 1500ms
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-sse-reconnect }
routes:
  - name: events
    from: { connection: feed }
    to: { connection: mq, topic: "e/{{ id }}", qos: 1 }
"#,
        &[("@STATE@", state.path().display().to_string())],
        &[],
    )
    .await;
    assert_eq!(first.header("last-event-id"), None, "no cursor yet");
    assert_eq!(first.header("accept"), Some("text/event-stream"));

    // Ids are any text, not only ASCII.
    server.send("retry: 300\n\nid: a-1\ndata: one\n\nid: ä-2\ndata: two\n\n");
    peer.inbox
        .expect_messages(&[("e/a-1", "one"), ("e/ä-2", "two")], secs(10))
        .await;

    let closed_at = std::time::Instant::now();
    server.close_stream();
    let requests = server.wait_for_requests(2, secs(10)).await;
    assert_eq!(requests[1].header("last-event-id"), Some("ä-2"));
    let waited = closed_at.elapsed();
    assert!(
        waited >= millis(300),
        "reconnected after {waited:?}: sooner than the server's `retry: 300` allows"
    );
    server.send("id: a-3\ndata: three\n\n");
    peer.inbox
        .expect_messages(&[("e/a-3", "three")], secs(10))
        .await;

    // Silence: no event, no comment. idle_timeout (1.5 s) declares the stream dead.
    let mark = ferry.mark();
    let silent_since = std::time::Instant::now();
    let requests = server.wait_for_requests(3, secs(10)).await;
    let silent_for = silent_since.elapsed();
    assert!(
        silent_for >= millis(1400),
        "reconnected after {silent_for:?} of silence, before idle_timeout"
    );
    assert_eq!(requests[2].header("last-event-id"), Some("a-3"));
    ferry
        .wait_for_line_since(mark, "idle_timeout", secs(5))
        .await;
    server.send("id: a-4\ndata: four\n\n");
    peer.inbox
        .expect_messages(&[("e/a-4", "four")], secs(10))
        .await;
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

/// Backpressure is not silence: while the broker is paused, ferry's MQTT client, then the
/// route's queue fill up, and ferry stops reading the stream for longer than `idle_timeout`
/// though the server keeps sending. When the broker comes back every event arrives, in order,
/// over the same stream: no reconnect, no "idle" verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_in_reading_longer_than_idle_timeout_is_not_a_dead_stream() {
    // More than the MQTT client's request channel (4096) and inflight window (100) hold.
    const EVENTS: usize = 5_000;
    let ScriptedRun {
        mosquitto,
        server,
        mut ferry,
        mut peer,
        ..
    } = scripted_run(
        MosquittoOptions {
            max_queued_messages: Some(0),
            ..Default::default()
        },
        "/stream",
        r#"
connections:
  feed:
    sse: { url: "@SSE@", resume: false, idle_timeout: 1s }
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-sse-backpressure, keep_alive: 60s }
routes:
  - name: events
    from: { connection: feed }
    to: { connection: mq, topic: "e", qos: 1 }
    queue: { max_messages: 1, when_full: block }
"#,
        &[],
        &[],
    )
    .await;
    let server = Arc::new(server);
    // The server is never silent: a comment every 200 ms.
    let keep_alive = {
        let server = server.clone();
        tokio::spawn(async move {
            loop {
                server.try_send(":\n");
                tokio::time::sleep(millis(200)).await;
            }
        })
    };
    server.send("data: 0\n\n");
    assert_eq!(peer.inbox.collect(1, secs(10)).await[0].text(), "0");

    mosquitto.pause();
    let events: String = (1..=EVENTS).map(|i| format!("data: {i}\n\n")).collect();
    server.send(&events);
    // What is under test is time passing: 3 s, most of it not reading; idle_timeout is 1 s.
    tokio::time::sleep(secs(3)).await;
    mosquitto.resume();
    let got = peer.inbox.collect(EVENTS, secs(60)).await;
    let payloads: Vec<String> = got.iter().map(Msg::text).collect();
    let expected: Vec<String> = (1..=EVENTS).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected);
    keep_alive.abort();
    assert_eq!(
        server.requests().len(),
        1,
        "no reconnect:\n{}",
        ferry.tail(30)
    );
    assert!(
        ferry.lines().iter().all(|l| !l.contains("idle_timeout")),
        "{}",
        ferry.tail(30)
    );
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

/// ferry starts before the SSE server listens: the connection is retried (one warning, not
/// one per attempt) and events flow once the server is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_connection_is_retried_until_the_server_listens() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let port = free_port();
    let mut ferry = Ferry::start(&fill(
        r#"
connections:
  feed:
    sse: { url: "http://127.0.0.1:@PORT@/stream", resume: false }
    reconnect: { initial_delay: 50ms, max_delay: 200ms }
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-sse-initial }
routes:
  - name: events
    from: { connection: feed }
    to: { connection: mq, qos: 1 }
"#,
        &[("@PORT@", port.to_string()), ("@MQTT@", mosquitto.url())],
    ));
    let mut peer = MqttPeer::connect(&mosquitto.url()).await;
    peer.subscribe("#", 1).await;
    ferry.wait_for_line("connection down", secs(15)).await;
    // Several attempts fail meanwhile.
    let mark = ferry.mark();
    for _ in 0..3 {
        ferry
            .wait_for_line_since(ferry.mark().max(mark), "still down", secs(10))
            .await;
    }

    let server = ScriptedSse::start_on(port).await;
    server.wait_for_requests(1, secs(15)).await;
    ferry.wait_ready().await;
    server.send("event: hello\ndata: world\n\n");
    peer.inbox
        .expect_messages(&[("hello", "world")], secs(10))
        .await;
    let warnings = ferry
        .lines()
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("feed"))
        .count();
    assert_eq!(
        warnings,
        1,
        "one warning for the outage:\n{}",
        ferry.tail(40)
    );
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// The state directory

/// A state directory ferry cannot use (here a file) stops `ferry run` before anything starts,
/// with exit code 1 and a message that names the directory and says what to do.
#[test]
fn an_unusable_state_dir_stops_ferry_run_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "").unwrap();
    let out = ferry_run_until_exit(
        &fill(
            r#"
state_dir: "@STATE@"
connections:
  feed:
    sse: { url: "http://127.0.0.1:9/stream" }
  mq:
    mqtt: { url: "mqtt://127.0.0.1:9" }
routes:
  - name: events
    from: { connection: feed }
    to: { connection: mq }
"#,
            &[("@STATE@", file.display().to_string())],
        ),
        secs(15),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    let text = out.all();
    assert!(
        text.contains(&file.join("sse").display().to_string()),
        "{text}"
    );
    assert!(text.contains("state_dir"), "{text}");
    assert!(text.contains("StateDirectory=ferry"), "{text}");
    assert!(text.contains("connection feed"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Resuming after a restart: real nchan

/// The promise of `resume`: 1,000 events wait in an nchan channel; ferry relays them to MQTT
/// (QoS 1) and is stopped (SIGTERM) once 300 arrived; 500 more are published while it is
/// away; ferry starts again on the same state directory and asks nchan for what came after
/// the last event it delivered (`Last-Event-ID`). Every event arrives exactly once, in order.
/// Without the saved cursor nchan would replay its whole buffer (duplicates); a cursor ahead
/// of what was delivered would lose events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nchan_every_event_exactly_once_across_a_ferry_restart() {
    const FIRST: usize = 1_000;
    const ALL: usize = 1_500;
    let nchan = Nchan::start();
    let mosquitto = Mosquitto::start(MosquittoOptions {
        max_queued_messages: Some(0),
        ..Default::default()
    });
    let state = tempfile::tempdir().unwrap();
    let yaml = fill(
        r#"
state_dir: "@STATE@"
connections:
  feed:
    sse: { url: "@SSE@" }
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-sse-nchan }
routes:
  - name: events
    from: { connection: feed }
    to: { connection: mq, topic: "nchan/events", qos: 1 }
    queue: { max_messages: 20, when_full: block }
"#,
        &[
            ("@STATE@", state.path().display().to_string()),
            ("@SSE@", nchan.sub_url("orders")),
            ("@MQTT@", mosquitto.url()),
        ],
    );
    let mut peer = MqttPeer::connect(&mosquitto.url()).await;
    peer.subscribe("nchan/#", 1).await;
    within(secs(60), "publishing the first 1,000 events", async {
        for i in 0..FIRST {
            nchan.publish("orders", &i.to_string()).await;
        }
    })
    .await;

    let mut ferry = Ferry::start(&yaml);
    let mut got = peer.inbox.collect(300, secs(60)).await;
    let status = ferry.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", ferry.tail(20));
    got.extend(peer.inbox.collect_for(millis(500)).await);
    let first_run = got.len();
    eprintln!("[test] the first run delivered {first_run} events");
    let saved = std::fs::read_to_string(state.path().join("sse/feed.json")).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["url"], nchan.sub_url("orders"));
    assert!(saved["last_event_id"].is_string(), "{saved}");

    within(secs(60), "publishing 500 more while ferry is away", async {
        for i in FIRST..ALL {
            nchan.publish("orders", &i.to_string()).await;
        }
    })
    .await;
    let mut ferry = Ferry::start(&yaml);
    ferry
        .wait_for_line(
            &format!("resuming after event id {}", saved["last_event_id"]),
            secs(30),
        )
        .await;
    let last = (ALL - 1).to_string();
    got.extend(
        peer.inbox
            .collect_until("the last event", |m| m.text() == last, secs(60))
            .await,
    );
    got.extend(peer.inbox.collect_for(millis(500)).await);
    let payloads: Vec<String> = got.iter().map(Msg::text).collect();
    let expected: Vec<String> = (0..ALL).map(|i| i.to_string()).collect();
    if payloads != expected {
        let mut seen = std::collections::BTreeMap::<&str, usize>::new();
        for p in &payloads {
            *seen.entry(p).or_default() += 1;
        }
        let twice: Vec<_> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(p, _)| *p)
            .collect();
        let missing: Vec<_> = expected
            .iter()
            .filter(|e| !seen.contains_key(e.as_str()))
            .collect();
        panic!(
            "{} events arrived for {ALL} (first run {first_run}); twice: {twice:?}; missing: {missing:?}",
            payloads.len()
        );
    }
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// The examples, against their servers

/// examples/pocketbase-to-mqtt.yaml against a real PocketBase: ferry does the handshake
/// (PB_CONNECT → POST /api/realtime with the clientId and the subscriptions), then every
/// create, update and delete arrives on MQTT as `db/<collection>/<action>` with the record as
/// payload; PB_CONNECT itself is not relayed. After PocketBase restarts, ferry
/// reconnects, does the handshake again, and changes flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pocketbase_example_relays_record_changes() {
    let mut pb = PocketBase::start();
    pb.create_collection("posts").await;
    pb.create_collection("comments").await;
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let yaml = fill(
        include_str!("../examples/pocketbase-to-mqtt.yaml"),
        &[
            ("http://127.0.0.1:8090", pb.url()),
            ("mqtt://127.0.0.1:1883", mosquitto.url()),
        ],
    );
    let mut peer = MqttPeer::connect(&mosquitto.url()).await;
    peer.subscribe("#", 1).await;
    let mut ferry = Ferry::start(&yaml);
    // Ready only once the handshake went through: PocketBase sends changes from then on.
    ferry.wait_ready().await;

    // One change at a time: PocketBase itself may send the events of quick successive
    // changes out of order (see tests/support/servers.rs); ferry keeps the stream's order.
    let mut got = Vec::new();
    let post = pb
        .create_record("posts", serde_json::json!({"title": "hello", "n": 1}))
        .await;
    got.extend(peer.inbox.collect(1, secs(20)).await);
    pb.update_record(
        "posts",
        &post,
        serde_json::json!({"title": "hello again", "n": 2}),
    )
    .await;
    got.extend(peer.inbox.collect(1, secs(20)).await);
    pb.delete_record("posts", &post).await;
    got.extend(peer.inbox.collect(1, secs(20)).await);
    let comment = pb
        .create_record("comments", serde_json::json!({"title": "first!", "n": 7}))
        .await;
    got.extend(peer.inbox.collect(1, secs(20)).await);
    let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "db/posts/create",
            "db/posts/update",
            "db/posts/delete",
            "db/comments/create"
        ]
    );
    let expect = [
        (&post, "posts", "hello", 1),
        (&post, "posts", "hello again", 2),
        (&post, "posts", "hello again", 2),
        (&comment, "comments", "first!", 7),
    ];
    for (m, (id, collection, title, n)) in got.iter().zip(expect) {
        let record = m.json();
        assert_eq!(record["id"], id.as_str(), "{m:?}");
        assert_eq!(record["collectionName"], collection, "{m:?}");
        assert_eq!(record["title"], title, "{m:?}");
        assert_eq!(record["n"], n, "{m:?}");
    }
    peer.inbox.expect_nothing(millis(300)).await;

    // A restart: a new stream, a new clientId, the handshake again.
    let mark = ferry.mark();
    pb.restart();
    ferry
        .wait_for_line_since(mark, "reconnected to", secs(30))
        .await;
    pb.create_record(
        "posts",
        serde_json::json!({"title": "after the restart", "n": 3}),
    )
    .await;
    let got = peer.inbox.collect(1, secs(20)).await;
    assert_eq!(got[0].topic, "db/posts/create");
    assert_eq!(got[0].json()["title"], "after the restart");
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

/// A handshake the server refuses is logged with its method, URL (without query), status
/// and the start of the answer, never a header value; the connection stays down and is
/// retried with backoff (one warning, not one per attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_is_reported_without_secrets_and_retried() {
    let pb = PocketBase::start();
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let secret = "pb-token-hunter2";
    let mut ferry = Ferry::start_with_env(
        &fill(
            r#"
connections:
  pocketbase:
    sse:
      url: "@PB@/api/realtime"
      resume: false
      handshake:
        on: PB_CONNECT
        url: "/api/realtime?token=${PB_TOKEN}"
        headers: { Authorization: "${PB_TOKEN}" }
        body: '{"clientId": "not-{{ payload.clientId }}", "subscriptions": ["posts/*"]}'
    reconnect: { initial_delay: 50ms, max_delay: 200ms }
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-sse-refused }
routes:
  - name: changes
    from: { connection: pocketbase }
    to: { connection: mq }
"#,
            &[("@PB@", pb.url()), ("@MQTT@", mosquitto.url())],
        ),
        &[("PB_TOKEN", secret)],
    );
    let line = ferry.wait_for_line("handshake POST", secs(20)).await;
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!("{}/api/realtime answered 404 Not Found", pb.url())),
        "{line}"
    );
    assert!(
        line.contains("invalid client id"),
        "the server's answer: {line}"
    );
    for _ in 0..2 {
        ferry
            .wait_for_line_since(ferry.mark(), "still down: handshake", secs(10))
            .await;
    }
    let lines = ferry.lines();
    assert!(
        lines.iter().all(|l| !l.contains(secret)),
        "the token leaked:\n{}",
        ferry.tail(40)
    );
    let warnings = lines.iter().filter(|l| l.contains("WARN")).count();
    assert_eq!(warnings, 1, "{}", ferry.tail(40));
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

/// examples/restdb-to-mqtt.yaml against the restdb.io fake: `post`, `put` and `delete`
/// arrive on MQTT as `db/<collection>/<event>` with the event's data unchanged; `ping` and
/// custom `publish` events do not. The API key, from `${RESTDB_API_KEY}`, goes in the
/// `x-apikey` header and appears neither in ferry's log nor in `ferry check`. Stopped and
/// started again, ferry resumes after the last delivered event: the two changes made while
/// it was away arrive, nothing twice. An MQTT message on `restdb/publish/NAME` becomes a custom
/// event POSTed to `/realtime` with the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restdb_example_relays_changes_and_keeps_the_key_secret() {
    let key = "restdb-key-5f1c9a07e2";
    let fake = RestdbFake::start(key);
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let yaml = fill(
        include_str!("../examples/restdb-to-mqtt.yaml"),
        &[
            ("https://mydb-1234.restdb.io", fake.url()),
            ("mqtt://127.0.0.1:1883", mosquitto.url()),
        ],
    );
    let env = [
        ("RESTDB_API_KEY", key),
        ("STATE_DIRECTORY", state_dir.as_str()),
    ];
    let mut peer = MqttPeer::connect(&mosquitto.url()).await;
    peer.subscribe("db/#", 1).await;
    let mut ferry = Ferry::start_with_env(&yaml, &env);
    ferry.wait_ready().await;
    let connections = fake.wait_for_connections(1, secs(10)).await;
    assert!(connections[0].key_in_header, "the key goes in x-apikey");
    assert_eq!(fake.refused(), 0);

    fake.emit_post("customers", serde_json::json!({"_id": "c1", "name": "Ada"}));
    fake.emit("publish", serde_json::json!({"event": "custom", "data": 1}));
    fake.emit_put("customers", "c1");
    fake.emit_delete("customers", &["c1"]);
    let got = peer.inbox.collect(3, secs(20)).await;
    let history = fake.history();
    let data = |event: &str| {
        history
            .iter()
            .find(|e| e.event == event)
            .map(|e| e.data.clone())
            .unwrap()
    };
    let (post, put, delete) = (data("post"), data("put"), data("delete"));
    assert_messages(
        &got,
        &[
            ("db/customers/post", &post),
            ("db/customers/put", &put),
            ("db/customers/delete", &delete),
        ],
    );
    peer.inbox.expect_nothing(millis(300)).await;

    // The other way: an MQTT message becomes a restdb.io custom event, POSTed with the key.
    peer.publish("restdb/publish/alarm", &br#"{"level": 3}"#[..], 1, false)
        .await;
    let published = fake.wait_for_published(1, secs(10)).await;
    assert_eq!(published[0].event, "alarm");
    assert_eq!(published[0].data, serde_json::json!({"level": 3}));
    assert_eq!(fake.refused(), 0, "the POST carried the API key");
    // restdb.io streams that custom event back as `publish`, which no route takes: it is
    // dealt with at once, so the cursor moves past it.
    let seen_last = fake.history().last().unwrap().id;
    assert_eq!(ferry.terminate().await.code(), Some(0));
    let first_lines = ferry.lines();

    fake.emit_post("orders", serde_json::json!({"_id": "o1", "total": 12}));
    let last = fake.emit_delete("orders", &["o1"]);
    let mut ferry = Ferry::start_with_env(&yaml, &env);
    let got = peer.inbox.collect(2, secs(20)).await;
    let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["db/orders/post", "db/orders/delete"]);
    peer.inbox.expect_nothing(millis(500)).await;
    let resumed = fake.connections();
    // The custom event may or may not have reached ferry before it stopped; either way the
    // cursor is past every change it delivered.
    let delete_id = history.iter().find(|e| e.event == "delete").unwrap().id;
    let resumed_from = resumed.last().unwrap().last_event_id.clone();
    assert!(
        [delete_id, seen_last]
            .iter()
            .any(|id| resumed_from.as_deref() == Some(id.to_string().as_str())),
        "resumes after the last delivered event, not {resumed_from:?}"
    );
    assert_eq!(ferry.terminate().await.code(), Some(0));
    let saved = std::fs::read_to_string(state.path().join("sse/restdb.json")).unwrap();
    assert!(saved.contains(&format!("\"{last}\"")), "{saved}");

    for line in first_lines.iter().chain(&ferry.lines()) {
        assert!(!line.contains(key), "the API key leaked: {line}");
    }
    let check = std::process::Command::new(ferry_bin())
        .args(["check", "-c"])
        .arg(&ferry.config)
        .env("RESTDB_API_KEY", key)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{out}");
    assert!(out.contains("headers x-apikey"), "{out}");
    assert!(
        !out.contains(key),
        "the API key leaked into `ferry check`: {out}"
    );
}

/// A stream URL that redirects to another server: ferry does not follow it, so the API key in
/// the connection's headers never reaches that server; the 307 is logged as the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_server_is_not_followed_with_the_api_key() {
    let elsewhere = WebhookServer::start();
    let target = format!("{}/stream", elsewhere.url());
    let redirector = Router::new().fallback(move || {
        let target = target.clone();
        async move {
            Response::builder()
                .status(307)
                .header("location", target)
                .body(Body::empty())
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, redirector).await });
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let state = tempfile::tempdir().unwrap();
    let mut ferry = Ferry::start_with_env(
        &fill(
            r#"
state_dir: "@STATE@"
connections:
  db: { sse: { url: "http://127.0.0.1:@PORT@/realtime", headers: { x-apikey: "${KEY}" } } }
  broker: { mqtt: { url: "@MQTT@" } }
routes:
  - name: changes
    from: { connection: db }
    to: { connection: broker, topic: "db/{{ event }}" }
"#,
            &[
                ("@STATE@", state.path().display().to_string()),
                ("@PORT@", port.to_string()),
                ("@MQTT@", mosquitto.url()),
            ],
        ),
        &[("KEY", "key-that-stays-home")],
    );
    ferry
        .wait_for_line("redirected the stream to another origin", secs(15))
        .await;
    assert!(
        elsewhere.requests().is_empty(),
        "the redirect was followed: {:?}",
        elsewhere.requests()
    );
    assert!(
        ferry
            .lines()
            .iter()
            .all(|l| !l.contains("key-that-stays-home"))
    );
}
