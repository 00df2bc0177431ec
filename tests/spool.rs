//! The store-and-forward spool against real brokers: MQTT QoS 1 → core NATS while nats-server
//! is down ([`NatsOutage`]). What ferry publishes is captured by a JetStream stream on the NATS
//! server (file storage, kept across its restart), so every message that reached NATS is
//! counted, whenever it arrived, without racing a subscriber against ferry's reconnect.

mod support;

use std::path::Path;

use bytes::Bytes;
use support::*;

/// The client id of ferry's MQTT connection.
const CLIENT_ID: &str = "ferry-spool-test";

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
        let mut outage = NatsOutage::start().await;
        let spool = tempfile::tempdir().unwrap();
        let yaml = outage.route(spool.path(), CLIENT_ID, "");
        // ferry stops while NATS is still down: the spool is all that holds them.
        outage
            .spool_while_nats_is_down(&yaml, BEFORE, DURING, 0)
            .await;
        let mut ferry = outage
            .ferry_forwarding_the_spool(&yaml, DURING, secs(60))
            .await;
        ferry.wait_ready().await;
        // Live again, behind what the spool held.
        outage
            .publish(BEFORE + DURING, BEFORE + DURING + AFTER, 0)
            .await;
        let total = BEFORE + DURING + AFTER;
        outage.wait_captured(total as u64, secs(60)).await;

        let stopped = stop_for_summary(&mut ferry).await;
        assert!(
            stopped.contains(&format!(
                "spool: 0 spooled, {DURING} forwarded, 0 byte(s) kept"
            )),
            "{stopped}"
        );
        tally("spool restart", &outage.captured().await, total);
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
        let mut outage = NatsOutage::start().await;
        let spool = tempfile::tempdir().unwrap();
        let yaml = outage.route(spool.path(), CLIENT_ID, ", max_bytes: 1MiB")
            + "    queue: { max_messages: 10 }\n";
        let mut ferry = outage
            .ferry_until_nats_is_down(&yaml, BEFORE, PAYLOAD)
            .await;
        outage.publish(BEFORE, BEFORE + DURING, PAYLOAD).await;
        ferry.wait_for_line("the spool is full", secs(60)).await;
        let on_disk = spool_disk_bytes(spool.path());
        eprintln!("[spool full] {on_disk} bytes of segments on disk, max_bytes {MAX_BYTES}");
        // The records, plus an 8-byte header per (256 KiB) segment.
        assert!(on_disk <= MAX_BYTES + 8 * 8, "{on_disk} bytes on disk");

        outage.nats.restart();
        let total = BEFORE + DURING;
        outage.wait_captured(total as u64, secs(90)).await;
        let stopped = stop_for_summary(&mut ferry).await;
        eprintln!("[spool full] {stopped}");
        assert!(stopped.contains(&format!("{total} sent")), "{stopped}");
        assert!(stopped.contains("0 byte(s) kept"), "{stopped}");
        tally("spool full", &outage.captured().await, total);
    })
    .await
    .expect("the test did not finish within 180s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_sink_gets_every_message_live_and_once_while_another_spools() {
    tokio::time::timeout(secs(180), async {
        const BEFORE: usize = 10;
        const DURING: usize = 200;
        let mut outage = NatsOutage::start().await;
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
                ("@MQTT@", outage.mosquitto.url()),
                ("@NATS@", outage.nats.url()),
                ("@SPOOL@", spool.path().display().to_string()),
            ],
        );
        let mut subscriber = MqttPeer::subscribed(&outage.mosquitto.url(), "out/#", 1).await;

        let mut ferry = outage.ferry_until_nats_is_down(&yaml, BEFORE, 0).await;
        let mut on_mqtt = subscriber.inbox.collect(BEFORE, secs(30)).await;
        outage.publish(BEFORE, BEFORE + DURING, 0).await;
        // The MQTT sink does not wait for NATS: everything reaches it during the outage.
        on_mqtt.extend(subscriber.inbox.collect(DURING, secs(30)).await);
        ferry
            .wait_for_line(&format!("({DURING} spooled so far)"), secs(30))
            .await;

        outage.nats.restart();
        let total = BEFORE + DURING;
        outage.wait_captured(total as u64, secs(60)).await;
        let stopped = stop_for_summary(&mut ferry).await;
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
        tally(
            "fan-out, spooled NATS sink",
            &outage.captured().await,
            total,
        );
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
        &spooled_route(
            "mqtt://127.0.0.1:1",
            "nats://127.0.0.1:1",
            &spool,
            CLIENT_ID,
            "",
        ),
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
