//! At-least-once on MQTT: ferry acknowledges a message to the broker only once its sinks have
//! it, so what ferry did not deliver (a sink down, ferry killed) stays with the broker and
//! comes again; a route that reads an MQTT connection and publishes back through it never
//! stalls it. Every test states what it counted: sent, received, duplicates, lost.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;

/// What a subscriber received of the sequence `0..sent` of one stream.
struct Tally {
    sent: usize,
    received: usize,
    /// Copies beyond the first, per sequence number.
    duplicates: usize,
    lost: Vec<usize>,
    /// A sequence number that arrived before a smaller one that was new (first copies only).
    reordered: usize,
}

impl Tally {
    fn of(msgs: &[Msg], stream: &str, sent: usize) -> Tally {
        let mut seen = BTreeMap::new();
        let mut reordered = 0;
        let mut highest_new = None;
        for m in msgs {
            let Some((s, seq)) = parse_seq(&m.payload) else {
                continue;
            };
            if s != stream {
                continue;
            }
            let copies = seen.entry(seq).or_insert(0usize);
            *copies += 1;
            if *copies == 1 {
                if highest_new.is_some_and(|h| seq < h) {
                    reordered += 1;
                }
                highest_new = highest_new.max(Some(seq));
            }
        }
        Tally {
            sent,
            received: seen.values().sum(),
            duplicates: seen.values().map(|c| c - 1).sum(),
            lost: (0..sent).filter(|s| !seen.contains_key(s)).collect(),
            reordered,
        }
    }

    fn report(&self, test: &str) {
        eprintln!(
            "[{test}] sent {}, received {}, duplicates {}, lost {}, out of order {}",
            self.sent,
            self.received,
            self.duplicates,
            self.lost.len(),
            self.reordered
        );
    }
}

/// Receives until every sequence number `0..sent` of `stream` arrived at least once, counting
/// those `got` already holds (or until `timeout` passed), then for `settle` more, to catch late
/// duplicates. Returns `got` with what arrived.
async fn collect_stream(
    inbox: &mut Inbox,
    stream: &str,
    sent: usize,
    mut got: Vec<Msg>,
    timeout: Duration,
    settle: Duration,
) -> Vec<Msg> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut missing: std::collections::BTreeSet<usize> = (0..sent).collect();
    for m in &got {
        if let Some((s, seq)) = parse_seq(&m.payload)
            && s == stream
        {
            missing.remove(&seq);
        }
    }
    while !missing.is_empty() {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, inbox.recv(timeout)).await else {
            break;
        };
        if let Some((s, seq)) = parse_seq(&m.payload)
            && s == stream
        {
            missing.remove(&seq);
        }
        got.push(m);
    }
    got.extend(inbox.collect_for(settle).await);
    got
}

fn messages(topic: &str, stream: &str, count: usize) -> Vec<(String, bytes::Bytes)> {
    (0..count)
        .map(|seq| (topic.to_string(), seq_payload(stream, seq, 64)))
        .collect()
}

/// The broker must keep everything for a ferry that is down or slow: no per-client limit.
fn unlimited_mosquitto() -> Mosquitto {
    Mosquitto::start(MosquittoOptions {
        max_queued_messages: Some(0),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------------
// A route that publishes back to the connection it reads

/// One route reads `in/#` and publishes every message back to `out/echo` on the same MQTT
/// connection, QoS 1 both ways, through a two-message queue that blocks when full. Each
/// publish waits for its PUBACK, which only the connection's event loop can read: it must keep
/// polling while the route's queue is full. 10,000 messages: all arrive, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_publishing_back_to_its_own_connection_never_stalls_it() {
    const SENT: usize = 10_000;
    let mosquitto = unlimited_mosquitto();
    let mut ferry = Ferry::start(&fill(
        r#"
connections:
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-echo }
routes:
  - name: echo
    from: { connection: mq, topic: "in/#", qos: 1 }
    to: { connection: mq, topic: out/echo, qos: 1 }
    queue: { max_messages: 2, when_full: block }
"#,
        &[("@MQTT@", mosquitto.url())],
    ));
    ferry.wait_ready().await;
    let mut subscriber = MqttPeer::connect(&mosquitto.url()).await;
    subscriber.subscribe("out/#", 1).await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;

    publisher
        .publish_all(messages("in/s", "echo", SENT), 1)
        .await;
    let got = collect_stream(
        &mut subscriber.inbox,
        "echo",
        SENT,
        Vec::new(),
        secs(120),
        millis(500),
    )
    .await;

    let tally = Tally::of(&got, "echo", SENT);
    tally.report("same connection");
    assert!(
        tally.lost.is_empty(),
        "lost {:?}",
        &tally.lost[..tally.lost.len().min(20)]
    );
    assert_eq!(tally.duplicates, 0, "duplicates in normal running");
    assert_eq!(tally.reordered, 0, "messages out of order");
    assert!(ferry.terminate().await.success());
}

// ---------------------------------------------------------------------------------------------
// Acks wait for the sink

/// MQTT to NATS with a persistent MQTT session (fixed client id, `clean_start: false`).
fn mqtt_to_nats(mqtt: &str, nats: &str, state_dir: &std::path::Path) -> String {
    fill(
        r#"
state_dir: "@STATE@"
shutdown_timeout: 2s
connections:
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-delivery, clean_start: false, session_expiry: 1h }
  nc:
    nats: { url: "@NATS@" }
routes:
  - name: up
    from: { connection: mq, topic: "up/#", qos: 1 }
    to: { connection: nc, subject: "up.{{ topic[1] }}" }
    queue: { max_messages: 100, when_full: block }
"#,
        &[
            ("@MQTT@", mqtt.to_string()),
            ("@NATS@", nats.to_string()),
            ("@STATE@", state_dir.display().to_string()),
        ],
    )
}

/// The number in ferry's shutdown line `N received message(s) not delivered stay
/// unacknowledged`, 0 without one.
fn left_unacknowledged(ferry: &Ferry) -> usize {
    ferry
        .lines()
        .iter()
        .filter_map(|l| {
            let (before, _) = l.split_once(" received message(s) not delivered")?;
            before.rsplit(' ').next()?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// The sink's broker is down while 500 QoS 1 messages reach ferry, then ferry stops (its
/// shutdown deadline passes with the sink still down). Had ferry acknowledged them on arrival,
/// they would be gone; the source broker kept them instead, and the next ferry delivers every
/// one once the sink's broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_dead_sink_never_took_stay_with_the_broker() {
    const SENT: usize = 500;
    let source = unlimited_mosquitto();
    let mut sink = unlimited_mosquitto();
    let state = tempfile::tempdir().unwrap();
    let config = fill(
        r#"
state_dir: "@STATE@"
shutdown_timeout: 2s
connections:
  plant:
    mqtt: { url: "@SOURCE@", client_id: ferry-held, clean_start: false, session_expiry: 1h }
  out:
    mqtt: { url: "@SINK@", client_id: ferry-held-out }
routes:
  - name: up
    from: { connection: plant, topic: "up/#", qos: 1 }
    to: { connection: out, topic: "relayed/{{ topic[1] }}", qos: 1 }
    queue: { max_messages: 100, when_full: block }
"#,
        &[
            ("@SOURCE@", source.url()),
            ("@SINK@", sink.url()),
            ("@STATE@", state.path().display().to_string()),
        ],
    );
    sink.kill9();

    let mut ferry = Ferry::start(&config);
    ferry.wait_for_line("subscriptions)", secs(30)).await;
    let publisher = MqttPeer::connect(&source.url()).await;
    publisher
        .publish_all(messages("up/s", "held", SENT), 1)
        .await;
    ferry.wait_for_line("sink out unavailable", secs(30)).await;
    assert!(ferry.terminate().await.success());
    let held = left_unacknowledged(&ferry);
    eprintln!("[dead sink] ferry stopped holding {held} unacknowledged message(s)");
    assert!(held > 0, "ferry held no unacknowledged message at shutdown");

    sink.restart();
    let mut subscriber = MqttPeer::connect(&sink.url()).await;
    subscriber.subscribe("relayed/#", 1).await;
    let mut ferry = Ferry::start(&config);
    let got = collect_stream(
        &mut subscriber.inbox,
        "held",
        SENT,
        Vec::new(),
        secs(60),
        millis(500),
    )
    .await;
    let tally = Tally::of(&got, "held", SENT);
    tally.report("dead sink");
    assert!(
        tally.lost.is_empty(),
        "the broker did not keep {} message(s) ferry never delivered: {:?}",
        tally.lost.len(),
        &tally.lost[..tally.lost.len().min(20)]
    );
    assert!(ferry.terminate().await.success());
}

/// 20,000 QoS 1 messages; ferry is killed with SIGKILL while relaying them and started again
/// with the same client id: the broker kept the session, and with it every message ferry had
/// not acknowledged. Nothing is lost; duplicates (delivered, not yet acknowledged) are
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_killed_mid_stream_loses_nothing() {
    const SENT: usize = 20_000;
    let mosquitto = unlimited_mosquitto();
    let nats = NatsServer::start(NatsOptions::default());
    let state = tempfile::tempdir().unwrap();
    let config = mqtt_to_nats(&mosquitto.url(), &nats.url(), state.path());
    let subscriber = NatsPeer::connect(&nats.url()).await;
    let mut inbox = subscriber.subscribe("up.>").await;

    let mut ferry = Ferry::start(&config);
    ferry.wait_ready().await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    let publishing = tokio::spawn(async move {
        publisher
            .publish_all(messages("up/s", "kill", SENT), 1)
            .await;
        publisher
    });
    // Kill once a good part went through, while the rest is still coming.
    let mut before = inbox.collect(SENT / 4, secs(60)).await;
    ferry.signal("KILL");
    ferry.wait_exit(secs(10)).await;
    before.extend(inbox.drain());

    let mut ferry = Ferry::start(&config);
    let _publisher = publishing.await.unwrap();
    let got = collect_stream(&mut inbox, "kill", SENT, before, secs(120), secs(1)).await;
    let tally = Tally::of(&got, "kill", SENT);
    tally.report("kill -9");
    assert!(
        tally.lost.is_empty(),
        "lost {} message(s) across kill -9: {:?}",
        tally.lost.len(),
        &tally.lost[..tally.lost.len().min(20)]
    );
    assert!(ferry.terminate().await.success());
}
