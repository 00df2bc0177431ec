//! The mapping stage end to end: a two-way bridge that relays each message exactly once and
//! echoes nothing, jq transforms that split one message into several, dead letters, `match:`
//! captures with header rules, and ferry envelopes wrapped and unwrapped.

mod support;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use support::*;

/// Messages up to the moment every topic in `sentinels` has arrived at least once.
async fn collect_until_all(inbox: &mut Inbox, sentinels: &[&str], timeout: Duration) -> Vec<Msg> {
    let pending: RefCell<BTreeSet<&str>> = RefCell::new(sentinels.iter().copied().collect());
    inbox
        .collect_until(
            &format!("every sentinel of {sentinels:?}"),
            |m| {
                let mut pending = pending.borrow_mut();
                pending.remove(m.topic.as_str());
                pending.is_empty()
            },
            timeout,
        )
        .await
}

// ---------------------------------------------------------------------------------------------
// 1. the two-way bridge

const FROM_MQTT: [&str; 4] = ["m0", "m1", "m2", "m3"];
const FROM_NATS: [&str; 4] = ["n0", "n1", "n2", "n3"];
const PER_STREAM: usize = 2_500; // 10,000 messages each way

/// Route `up` (MQTT 5 `bridge/#` → NATS `auto`) and route `down` (NATS `bridge.>` → MQTT
/// `auto`) overlap completely: without the loop guard every message would come back forever.
/// 10,000 QoS 1 messages go up and 10,000 go down at the same time. Each side must see exactly
/// the other side's 10,000 (once each, in order per stream) plus its own publisher's, and no
/// echo of its own, also during a quiet period after both final `end` messages. What ferry
/// publishes carries the loop-guard headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_bridge_relays_10k_each_way_exactly_once_without_echoes() {
    two_way_bridge(false, "").await;
}

/// The same bridge where the broker cannot help: route `up` also copies everything to a second
/// NATS server, so ferry cannot subscribe with MQTT 5 `no_local` and mosquitto sends ferry's
/// own publishes back. The loop guard, reading its marker from MQTT user properties, must drop
/// every one of those echoes itself, and says so when the route stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_bridge_without_no_local_drops_echoes_by_its_marker() {
    let mut run = two_way_bridge(
        true,
        "      - { connection: audit, subject: \"audit.{{ subject }}\" }\n",
    )
    .await;
    let ferry = &mut run.ferry;
    ferry.terminate().await;
    let stopped = ferry
        .lines()
        .into_iter()
        .find(|l| l.contains("route stopped") && l.contains("route=up"))
        .expect("route up's stop line");
    let echoes: u64 = stopped
        .split(", ")
        .find_map(|part| part.strip_suffix(" echoes suppressed"))
        .and_then(|n| n.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no echo count in {stopped:?}"));
    assert_eq!(
        echoes,
        (FROM_NATS.len() * PER_STREAM + 1) as u64,
        "every NATS-originated message came back once over MQTT and was dropped: {stopped}"
    );
}

/// Runs the two-way bridge test; with `audit`, a second nats-server `audit` as a connection
/// too; `extra_up_sinks` (YAML list items) are more sinks for route `up`. Returns the
/// scenario, its ferry still running.
async fn two_way_bridge(audit: bool, extra_up_sinks: &str) -> Running {
    // No per-client queue limit: neither ferry nor a test peer may lose a QoS 1 message.
    let unlimited = MosquittoOptions {
        max_queued_messages: Some(0),
        ..Default::default()
    };
    let mut scenario = Scenario::new()
        .mosquitto_with("mq", unlimited)
        .keys("mq", "version: 5, client_id: ferry-two-way")
        .nats("nc");
    if audit {
        scenario = scenario.nats("audit");
    }
    let run = scenario
        .routes(&fill(
            r#"
  - name: up
    from: { connection: mq, topic: "bridge/#", qos: 1 }
    to:
      - { connection: nc, subject: auto }
@EXTRA@    queue: { max_messages: 10000, when_full: block }
  - name: down
    from: { connection: nc, subject: "bridge.>" }
    to: { connection: mq, topic: auto, qos: 1 }
    queue: { max_messages: 10000, when_full: block }
"#,
            &[("@EXTRA@", extra_up_sinks.to_string())],
        ))
        .start()
        .await;

    let (_nats_watcher, mut at_nats) = run.nats_subscriber("nc", "bridge.>").await;
    let mut mqtt_watcher = run.mqtt_subscriber("mq", "bridge/#", 1).await;
    let mqtt_publisher = run.mqtt_peer("mq").await;
    let nats_publisher = run.nats_peer("nc").await;

    let up = async {
        let messages = (0..PER_STREAM).flat_map(|seq| {
            FROM_MQTT
                .iter()
                .map(move |s| (format!("bridge/m/{s}"), seq_payload(s, seq, 64)))
        });
        mqtt_publisher.publish_all(messages, 1).await;
        mqtt_publisher
            .publish("bridge/m/end", "end", 1, false)
            .await;
    };
    let down = async {
        let messages = (0..PER_STREAM).flat_map(|seq| {
            FROM_NATS
                .iter()
                .map(move |s| (format!("bridge.n.{s}"), seq_payload(s, seq, 64)))
        });
        nats_publisher.publish_all(messages).await;
        nats_publisher.publish("bridge.n.end", "end").await;
        nats_publisher.sync().await;
    };
    tokio::join!(up, down);

    // Each side: its own publisher's messages (straight from the broker) and the other
    // side's (through ferry), up to both `end`s; then a quiet period for late echoes.
    let mut nats_side =
        collect_until_all(&mut at_nats, &["bridge.m.end", "bridge.n.end"], secs(180)).await;
    let mut mqtt_side = collect_until_all(
        &mut mqtt_watcher.inbox,
        &["bridge/m/end", "bridge/n/end"],
        secs(180),
    )
    .await;
    let (late_nats, late_mqtt) = tokio::join!(
        at_nats.collect_for(secs(3)),
        mqtt_watcher.inbox.collect_for(secs(3))
    );
    nats_side.extend(late_nats);
    mqtt_side.extend(late_mqtt);

    check_bridge_side("NATS", &nats_side, ".", &FROM_NATS, &FROM_MQTT);
    check_bridge_side("MQTT", &mqtt_side, "/", &FROM_MQTT, &FROM_NATS);

    // The loop guard marks what ferry publishes: NATS headers one way, user properties the other.
    let relayed_up = nats_side
        .iter()
        .find(|m| m.topic.starts_with("bridge.m."))
        .unwrap();
    let relayed_down = mqtt_side
        .iter()
        .find(|m| m.topic.starts_with("bridge/n/"))
        .unwrap();
    for (what, m) in [("NATS", relayed_up), ("MQTT", relayed_down)] {
        assert!(
            m.ferry_hops() == Some(1) && m.ferry_instance().is_some_and(|i| !i.is_empty()),
            "a message ferry relayed to {what} has no loop marker of its first hop: {m:?} {:?}",
            m.headers
        );
    }
    run
}

/// One side of the two-way bridge: every `own` stream (published on this side) and every
/// `other` stream (relayed by ferry) arrived exactly once, in order, each on its own name;
/// each `end` once.
fn check_bridge_side(side: &str, got: &[Msg], sep: &str, own: &[&str], other: &[&str]) {
    let mut numbered = Vec::new();
    for m in got {
        let levels: Vec<&str> = m.topic.split(sep).collect();
        assert!(
            levels.len() == 3 && levels[0] == "bridge",
            "{side} side: unexpected name {:?}",
            m.topic
        );
        if levels[2] == "end" {
            continue;
        }
        let (stream, _) = parse_seq(&m.payload)
            .unwrap_or_else(|| panic!("{side} side: not a sequence payload: {m:?}"));
        assert_eq!(
            &levels[1..],
            &[&stream[..1], stream.as_str()][..],
            "{side} side: {m:?} arrived under the wrong name"
        );
        numbered.push(m.clone());
    }
    for stream in own {
        let n = numbered
            .iter()
            .filter(|m| parse_seq(&m.payload).is_some_and(|(s, _)| s == *stream))
            .count();
        assert!(
            n <= PER_STREAM,
            "{side} side: {} echoes of its own stream {stream} came back through ferry",
            n - PER_STREAM
        );
    }
    for (origin, end) in [("m", "end"), ("n", "end")] {
        let name = ["bridge", origin, end].join(sep);
        let ends = got.iter().filter(|m| m.topic == name).count();
        assert_eq!(
            ends, 1,
            "{side} side: `{name}` arrived {ends} times (twice or more is an echo)"
        );
    }
    let all: Vec<&str> = own.iter().chain(other).copied().collect();
    assert_sequences(&numbered, &all, PER_STREAM);
}

// ---------------------------------------------------------------------------------------------
// 2. one message in, several out

/// `transform: '.readings[]'`: one NATS message holding five readings becomes five MQTT
/// messages, in order, each under the topic rendered from its own `payload.room`; an empty
/// array yields no message, and the route still works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_payload_is_split_into_one_message_per_element() {
    let run = Scenario::new()
        .mosquitto("mq")
        .nats("nc")
        .routes(
            r#"
  - name: split
    from: { connection: nc, subject: "batch.>" }
    transform: '.readings[]'
    to: { connection: mq, topic: "rooms/{{ payload.room }}/reading", qos: 1 }
"#,
        )
        .start()
        .await;

    let mut subscriber = run.mqtt_subscriber("mq", "rooms/#", 1).await;
    let publisher = run.nats_peer("nc").await;

    let readings: Vec<Value> = (0..5)
        .map(|i| json!({"room": format!("r{i}"), "seq": i, "celsius": 20.5 + i as f64}))
        .collect();
    publisher
        .publish(
            "batch.plant",
            json!({"site": "p1", "readings": readings}).to_string(),
        )
        .await;
    publisher.flush().await;

    let got = subscriber.inbox.collect(5, secs(15)).await;
    for (i, (m, reading)) in got.iter().zip(&readings).enumerate() {
        assert_eq!(
            m.topic,
            format!("rooms/r{i}/reading"),
            "message #{i}: {m:?}"
        );
        assert_eq!(&m.json(), reading, "payload of message #{i}");
    }

    // An empty array: nothing. The sentinel after it proves the route goes on, and that
    // nothing else (no empty message, no sixth copy) arrived in between.
    publisher
        .publish("batch.plant", r#"{"site":"p1","readings":[]}"#)
        .await;
    publisher
        .publish(
            "batch.plant",
            r#"{"site":"p1","readings":[{"room":"end","seq":99}]}"#,
        )
        .await;
    publisher.flush().await;
    let after = subscriber
        .inbox
        .collect_until_topic("rooms/end/reading", secs(15))
        .await;
    assert_eq!(
        after.len(),
        1,
        "the empty array (or the first batch) produced messages: {after:?}"
    );
    assert_eq!(after[0].json(), json!({"room": "end", "seq": 99}));
}

// ---------------------------------------------------------------------------------------------
// 3. dead letters

/// A payload that is not JSON fails at `decode`, a JSON payload without the `room` the subject
/// template needs fails at `template`: both go to the dead-letter subject byte for byte, with
/// `Ferry-Route`, `Ferry-Stage` and `Ferry-Error`, while the good messages around them arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_messages_go_to_the_dead_letter_subject_unchanged() {
    let run = Scenario::new()
        .mosquitto("mq")
        .keys("mq", "version: 5")
        .nats("nc")
        .routes(
            r#"
  - name: rooms-with-dead-letters
    from: { connection: mq, topic: "readings/#", qos: 1 }
    transform: '. + {relayed: true}'
    to: { connection: nc, subject: "rooms.{{ payload.room }}" }
    dead_letter: { connection: nc, subject: dead.rooms }
"#,
        )
        .start()
        .await;

    let (watcher, mut delivered) = run.nats_subscriber("nc", "rooms.>").await;
    let mut dead = watcher.subscribe("dead.>").await;
    let publisher = run.mqtt_peer("mq").await;

    // Not JSON, and not even UTF-8: it must come back exactly as it went in.
    let not_json = Bytes::from_static(b"\x00not json {\xff\xfe");
    // JSON, oddly spaced: a dead letter re-serialised by ferry would not match these bytes.
    let no_room = Bytes::from_static(b"{ \"value\": 3,   \"note\" : \"no room\" }");
    publisher
        .publish("readings/1", r#"{"room":"a","value":1}"#, 1, false)
        .await;
    publisher
        .publish("readings/2", not_json.clone(), 1, false)
        .await;
    publisher
        .publish("readings/3", no_room.clone(), 1, false)
        .await;
    publisher
        .publish("readings/4", r#"{"room":"b","value":2}"#, 1, false)
        .await;

    let good = delivered.collect_until_topic("rooms.b", secs(15)).await;
    let good: Vec<(String, Value)> = good.iter().map(|m| (m.topic.clone(), m.json())).collect();
    assert_eq!(
        good,
        [
            (
                "rooms.a".to_string(),
                json!({"room": "a", "value": 1, "relayed": true})
            ),
            (
                "rooms.b".to_string(),
                json!({"room": "b", "value": 2, "relayed": true})
            ),
        ]
    );

    let letters = dead.collect(2, secs(15)).await;
    for (letter, payload, stage) in [
        (&letters[0], &not_json, "decode"),
        (&letters[1], &no_room, "template"),
    ] {
        assert_eq!(letter.topic, "dead.rooms", "{letter:?}");
        assert_eq!(
            &letter.payload, payload,
            "a dead letter must carry the original payload unchanged"
        );
        assert_eq!(
            letter.header("Ferry-Route"),
            Some("rooms-with-dead-letters"),
            "Ferry-Route of the {stage} failure; headers: {:?}",
            letter.headers
        );
        assert_eq!(
            letter.header("Ferry-Stage"),
            Some(stage),
            "Ferry-Stage; headers: {:?}",
            letter.headers
        );
        assert!(
            letter
                .header("Ferry-Error")
                .is_some_and(|e| !e.trim().is_empty()),
            "no Ferry-Error saying why the {stage} stage failed; headers: {:?}",
            letter.headers
        );
    }
    // Nothing else fails: no third dead letter, no other delivery.
    dead.expect_nothing(millis(500)).await;
    delivered.expect_nothing(millis(100)).await;
}

// ---------------------------------------------------------------------------------------------
// 4. match: captures and header rules

/// `match:` on `sensors/#`: the named capture `room` renders the subject (`{{ match.room }}`),
/// a header (`headers.set`) and the payload (jq `$match.room`); a topic the expression does not
/// match is not delivered anywhere (not even as a dead letter); `headers.remove` drops a user
/// property while the others are forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_captures_render_subject_headers_and_payload() {
    let run = Scenario::new()
        .mosquitto("mq")
        .keys("mq", "version: 5")
        .nats("nc")
        .routes(
            r#"
  - name: temps
    from:
      connection: mq
      topic: "sensors/#"
      qos: 1
      match: '^sensors/(?P<room>[^/]+)/temp$'
    transform: '. + {room: $match.room}'
    headers:
      remove: [x-debug]
      set: { site: plant-1, room: "{{ match.room }}" }
    to: { connection: nc, subject: "iot.{{ match.room }}.temp" }
    dead_letter: { connection: nc, subject: dead.temps }
"#,
        )
        .start()
        .await;

    // Everything on the server: a non-matching message must not show up under any subject.
    let (_watcher, mut inbox) = run.nats_subscriber("nc", ">").await;
    let publisher = run.mqtt_peer("mq").await;
    publisher
        .publish_with_user_properties(
            "sensors/kitchen/temp",
            r#"{"value":21}"#,
            &[("x-debug", "on"), ("trace-id", "7")],
        )
        .await;
    publisher
        .publish_with_user_properties(
            "sensors/kitchen/humidity",
            r#"{"value":40}"#,
            &[("trace-id", "8")],
        )
        .await;
    publisher
        .publish("sensors/hall/temp", r#"{"value":19}"#, 1, false)
        .await;

    let got = inbox.collect_until_topic("iot.hall.temp", secs(15)).await;
    let names: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        names,
        ["iot.kitchen.temp", "iot.hall.temp"],
        "the non-matching topic must be filtered: {got:?}"
    );
    let kitchen = &got[0];
    assert_eq!(kitchen.json(), json!({"value": 21, "room": "kitchen"}));
    assert_eq!(
        kitchen.header("site"),
        Some("plant-1"),
        "{:?}",
        kitchen.headers
    );
    assert_eq!(
        kitchen.header_values("room"),
        ["kitchen"],
        "{:?}",
        kitchen.headers
    );
    assert_eq!(
        kitchen.header_values("trace-id"),
        ["7"],
        "user properties are forwarded by default: {:?}",
        kitchen.headers
    );
    assert!(
        kitchen.header("x-debug").is_none(),
        "headers.remove did not drop x-debug: {:?}",
        kitchen.headers
    );
    assert_eq!(got[1].json(), json!({"value": 19, "room": "hall"}));
    assert_eq!(
        got[1].header_values("room"),
        ["hall"],
        "{:?}",
        got[1].headers
    );
    // The non-matching message must not come late either (nor as a dead letter).
    inbox.expect_nothing(millis(500)).await;
}

// ---------------------------------------------------------------------------------------------
// 5. envelopes

/// Route `wrap` takes arbitrary text from NATS `raw.>` (`payload_format: text`) and publishes
/// it as a ferry envelope on `wrapped.x` (another NATS server, so the route graph has no
/// cycle whichever way it is drawn); route `unwrap` reads that envelope (`envelope: true`) and
/// publishes to MQTT (`payload_format: text`: the string written raw): the original text
/// arrives under the original name converted, `auto` and `{{ topic }}` alike, with its header. The envelope itself holds subject, payload, headers
/// and an RFC 3339 time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_wraps_and_unwraps_the_original_message() {
    let run = Scenario::new()
        .nats("edge")
        .nats("core")
        .mosquitto("mq")
        .keys("mq", "version: 5")
        .routes(
            r#"
  - name: wrap
    from: { connection: edge, subject: "raw.>", payload_format: text }
    to: { connection: core, subject: wrapped.x, envelope: true }
  - name: unwrap
    from: { connection: core, subject: "wrapped.>", envelope: true }
    to:
      - { connection: mq, topic: auto, qos: 1, payload_format: text }
      - { connection: mq, topic: "copy/{{ topic }}", qos: 1, payload_format: text }
"#,
        )
        .start()
        .await;

    let (_core_watcher, mut wrapped) = run.nats_subscriber("core", "wrapped.>").await;
    let mut mqtt_watcher = run.mqtt_subscriber("mq", "raw/#", 1).await;
    mqtt_watcher.subscribe("copy/#", 1).await;
    let publisher = run.nats_peer("edge").await;

    const TEXT: &str = "héllo, wörld: {not json} \"quoted\"\nsecond line ✓";
    publisher
        .publish_with_headers("raw.a.b", TEXT, &[("x-trace", "9")])
        .await;
    publisher.flush().await;

    let envelope = wrapped.collect(1, secs(15)).await.remove(0);
    assert_eq!(envelope.topic, "wrapped.x");
    let body = envelope.json();
    assert_eq!(body["subject"], json!("raw.a.b"), "envelope: {body}");
    assert_eq!(body["payload"], json!(TEXT), "envelope: {body}");
    let headers = body["headers"]
        .as_object()
        .unwrap_or_else(|| panic!("envelope `headers` is not an object: {body}"));
    let trace = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-trace"))
        .map(|(_, v)| v.clone());
    assert!(
        trace == Some(json!("9")) || trace == Some(json!(["9"])),
        "envelope headers lack x-trace: 9: {body}"
    );
    let time = body["time"]
        .as_str()
        .unwrap_or_else(|| panic!("envelope `time` is not a string: {body}"));
    let rfc3339 = regex::Regex::new(
        r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
    )
    .unwrap();
    assert!(
        rfc3339.is_match(time),
        "envelope time {time:?} is not RFC 3339"
    );

    let mut got = mqtt_watcher.inbox.collect(2, secs(15)).await;
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    let names: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(names, ["copy/raw/a/b", "raw/a/b"]);
    for m in &got {
        assert_eq!(
            m.payload,
            Bytes::from(TEXT),
            "unwrapped payload on {}",
            m.topic
        );
        assert_eq!(
            m.header_values("x-trace"),
            ["9"],
            "the envelope's headers become user properties again: {:?}",
            m.headers
        );
    }
}
