//! A message a sink can never take never blocks the ones behind it, and what an operator reads
//! about a sink's connection says what is wrong.
//!
//! For each kind of sink (core NATS, JetStream, MQTT 5, MQTT 3.1.1, HTTP, MigratoryData) one
//! message the sink can never take (too large for the server, or refused for good by it) goes
//! between small ones: the small ones all arrive, in order, within seconds, and the bad one
//! reaches the dead-letter sink with the reason. The servers are real (nats-server with a small
//! `max_payload`, mosquitto with a small `max_packet_size`), bar the MigratoryData fake.
//!
//! Then: a refused NATS connection names the address in the log and `/readyz`; a WebSocket
//! NATS connection logs the WebSocket address it uses; `ferry relay - nats://…` publishes
//! without warning that its connection is down; MQTT 5 user properties keep their order
//! through an MQTT → MQTT route.
//!
//! Last, a name or header NATS cannot carry, on each path a message takes to a NATS sink (a
//! mapped publish on core NATS and on JetStream, a spool filled under an earlier
//! configuration, `ferry relay` from standard input): refused and dead-lettered (counted as
//! failed, for the relay) with its reason, never sent, the route going on.

mod support;

use support::*;

/// Small messages before and after the bad one.
const SMALL: usize = 5;
/// The limit the servers are given: small enough for a fast test.
const LIMIT: usize = 4096;

/// The payload of small message `i`.
fn small(i: usize) -> String {
    format!("small-{i:02}")
}

/// A payload no sink here can take: twice the servers' limit.
fn oversized() -> String {
    "B".repeat(2 * LIMIT)
}

/// What the publisher sends, in order: `SMALL` small messages, the bad one, `SMALL` more.
fn sequence(bad: &str) -> Vec<String> {
    (0..SMALL)
        .map(small)
        .chain(std::iter::once(bad.to_string()))
        .chain((SMALL..2 * SMALL).map(small))
        .collect()
}

/// The small payloads every sink must deliver, in this order.
fn smalls() -> Vec<String> {
    (0..2 * SMALL).map(small).collect()
}

/// The topics (subjects) of the next `n` messages at `inbox`, within `timeout`.
async fn topics(inbox: &mut Inbox, n: usize, timeout: std::time::Duration) -> Vec<String> {
    let got = inbox.collect(n, timeout).await;
    got.into_iter().map(|m| m.topic).collect()
}

/// The payloads of `msgs` as text.
fn texts(msgs: &[Msg]) -> Vec<String> {
    msgs.iter().map(Msg::text).collect()
}

/// The one dead letter in `dead` (bounded wait): it carries the bad payload unchanged and a
/// `Ferry-Error` containing `reason`.
async fn assert_dead_letter(dead: &mut Inbox, bad: &str, reason: &str) {
    let letters = dead.collect(1, secs(15)).await;
    let letter = &letters[0];
    assert_eq!(
        letter.payload.len(),
        bad.len(),
        "the bad message, unchanged"
    );
    assert_eq!(letter.header("Ferry-Stage"), Some("sink"));
    let error = letter.header("Ferry-Error").unwrap_or_default();
    assert!(error.contains(reason), "{error:?} should say {reason:?}");
}

/// A nats-server that takes messages of at most `LIMIT` bytes.
fn small_nats(jetstream: bool) -> NatsOptions {
    NatsOptions {
        jetstream,
        extra_config: vec![format!("max_payload: {LIMIT}")],
        ..NatsOptions::default()
    }
}

/// A mosquitto that takes packets of at most `LIMIT` bytes (and says so in an MQTT 5
/// CONNACK).
fn small_mosquitto() -> MosquittoOptions {
    MosquittoOptions {
        extra_config: vec![format!("max_packet_size {LIMIT}")],
        ..MosquittoOptions::default()
    }
}

/// Route `big`: MQTT `in/big` on connection `mq` to `to`, dead letters to `dead/big` on `mq`.
fn big_from_mqtt_to(to: &str) -> String {
    big_route(r#"{ connection: mq, topic: "in/big", qos: 1 }"#, to)
        .replace("@DEAD@", r#"{ connection: mq, topic: "dead/{{ route }}" }"#)
}

/// Route `big`: NATS `in.big` on connection `core` to `to`, dead letters to `dead.big` on
/// `core`.
fn big_from_nats_to(to: &str) -> String {
    big_route(r#"{ connection: core, subject: "in.big" }"#, to).replace(
        "@DEAD@",
        r#"{ connection: core, subject: "dead.{{ route }}" }"#,
    )
}

fn big_route(from: &str, to: &str) -> String {
    fill(
        r#"
  - name: big
    from: @FROM@
    to: @TO@
    dead_letter: @DEAD@
"#,
        &[("@FROM@", from.to_string()), ("@TO@", to.to_string())],
    )
}

/// Publishes `payloads` on MQTT `topic` at QoS 1, in order, each acknowledged.
async fn publish_mqtt(peer: &MqttPeer, topic: &str, payloads: Vec<String>) {
    peer.publish_all(payloads.into_iter().map(|p| (topic.to_string(), p)), 1)
        .await;
}

/// Publishes `payloads` on NATS `subject`, in order.
async fn publish_nats(peer: &NatsPeer, subject: &str, payloads: Vec<String>) {
    peer.publish_all(payloads.into_iter().map(|p| (subject.to_string(), p)))
        .await;
    peer.flush().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_refuses_a_message_over_max_payload_and_the_rest_flow_on() {
    let run = Scenario::new()
        .mosquitto("mq")
        .nats_with("core", small_nats(false))
        .routes(&big_from_mqtt_to(
            r#"{ connection: core, subject: "out.big" }"#,
        ))
        .start()
        .await;
    let (_nats_peer, mut out) = run.nats_subscriber("core", "out.big").await;
    let mut mqtt = run.mqtt_subscriber("mq", "dead/#", 1).await;

    let bad = oversized();
    publish_mqtt(&mqtt, "in/big", sequence(&bad)).await;
    assert_eq!(texts(&out.collect(2 * SMALL, secs(10)).await), smalls());
    assert_dead_letter(&mut mqtt.inbox, &bad, "max_payload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_refuses_a_message_over_max_payload_and_the_rest_flow_on() {
    let brokers = Scenario::new()
        .mosquitto("mq")
        .nats_with("core", small_nats(true))
        .routes(&big_from_mqtt_to(
            r#"{ connection: core, subject: "js.big", jetstream: true }"#,
        ))
        .start_brokers();
    let nats_peer = brokers.nats_peer("core").await;
    nats_peer.create_stream("OUT", &["js.>"]).await;
    let run = brokers.start_ferry().await;
    let mut mqtt = run.mqtt_subscriber("mq", "dead/#", 1).await;

    let bad = oversized();
    publish_mqtt(&mqtt, "in/big", sequence(&bad)).await;
    nats_peer
        .wait_stream_len("OUT", 2 * SMALL as u64, secs(10))
        .await;
    assert_eq!(texts(&nats_peer.read_stream("OUT").await), smalls());
    assert_dead_letter(&mut mqtt.inbox, &bad, "max payload").await;
}

/// NATS → an MQTT sink on a mosquitto that takes `LIMIT`-byte packets; `mqtt` is the sink
/// connection's extra settings. The small messages arrive in order on the broker, the bad one
/// is dead-lettered to NATS with `reason`.
async fn mqtt_sink_passes_an_oversized_message(mqtt_settings: &str, reason: &str) {
    let run = Scenario::new()
        .nats("core")
        .mosquitto_with("mq", small_mosquitto())
        .keys("mq", mqtt_settings)
        .routes(&big_from_nats_to(
            r#"{ connection: mq, topic: "out/big", qos: 1 }"#,
        ))
        .start()
        .await;
    let mut mqtt = run.mqtt_subscriber("mq", "out/#", 1).await;
    let (nats_peer, mut dead) = run.nats_subscriber("core", "dead.>").await;

    let bad = oversized();
    publish_nats(&nats_peer, "in.big", sequence(&bad)).await;
    assert_eq!(
        texts(&mqtt.inbox.collect(2 * SMALL, secs(10)).await),
        smalls()
    );
    assert_dead_letter(&mut dead, &bad, reason).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_refuses_a_message_over_the_brokers_maximum_packet_size() {
    // mosquitto announces its max_packet_size in the MQTT 5 CONNACK.
    mqtt_sink_passes_an_oversized_message(
        "version: 5",
        &format!("the broker accepts at most {LIMIT}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_refuses_a_message_over_max_outgoing_packet_size() {
    // MQTT 3.1.1 has no way to learn the broker's limit: the connection's setting is it.
    mqtt_sink_passes_an_oversized_message(
        &format!("version: 3.1.1, max_outgoing_packet_size: {LIMIT}"),
        &format!("max_outgoing_packet_size is {LIMIT}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_dead_letters_a_413_and_the_rest_flow_on() {
    let hook = WebhookServer::start();
    let run = Scenario::new()
        .nats("core")
        .other_connection(
            "hook",
            &format!(r#"{{ http: {{ url: "{}/in" }} }}"#, hook.url()),
        )
        .routes(&big_from_nats_to("{ connection: hook }"))
        .start()
        .await;
    let (nats_peer, mut dead) = run.nats_subscriber("core", "dead.>").await;

    // The server refuses the sixth request, the large one, as too large.
    let bad = oversized();
    let payloads = sequence(&bad);
    publish_nats(&nats_peer, "in.big", payloads[..SMALL].to_vec()).await;
    hook.wait_for_requests(SMALL, secs(10)).await;
    hook.respond_next(413, &[], "request entity too large");
    publish_nats(&nats_peer, "in.big", payloads[SMALL..].to_vec()).await;

    let requests = hook.wait_for_requests(2 * SMALL + 1, secs(10)).await;
    let delivered: Vec<String> = requests
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.text())
        .collect();
    assert_eq!(delivered, smalls());
    assert_dead_letter(&mut dead, &bad, "HTTP 413").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migratorydata_dead_letters_a_message_over_its_size_limit_and_the_rest_flow_on() {
    let mut options = FakeOptions::new("md-token");
    options.max_message_size = LIMIT;
    let md = MigratoryDataFake::cluster(options, 1).remove(0);
    let md_connection = format!(
        r#"{{ migratorydata: {{ servers: ["{}"], token: md-token }} }}"#,
        md.url()
    );
    let run = Scenario::new()
        .nats("core")
        .other_connection("md", &md_connection)
        .routes(&big_from_nats_to(
            r#"{ connection: md, subject: "/out/big" }"#,
        ))
        .start()
        .await;
    let (nats_peer, mut dead) = run.nats_subscriber("core", "dead.>").await;

    let bad = oversized();
    publish_nats(&nats_peer, "in.big", sequence(&bad)).await;
    assert_dead_letter(&mut dead, &bad, "MESSAGE_SIZE_LIMIT_EXCEEDED").await;
    within(secs(10), "the small messages stored", async {
        while md.stored("/out/big").len() < 2 * SMALL {
            tokio::time::sleep(millis(20)).await;
        }
    })
    .await;
    let stored: Vec<String> = md
        .stored("/out/big")
        .into_iter()
        .map(|s| s.content)
        .collect();
    assert_eq!(stored, smalls());
}

/// What `/readyz` on `port` answers.
async fn readyz(port: u16) -> String {
    http_client()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .expect("GET /readyz")
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_nats_connection_names_its_address_in_the_log_and_readyz() {
    let closed = free_port();
    let admin = free_port();
    let yaml = fill(
        r#"
admin: { listen: "127.0.0.1:@ADMIN@" }
connections:
  core: { nats: { url: "nats://127.0.0.1:@CLOSED@" } }
routes:
  - name: r
    from: { connection: core, subject: "in" }
    to: { connection: core, subject: "out" }
"#,
        &[
            ("@ADMIN@", admin.to_string()),
            ("@CLOSED@", closed.to_string()),
        ],
    );
    let mut ferry = Ferry::start(&yaml);
    let refused = format!("connection refused at 127.0.0.1:{closed}");
    let line = ferry.wait_for_line(&refused, secs(15)).await;
    assert!(line.contains("connection down"), "{line}");
    let body = readyz(admin).await;
    assert!(body.contains(&refused), "{body}");
    assert!(!body.contains("IO error"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_nats_connection_logs_the_address_it_uses() {
    let nats = NatsServer::start(NatsOptions {
        websocket: true,
        ..NatsOptions::default()
    });
    let ws = nats.ws_port.unwrap();
    let mut ferry = Ferry::start_ready(&fill(
        r#"
connections:
  core: { nats: { url: "ws://127.0.0.1:@WS@" } }
routes:
  - name: r
    from: { connection: core, subject: "in" }
    to: { connection: core, subject: "out" }
"#,
        &[("@WS@", ws.to_string())],
    ))
    .await;
    ferry
        .wait_for_line(&format!("connected to ws://127.0.0.1:{ws}"), secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_to_nats_publishes_without_a_connection_down_warning() {
    let nats = NatsServer::start(NatsOptions::default());
    let peer = NatsPeer::connect(&nats.url()).await;
    let mut inbox = peer.subscribe("relay.in").await;
    let to = format!("{}/relay.in", nats.url());
    let mut relay = Ferry::relay(&["-", &to, "--raw"], Some(b"one\ntwo\nthree\n".to_vec()));
    let status = relay.wait_exit(secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", relay.tail(10));
    assert_eq!(
        texts(&inbox.collect(3, secs(10)).await),
        ["one", "two", "three"]
    );
    let warnings: Vec<String> = relay
        .lines()
        .into_iter()
        .filter(|l| l.contains("is down") || l.contains("WARN"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_user_properties_keep_their_order_through_a_route() {
    let run = Scenario::new()
        .mosquitto("mq")
        .keys("mq", "version: 5")
        .routes(
            r#"
  - name: props
    from: { connection: mq, topic: "in/props", qos: 1 }
    to: { connection: mq, topic: "out/props", qos: 1 }
"#,
        )
        .start()
        .await;
    let mut peer = run.mqtt_subscriber("mq", "out/#", 1).await;
    let properties = [("a", "1"), ("b", "2"), ("a", "3"), ("Z", "4"), ("b", "5")];
    peer.publish_with_user_properties("in/props", "x", &properties)
        .await;
    let got = peer.inbox.collect(1, secs(10)).await;
    let kept: Vec<(&str, &str)> = got[0]
        .headers
        .iter()
        .filter(|(name, _)| !name.to_ascii_lowercase().starts_with("ferry-"))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(kept, properties);
}

/// A server that answers every request with a 200 whose chunked body never ends (bounded:
/// it stops after 256 MiB, or when the client goes). Returns its `http://` base URL.
async fn endless_answer_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request's head; its body (a small payload) may follow, unread.
                let mut head = Vec::new();
                let mut byte = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&byte[..n]),
                    }
                }
                let start = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             transfer-encoding: chunked\r\n\r\n";
                if socket.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
                for _ in 0..4096 {
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migratorydata_answer_is_read_only_up_to_max_response_size() {
    let server = endless_answer_server().await;
    let md_connection = format!(
        "{{ migratorydata: {{ servers: [\"{server}\"], token: md-token, timeout: 30s, \
         max_response_size: 4KiB }} }}"
    );
    let mut run = Scenario::new()
        .nats("core")
        .other_connection("md", &md_connection)
        .routes(
            r#"
  - name: md
    from: { connection: core, subject: "in.md" }
    to: { connection: md, subject: "/out/md" }
"#,
        )
        .start()
        .await;
    let peer = run.nats_peer("core").await;
    publish_nats(&peer, "in.md", vec![small(0)]).await;
    // Told within seconds, not when the 30 s request timeout ends an endless read.
    let line = (run.ferry)
        .wait_for_line("larger than the connection's max_response_size", secs(10))
        .await;
    assert!(line.contains("(4096 bytes)"), "{line}");
    let rss = run.ferry.rss_kib().unwrap();
    assert!(rss < 100 * 1024, "ferry holds {rss} KiB");
}

/// What the MQTT 5 publisher sends, in order: good messages around one whose subject NATS
/// cannot hold and one with a header (an MQTT 5 user property) NATS cannot carry. The
/// payload's `s` names the NATS subject.
async fn publish_names_nats_cannot_carry(mqtt: &MqttPeer, topic: &str) {
    let named = |s: &str| format!(r#"{{"s":"{s}"}}"#);
    mqtt.publish_with_user_properties(topic, named("ok-0"), &[])
        .await;
    mqtt.publish_with_user_properties(topic, named("b c"), &[])
        .await;
    mqtt.publish_with_user_properties(topic, named("ok-1"), &[("a:b", "x")])
        .await;
    mqtt.publish_with_user_properties(topic, named("ok-2"), &[("site", "a")])
        .await;
}

/// The two dead letters of [`publish_names_nats_cannot_carry`], in order: (stage, reason).
async fn assert_refused_names(dead: &mut Inbox, subject: &str) {
    let letters = dead.collect(2, secs(15)).await;
    let said: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| {
            (
                l.header("Ferry-Stage").unwrap_or_default(),
                l.header("Ferry-Error").unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(said[0].0, "template", "{said:?}");
    assert!(
        said[0]
            .1
            .contains(&format!("NATS subject `{subject}b c` contains whitespace")),
        "{said:?}"
    );
    assert_eq!(said[1].0, "headers", "{said:?}");
    assert!(
        said[1]
            .1
            .contains("header name `a:b` cannot travel over NATS"),
        "{said:?}"
    );
}

/// MQTT 5 → a NATS sink (core or JetStream): the mapping refuses what NATS cannot carry, the
/// sink never sees it, and the good messages arrive in order on the same connection.
async fn nats_sink_refuses_what_nats_cannot_carry(jetstream: bool) {
    let brokers = Scenario::new()
        .mosquitto("mq")
        .keys("mq", "version: 5")
        .nats_with(
            "core",
            NatsOptions {
                jetstream,
                ..NatsOptions::default()
            },
        )
        .routes(&fill(
            r#"
  - name: names
    from: { connection: mq, topic: "in/names", qos: 1 }
    to: { connection: core, subject: "out.{{ payload.s }}", jetstream: @JS@ }
    dead_letter: { connection: mq, topic: "dead/{{ route }}" }
"#,
            &[("@JS@", jetstream.to_string())],
        ))
        .start_brokers();
    let (nats_peer, mut out) = brokers.nats_subscriber("core", "out.>").await;
    if jetstream {
        nats_peer.create_stream("OUT", &["out.>"]).await;
    }
    let run = brokers.start_ferry().await;
    let mut mqtt = run.mqtt_subscriber("mq", "dead/#", 1).await;

    publish_names_nats_cannot_carry(&mqtt, "in/names").await;
    let arrived = topics(&mut out, 2, secs(10)).await;
    assert_eq!(arrived, ["out.ok-0", "out.ok-2"]);
    assert_refused_names(&mut mqtt.inbox, "out.").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_sink_refuses_a_subject_or_header_nats_cannot_carry() {
    nats_sink_refuses_what_nats_cannot_carry(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_sink_refuses_a_subject_or_header_nats_cannot_carry() {
    nats_sink_refuses_what_nats_cannot_carry(true).await;
}

/// A spool outlives its configuration: filled while sink `out` was an MQTT broker (where a
/// space in a topic and a `:` in a user property are fine), then forwarded after a restart
/// that made `out` a NATS connection. What NATS cannot carry is dead-lettered with its
/// reason, the rest is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_filled_for_another_protocol_is_checked_before_it_is_forwarded() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let spool = tempfile::tempdir().unwrap();
    let route = |sink: &str| {
        fill(
            r#"
shutdown_timeout: 5s
connections:
  mq: { mqtt: { url: "@MQTT@", version: 5 } }
  out: @SINK@
routes:
  - name: names
    from: { connection: mq, topic: "in/names", qos: 1 }
    to: { connection: out, @NAME@: "out.{{ payload.s }}" }
    spool: { dir: "@SPOOL@" }
    dead_letter: { connection: mq, topic: "dead/{{ route }}" }
"#,
            &[
                ("@MQTT@", mosquitto.url()),
                ("@SINK@", sink.to_string()),
                (
                    "@NAME@",
                    if sink.contains("nats") {
                        "subject"
                    } else {
                        "topic"
                    }
                    .to_string(),
                ),
                ("@SPOOL@", spool.path().display().to_string()),
            ],
        )
    };
    // An MQTT broker that is not there: everything goes to the spool.
    let away = format!(
        "{{ mqtt: {{ url: \"mqtt://127.0.0.1:{}\", version: 5 }} }}",
        free_port()
    );
    let mut ferry = Ferry::start(&route(&away));
    // `mq` subscribed (it says so after the SUBACK); `out` never comes up.
    ferry.wait_for_line("connected to", secs(20)).await;
    let mqtt = MqttPeer::connect(&mosquitto.url()).await;
    publish_names_nats_cannot_carry(&mqtt, "in/names").await;
    ferry.wait_for_line("(4 spooled so far)", secs(60)).await;
    ferry.terminate().await;

    let nats_peer = NatsPeer::connect(&nats.url()).await;
    let mut out = nats_peer.subscribe("out.>").await;
    let mut mqtt = MqttPeer::subscribed(&mosquitto.url(), "dead/#", 1).await;
    let nats_sink = format!("{{ nats: {{ url: \"{}\" }} }}", nats.url());
    let mut ferry = Ferry::start_ready(&route(&nats_sink)).await;
    let arrived = topics(&mut out, 2, secs(15)).await;
    assert_eq!(arrived, ["out.ok-0", "out.ok-2"]);
    assert_refused_names(&mut mqtt.inbox, "out.").await;
    ferry
        .wait_for_line("sink out is back: 4 spooled message(s) forwarded", secs(10))
        .await;
    assert!(ferry.is_running());
}

/// `ferry relay - nats://…`: JSON lines whose subject or header NATS cannot carry fail (the
/// relay says so and exits 1), the others are published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_from_stdin_refuses_a_subject_or_header_nats_cannot_carry() {
    let nats = NatsServer::start(NatsOptions::default());
    let peer = NatsPeer::connect(&nats.url()).await;
    let mut inbox = peer.subscribe("relay.>").await;
    // No name in TO: each line's own subject, as it is (the lines say they are NATS's).
    let to = format!("{}/", nats.url());
    let lines = concat!(
        r#"{"subject":"relay.ok-0","protocol":"nats","payload":"0"}"#,
        "\n",
        r#"{"subject":"relay.b c","protocol":"nats","payload":"1"}"#,
        "\n",
        r#"{"subject":"relay.ok-1","protocol":"nats","payload":"2","headers":{"a:b":"x"}}"#,
        "\n",
        r#"{"subject":"relay.ok-2","protocol":"nats","payload":"3","headers":{"site":"a"}}"#,
        "\n",
    );
    let mut relay = Ferry::relay(&["-", &to], Some(lines.as_bytes().to_vec()));
    let status = relay.wait_exit(secs(20)).await;
    assert_eq!(status.code(), Some(1), "{}", relay.tail(10));
    let arrived = topics(&mut inbox, 2, secs(10)).await;
    assert_eq!(arrived, ["relay.ok-0", "relay.ok-2"]);
    let log = relay.lines().join("\n");
    // One warning for both (they are rate-limited); the count says both failed.
    assert!(log.contains("contains whitespace"), "{log}");
    assert!(
        log.contains("2 relayed, 4 received, 0 filtered, 2 failed"),
        "{log}"
    );
}
