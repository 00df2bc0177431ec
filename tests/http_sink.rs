//! The HTTP sink against a real ferry, a real nats-server and a recording webhook receiver
//! ([`WebhookServer`], answering from a script): messages arrive as requests, in order, with
//! their path and headers; 503 and connection errors are retried until the message arrives,
//! once; a 429's `Retry-After` is waited out; a 400 sends the message to the dead-letter sink
//! with the server's reason while the rest flow on; PUT, the request timeout, the URL's user
//! info and the limit on concurrent requests do what they say; a request left hanging does not
//! hold shutdown up; no credential reaches the log or `ferry check`; and
//! `examples/nats-to-webhook.yaml` runs as written.

mod support;

use std::net::SocketAddr;

use serde_json::json;
use support::*;

const TOKEN: &str = "webhook-hunter2";

/// A JSON payload with a route-independent sequence number.
fn order(stream: &str, seq: usize) -> String {
    json!({"stream": stream, "seq": seq}).to_string()
}

/// The (stream, seq) of a request's JSON body.
fn seq_of(request: &RecordedRequest) -> (String, usize) {
    let body = request.json();
    (
        body["stream"].as_str().unwrap().to_string(),
        body["seq"].as_u64().unwrap() as usize,
    )
}

/// The sequence numbers of the requests carrying `stream`, in arrival order.
fn seqs(requests: &[RecordedRequest], stream: &str) -> Vec<usize> {
    requests
        .iter()
        .map(seq_of)
        .filter(|(s, _)| s == stream)
        .map(|(_, n)| n)
        .collect()
}

/// Waits (bounded) until the webhook server has answered everything it received, so its
/// in-flight high-water mark is final.
async fn wait_idle(hook: &WebhookServer) {
    within(secs(10), "the webhook server's last answer", async {
        while hook.in_flight() > 0 {
            tokio::time::sleep(millis(10)).await;
        }
    })
    .await;
}

/// What every relay test here starts with: a real nats-server, ferry running `yaml` (with
/// `values` filled in, then `@NATS@` by the server's URL; `env` in its environment), ready,
/// and a NATS peer to publish with. The test keeps the server (`_nats`) to its end.
async fn nats_to_http(
    yaml: &str,
    values: &[(&str, String)],
    env: &[(&str, &str)],
) -> (NatsServer, Ferry, NatsPeer) {
    let nats = NatsServer::start(NatsOptions::default());
    let yaml = fill(&fill(yaml, values), &[("@NATS@", nats.url())]);
    let mut ferry = Ferry::start_with_env(&yaml, env);
    ferry.wait_ready().await;
    let peer = NatsPeer::connect(&nats.url()).await;
    (nats, ferry, peer)
}

/// Route `orders`: NATS subject `orders` to connection `hook`, whose `http` map is `hook`,
/// then `route_keys` (YAML lines of the route).
fn orders_to(hook: &str, route_keys: &str) -> String {
    fill(
        r#"
connections:
  core: { nats: { url: "@NATS@" } }
  hook: { http: @HOOK_MAP@ }
routes:
  - name: orders
    from: { connection: core, subject: "orders" }
    to: { connection: hook }
"#,
        &[("@HOOK_MAP@", hook.to_string())],
    ) + route_keys
}

/// The route most tests here use: [`orders_to`] the webhook at `@HOOK@/hook`.
fn orders_to_hook() -> String {
    orders_to(r#"{ url: "@HOOK@/hook" }"#, "")
}

/// Publishes `order("orders", i)` for `i` in `0..n` on subject `orders`, in order.
async fn publish_orders(peer: &NatsPeer, n: usize) {
    peer.publish_all((0..n).map(|i| ("orders".to_string(), order("orders", i))))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_messages_arrive_as_requests_in_order_with_path_and_headers() {
    let hook = WebhookServer::start();
    let (_nats, mut ferry, peer) = nats_to_http(
        r#"
connections:
  core:
    nats: { url: "@NATS@" }
  hook:
    http:
      url: "@HOOK@/api/"
      headers: { Authorization: "Bearer ${WEBHOOK_TOKEN}" }
routes:
  - name: orders
    from: { connection: core, subject: "orders.>" }
    headers:
      set: { x-region: "{{ subject[1] | upper }}" }
    to: { connection: hook, url: "orders/{{ subject[1] }}/{{ subject[2] }}" }
"#,
        &[("@HOOK@", hook.url())],
        &[("WEBHOOK_TOKEN", TOKEN)],
    )
    .await;

    const N: usize = 200;
    let region = |i: usize| ["eu", "us"][i % 2];
    for i in 0..N {
        let trace = format!("trace-{i}");
        peer.publish_with_headers(
            &format!("orders.{}.created", region(i)),
            order("orders", i),
            &[("x-trace", trace.as_str())],
        )
        .await;
    }
    peer.sync().await;

    let requests = hook.wait_for_requests(N, secs(30)).await;
    assert_eq!(requests.len(), N, "no request twice");
    assert_in_order("orders", &seqs(&requests, "orders"), N);
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.uri, format!("/api/orders/{}/created", region(i)), "{r:?}");
        assert_eq!(
            r.body,
            order("orders", i).as_bytes(),
            "the body is the payload"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("x-region"),
            Some(region(i).to_uppercase().as_str())
        );
        assert_eq!(r.header("x-trace"), Some(format!("trace-{i}").as_str()));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    ferry.assert_never_logged(TOKEN);
    assert_eq!(ferry.terminate().await.code(), Some(0));
    ferry.assert_never_logged(TOKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_until_the_message_arrives_once_and_nothing_overtakes_it() {
    let hook = WebhookServer::start();
    hook.respond_next(503, &[], "down for maintenance");
    hook.respond_next(503, &[], "down for maintenance");
    let (_nats, mut ferry, peer) =
        nats_to_http(&orders_to_hook(), &[("@HOOK@", hook.url())], &[]).await;
    publish_orders(&peer, 10).await;

    // Two refusals, then the ten messages.
    let requests = hook.wait_for_requests(12, secs(30)).await;
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..3], [503, 503, 200]);
    let arrived: Vec<usize> = requests
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| seq_of(r).1)
        .collect();
    assert_in_order("orders", &arrived, 10);
    assert!(
        requests[..3].iter().all(|r| seq_of(r).1 == 0),
        "the retries carry the first message, and nothing overtakes it: {:?}",
        requests.iter().map(seq_of).collect::<Vec<_>>()
    );
    assert!(
        requests.iter().all(|r| r.uri == "/hook"),
        "auto is the connection's URL"
    );
    ferry
        .wait_for_line(
            "HTTP 503 Service Unavailable: down for maintenance",
            secs(5),
        )
        .await;
    // Nothing more comes: the message was delivered once. A marker sent behind the ten is
    // the very next request.
    peer.publish("orders", order("orders", 10)).await;
    let requests = hook.wait_for_requests(13, secs(10)).await;
    assert_eq!(requests.len(), 13);
    assert_eq!(seq_of(&requests[12]).1, 10, "the marker is next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_retried_no_sooner_than_the_server_asked() {
    let hook = WebhookServer::start();
    hook.respond_next(429, &[("Retry-After", "1")], "slow down");
    let (_nats, _ferry, peer) =
        nats_to_http(&orders_to_hook(), &[("@HOOK@", hook.url())], &[]).await;
    publish_orders(&peer, 2).await;

    let requests = hook.wait_for_requests(3, secs(30)).await;
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.status, seq_of(r).1))
            .collect::<Vec<_>>(),
        [(429, 0), (200, 0), (200, 1)]
    );
    // The server recorded the first request before it answered; ferry waited a second after
    // the answer. (ferry's own backoff would have come back within 100 ms.)
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= secs(1),
        "the retry came {waited:?} after the 429, before its Retry-After: 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_goes_to_the_dead_letter_sink_with_the_reason_and_the_rest_flow_on() {
    let hook = WebhookServer::start();
    hook.respond_next(400, &[], "{\"error\": \"field `id` is missing\"}");
    let yaml = orders_to(
        r#"{ url: "@HOOK@/hook?key=query-secret-42" }"#,
        "    dead_letter: { connection: core, subject: \"dead.{{ route }}\" }\n",
    );
    let (_nats, mut ferry, peer) = nats_to_http(&yaml, &[("@HOOK@", hook.url())], &[]).await;
    let mut dead = peer.subscribe("dead.>").await;
    publish_orders(&peer, 5).await;

    let letters = dead.collect(1, secs(20)).await;
    let letter = &letters[0];
    assert_eq!(letter.topic, "dead.orders");
    assert_eq!(letter.payload, order("orders", 0).as_bytes(), "unchanged");
    assert_eq!(letter.header("Ferry-Stage"), Some("sink"));
    let error = letter.header("Ferry-Error").unwrap();
    assert!(
        error.contains("HTTP 400 Bad Request: {\"error\": \"field `id` is missing\"}"),
        "{error}"
    );
    assert!(!error.contains("query-secret-42"), "{error}");

    let requests = hook.wait_for_requests(5, secs(20)).await;
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.status, seq_of(r).1))
            .collect::<Vec<_>>(),
        [(400, 0), (200, 1), (200, 2), (200, 3), (200, 4)],
        "refused once, not retried; the rest follow"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.uri == "/hook?key=query-secret-42")
    );
    dead.expect_nothing(millis(300)).await;
    assert_eq!(ferry.terminate().await.code(), Some(0));
    ferry.assert_never_logged("query-secret-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_requests_that_time_out_are_retried_not_left_hanging() {
    let hook = WebhookServer::start();
    hook.set_delay(secs(5));
    let (_nats, mut ferry, peer) = nats_to_http(
        r#"
connections:
  core: { nats: { url: "@NATS@" } }
  hook: { http: { url: "http://ferry:pw-secret-5@127.0.0.1:@PORT@/items/", timeout: 500ms } }
routes:
  - name: items
    from: { connection: core, subject: "items.*" }
    to: { connection: hook, url: "{{ subject[1] }}", method: PUT }
"#,
        &[("@PORT@", hook.port().to_string())],
        &[],
    )
    .await;
    peer.publish_all((0..3).map(|i| (format!("items.i{i}"), order("items", i))))
        .await;

    // The first answer would take 5 s; once it has arrived, the server answers at once.
    hook.wait_for_requests(1, secs(10)).await;
    hook.set_delay(millis(0));
    let requests = hook.wait_for_requests(4, secs(10)).await;
    assert!(requests.iter().all(|r| r.method == "PUT"), "{requests:?}");
    // The URL's user info is sent as Basic auth: base64("ferry:pw-secret-5").
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some("Basic ZmVycnk6cHctc2VjcmV0LTU=")),
        "{requests:?}"
    );
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.uri.as_str(), seq_of(r).1))
            .collect::<Vec<_>>(),
        [
            ("/items/i0", 0),
            ("/items/i0", 0),
            ("/items/i1", 1),
            ("/items/i2", 2)
        ]
    );
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= millis(500) && waited < secs(5),
        "the retry came {waited:?} after the first try: not after the 500ms timeout"
    );
    ferry.wait_for_line("no answer within 500ms", secs(5)).await;
    ferry.assert_never_logged("pw-secret-5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_limits_requests_over_every_route_of_the_connection() {
    let hook = WebhookServer::start();
    hook.set_delay(millis(200));
    // Three routes, each sending one request at a time: without the limit, three in flight.
    let (_nats, _ferry, peer) = nats_to_http(
        r#"
connections:
  core: { nats: { url: "@NATS@" } }
  hook: { http: { url: "@HOOK@/", max_concurrent: 2 } }
routes:
  - name: a
    from: { connection: core, subject: "a" }
    to: { connection: hook, url: a }
  - name: b
    from: { connection: core, subject: "b" }
    to: { connection: hook, url: b }
  - name: c
    from: { connection: core, subject: "c" }
    to: { connection: hook, url: c }
"#,
        &[("@HOOK@", hook.url())],
        &[],
    )
    .await;
    const N: usize = 6;
    peer.publish_all((0..N).flat_map(|i| ["a", "b", "c"].map(|s| (s.to_string(), order(s, i)))))
        .await;

    let requests = hook.wait_for_requests(3 * N, secs(30)).await;
    wait_idle(&hook).await;
    for stream in ["a", "b", "c"] {
        assert_in_order(stream, &seqs(&requests, stream), N);
        assert!(
            requests
                .iter()
                .filter(|r| seq_of(r).0 == stream)
                .all(|r| r.uri == format!("/{stream}"))
        );
    }
    assert_eq!(
        hook.max_in_flight(),
        2,
        "max_concurrent: 2 over three busy routes"
    );
}

/// Accepts TCP connections on 127.0.0.1:`port` from now on and pipes each to `target`: a
/// webhook that comes up late on an address ferry already has. (A helper of this file:
/// [`WebhookServer`] binds a free port of its own as it starts.)
fn listen_late(port: u16, target: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_while_the_webhook_is_down_and_arrive_once_it_is_up() {
    let hook = WebhookServer::start();
    let port = free_port(); // nothing listens here yet: connection refused
    // HTTP has no session to wait for: ferry is ready with the webhook down.
    let (_nats, mut ferry, peer) = nats_to_http(
        &orders_to_hook(),
        &[("@HOOK@", format!("http://127.0.0.1:{port}"))],
        &[],
    )
    .await;
    publish_orders(&peer, 5).await;
    ferry
        .wait_for_line(
            &format!("connection down: http://127.0.0.1:{port}: cannot connect"),
            secs(10),
        )
        .await;
    let mark = ferry.mark();

    let _relay = listen_late(port, ([127, 0, 0, 1], hook.port()).into());
    let requests = hook.wait_for_requests(5, secs(40)).await;
    assert_in_order("orders", &seqs(&requests, "orders"), 5);
    ferry
        .wait_for_line_since(mark, "reconnected to http://127.0.0.1", secs(5))
        .await;
}

/// examples/nats-to-webhook.yaml as a user runs it, with the test's own addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_to_webhook_example_runs_as_written() {
    let hook = WebhookServer::start();
    hook.respond_next(422, &[], "{\"error\": \"unknown order\"}");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/nats-to-webhook.yaml"
    ))
    .unwrap();
    let (_nats, mut ferry, peer) = nats_to_http(
        &example,
        &[
            ("nats://127.0.0.1:4222", "@NATS@".into()),
            ("http://127.0.0.1:8080", hook.url()),
        ],
        &[("WEBHOOK_TOKEN", TOKEN)],
    )
    .await;
    let mut dead = peer.subscribe("dead.>").await;
    let events = ["created", "paid", "shipped"];
    peer.publish_all(
        (0..6).map(|i| (format!("shop.orders.{}", events[i % 3]), order("orders", i))),
    )
    .await;

    let letters = dead.collect(1, secs(20)).await;
    assert_eq!(letters[0].topic, "dead.orders");
    assert_eq!(letters[0].payload, order("orders", 0).as_bytes());
    assert!(
        letters[0]
            .header("Ferry-Error")
            .unwrap()
            .contains("HTTP 422 Unprocessable Entity: {\"error\": \"unknown order\"}"),
        "{letters:?}"
    );
    let requests = hook.wait_for_requests(6, secs(20)).await;
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.uri, format!("/hooks/orders/{}", events[i % 3]));
        assert_eq!(r.header("x-order-event"), Some(events[i % 3]));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(seq_of(r).1, i);
    }
    assert_eq!(ferry.terminate().await.code(), Some(0));
    ferry.assert_never_logged(TOKEN);
}

/// A request the server never answers does not hold shutdown past `shutdown_timeout`, even
/// when the request timeout is longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_hanging_request() {
    let hook = WebhookServer::start();
    hook.set_delay(secs(120));
    let yaml = "shutdown_timeout: 1s".to_string()
        + &orders_to(r#"{ url: "@HOOK@/hook", timeout: 60s }"#, "");
    let (_nats, mut ferry, peer) = nats_to_http(&yaml, &[("@HOOK@", hook.url())], &[]).await;
    publish_orders(&peer, 2).await;
    hook.wait_for_requests(1, secs(10)).await;

    ferry.signal("TERM");
    let started = std::time::Instant::now();
    let status = ferry.wait_exit(secs(15)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < secs(10),
        "ferry took {:?} to stop with shutdown_timeout: 1s",
        started.elapsed()
    );
    ferry
        .wait_for_line("shutdown timeout passed", secs(1))
        .await;
}

/// `ferry check` describes the HTTP connection without the password in its URL or its query.
#[test]
fn ferry_check_shows_neither_the_urls_password_nor_its_query() {
    let out = ferry_check(&fill(
        &orders_to(
            r#"{ url: "https://ferry:pw-secret-7@example.com/hook?key=query-secret-7" }"#,
            "",
        ),
        &[("@NATS@", "nats://127.0.0.1:4222".into())],
    ));
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout
            .contains("connection hook: HTTP to https://ferry:***@example.com/hook?…"),
        "{}",
        out.stdout
    );
    for secret in ["pw-secret-7", "query-secret-7"] {
        assert!(!out.all().contains(secret), "{secret} in {}", out.all());
    }
}
