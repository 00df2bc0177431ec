//! Request routes (`request:`): a request taken from one protocol is made on another, and the
//! reply goes back to whoever asked. Real servers and clients: async-nats requesters and
//! services (a queue group of two), curl against http_server. Covers replies matched to their
//! requests, the timeout answer (the NATS services framework's 504 headers, HTTP 504) well
//! before the requester's own timeout, counted in `/metrics`, the `max_in_flight` bound, and
//! the configurations `ferry check` refuses.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use support::*;

/// A NATS service on `subject` in queue group `group`: each member answers
/// `<member>:<request>` after `delay`, and counts how many requests it holds at once.
struct Service {
    served: Vec<Arc<AtomicUsize>>,
    most_at_once: Arc<AtomicUsize>,
}

async fn service(peer: &NatsPeer, subject: &str, members: usize, delay: Duration) -> Service {
    let mut served = Vec::new();
    let holding = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    for member in 0..members {
        let count = Arc::new(AtomicUsize::new(0));
        served.push(count.clone());
        let mut requests = peer
            .client
            .queue_subscribe(subject.to_string(), "service".to_string())
            .await
            .unwrap();
        let client = peer.client.clone();
        let (holding, most) = (holding.clone(), most_at_once.clone());
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let Some(inbox) = request.reply.clone() else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let client = client.clone();
                let (holding, most) = (holding.clone(), most.clone());
                tokio::spawn(async move {
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    holding.fetch_sub(1, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&request.payload).to_string();
                    let answer = format!("{member}:{text}");
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Content-Type", "text/plain");
                    let _ = client
                        .publish_with_headers(inbox, headers, Bytes::from(answer))
                        .await;
                });
            }
        });
    }
    peer.sync().await;
    Service {
        served,
        most_at_once,
    }
}

/// A nats-server, ferry with an admin listener and an `http_server` connection `api`, and
/// `routes`. Returns the running scenario and the admin listener's base URL.
async fn start(routes: &str) -> (Running, String) {
    let port = free_port();
    let running = Scenario::new()
        .nats("nats")
        .settings(&format!("admin: {{ listen: \"127.0.0.1:{port}\" }}"))
        .other_connection("api", "{ http_server: { path: /api } }")
        .routes(routes)
        .start()
        .await;
    (running, format!("http://127.0.0.1:{port}"))
}

/// curl's answer: the status and the body.
async fn curl(args: &[&str], url: &str) -> (u16, String) {
    let curl = require_binary("curl", "curl");
    let output = tokio::process::Command::new(curl)
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').expect("a status");
    (status.parse().expect("a status"), body.to_string())
}

/// The value of metric `name` for route `route`, as `/metrics` shows it.
async fn metric(admin: &str, name: &str, route: &str) -> Option<u64> {
    let (_, text) = curl(&[], &format!("{admin}/metrics")).await;
    let prefix = format!("{name}{{route=\"{route}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

const NATS_TO_NATS: &str = r#"
  - name: ask
    from: { connection: nats, subject: "front.>" }
    to: { connection: nats, subject: "svc.{{ subject[1] }}" }
    request: { timeout: 2s }
"#;

/// NATS requests on `front.*` become requests on `svc.*`, answered by a service in a queue
/// group of two: every requester gets the reply to its own request, both members serve, and
/// the reply's headers come along without ferry's loop marker.
#[tokio::test]
async fn nats_requests_reach_a_queue_group_service_and_get_their_replies() {
    let (running, admin) = start(NATS_TO_NATS).await;
    let peer = running.nats_peer("nats").await;
    let service = service(&peer, "svc.echo", 2, millis(0)).await;
    let mut asked = Vec::new();
    for i in 0..40 {
        let client = peer.client.clone();
        asked.push(tokio::spawn(async move {
            let request = async_nats::Request::new()
                .payload(Bytes::from(format!("q{i}")))
                .timeout(Some(secs(10)));
            let reply = client.send_request("front.echo", request).await;
            (i, reply)
        }));
    }
    for asked in asked {
        let (i, reply) = within(secs(20), "a reply", asked).await.unwrap();
        let reply = reply.unwrap_or_else(|e| panic!("request {i}: {e}"));
        let text = String::from_utf8_lossy(&reply.payload).to_string();
        assert!(text.ends_with(&format!(":q{i}")), "request {i} got {text}");
        let headers = reply.headers.expect("the reply's headers");
        assert_eq!(
            headers.get("Content-Type").map(|v| v.as_str()),
            Some("text/plain")
        );
        assert!(headers.get("Ferry-Via").is_none(), "{headers:?}");
    }
    for (member, served) in service.served.iter().enumerate() {
        assert!(
            served.load(Ordering::SeqCst) > 0,
            "member {member} served none"
        );
    }
    assert_eq!(
        metric(&admin, "ferry_requests_total", "ask").await,
        Some(40)
    );
    assert_eq!(metric(&admin, "ferry_replies_total", "ask").await, Some(40));
}

/// A POST to `/api/<name>` is a request on `svc.<name>`: the HTTP response is the service's
/// reply, with its Content-Type.
#[tokio::test]
async fn curl_gets_the_services_reply() {
    let routes = r#"
  - name: web
    from: { connection: api }
    to: { connection: nats, subject: "svc.{{ topic }}" }
    request: { timeout: 2s }
"#;
    let (running, admin) = start(routes).await;
    let peer = running.nats_peer("nats").await;
    let _service = service(&peer, "svc.echo", 1, millis(0)).await;
    for i in 0..5 {
        let (status, body) = curl(
            &["-X", "POST", "--data-binary", &format!("hello {i}")],
            &format!("{admin}/api/echo"),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (200, format!("0:hello {i}").as_str())
        );
    }
    let (status, headers) = curl(
        &["-X", "POST", "-d", "x", "-o", "/dev/null", "-D", "-"],
        &format!("{admin}/api/echo"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers.to_lowercase().contains("content-type: text/plain"),
        "{headers}"
    );
    // No service on the subject: 502 at once, saying so.
    let (status, body) = curl(&["-X", "POST", "-d", "x"], &format!("{admin}/api/none")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("no responders"), "{body}");
}

/// A service that takes requests and never answers: the NATS requester gets the services
/// framework's 504 headers at ferry's timeout (1 s), well before its own (20 s); curl gets
/// 504; both are counted as timeouts.
#[tokio::test]
async fn a_request_without_a_reply_is_answered_at_the_routes_timeout() {
    let routes = r#"
  - name: ask
    from: { connection: nats, subject: "front.>" }
    to: { connection: nats, subject: "svc.{{ subject[1] }}" }
    request: { timeout: 1s }
  - name: web
    from: { connection: api }
    to: { connection: nats, subject: "svc.{{ topic }}" }
    request: { timeout: 1s }
"#;
    let (running, admin) = start(routes).await;
    let peer = running.nats_peer("nats").await;
    // Takes every request, answers none.
    let _silent = peer.subscribe("svc.>").await;
    let started = std::time::Instant::now();
    let request = async_nats::Request::new()
        .payload(Bytes::from_static(b"q"))
        .timeout(Some(secs(20)));
    let reply = within(
        secs(10),
        "the timeout answer",
        peer.client.send_request("front.slow", request),
    )
    .await
    .expect("an answer, not the requester's own timeout");
    assert!(started.elapsed() < secs(5), "{:?}", started.elapsed());
    assert!(reply.payload.is_empty());
    let headers = reply.headers.expect("the error headers");
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("504")
    );
    assert_eq!(
        headers.get("Nats-Service-Error").map(|v| v.as_str()),
        Some("no reply within 1s")
    );
    let (status, body) = curl(&["-X", "POST", "-d", "x"], &format!("{admin}/api/slow")).await;
    assert_eq!((status, body.trim()), (504, "no reply within 1s"));
    assert_eq!(
        metric(&admin, "ferry_request_timeouts_total", "ask").await,
        Some(1)
    );
    assert_eq!(
        metric(&admin, "ferry_request_timeouts_total", "web").await,
        Some(1)
    );
}

/// A core NATS message without a reply inbox on a request route cannot be answered: it is
/// dead-lettered with the reason, and counted as failed.
#[tokio::test]
async fn a_request_without_a_reply_inbox_is_dead_lettered() {
    let routes = r#"
  - name: ask
    from: { connection: nats, subject: "front.>" }
    to: { connection: nats, subject: "svc.{{ subject[1] }}" }
    request: { timeout: 1s }
    dead_letter: { connection: nats, subject: "dead.ask" }
"#;
    let (running, admin) = start(routes).await;
    let peer = running.nats_peer("nats").await;
    let mut dead = peer.subscribe("dead.ask").await;
    peer.publish("front.x", "no inbox").await;
    let letter = dead.recv(secs(10)).await.expect("a dead letter");
    assert_eq!(letter.text(), "no inbox");
    assert_eq!(
        letter.header("Ferry-Error"),
        Some("a request without a reply inbox")
    );
    assert_eq!(
        metric(&admin, "ferry_messages_failed_total", "ask").await,
        Some(1)
    );
}

/// With `max_in_flight: 2` and a service that takes half a second per request, ten requests
/// at once reach the service never more than two at a time, and all are answered.
#[tokio::test]
async fn max_in_flight_bounds_the_requests_outstanding() {
    let routes = r#"
  - name: ask
    from: { connection: nats, subject: "front.>" }
    to: { connection: nats, subject: "svc.{{ subject[1] }}" }
    request: { timeout: 10s, max_in_flight: 2 }
"#;
    let (running, _admin) = start(routes).await;
    let peer = running.nats_peer("nats").await;
    let service = service(&peer, "svc.slow", 2, millis(500)).await;
    let mut asked = Vec::new();
    for i in 0..10 {
        let client = peer.client.clone();
        asked.push(tokio::spawn(async move {
            let request = async_nats::Request::new()
                .payload(Bytes::from(format!("q{i}")))
                .timeout(Some(secs(30)));
            client.send_request("front.slow", request).await
        }));
    }
    for asked in asked {
        let reply = within(secs(40), "a reply", asked).await.unwrap();
        assert!(reply.is_ok(), "{reply:?}");
    }
    assert_eq!(service.most_at_once.load(Ordering::SeqCst), 2);
}

/// What cannot carry a request or its reply is refused when the file is read, with its
/// place and a hint: an MQTT 3.1.1 sink, a JetStream sink, two sinks.
#[test]
fn ferry_check_refuses_what_cannot_ask_or_answer() {
    let yaml = |to: &str| {
        format!(
            r#"connections:
  nats: {{ nats: {{ url: "nats://127.0.0.1:4222" }} }}
  mq: {{ mqtt: {{ url: "mqtt://127.0.0.1:1883", version: "3.1.1" }} }}
routes:
  - name: ask
    from: {{ connection: nats, subject: "front.>" }}
    to: {to}
    request: {{ timeout: 2s }}
"#
        )
    };
    for (to, message, hint) in [
        (
            r#"{ connection: mq, topic: "svc/x" }"#,
            "an MQTT 3.1.1 sink cannot make a request",
            "set `version: 5` on connection `mq`",
        ),
        (
            r#"{ connection: nats, subject: "svc.x", jetstream: true }"#,
            "a JetStream sink cannot make a request",
            "remove `jetstream: true`",
        ),
        (
            r#"{ connection: nats, subject: "svc.x", kv: { bucket: devices } }"#,
            "a KV sink cannot make a request",
            "remove `kv:`",
        ),
        (
            r#"[{ connection: nats, subject: "a" }, { connection: nats, subject: "b" }]"#,
            "a request route has exactly one sink",
            "make one request route per service",
        ),
    ] {
        let out = ferry_check(&yaml(to));
        assert_eq!(out.code, Some(2), "{}", out.all());
        let all = out.all();
        assert!(
            all.contains(&format!("bridges.yaml:7:9: error: {message}")),
            "{all}"
        );
        assert!(all.contains(hint), "{all}");
    }
}

/// examples/request-reply.yaml, run as written (the server and the port filled in): the curl
/// and the NATS request of its comment get the service's reply.
#[tokio::test]
async fn example_request_reply() {
    let nats = NatsServer::start(NatsOptions::default());
    let port = free_port();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/request-reply.yaml"
    ))
    .unwrap();
    let config = fill(
        &example,
        &[
            ("${NATS_URL:-nats://127.0.0.1:4222}", nats.url()),
            ("127.0.0.1:9090", format!("127.0.0.1:{port}")),
        ],
    );
    let mut ferry = Ferry::start(&config);
    ferry.wait_ready().await;
    let peer = NatsPeer::connect(&nats.url()).await;
    let _service = service(&peer, "svc.echo", 2, millis(0)).await;
    let (status, body) = curl(
        &["-d", "ping"],
        &format!("http://127.0.0.1:{port}/api/echo"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with(":ping"), "{body}");
    let request = async_nats::Request::new()
        .payload(Bytes::from_static(b"ping"))
        .timeout(Some(secs(10)));
    let reply = within(
        secs(15),
        "a reply",
        peer.client.send_request("api.echo", request),
    )
    .await
    .expect("the service's reply");
    assert!(reply.payload.ends_with(b":ping"), "{:?}", reply.payload);
}

/// A mosquitto and a nats-server, and ferry relaying MQTT 5 requests on `svc/<name>` to
/// `svc.<name>` with `timeout`.
async fn mqtt_to_nats(timeout: &str) -> Running {
    let routes = format!(
        r#"
  - name: ask
    from: {{ connection: mq, topic: "svc/+", qos: 1 }}
    to: {{ connection: nats, subject: "svc.{{{{ topic[1] }}}}" }}
    request: {{ timeout: {timeout} }}
    dead_letter: {{ connection: nats, subject: "dead.ask" }}
"#
    );
    Scenario::new()
        .mosquitto("mq")
        .keys("mq", "version: 5")
        .nats("nats")
        .routes(&routes)
        .start()
        .await
}

/// mosquitto_rr's answer to `request` on `topic` (its response topic `reply/<tag>`): its
/// exit code and what it printed (`%P|%p`: user properties, payload).
async fn mosquitto_rr(port: u16, topic: &str, tag: &str, request: &str) -> (Option<i32>, String) {
    let rr = require_binary("mosquitto_rr", "mosquitto-clients");
    let output = tokio::process::Command::new(rr)
        .args([
            "-V",
            "5",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
        ])
        .args(["-t", topic, "-e", &format!("reply/{tag}"), "-m", request])
        .args(["-W", "20", "-F", "%P|%p"])
        .output()
        .await
        .expect("mosquitto_rr runs");
    let text = String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string();
    (output.status.code(), text)
}

/// mosquitto_rr (MQTT 5: Response Topic and Correlation Data) asks a NATS service in a queue
/// group of two through ferry: each of 16 requesters at once gets the answer to its own
/// request, and both members serve.
#[tokio::test]
async fn mosquitto_rr_asks_a_nats_service_in_a_queue_group() {
    let running = mqtt_to_nats("5s").await;
    let port = running.mosquitto("mq").port;
    let peer = running.nats_peer("nats").await;
    let service = service(&peer, "svc.echo", 2, millis(0)).await;
    let mut asked = Vec::new();
    for i in 0..16 {
        asked.push(tokio::spawn(async move {
            mosquitto_rr(port, "svc/echo", &i.to_string(), &format!("q{i}")).await
        }));
    }
    for (i, asked) in asked.into_iter().enumerate() {
        let (code, text) = within(secs(30), "mosquitto_rr", asked).await.unwrap();
        assert_eq!(code, Some(0), "request {i}: {text}");
        assert!(text.ends_with(&format!(":q{i}")), "request {i} got {text}");
    }
    for (member, served) in service.served.iter().enumerate() {
        assert!(
            served.load(Ordering::SeqCst) > 0,
            "member {member} served none"
        );
    }
}

/// Two MQTT 5 requests that share one response topic, told apart only by their Correlation
/// Data (as a device with one reply topic asks): each answer comes back with its own request's
/// Correlation Data, so the requester can match them.
#[tokio::test]
async fn each_answer_carries_its_requests_correlation_data() {
    use mqtt5::{AsyncClient, Broker, Event, MqttOptions, Packet, PublishOptions, QoS};
    let running = mqtt_to_nats("5s").await;
    let port = running.mosquitto("mq").port;
    let peer = running.nats_peer("nats").await;
    let _service = service(&peer, "svc.echo", 1, millis(0)).await;
    let options = MqttOptions::new("requester", Broker::tcp("127.0.0.1", port));
    let (client, mut eventloop) = AsyncClient::builder(options).capacity(100).build();
    let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    let subscriber = client.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => subscriber
                    .subscribe("replies/shared", QoS::AtLeastOnce)
                    .await
                    .unwrap(),
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(answer))) => {
                    let correlation = answer.properties.and_then(|p| p.correlation_data);
                    let _ = answers_tx.send((correlation, answer.payload));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(millis(100)).await,
            }
        }
    });
    within(secs(10), "the requester's SUBACK", subscribed)
        .await
        .unwrap();
    for (correlation, request) in [("c-1", "q1"), ("c-2", "q2")] {
        let properties = mqtt5::PublishProperties {
            response_topic: Some("replies/shared".into()),
            correlation_data: Some(Bytes::from(correlation)),
            ..Default::default()
        };
        let options = PublishOptions::new(QoS::AtLeastOnce).properties(properties);
        client
            .publish("svc/echo", Bytes::from(request), options)
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let (correlation, payload) = within(secs(20), "an answer", answers.recv())
            .await
            .expect("an answer");
        got.push((
            String::from_utf8_lossy(&correlation.expect("correlation data")).to_string(),
            String::from_utf8_lossy(&payload).to_string(),
        ));
    }
    got.sort();
    assert!(
        got[0].0 == "c-1"
            && got[0].1.ends_with(":q1")
            && got[1].0 == "c-2"
            && got[1].1.ends_with(":q2"),
        "each answer with its own request's correlation data: {got:?}"
    );
}

/// No reply within the route's timeout: mosquitto_rr gets an empty answer whose user
/// properties say 504, long before its own timeout. A request without a Response Topic is
/// dead-lettered with the reason.
#[tokio::test]
async fn mqtt_requests_without_a_reply_or_a_response_topic() {
    let running = mqtt_to_nats("1s").await;
    let port = running.mosquitto("mq").port;
    let peer = running.nats_peer("nats").await;
    let _silent = peer.subscribe("svc.>").await;
    let mut dead = peer.subscribe("dead.ask").await;
    let started = std::time::Instant::now();
    let (code, text) = mosquitto_rr(port, "svc/slow", "slow", "q").await;
    assert_eq!(code, Some(0), "{text}");
    assert!(started.elapsed() < secs(10), "{:?}", started.elapsed());
    assert!(text.contains("Nats-Service-Error-Code:504"), "{text}");
    assert!(text.contains("no reply within 1s"), "{text}");
    assert!(text.ends_with('|'), "the answer is empty: {text}");

    let mqtt = running.mqtt_peer("mq").await;
    mqtt.publish("svc/plain", "no response topic", 1, false)
        .await;
    let letter = dead.recv(secs(10)).await.expect("a dead letter");
    assert_eq!(letter.text(), "no response topic");
    assert_eq!(
        letter.header("Ferry-Error"),
        Some("a request without a response topic")
    );
}

/// An MQTT 5 responder on `filter` (rumqttc v5, as a device would be): answers each request
/// `<payload>` with `done:<payload>` on its Response Topic, with its Correlation Data, after
/// `delay`; counts how many requests it holds at once. Returns once subscribed.
async fn mqtt_responder(port: u16, filter: &str, delay: Duration) -> Arc<AtomicUsize> {
    use mqtt5::{AsyncClient, Broker, Event, MqttOptions, Packet, PublishOptions, QoS};
    let options = MqttOptions::new(format!("responder-{port}"), Broker::tcp("127.0.0.1", port));
    let (client, mut eventloop) = AsyncClient::builder(options).capacity(100).build();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let holding = Arc::new(AtomicUsize::new(0));
    let most = most_at_once.clone();
    let filter = filter.to_string();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .subscribe(filter.clone(), QoS::AtLeastOnce)
                        .await
                        .unwrap();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(request))) => {
                    let Some(properties) = request.properties else {
                        continue;
                    };
                    let Some(to) = properties.response_topic else {
                        continue;
                    };
                    let (client, holding, most) = (client.clone(), holding.clone(), most.clone());
                    tokio::spawn(async move {
                        let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        holding.fetch_sub(1, Ordering::SeqCst);
                        let text = String::from_utf8_lossy(&request.payload).to_string();
                        let answer = mqtt5::PublishProperties {
                            correlation_data: properties.correlation_data,
                            content_type: Some("text/plain".into()),
                            ..Default::default()
                        };
                        let options = PublishOptions::new(QoS::AtLeastOnce).properties(answer);
                        let _ = client
                            .publish(to, Bytes::from(format!("done:{text}")), options)
                            .await;
                    });
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(millis(100)).await,
            }
        }
    });
    within(secs(10), "the responder's SUBACK", subscribed)
        .await
        .unwrap();
    most_at_once
}

/// NATS requests on `dev.<id>.cmd` become MQTT 5 requests on `dev/<id>/cmd` (ferry's reply
/// topic and Correlation Data): each NATS requester gets the MQTT responder's answer to its
/// own request; with `max_in_flight: 2` the responder never holds more than two at once.
#[tokio::test]
async fn nats_requests_reach_an_mqtt_5_responder() {
    let routes = r#"
  - name: command
    from: { connection: nats, subject: "dev.*.cmd" }
    to: { connection: mq, topic: "dev/{{ subject[1] }}/cmd", qos: 1 }
    request: { timeout: 10s, max_in_flight: 2 }
"#;
    let running = Scenario::new()
        .mosquitto("mq")
        .keys("mq", "version: 5")
        .nats("nats")
        .routes(routes)
        .start()
        .await;
    let port = running.mosquitto("mq").port;
    let most_at_once = mqtt_responder(port, "dev/+/cmd", millis(300)).await;
    let peer = running.nats_peer("nats").await;
    let mut asked = Vec::new();
    for i in 0..8 {
        let client = peer.client.clone();
        asked.push(tokio::spawn(async move {
            let request = async_nats::Request::new()
                .payload(Bytes::from(format!("q{i}")))
                .timeout(Some(secs(30)));
            (
                i,
                client.send_request(format!("dev.{i}.cmd"), request).await,
            )
        }));
    }
    for asked in asked {
        let (i, reply) = within(secs(40), "a reply", asked).await.unwrap();
        let reply = reply.unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(reply.payload, format!("done:q{i}"));
        let headers = reply.headers.expect("the reply's headers");
        assert_eq!(
            headers.get("Content-Type").map(|v| v.as_str()),
            Some("text/plain")
        );
    }
    assert_eq!(most_at_once.load(Ordering::SeqCst), 2);
}

/// A service slower than the route's timeout: the requester is told 504 at the timeout, and
/// the reply that comes after is dropped and counted late.
#[tokio::test]
async fn a_late_reply_is_dropped_and_counted() {
    let routes = r#"
  - name: ask
    from: { connection: nats, subject: "front.>" }
    to: { connection: nats, subject: "svc.{{ subject[1] }}" }
    request: { timeout: 1s }
"#;
    let (running, admin) = start(routes).await;
    let peer = running.nats_peer("nats").await;
    let service = service(&peer, "svc.slow", 1, millis(1500)).await;
    let request = async_nats::Request::new()
        .payload(Bytes::from_static(b"q"))
        .timeout(Some(secs(20)));
    let reply = within(
        secs(10),
        "the timeout answer",
        peer.client.send_request("front.slow", request),
    )
    .await
    .expect("the timeout answer");
    let headers = reply.headers.expect("the error headers");
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("504")
    );
    assert_eq!(service.served[0].load(Ordering::SeqCst), 1);
    let deadline = tokio::time::Instant::now() + secs(10);
    while metric(&admin, "ferry_late_replies_total", "ask").await != Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late reply was not counted"
        );
        tokio::time::sleep(millis(100)).await;
    }
}
