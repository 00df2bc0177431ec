//! Relaying: what arrives on the far side, in order, exactly once; subject templates, `auto`
//! subject conversion, jq filters and transforms.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::json;
use support::*;

const STREAMS: [&str; 4] = ["s0", "s1", "s2", "s3"];
const PER_STREAM: usize = 2_500; // 10,000 messages in all

/// 10,000 QoS 1 messages on four topics, published as fast as the broker takes them, then a
/// final `end` message: per topic, every message arrives once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_to_nats_10k_messages_arrive_once_and_in_order() {
    // ferry acknowledges each message only once NATS has it, so while the publisher outruns the
    // relay, mosquitto queues for ferry; past `max_queued_messages` (1000 by default) mosquitto
    // silently drops QoS 1 messages for any subscriber. Brokers feeding at-least-once routes
    // need it raised, as docs/limits.md says.
    let run = Scenario::new()
        .mosquitto_with("mq", unlimited_queue())
        .keys("mq", "client_id: ferry-load-up")
        .nats("nc")
        .routes(
            r#"
  - name: load
    from: { connection: mq, topic: "load/#", qos: 1 }
    to: { connection: nc, subject: auto }
    queue: { max_messages: 1000, when_full: block }
"#,
        )
        .start()
        .await;

    let (_subscriber, mut inbox) = run.nats_subscriber("nc", "load.>").await;
    let publisher = run.mqtt_peer("mq").await;
    let messages = (0..PER_STREAM).flat_map(|seq| {
        STREAMS
            .iter()
            .map(move |s| (format!("load/{s}"), seq_payload(s, seq, 64)))
    });
    publisher.publish_all(messages, 1).await;
    publisher.publish("load/end", "end", 1, false).await;

    expect_load(&mut inbox, ".").await;
}

/// mosquitto without a per-client queue limit (`max_queued_messages: 0`; see the first test
/// for why).
fn unlimited_queue() -> MosquittoOptions {
    MosquittoOptions {
        max_queued_messages: Some(0),
        ..Default::default()
    }
}

/// Collects up to the final `load<sep>end` message, then checks that every message came on
/// its stream's own subject (`load<sep>sN`) and that every stream arrived complete, once and
/// in order.
async fn expect_load(inbox: &mut Inbox, separator: &str) {
    let end = format!("load{separator}end");
    let mut got = inbox.collect_until_topic(&end, secs(120)).await;
    got.pop();
    for m in &got {
        let (stream, _) = parse_seq(&m.payload).expect("sequence payload");
        assert_eq!(
            m.topic,
            format!("load{separator}{stream}"),
            "subject of {m:?}"
        );
    }
    assert_sequences(&got, &STREAMS, PER_STREAM);
}

/// The other way: 10,000 NATS messages on four subjects to MQTT QoS 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_to_mqtt_10k_messages_arrive_once_and_in_order() {
    // No per-client queue limit, so the test's own subscriber cannot be the one losing messages.
    let run = Scenario::new()
        .mosquitto_with("mq", unlimited_queue())
        .keys("mq", "client_id: ferry-load-down")
        .nats("nc")
        .routes(
            r#"
  - name: load
    from: { connection: nc, subject: "load.>" }
    to: { connection: mq, topic: auto, qos: 1 }
    queue: { max_messages: 10000, when_full: block }
"#,
        )
        .start()
        .await;

    let mut subscriber = run.mqtt_subscriber("mq", "load/#", 1).await;
    let publisher = run.nats_peer("nc").await;
    let messages = (0..PER_STREAM).flat_map(|seq| {
        STREAMS
            .iter()
            .map(move |s| (format!("load.{s}"), seq_payload(s, seq, 64)))
    });
    publisher.publish_all(messages).await;
    publisher.publish("load.end", "end").await;
    publisher.flush().await;

    expect_load(&mut subscriber.inbox, "/").await;
}

/// `sensors/+/temp` → `iot.{{ topic[1] }}.temperature`: the room lands in the subject, the
/// payload is untouched, and topics the filter does not match are not relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_route_renders_the_subject_template() {
    let run = Scenario::new()
        .mosquitto("plant")
        .nats("core")
        .routes(
            r#"
  - name: telemetry
    from: { connection: plant, topic: "sensors/+/temp", qos: 1 }
    to: { connection: core, subject: "iot.{{ topic[1] }}.temperature" }
"#,
        )
        .start()
        .await;

    let (_subscriber, mut inbox) = run.nats_subscriber("core", ">").await;
    let publisher = run.mqtt_peer("plant").await;
    publisher
        .publish("sensors/kitchen/humidity", r#"{"value":40}"#, 1, false)
        .await;
    publisher
        .publish(
            "sensors/kitchen/temp",
            r#"{"room":"kitchen","value":21.5}"#,
            1,
            false,
        )
        .await;
    publisher
        .publish(
            "sensors/hall/temp",
            r#"{"room":"hall","value":19}"#,
            1,
            false,
        )
        .await;

    let got = inbox.collect(2, secs(15)).await;
    assert_eq!(got[0].topic, "iot.kitchen.temperature");
    assert_eq!(got[0].text(), r#"{"room":"kitchen","value":21.5}"#);
    assert_eq!(got[1].topic, "iot.hall.temperature");
    assert_eq!(got[1].text(), r#"{"room":"hall","value":19}"#);
}

/// `auto` both ways through NATS: MQTT broker A → NATS → MQTT broker B. Topics with `.`, a
/// non-system `$`, empty levels and a trailing slash come out on B exactly as they went in
/// on A, with byte-exact (non-UTF-8) payloads; in between, the NATS subjects follow
/// nats-server's own MQTT mapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_subjects_survive_mqtt_to_nats_to_mqtt_byte_for_byte() {
    let run = Scenario::new()
        .mosquitto("edge")
        .nats("core")
        .mosquitto("cloud")
        .routes(
            r##"
  - name: up
    from: { connection: edge, topics: ["#", "$app/#"], qos: 1 }
    to: { connection: core, subject: auto }
  - name: down
    from: { connection: core, subject: ">" }
    to: { connection: cloud, topic: auto, qos: 1 }
"##,
        )
        .start()
        .await;

    // MQTT topic on A, the NATS subject nats-server's MQTT support would use for it.
    let cases = [
        ("a/b.c/d", "a.b//c.d"),
        ("x/$cost", "x.$cost"),
        ("$app/x", "$app.x"),
        ("a//b", "a./.b"),
        ("a/b/", "a.b./"),
    ];
    let payload = |topic: &str| {
        let mut p = vec![0x00, 0xff, 0xfe, b'|'];
        p.extend_from_slice(topic.as_bytes());
        p.extend_from_slice(&[0xc3, 0x28, b'\n']); // invalid UTF-8 on purpose
        Bytes::from(p)
    };

    let (_watcher, mut in_nats) = run.nats_subscriber("core", ">").await;
    let mut in_cloud = run.mqtt_subscriber("cloud", "#", 1).await;
    in_cloud.subscribe("$app/#", 1).await;
    let publisher = run.mqtt_peer("edge").await;
    for (topic, _) in cases {
        publisher.publish(topic, payload(topic), 1, false).await;
    }

    let subjects: BTreeMap<Bytes, String> = in_nats
        .collect(cases.len(), secs(15))
        .await
        .into_iter()
        .map(|m| (m.payload, m.topic))
        .collect();
    let arrived: BTreeMap<String, Bytes> = collect_ignoring_sync(&mut in_cloud.inbox, cases.len())
        .await
        .into_iter()
        .map(|m| (m.topic, m.payload))
        .collect();
    for (topic, subject) in cases {
        assert_eq!(
            subjects.get(&payload(topic)).map(String::as_str),
            Some(subject),
            "NATS subject for MQTT topic {topic:?}"
        );
        assert_eq!(
            arrived.get(topic),
            Some(&payload(topic)),
            "MQTT topic {topic:?} after the round trip"
        );
    }
    assert_eq!(
        arrived.len(),
        cases.len(),
        "unexpected topics on the far broker: {arrived:?}"
    );
}

/// The `down` route above relays every NATS subject, including the test peers' own
/// round-trip probes; skip those.
async fn collect_ignoring_sync(inbox: &mut Inbox, n: usize) -> Vec<Msg> {
    let deadline = tokio::time::Instant::now() + secs(15);
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match inbox.recv(left).await {
            Some(m) if m.topic.starts_with("_ferry_test_sync/") => {}
            Some(m) => got.push(m),
            None => panic!(
                "expected {n} messages after the round trip within 15s, got {}: {got:?}",
                got.len()
            ),
        }
    }
    got
}

/// A jq filter drops what it rejects, a jq transform reshapes what passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jq_filter_and_transform() {
    let run = Scenario::new()
        .mosquitto("mq")
        .nats("nc")
        .routes(
            r#"
  - name: warm-rooms
    from: { connection: mq, topic: "rooms/+", qos: 1 }
    filter: '.value > 20'
    transform: '{room: .room, celsius: .value}'
    to: { connection: nc, subject: "warm.{{ topic[1] }}" }
"#,
        )
        .start()
        .await;

    let (_subscriber, mut inbox) = run.nats_subscriber("nc", "warm.>").await;
    let publisher = run.mqtt_peer("mq").await;
    publisher
        .publish(
            "rooms/a",
            r#"{"room":"a","value":25,"extra":true}"#,
            1,
            false,
        )
        .await;
    publisher
        .publish("rooms/b", r#"{"room":"b","value":10}"#, 1, false)
        .await; // filtered out
    publisher
        .publish("rooms/c", r#"{"room":"c","value":30.5}"#, 1, false)
        .await;

    let got = inbox.collect_until_topic("warm.c", secs(15)).await;
    let got: Vec<(String, serde_json::Value)> =
        got.iter().map(|m| (m.topic.clone(), m.json())).collect();
    assert_eq!(
        got,
        [
            ("warm.a".to_string(), json!({"room": "a", "celsius": 25})),
            ("warm.c".to_string(), json!({"room": "c", "celsius": 30.5})),
        ]
    );
}

/// A payload that is not JSON on a route with a transform is logged (a warning naming the
/// route) and skipped; the messages after it keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_payload_is_logged_and_the_route_goes_on() {
    let mut run = Scenario::new()
        .mosquitto("mq")
        .nats("nc")
        .routes(
            r#"
  - name: json-only-route
    from: { connection: mq, topic: "raw/#", qos: 1 }
    transform: '{v: .value}'
    to: { connection: nc, subject: "cooked" }
"#,
        )
        .start()
        .await;

    let (_subscriber, mut inbox) = run.nats_subscriber("nc", "cooked").await;
    let publisher = run.mqtt_peer("mq").await;
    let mark = run.ferry.mark();
    publisher
        .publish("raw/1", "this is not { json", 1, false)
        .await;
    for i in 0..3 {
        publisher
            .publish("raw/2", format!(r#"{{"value":{i}}}"#), 1, false)
            .await;
    }

    let got = inbox.collect(3, secs(15)).await;
    let got: Vec<serde_json::Value> = got.iter().map(|m| m.json()).collect();
    assert_eq!(got, [json!({"v": 0}), json!({"v": 1}), json!({"v": 2})]);
    run.ferry
        .wait_for_match_since(
            mark,
            "a warning naming route `json-only-route`",
            |l| l.contains("WARN") && l.contains("json-only-route"),
            secs(10),
        )
        .await;
    assert!(run.ferry.is_running(), "ferry exited after a bad payload");
}

/// Headers travel: MQTT 5 user properties become NATS headers, and NATS headers become MQTT 5
/// user properties, names and values intact (repeated names included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_user_properties_travel_both_ways() {
    let run = Scenario::new()
        .mosquitto("mq")
        .keys("mq", "version: 5")
        .nats("nc")
        .routes(
            r#"
  - name: up
    from: { connection: mq, topic: "up/#", qos: 1 }
    to: { connection: nc, subject: auto }
  - name: down
    from: { connection: nc, subject: "down.>" }
    to: { connection: mq, topic: auto, qos: 1 }
"#,
        )
        .start()
        .await;
    let (nats_peer, mut in_nats) = run.nats_subscriber("nc", "up.>").await;
    let mut mqtt_peer = run.mqtt_subscriber("mq", "down/#", 1).await;

    let sent = [("trace-id", "42"), ("tag", "a"), ("tag", "b")];
    mqtt_peer
        .publish_with_user_properties("up/x", "hello", &sent)
        .await;
    let got = in_nats.collect(1, secs(20)).await.remove(0);
    assert_eq!(got.topic, "up.x");
    for (k, v) in sent {
        assert!(
            got.headers.iter().any(|(hk, hv)| hk == k && hv == v),
            "NATS header {k}: {v} missing from {:?}",
            got.headers
        );
    }

    nats_peer
        .publish_with_headers("down.y", "world", &[("trace-id", "43")])
        .await;
    let got = mqtt_peer.inbox.collect(1, secs(20)).await.remove(0);
    assert_eq!(
        (got.topic.as_str(), got.text().as_str()),
        ("down/y", "world")
    );
    assert!(
        got.headers
            .iter()
            .any(|(k, v)| k == "trace-id" && v == "43"),
        "user property trace-id=43 missing from {:?}",
        got.headers
    );
}
