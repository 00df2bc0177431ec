//! The store-and-forward spool against real brokers: MQTT QoS 1 → core NATS while nats-server
//! is down. What ferry publishes is captured by a JetStream stream on the NATS server (file
//! storage, kept across its restart), so every message that reached NATS is counted, whenever
//! it arrived, without racing a subscriber against ferry's reconnect.

mod support;

use std::path::Path;

use bytes::Bytes;
use support::*;

/// The stream that records everything ferry publishes under `spooled.>`.
const CAPTURE: &str = "CAPTURE";

fn config(mqtt: &str, nats: &str, spool_dir: &Path, extra: &str) -> String {
    fill(
        r#"
shutdown_timeout: 10s
connections:
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-spool-test }
  nc:
    nats: { url: "@NATS@" }
    reconnect: { initial_delay: 50ms, max_delay: 500ms }
routes:
  - name: up
    from: { connection: mq, topic: "spool/#", qos: 1 }
    to: { connection: nc, subject: "spooled.{{ topic[1] }}" }
    spool: { dir: "@SPOOL@"@EXTRA@ }
"#,
        &[
            ("@MQTT@", mqtt.to_string()),
            ("@NATS@", nats.to_string()),
            ("@SPOOL@", spool_dir.display().to_string()),
            ("@EXTRA@", extra.to_string()),
        ],
    )
}

/// Creates the capture stream (file storage: it survives a nats-server restart).
async fn create_capture(nats: &NatsServer) {
    let peer = NatsPeer::connect(&nats.url()).await;
    peer.create_stream(CAPTURE, &["spooled.>"]).await;
}

/// Waits (bounded) until the capture stream holds at least `n` messages; returns its count.
async fn wait_captured(nats: &NatsServer, n: u64, timeout: std::time::Duration) -> u64 {
    let peer = NatsPeer::connect(&nats.url()).await;
    peer.wait_stream_len(CAPTURE, n, timeout).await
}

/// Every payload in the capture stream, in stream order.
async fn captured(nats: &NatsServer) -> Vec<Bytes> {
    let peer = NatsPeer::connect(&nats.url()).await;
    let stored = peer.read_stream(CAPTURE).await;
    stored.into_iter().map(|m| m.payload).collect()
}

/// Prints what arrived against what was sent (stream `seq`, 0..sent) and checks that every
/// message arrived once, in order.
fn tally(test: &str, payloads: &[Bytes], sent: usize) {
    let seqs: Vec<usize> = payloads
        .iter()
        .map(|p| {
            let (stream, seq) = parse_seq(p).expect("a sequence payload");
            assert_eq!(stream, "seq");
            seq
        })
        .collect();
    Tally::of(sent, seqs.iter().copied()).report(test);
    assert_in_order("seq", &seqs, sent);
}

/// Publishes `seq:from..to` on `spool/<name>` at QoS 1; returns once mosquitto acknowledged
/// every one.
async fn publish_range(publisher: &MqttPeer, from: usize, to: usize, pad_to: usize) {
    publisher
        .publish_all(
            (from..to).map(|i| ("spool/seq".to_string(), seq_payload("seq", i, pad_to))),
            1,
        )
        .await;
}

/// Total size of a spool's segment files (every sink's directory under `dir`).
fn spool_disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for sink in std::fs::read_dir(dir).unwrap() {
        for file in std::fs::read_dir(sink.unwrap().path()).unwrap() {
            let file = file.unwrap();
            if file.path().extension().is_some_and(|e| e == "seg") {
                total += file.metadata().unwrap().len();
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_messages_survive_a_ferry_restart_and_arrive_once_in_order() {
    tokio::time::timeout(secs(180), async {
        const BEFORE: usize = 20;
        const DURING: usize = 500;
        const AFTER: usize = 20;
        let mosquitto = Mosquitto::start(MosquittoOptions::default());
        let mut nats = NatsServer::start(NatsOptions {
            jetstream: true,
            ..Default::default()
        });
        create_capture(&nats).await;
        let spool = tempfile::tempdir().unwrap();
        let yaml = config(&mosquitto.url(), &nats.url(), spool.path(), "");
        let publisher = MqttPeer::connect(&mosquitto.url()).await;

        let mut ferry = Ferry::start(&yaml);
        ferry.wait_ready().await;
        publish_range(&publisher, 0, BEFORE, 0).await;
        wait_captured(&nats, BEFORE as u64, secs(30)).await;

        // NATS goes away; once ferry knows, everything it takes goes to the spool.
        let mark = ferry.mark();
        nats.kill9();
        ferry
            .wait_for_line_since(mark, "connection down", secs(30))
            .await;
        publish_range(&publisher, BEFORE, BEFORE + DURING, 0).await;
        ferry
            .wait_for_line(&format!("({DURING} spooled so far)"), secs(60))
            .await;

        // ferry restarts while NATS is still down: the spool is all that holds them.
        assert!(ferry.terminate().await.success());
        let stopped = ferry.wait_for_line("route stopped", secs(1)).await;
        assert!(
            stopped.contains(&format!("spool: {DURING} spooled, 0 forwarded")),
            "{stopped}"
        );
        let mut ferry = Ferry::start(&yaml);
        ferry
            .wait_for_line("before this start; forwarding them first", secs(30))
            .await;

        nats.restart();
        ferry
            .wait_for_line(
                &format!("sink nc is back: {DURING} spooled message(s) forwarded"),
                secs(60),
            )
            .await;
        ferry.wait_ready().await;
        // Live again, behind what the spool held.
        publish_range(&publisher, BEFORE + DURING, BEFORE + DURING + AFTER, 0).await;
        let total = BEFORE + DURING + AFTER;
        wait_captured(&nats, total as u64, secs(60)).await;

        assert!(ferry.terminate().await.success());
        let stopped = ferry.wait_for_line("route stopped", secs(1)).await;
        assert!(
            stopped.contains(&format!(
                "spool: 0 spooled, {DURING} forwarded, 0 byte(s) kept"
            )),
            "{stopped}"
        );
        tally("spool restart", &captured(&nats).await, total);
        assert_eq!(
            spool_disk_bytes(spool.path()),
            0,
            "a drained spool keeps no segment"
        );
    })
    .await
    .expect("the test did not finish within 180s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_blocks_the_source_and_loses_nothing() {
    tokio::time::timeout(secs(180), async {
        const BEFORE: usize = 10;
        const DURING: usize = 600;
        // 600 messages of 4 KB: more than twice the 1 MiB spool.
        const PAYLOAD: usize = 4000;
        const MAX_BYTES: u64 = 1024 * 1024;
        let mosquitto = Mosquitto::start(MosquittoOptions::default());
        let mut nats = NatsServer::start(NatsOptions {
            jetstream: true,
            ..Default::default()
        });
        create_capture(&nats).await;
        let spool = tempfile::tempdir().unwrap();
        let yaml = config(
            &mosquitto.url(),
            &nats.url(),
            spool.path(),
            ", max_bytes: 1MiB",
        ) + "    queue: { max_messages: 10 }\n";
        let publisher = MqttPeer::connect(&mosquitto.url()).await;

        let mut ferry = Ferry::start(&yaml);
        ferry.wait_ready().await;
        publish_range(&publisher, 0, BEFORE, PAYLOAD).await;
        wait_captured(&nats, BEFORE as u64, secs(30)).await;

        let mark = ferry.mark();
        nats.kill9();
        ferry
            .wait_for_line_since(mark, "connection down", secs(30))
            .await;
        publish_range(&publisher, BEFORE, BEFORE + DURING, PAYLOAD).await;
        ferry.wait_for_line("the spool is full", secs(60)).await;
        let on_disk = spool_disk_bytes(spool.path());
        eprintln!("[spool full] {on_disk} bytes of segments on disk, max_bytes {MAX_BYTES}");
        // The records, plus an 8-byte header per (256 KiB) segment.
        assert!(on_disk <= MAX_BYTES + 8 * 8, "{on_disk} bytes on disk");

        nats.restart();
        let total = BEFORE + DURING;
        wait_captured(&nats, total as u64, secs(90)).await;
        assert!(ferry.terminate().await.success());
        let stopped = ferry.wait_for_line("route stopped", secs(1)).await;
        eprintln!("[spool full] {stopped}");
        assert!(stopped.contains(&format!("{total} sent")), "{stopped}");
        assert!(stopped.contains("0 byte(s) kept"), "{stopped}");
        tally("spool full", &captured(&nats).await, total);
    })
    .await
    .expect("the test did not finish within 180s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_sink_gets_every_message_live_and_once_while_another_spools() {
    tokio::time::timeout(secs(180), async {
        const BEFORE: usize = 10;
        const DURING: usize = 200;
        let mosquitto = Mosquitto::start(MosquittoOptions::default());
        let mut nats = NatsServer::start(NatsOptions {
            jetstream: true,
            ..Default::default()
        });
        create_capture(&nats).await;
        let spool = tempfile::tempdir().unwrap();
        let yaml = fill(
            r#"
shutdown_timeout: 10s
connections:
  mq:
    mqtt: { url: "@MQTT@", client_id: ferry-spool-fanout }
  mqout:
    mqtt: { url: "@MQTT@", client_id: ferry-spool-fanout-out, clean_start: true }
  nc:
    nats: { url: "@NATS@" }
    reconnect: { initial_delay: 50ms, max_delay: 500ms }
routes:
  - name: up
    from: { connection: mq, topic: "spool/#", qos: 1 }
    to:
      - { connection: nc, subject: "spooled.{{ topic[1] }}" }
      - { connection: mqout, topic: "out/{{ topic[1] }}", qos: 1 }
    spool: { dir: "@SPOOL@" }
"#,
            &[
                ("@MQTT@", mosquitto.url()),
                ("@NATS@", nats.url()),
                ("@SPOOL@", spool.path().display().to_string()),
            ],
        );
        let publisher = MqttPeer::connect(&mosquitto.url()).await;
        let mut subscriber = MqttPeer::connect(&mosquitto.url()).await;
        subscriber.subscribe("out/#", 1).await;

        let mut ferry = Ferry::start(&yaml);
        ferry.wait_ready().await;
        publish_range(&publisher, 0, BEFORE, 0).await;
        let mut on_mqtt = subscriber.inbox.collect(BEFORE, secs(30)).await;
        wait_captured(&nats, BEFORE as u64, secs(30)).await;

        let mark = ferry.mark();
        nats.kill9();
        ferry
            .wait_for_line_since(mark, "connection down", secs(30))
            .await;
        publish_range(&publisher, BEFORE, BEFORE + DURING, 0).await;
        // The MQTT sink does not wait for NATS: everything reaches it during the outage.
        on_mqtt.extend(subscriber.inbox.collect(DURING, secs(30)).await);
        ferry
            .wait_for_line(&format!("({DURING} spooled so far)"), secs(30))
            .await;

        nats.restart();
        let total = BEFORE + DURING;
        wait_captured(&nats, total as u64, secs(60)).await;
        assert!(ferry.terminate().await.success());
        let stopped = ferry.wait_for_line("route stopped", secs(1)).await;
        assert!(
            stopped.contains(&format!("{} sent", 2 * total)),
            "{stopped}"
        );
        assert!(
            stopped.contains(&format!(
                "spool: {DURING} spooled, {DURING} forwarded, 0 byte(s) kept"
            )),
            "{stopped}"
        );
        on_mqtt.extend(subscriber.inbox.collect_for(millis(500)).await);
        let on_mqtt: Vec<Bytes> = on_mqtt.into_iter().map(|m| m.payload).collect();
        tally("fan-out, MQTT sink", &on_mqtt, total);
        tally("fan-out, spooled NATS sink", &captured(&nats).await, total);
    })
    .await
    .expect("the test did not finish within 180s");
}

#[test]
fn a_spool_directory_ferry_cannot_create_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "").unwrap();
    let spool = file.join("spool");
    let out = ferry_run_until_exit(
        &config("mqtt://127.0.0.1:1", "nats://127.0.0.1:1", &spool, ""),
        secs(30),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    let text = out.all();
    assert!(
        text.contains(&format!(
            "route up: cannot use the spool directory {}/0-nc",
            spool.display()
        )),
        "{text}"
    );
    assert!(text.contains("state_dir"), "{text}");
}
