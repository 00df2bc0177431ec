//! Hostile and odd SSE servers never take ferry down, and never cost it other events: what a
//! user relies on is that every good event still reaches the broker, in order, once, that
//! ferry's memory stays bounded whatever a server sends, and that it reconnects as the WHATWG
//! standard says (the server's `retry:`, the last event ID as `Last-Event-ID`).
//!
//! The servers are [`RawSseServer`]s (tests/support): a TCP listener written for these tests
//! that answers each request with exactly the bytes scripted for it. The sink is a real
//! mosquitto, read back by a real MQTT client.

mod support;

use support::*;

/// What a test starts with: mosquitto, a peer subscribed to everything on it, the hostile
/// server, and ferry relaying the server's events to `e/<id>` topics (or `message`).
struct Run {
    _mosquitto: Mosquitto,
    peer: MqttPeer,
    server: RawSseServer,
    ferry: Ferry,
    _state: tempfile::TempDir,
    /// ferry's admin listener, `http://127.0.0.1:PORT`.
    admin: String,
}

/// Starts everything; `connection` is the YAML of the `sse` connection's extra keys (one
/// line, indented under `sse:`); `script` is queued on the server before ferry starts.
async fn run(client_id: &str, connection: &str, script: Vec<Vec<RawStep>>) -> Run {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let peer = MqttPeer::connect(&mosquitto.url()).await;
    peer.subscribe("#", 1).await;
    let server = RawSseServer::start();
    for steps in script {
        server.answer_next(steps);
    }
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = fill(
        r#"
state_dir: "@STATE@"
admin: { listen: "127.0.0.1:@PORT@" }
connections:
  feed:
    sse:
      url: "@SSE@"
      @EXTRA@
    reconnect: { initial_delay: 100ms, max_delay: 1s }
  mq:
    mqtt: { url: "@MQTT@", client_id: "@ID@" }
routes:
  - name: events
    from: { connection: feed }
    to: { connection: mq, topic: "e/{{ id }}", qos: 1 }
"#,
        &[
            ("@STATE@", state.path().display().to_string()),
            ("@SSE@", server.url("/stream")),
            ("@EXTRA@", connection.to_string()),
            ("@MQTT@", mosquitto.url()),
            ("@ID@", client_id.to_string()),
            ("@PORT@", port.to_string()),
        ],
    );
    let ferry = Ferry::start(&yaml);
    Run {
        _mosquitto: mosquitto,
        peer,
        server,
        ferry,
        _state: state,
        admin: format!("http://127.0.0.1:{port}"),
    }
}

/// An answer that opens an event stream, sends `text` and stays open.
fn stream(text: &str) -> Vec<RawStep> {
    vec![raw_sse_head(), raw_text(text), RawStep::Hold]
}

/// An answer that opens an event stream, sends `text` and closes.
fn stream_then_close(text: &str) -> Vec<RawStep> {
    vec![raw_sse_head(), raw_text(text)]
}

/// An error answer `status` whose body never ends (256 MiB, unless ferry hangs up first).
fn endless_error(status: &str) -> Vec<RawStep> {
    let total = 256 * 1024 * 1024;
    vec![raw_head(status, None), RawStep::Flood { total }]
}

/// The most resident memory the process ever had, in KiB (VmHWM in /proc/PID/status).
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("ferry runs");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A server sends one good event, then a line that never ends (256 MiB of `x` without a line
/// end). ferry takes at most `max_line_size` (16 MiB by default) of it, drops the stream with a
/// warning saying why, and reconnects with the last event's ID; the next stream's event
/// arrives. ferry's peak memory stays far below what the line would have cost, and the server
/// saw ferry hang up long before the end of the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_line_costs_bounded_memory_and_the_stream_resumes_after_it() {
    const FLOOD: usize = 256 * 1024 * 1024;
    let mut r = run(
        "ferry-hostile-endless",
        "resume: true",
        vec![
            vec![
                raw_sse_head(),
                raw_text("id: 1\ndata: before\n\ndata: "),
                RawStep::Flood { total: FLOOD },
            ],
            stream("id: 2\ndata: after\n\n"),
        ],
    )
    .await;

    r.peer
        .inbox
        .expect_messages(&[("e/1", "before"), ("e/2", "after")], secs(30))
        .await;
    let requests = r.server.wait_for_requests(2, secs(5)).await;
    assert_eq!(requests[1].header("last-event-id").as_deref(), Some("1"));
    let flooded = r.server.wait_answered(0, secs(5)).await.flooded;
    assert!(
        flooded < 64 * 1024 * 1024,
        "ferry took {flooded} bytes of the endless line before hanging up"
    );
    r.ferry
        .wait_for_line("longer than 16777216 bytes (max_line_size)", secs(5))
        .await;
    let peak = peak_kib(r.ferry.pid());
    eprintln!("endless line: ferry took {flooded} bytes, peak memory {peak} KiB");
    assert!(
        peak < 120 * 1024,
        "ferry's memory peaked at {peak} KiB while reading an endless line"
    );
    r.peer.inbox.expect_nothing(millis(300)).await;
    assert_eq!(r.ferry.terminate().await.code(), Some(0));
}

/// The same with a small `max_event_size`: an event of many short `data:` lines, larger than
/// the bound, fails the stream without losing the events around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_past_max_event_size_is_dropped_and_the_stream_resumes() {
    let big = "data: 0123456789abcdef\n".repeat(1024); // 23 KiB of data in one event
    let mut r = run(
        "ferry-hostile-event",
        "max_event_size: 8KiB",
        vec![
            vec![
                raw_sse_head(),
                raw_text("id: 1\ndata: before\n\n"),
                raw_text(&big),
                raw_text("\n"),
                RawStep::Hold,
            ],
            stream("id: 3\ndata: after\n\n"),
        ],
    )
    .await;
    r.peer
        .inbox
        .expect_messages(&[("e/1", "before"), ("e/3", "after")], secs(30))
        .await;
    let requests = r.server.wait_for_requests(2, secs(5)).await;
    assert_eq!(requests[1].header("last-event-id").as_deref(), Some("1"));
    r.ferry
        .wait_for_line("more than 8192 bytes of data (max_event_size)", secs(5))
        .await;
    let metrics = http_client()
        .get(format!("{}/metrics", r.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ferry_connection_input_over_limit_total{connection="feed"} 1"#),
        "{metrics}"
    );
    assert_eq!(r.ferry.terminate().await.code(), Some(0));
}

/// A `500` whose body quotes a URL after a non-ASCII character (what once panicked the error
/// formatter), then a good stream: ferry logs the status and the start of the body, stays up,
/// reconnects, and relays; `/readyz`-style status comes back up (the `reconnected` line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_with_a_non_ascii_body_is_logged_and_the_connection_recovers() {
    let mut r = run(
        "ferry-hostile-500",
        "resume: false",
        vec![
            vec![
                raw_head(
                    "500 Internal Server Error",
                    Some("text/plain; charset=utf-8"),
                ),
                raw_text("upstream failed: «http://internal/x» is down\n"),
            ],
            stream("id: 1\ndata: recovered\n\n"),
        ],
    )
    .await;
    let line = r
        .ferry
        .wait_for_line("the server answered 500 Internal Server Error", secs(15))
        .await;
    assert!(
        line.contains("upstream failed: «http://internal/x» is down"),
        "{line}"
    );
    r.peer
        .inbox
        .expect_messages(&[("e/1", "recovered")], secs(15))
        .await;
    r.ferry.wait_for_line("reconnected to", secs(5)).await;
    assert_eq!(r.server.requests().len(), 2);
    assert!(r.ferry.is_running());
    assert_eq!(r.ferry.terminate().await.code(), Some(0));
}

/// An error answer with an endless body: ferry reads at most `max_response_body` of it (the
/// server sees ferry hang up) and quotes a short prefix, then recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_error_body_is_read_only_up_to_max_response_body() {
    let mut r = run(
        "ferry-hostile-500-flood",
        "max_response_body: 64KiB",
        vec![
            endless_error("503 Service Unavailable"),
            stream("id: 1\ndata: recovered\n\n"),
        ],
    )
    .await;
    let line = r
        .ferry
        .wait_for_line("the server answered 503 Service Unavailable", secs(15))
        .await;
    assert!(line.contains("xxxx…"), "{line}");
    assert!(line.len() < 1000, "the body is quoted short: {line}");
    r.peer
        .inbox
        .expect_messages(&[("e/1", "recovered")], secs(15))
        .await;
    let flooded = r.server.wait_answered(0, secs(5)).await.flooded;
    assert!(
        flooded < 32 * 1024 * 1024,
        "ferry read {flooded} bytes of an error answer"
    );
    assert_eq!(r.ferry.terminate().await.code(), Some(0));
}

/// A handshake refused with an endless body: ferry reads at most `max_response_body` of it,
/// logs the status with a short prefix, reopens the stream, and once a handshake succeeds the
/// stream's events arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_refusal_with_an_endless_body_is_read_only_up_to_max_response_body() {
    let mut r = run(
        "ferry-hostile-handshake",
        "handshake: { on: hello, url: /subscribe }",
        vec![
            // The stream, then its handshake, refused; the second stream, its handshake, fine.
            stream("event: hello\ndata: {}\n\n"),
            endless_error("500 Internal Server Error"),
            stream("event: hello\ndata: {}\n\nid: 1\ndata: after\n\n"),
            vec![raw_text(
                "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            )],
        ],
    )
    .await;
    let line = r
        .ferry
        .wait_for_line("/subscribe answered 500 Internal Server Error", secs(15))
        .await;
    assert!(line.contains("xxxx…"), "{line}");
    let flooded = r.server.wait_answered(1, secs(10)).await.flooded;
    assert!(
        flooded < 32 * 1024 * 1024,
        "ferry read {flooded} bytes of a handshake's refusal"
    );
    r.peer
        .inbox
        .expect_messages(&[("e/1", "after")], secs(15))
        .await;
    r.ferry.wait_for_line("reconnected to", secs(5)).await;
    assert_eq!(r.server.requests().len(), 4);
    assert_eq!(r.ferry.terminate().await.code(), Some(0));
}

/// A `200` that is not `text/event-stream`, then a `204 No Content`: the standard fails such a
/// connection. ferry relays nothing from them (though the wrong one's body looks like SSE),
/// logs each refusal clearly, and retries only after the connection's longest delay
/// (`max_delay`, 1 s here); a good stream after them is read. `TEXT/Event-Stream;
/// charset=utf-8` is an event stream: the type is compared without parameters, in any case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_content_type_or_204_is_refused_logged_and_retried_slowly() {
    let mut r = run(
        "ferry-hostile-type",
        "resume: false",
        vec![
            vec![
                raw_head("200 OK", Some("text/html")),
                raw_text("id: 1\ndata: not an event\n\n"),
            ],
            vec![raw_head("204 No Content", None)],
            vec![
                raw_head("200 OK", Some("TEXT/Event-Stream; charset=utf-8")),
                raw_text("id: 2\ndata: good\n\n"),
                RawStep::Hold,
            ],
        ],
    )
    .await;
    let refused = r
        .ferry
        .wait_for_line("\"text/html\", not text/event-stream", secs(15))
        .await;
    assert!(refused.contains("ferry retries it every 1s"), "{refused}");
    r.peer
        .inbox
        .expect_messages(&[("e/2", "good")], secs(15))
        .await;
    let requests = r.server.wait_for_requests(3, secs(5)).await;
    for pair in requests.windows(2) {
        let waited = pair[1].at - pair[0].at;
        assert!(
            waited >= millis(1000),
            "retried a refusing server after {waited:?}, before max_delay"
        );
    }
    r.peer.inbox.expect_nothing(millis(300)).await;
    assert_eq!(r.ferry.terminate().await.code(), Some(0));
}

/// `retry: 1500` then the server closes: the reconnect comes no sooner than 1.5 s after the
/// close (ferry's jitter goes above the server's time, never below), although the
/// connection's own initial delay is 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_retry_is_the_least_wait_before_a_reconnect() {
    let mut r = run(
        "ferry-hostile-retry",
        "resume: false",
        vec![stream_then_close("retry: 1500\n\nid: 1\ndata: a\n\n")],
    )
    .await;
    r.peer
        .inbox
        .expect_messages(&[("e/1", "a")], secs(15))
        .await;
    let closed = r
        .server
        .wait_answered(0, secs(5))
        .await
        .answered_at
        .unwrap();
    let requests = r.server.wait_for_requests(2, secs(10)).await;
    let waited = requests[1].at - closed;
    assert!(
        waited >= millis(1500),
        "reconnected {waited:?} after the close, sooner than `retry: 1500`"
    );
    assert!(waited < secs(4), "reconnected only after {waited:?}");
    assert_eq!(r.ferry.terminate().await.code(), Some(0));
}

/// The last event ID outlives events and streams: `id: 7` on one event, none on the next; the
/// server closes; the reconnect sends `Last-Event-ID: 7`, and an event of the new stream
/// without `id:` carries 7 too (topic `e/7`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_event_id_carries_over_events_and_reconnects() {
    let mut r = run(
        "ferry-hostile-lastid",
        "resume: true",
        vec![
            stream_then_close("id: 7\ndata: a\n\ndata: b\n\n"),
            stream("data: c\n\n"),
        ],
    )
    .await;
    r.peer
        .inbox
        .expect_messages(&[("e/7", "a"), ("e/7", "b"), ("e/7", "c")], secs(15))
        .await;
    let requests = r.server.wait_for_requests(2, secs(5)).await;
    assert_eq!(requests[0].header("last-event-id"), None);
    assert_eq!(requests[1].header("last-event-id").as_deref(), Some("7"));
    assert_eq!(r.ferry.terminate().await.code(), Some(0));
}

/// A block of only unknown fields, bytes that are not UTF-8, a BOM at the start and a CRLF
/// split across writes, in the middle of one stream: every event before and after arrives, in
/// order, the bad bytes as U+FFFD, and ferry never reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_and_invalid_utf8_mid_stream_lose_no_event() {
    let mut r = run(
        "ferry-hostile-utf8",
        "resume: false",
        vec![vec![
            raw_sse_head(),
            raw_text("\u{FEFF}id: 1\r"),
            raw_text("\ndata: one\r\n\r\n"),
            raw_text("foo: bar\nbaz\n\n"),
            RawStep::Write(b"id: 2\ndata: t\xFFo\xC3\n\n".to_vec()),
            raw_text("unknown: x\n\nid: 3\ndata: three\n\n"),
            RawStep::Hold,
        ]],
    )
    .await;
    r.peer
        .inbox
        .expect_messages(
            &[
                ("e/1", "one"),
                ("e/2", "t\u{FFFD}o\u{FFFD}"),
                ("e/3", "three"),
            ],
            secs(15),
        )
        .await;
    r.peer.inbox.expect_nothing(millis(300)).await;
    assert_eq!(r.server.requests().len(), 1, "the stream was never dropped");
    assert_eq!(r.ferry.terminate().await.code(), Some(0));
}
