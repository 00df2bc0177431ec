//! `ferry relay FROM TO`: one-shot relays from the shell against real brokers, the capture and
//! replay round trip through standard output and input, `--count`, `--timeout`, and every
//! kind of bad input (exit 2, with the accepted forms).

mod support;

use std::time::Duration;

use support::*;

/// The host:port of a broker URL (`mqtt://127.0.0.1:1234` → `127.0.0.1:1234`).
fn authority(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

/// MQTT → NATS with `--count`: the part of each topic under `sensors/#` lands under `iot.>`,
/// converted by the codec; exactly `--count` messages are relayed although more are sent, and
/// the relay exits 0 with its summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_to_nats_relays_count_messages_and_exits_0() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let subscriber = NatsPeer::connect(&nats.url()).await;
    let mut inbox = subscriber.subscribe("iot.>").await;
    let from = format!("mqtt://{}/sensors/#", authority(&mosquitto.url()));
    let to = format!("nats://{}/iot.>", authority(&nats.url()));
    let mut relay = Ferry::relay(&[&from, &to, "--count", "20", "--qos", "1"], None);
    relay.wait_ready().await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    for n in 0..30 {
        publisher
            .publish(
                &format!("sensors/room.{}/temp", n % 3),
                format!("{n}"),
                1,
                false,
            )
            .await;
    }
    let status = relay.wait_exit(secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", relay.tail(10));
    let got = inbox.collect_for(Duration::from_millis(500)).await;
    assert_eq!(got.len(), 20, "exactly --count messages: {got:?}");
    // MQTT `room.0` is NATS `room//0` (nats-server's mapping of `.` in a topic level).
    assert_eq!(got[0].topic, "iot.room//0.temp", "{:?}", got[0]);
    let payloads: Vec<String> = got.iter().map(|m| m.text()).collect();
    let expected: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    assert_eq!(payloads, expected, "in order");
    let summary = relay.wait_for_line("relayed", secs(1)).await;
    assert!(summary.contains("20 relayed of 20"), "{summary}");
}

/// NATS → MQTT with a jq transform and a topic template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_to_mqtt_with_a_transform_and_a_subject_template() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let mut subscriber = MqttPeer::connect(&mosquitto.url()).await;
    subscriber.subscribe("out/#", 1).await;
    let from = format!("nats://{}/cmd.>", authority(&nats.url()));
    let to = format!("mqtt://{}", authority(&mosquitto.url()));
    let mut relay = Ferry::relay(
        &[
            &from,
            &to,
            "--transform",
            "{v: .}",
            "--subject",
            "out/{{ subject }}",
            "--count",
            "3",
            "--qos",
            "1",
        ],
        None,
    );
    relay.wait_ready().await;
    let publisher = NatsPeer::connect(&nats.url()).await;
    for n in 0..3 {
        publisher
            .publish(&format!("cmd.lights.{n}"), format!("{n}"))
            .await;
    }
    let status = relay.wait_exit(secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", relay.tail(10));
    let got = subscriber.inbox.collect(3, secs(10)).await;
    assert_eq!(got[0].topic, "out/cmd.lights.0");
    assert_eq!(got[2].json(), serde_json::json!({"v": 2}));
}

/// `ferry relay mqtt://host/cap/# - > capture.ndjson`, then
/// `ferry relay - nats://host/replay.> < capture.ndjson`: every payload (text, JSON, binary,
/// empty) and every user property arrives byte for byte, on the subject the codec gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_and_replay_round_trip_byte_for_byte() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let messages: Vec<(&str, Vec<u8>)> = vec![
        ("cap/text", b"hello".to_vec()),
        ("cap/json", br#"{"a": [1, 2.5, "x"]}"#.to_vec()),
        ("cap/binary", vec![0, 159, 146, 150, 255, b'\n', 13]),
        ("cap/empty", Vec::new()),
        (
            "cap/with space/$dollar/dot.ted",
            "ünïcødé ✓".as_bytes().to_vec(),
        ),
    ];
    let from = format!("mqtt://{}/cap/#", authority(&mosquitto.url()));
    let count = messages.len().to_string();
    let mut capture = Ferry::relay(&[&from, "-", "--count", &count, "--qos", "1"], None);
    capture.wait_ready().await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    for (topic, payload) in &messages {
        publisher
            .publish_with_user_properties(topic, payload.clone(), &[("origin", "test")])
            .await;
    }
    let status = capture.wait_exit(secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", capture.tail(10));
    let captured = capture.stdout();
    let lines: Vec<&[u8]> = captured
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), messages.len(), "one JSON line per message");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_slice(line).expect("a JSON line");
        assert!(
            value["subject"].is_string() && value["time"].is_string(),
            "{value}"
        );
    }

    let subscriber = NatsPeer::connect(&nats.url()).await;
    let mut inbox = subscriber.subscribe("replay.>").await;
    let to = format!("nats://{}/replay.>", authority(&nats.url()));
    let mut replay = Ferry::relay(&["-", &to], Some(captured.clone()));
    let status = replay.wait_exit(secs(20)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "at the end of the input: {}",
        replay.tail(10)
    );
    let got = inbox.collect(messages.len(), secs(10)).await;
    for ((topic, payload), m) in messages.iter().zip(&got) {
        assert_eq!(&m.payload[..], &payload[..], "payload of {topic}");
        assert_eq!(m.header("origin"), Some("test"), "user property of {topic}");
    }
    // Each topic under replay., converted as nats-server's MQTT gateway does (`.` → `//`, a
    // space → `/x20`), the same conversion `auto` makes.
    for ((topic, _), m) in messages.iter().zip(&got) {
        let subject = ferry::mapping::codec::topic_to_subject(topic);
        assert_eq!(m.topic, format!("replay.{subject}"));
    }
    assert_eq!(got[0].topic, "replay.cap.text");
}

/// Raw lines from standard input, each a message on the fixed subject, and exit 0 at the end
/// of the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_lines_from_stdin_to_a_fixed_subject() {
    let nats = NatsServer::start(NatsOptions::default());
    let subscriber = NatsPeer::connect(&nats.url()).await;
    let mut inbox = subscriber.subscribe("raw.in").await;
    let to = format!("nats://{}/raw.in", authority(&nats.url()));
    let mut relay = Ferry::relay(&["-", &to, "--raw"], Some(b"one\ntwo\r\nthree\n".to_vec()));
    let status = relay.wait_exit(secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", relay.tail(10));
    let got: Vec<String> = inbox
        .collect(3, secs(10))
        .await
        .iter()
        .map(|m| m.text())
        .collect();
    assert_eq!(got, ["one", "two", "three"]);
}

/// A line of standard input that is not a message is skipped and counted: the other lines are
/// relayed, the summary names it, and the relay exits 1 since not everything went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_input_line_is_skipped_counted_and_fails_the_relay() {
    let nats = NatsServer::start(NatsOptions::default());
    let subscriber = NatsPeer::connect(&nats.url()).await;
    let mut inbox = subscriber.subscribe("in.>").await;
    let to = format!("nats://{}/in.>", authority(&nats.url()));
    let input =
        b"{\"subject\":\"a\",\"payload\":\"1\"}\nnot json\n{\"subject\":\"b\",\"payload\":\"2\"}\n";
    let mut relay = Ferry::relay(&["-", &to], Some(input.to_vec()));
    assert_eq!(
        relay.wait_exit(secs(20)).await.code(),
        Some(1),
        "{}",
        relay.tail(10)
    );
    let got: Vec<String> = inbox
        .collect(2, secs(10))
        .await
        .iter()
        .map(|m| m.text())
        .collect();
    assert_eq!(got, ["1", "2"]);
    relay
        .wait_for_line("1 input line(s) skipped", secs(1))
        .await;
}

/// `--timeout` ends a relay: exit 0 when it only bounds a capture, exit 1 when `--count` was
/// not reached by then; either way within moments of the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_ends_the_relay() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let from = format!("mqtt://{}/quiet/#", authority(&mosquitto.url()));
    let started = std::time::Instant::now();
    let mut relay = Ferry::relay(&[&from, "-", "--timeout", "1s"], None);
    assert_eq!(
        relay.wait_exit(secs(15)).await.code(),
        Some(0),
        "{}",
        relay.tail(10)
    );
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    let mut relay = Ferry::relay(&[&from, "-", "--timeout", "1s", "--count", "5"], None);
    assert_eq!(
        relay.wait_exit(secs(15)).await.code(),
        Some(1),
        "{}",
        relay.tail(10)
    );
    relay.wait_for_line("0 relayed of 5", secs(1)).await;
}

/// A broker that is not there: exit 1, naming the connection, within the connect bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_broker_fails_with_exit_1() {
    let from = format!("mqtt://127.0.0.1:{}/x/#", free_port());
    let mut relay = Ferry::relay(&[&from, "-", "--timeout", "2s"], None);
    assert_eq!(
        relay.wait_exit(secs(20)).await.code(),
        Some(1),
        "{}",
        relay.tail(10)
    );
    relay.wait_for_line("cannot connect", secs(1)).await;
}

/// Each bad URL or option: exit 2 before connecting anywhere, saying what is wrong and showing
/// the accepted forms.
#[test]
fn bad_urls_and_options_exit_2_with_the_accepted_forms() {
    let cases: &[(&[&str], &str)] = &[
        (&["gopher://host/x", "-"], "gopher"),
        (&["-", "-"], "-"),
        (&["https://example.com/hook", "-"], "https"),
        (&["-", "sse+https://example.com/events"], "sse"),
        (&["mqtt://host:notaport/x", "-"], "port"),
        (&["mqtt://host/a/#/b", "-"], "#"),
        (&["nats://host/a..b", "-"], "a..b"),
        (&["mqtt://host/x", "-", "--transform", "{{{"], "--transform"),
        (&["mqtt://host/x", "-", "--qos", "3"], "qos"),
        (&["mqtt://host/x?qos=1&colour=red", "-"], "colour"),
        (
            &["nats://host/x", "-", "--delivery", "at-least-once"],
            "JetStream",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["relay"];
        all.extend_from_slice(args);
        let out = ferry_command(&all, "", secs(10));
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.all());
        assert!(
            out.stderr.contains(says),
            "{args:?} should mention {says:?}: {}",
            out.stderr
        );
    }
    // The accepted forms, once, for the first case.
    let out = ferry_command(&["relay", "gopher://host/x", "-"], "", secs(10));
    for form in ["mqtt://", "nats://", "sse+https://", "https://", "-"] {
        assert!(
            out.stderr.contains(form),
            "accepted forms list {form}: {}",
            out.stderr
        );
    }
}

/// A password in the URL never shows in what ferry prints.
#[test]
fn a_password_never_shows() {
    let out = ferry_command(
        &["relay", "mqtt://user:s3cr3t-pw@host:notaport/x", "-"],
        "",
        secs(10),
    );
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(!out.all().contains("s3cr3t-pw"), "{}", out.all());
}
