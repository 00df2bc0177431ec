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

/// Messages as `(topic, payload)` pairs, for exact comparisons.
fn pairs(messages: &[Msg]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| (m.topic.clone(), m.text()))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
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
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let server = ScriptedSse::start().await;
    let mut ferry = Ferry::start(&fill(
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
        &[
            ("@SSE@", server.url("/stream")),
            ("@MQTT@", mosquitto.url()),
        ],
    ));
    let mut peer = MqttPeer::connect(&mosquitto.url()).await;
    peer.subscribe("#", 1).await;
    server.wait_for_requests(1, secs(15)).await;
    ferry.wait_ready().await;

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

    let got = peer
        .inbox
        .collect_until("`end`", |m| m.topic == "end", secs(15))
        .await;
    assert_eq!(
        pairs(&got),
        owned(&[
            ("greeting", "hello"),
            ("nospace", "no space after the colon"),
            ("message", "line one\n two, one space kept\n\nfour"),
            ("split", "across chunks"),
            ("cr", "lone CR endings"),
            ("json", "{\"n\": 3,\n \"ok\": true}"),
            ("end", "end"),
        ])
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

    let changes = mqtt
        .inbox
        .collect_until("`db/post/6`", |m| m.topic == "db/post/6", secs(15))
        .await;
    assert_eq!(
        pairs(&changes),
        owned(&[
            ("db/post/1", "{\"a\":1}"),
            ("db/put/3", "{\"a\":2}"),
            ("db/post/6", "{\"a\":3}"),
        ])
    );
    let deleted = deletes
        .collect_until("the last delete", |m| m.text() == "end", secs(15))
        .await;
    assert_eq!(
        pairs(&deleted),
        owned(&[("delete", "[\"x\"]"), ("delete", "end")])
    );
    mqtt.inbox.expect_nothing(millis(300)).await;
    deletes.expect_nothing(millis(100)).await;
    assert_eq!(server.requests().len(), 1, "one stream for both routes");
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Reconnecting

/// The server ends the stream: ferry reconnects and sends the id of the last event it
/// received as `Last-Event-ID`, waiting the `retry:` the server asked for. The server then
/// falls silent (no byte at all): after `idle_timeout` ferry takes the stream for dead and
/// reconnects, again with `Last-Event-ID`. Events sent on each new stream arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_with_last_event_id_after_a_close_and_after_silence() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let server = ScriptedSse::start().await;
    let state = tempfile::tempdir().unwrap();
    let mut ferry = Ferry::start(&fill(
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
        &[
            ("@STATE@", state.path().display().to_string()),
            ("@SSE@", server.url("/stream")),
            ("@MQTT@", mosquitto.url()),
        ],
    ));
    let mut peer = MqttPeer::connect(&mosquitto.url()).await;
    peer.subscribe("#", 1).await;
    let first = server.wait_for_requests(1, secs(15)).await;
    assert_eq!(first[0].header("last-event-id"), None, "no cursor yet");
    assert_eq!(first[0].header("accept"), Some("text/event-stream"));
    ferry.wait_ready().await;

    server.send("retry: 300\n\nid: a-1\ndata: one\n\nid: a-2\ndata: two\n\n");
    let got = peer.inbox.collect(2, secs(10)).await;
    assert_eq!(pairs(&got), owned(&[("e/a-1", "one"), ("e/a-2", "two")]));

    let closed_at = std::time::Instant::now();
    server.close_stream();
    let requests = server.wait_for_requests(2, secs(10)).await;
    assert_eq!(requests[1].header("last-event-id"), Some("a-2"));
    let waited = closed_at.elapsed();
    assert!(
        waited >= millis(140),
        "reconnected after {waited:?}: sooner than the server's `retry: 300` allows (with jitter, 150 ms at least)"
    );
    server.send("id: a-3\ndata: three\n\n");
    let got = peer.inbox.collect(1, secs(10)).await;
    assert_eq!(pairs(&got), owned(&[("e/a-3", "three")]));

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
    let got = peer.inbox.collect(1, secs(10)).await;
    assert_eq!(pairs(&got), owned(&[("e/a-4", "four")]));
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
    let got = peer.inbox.collect(1, secs(10)).await;
    assert_eq!(pairs(&got), owned(&[("hello", "world")]));
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
