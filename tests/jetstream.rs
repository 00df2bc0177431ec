//! JetStream sources and sinks against a real nats-server with JetStream, and the core NATS
//! sink's confirmation.
//!
//! Streams are written by the test (every publish acknowledged by the server) and read back in
//! full (an ordered consumer), so each test counts what a user counts: every message there,
//! none twice, in order; and on the source side, what the server itself says of ferry's
//! consumer: every message acked (ack floor), none pending, none redelivered.

mod support;

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer;
use support::*;

// ---------------------------------------------------------------------------------------------
// helpers: JetStream as the test sees it

/// Publishes `count` numbered messages (`seq_payload(label, i)`) on `subject(i)`, each one
/// stored (PubAck) before this returns.
async fn publish_numbered(
    peer: &NatsPeer,
    label: &str,
    count: usize,
    subject: impl Fn(usize) -> String,
) {
    peer.jetstream_publish_all((0..count).map(|i| (subject(i), seq_payload(label, i, 0))))
        .await;
}

/// What the server says of a consumer now.
async fn consumer_info(peer: &NatsPeer, stream: &str, name: &str) -> consumer::Info {
    let stream = peer.jetstream().get_stream_no_info(stream).await.unwrap();
    tokio::time::timeout(secs(5), stream.consumer_info(name))
        .await
        .expect("consumer info within 5s")
        .unwrap_or_else(|e| panic!("consumer {name}: {e}"))
}

/// Waits until the consumer has acked everything up to stream sequence `count`, with nothing
/// pending, and returns its info.
async fn wait_all_acked(
    peer: &NatsPeer,
    stream: &str,
    name: &str,
    count: u64,
    timeout: Duration,
) -> consumer::Info {
    let deadline = Instant::now() + timeout;
    loop {
        let info = consumer_info(peer, stream, name).await;
        if info.ack_floor.stream_sequence >= count && info.num_ack_pending == 0 {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "consumer {stream}/{name}: not everything acked within {timeout:?}: ack floor {}, \
             {} pending, {} delivered",
            info.ack_floor.stream_sequence,
            info.num_ack_pending,
            info.delivered.stream_sequence
        );
        tokio::time::sleep(millis(50)).await;
    }
}

/// Deliveries beyond the first of each message, over the consumer's life (the server's
/// `num_redelivered` counts only those still unacked).
fn redeliveries(info: &consumer::Info) -> u64 {
    info.delivered.consumer_sequence - info.delivered.stream_sequence
}

fn jetstream() -> NatsOptions {
    NatsOptions {
        jetstream: true,
        ..NatsOptions::default()
    }
}

/// A JetStream server `core` (a connection of that name) and `routes` between it and itself;
/// started, but not ferry: the tests make their streams first.
fn on_jetstream(routes: &str) -> Brokers {
    Scenario::new()
        .nats_with("core", jetstream())
        .routes(routes)
        .start_brokers()
}

/// A route from JetStream stream IN (subjects `in.>`, consumer CONSUMER) to JetStream stream
/// OUT (subject `out.<last token>`) on the same server, and a test client of that server;
/// started, but not ferry.
async fn in_to_out(consumer: &str, extra: &str) -> (Brokers, NatsPeer) {
    let brokers = Scenario::new()
        .settings("shutdown_timeout: 10s\n")
        .nats_with("core", jetstream())
        .routes(&fill(
            r#"
  - name: relay
    from:
      connection: core
      subject: "in.>"
      jetstream: { stream: IN, consumer: @CONSUMER@ @EXTRA@ }
    to: { connection: core, subject: "out.{{ subject[-1] }}", jetstream: true }
"#,
            &[
                ("@CONSUMER@", consumer.to_string()),
                ("@EXTRA@", extra.to_string()),
            ],
        ))
        .start_brokers();
    let js = brokers.nats_peer("core").await;
    (brokers, js)
}

/// Streams IN (subjects `in.>`) and OUT (`out.>`).
async fn create_in_and_out(js: &NatsPeer) {
    js.create_stream("IN", &["in.>"]).await;
    js.create_stream("OUT", &["out.>"]).await;
}

/// Stores `count` numbered messages of `label` in stream IN, on `in.data`.
async fn store_in(js: &NatsPeer, label: &str, count: usize) {
    publish_numbered(js, label, count, |_| "in.data".into()).await;
}

/// The messages of `label` numbered `0..sent` that `stored` lacks, and those it holds twice.
fn lost_and_duplicates(sent: usize, label: &str, stored: &[Msg]) -> (usize, usize) {
    let Tally {
        lost, duplicates, ..
    } = Tally::of_msgs(sent, label, stored);
    (lost, duplicates)
}

// ---------------------------------------------------------------------------------------------
// the JetStream source

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_source_delivers_every_message_to_mqtt_and_acks_each() {
    const N: usize = 500;
    let brokers = Scenario::new()
        .nats_with("core", jetstream())
        .mosquitto("plant")
        .routes(
            r#"
  - name: iot
    from: { connection: core, subject: "iot.>", jetstream: { stream: IOT, consumer: ferry-iot } }
    headers: { set: { js-id: "{{ id }}" } }
    to: { connection: plant, topic: auto, qos: 1 }
"#,
        )
        .start_brokers();
    let js = brokers.nats_peer("core").await;
    js.create_stream("IOT", &["iot.>"]).await;
    publish_numbered(&js, "iot", N, |i| format!("iot.room{}.temp", i % 5)).await;
    let mut subscriber = brokers.mqtt_subscriber("plant", "iot/#", 1).await;

    let mut ferry = Ferry::start_ready(&brokers.config).await;
    ferry
        .wait_for_line("JetStream consumer IOT/ferry-iot: created", secs(5))
        .await;

    let inbox = &mut subscriber.inbox;
    let got = inbox.collect(N, secs(30)).await;
    assert_sequences(&got, &["iot"], N);
    assert_eq!(got[0].topic, "iot/room0/temp");
    assert_eq!(
        got[0].header("js-id"),
        Some("IOT:1"),
        "the message id is <stream>:<stream sequence>"
    );
    assert_eq!(
        got[N - 1].header("js-id"),
        Some(format!("IOT:{N}").as_str())
    );

    let info = wait_all_acked(&js, "IOT", "ferry-iot", N as u64, secs(10)).await;
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    assert_eq!(info.delivered.stream_sequence, N as u64);
    let config = &info.config;
    assert_eq!(config.durable_name.as_deref(), Some("ferry-iot"));
    assert_eq!(config.filter_subject, "iot.>");
    assert_eq!(config.ack_policy, consumer::AckPolicy::Explicit);
    assert_eq!(config.max_ack_pending, 1000);
    assert_eq!(config.ack_wait, secs(30));
    assert!(config.deliver_subject.is_none(), "a pull consumer");
    inbox.expect_nothing(millis(300)).await;
    println!(
        "jetstream → mqtt: sent={N} received={} duplicates=0 lost=0",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_consumer_is_bound_as_it_is() {
    const N: usize = 200;
    let (brokers, js) = in_to_out("ops", "").await;
    create_in_and_out(&js).await;
    // Made by an operator: a smaller window and a longer ack_wait than ferry's defaults.
    let stream = js.jetstream().get_stream("IN").await.unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("ops".into()),
            filter_subject: "in.>".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 20,
            ack_wait: secs(45),
            ..Default::default()
        })
        .await
        .unwrap();
    store_in(&js, "in", N).await;

    let mut ferry = Ferry::start_ready(&brokers.config).await;
    let line = ferry
        .wait_for_line("JetStream consumer IN/ops: bound", secs(5))
        .await;
    assert!(line.contains("window 20"), "{line}");
    assert!(
        line.contains("max_ack_pending 20 (the route says 1000)"),
        "{line}"
    );

    js.wait_stream_len("OUT", N as u64, secs(30)).await;
    let out = js.read_stream("OUT").await;
    assert_sequences(&out, &["in"], N);
    let info = wait_all_acked(&js, "IN", "ops", N as u64, secs(10)).await;
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(
        info.config.max_ack_pending, 20,
        "ferry leaves the consumer as it was"
    );
    assert_eq!(info.config.ack_wait, secs(45));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_does_not_fit_is_refused_until_fixed() {
    let (brokers, js) = in_to_out("ferry-in", "").await;
    js.create_stream("IN", &["in.>", "other.>"]).await;
    js.create_stream("OUT", &["out.>"]).await;
    let stream = js.jetstream().get_stream("IN").await.unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("ferry-in".into()),
            filter_subject: "other.>".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    store_in(&js, "in", 10).await;

    let mut ferry = Ferry::start(&brokers.config);
    let line = ferry
        .wait_for_line("cannot serve this route", secs(15))
        .await;
    for part in [
        "ERROR",
        "route relay: JetStream consumer IN/ferry-in",
        "it filters `other.>`, the route reads `in.>`",
        "nats consumer rm IN ferry-in",
        "set the route's `subject: other.>`",
    ] {
        assert!(line.contains(part), "`{part}` not in: {line}");
    }
    assert!(
        !ferry.lines().iter().any(|l| l.contains("ferry ready")),
        "a route that cannot read is not ready"
    );
    let info = consumer_info(&js, "IN", "ferry-in").await;
    assert_eq!(
        info.config.filter_subject, "other.>",
        "ferry did not change it"
    );
    assert_eq!(info.delivered.stream_sequence, 0, "nor read through it");

    // The operator removes it: ferry, still retrying, creates its own and relays.
    stream.delete_consumer("ferry-in").await.unwrap();
    ferry
        .wait_for_line("JetStream consumer IN/ferry-in: created", secs(30))
        .await;
    ferry.wait_ready().await;
    js.wait_stream_len("OUT", 10, secs(30)).await;
    assert_sequences(&js.read_stream("OUT").await, &["in"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_acks_keep_a_slow_sink_from_causing_redeliveries() {
    const N: usize = 100;
    // The sink is a second server, down for more than three ack_waits while ferry holds
    // messages it cannot deliver.
    let mut brokers = Scenario::new()
        .nats_with("src", jetstream())
        .nats_with("dst", jetstream())
        .keys("dst", "probe: false")
        .routes(
            r#"
  - name: relay
    from:
      connection: src
      subject: "in.>"
      jetstream: { stream: IN, consumer: slow, ack_wait: 2s, max_ack_pending: 50 }
    to: { connection: dst, subject: "out.data", jetstream: true }
"#,
        )
        .start_brokers();
    let source_js = brokers.nats_peer("src").await;
    let sink_js = brokers.nats_peer("dst").await;
    source_js.create_stream("IN", &["in.>"]).await;
    sink_js.create_stream("OUT", &["out.>"]).await;
    let mut ferry = Ferry::start_ready(&brokers.config).await;

    let mark = ferry.mark();
    brokers.broker_mut("dst").kill9();
    ferry
        .wait_for_line_since(mark, "connection down", secs(15))
        .await;
    store_in(&source_js, "in", N).await;
    // ferry holds a window of messages it cannot deliver.
    let deadline = Instant::now() + secs(10);
    while consumer_info(&source_js, "IN", "slow")
        .await
        .num_ack_pending
        < 50
    {
        assert!(
            Instant::now() < deadline,
            "ferry did not take a full window"
        );
        tokio::time::sleep(millis(50)).await;
    }
    // Three and a half ack_waits: without progress acks the server would hand all 50 out again.
    tokio::time::sleep(millis(7000)).await;
    let held = consumer_info(&source_js, "IN", "slow").await;
    assert_eq!(
        held.num_redelivered, 0,
        "messages ferry held were redelivered: {held:?}"
    );
    assert_eq!(held.num_ack_pending, 50, "the window holds: {held:?}");

    brokers.broker_mut("dst").restart();
    let sink_js = brokers.nats_peer("dst").await;
    sink_js.wait_stream_len("OUT", N as u64, secs(60)).await;
    let out = sink_js.read_stream("OUT").await;
    assert_sequences(&out, &["in"], N);
    let info = wait_all_acked(&source_js, "IN", "slow", N as u64, secs(10)).await;
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    assert_eq!(
        info.delivered.consumer_sequence, N as u64,
        "each message was delivered to ferry exactly once"
    );
    println!(
        "slow sink: sent={N} stored={} redeliveries={} lost=0",
        out.len(),
        redeliveries(&info)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_killed_mid_stream_resumes_from_the_durable_consumer() {
    const N: usize = 3000;
    // What ferry held unacked when it died comes back after ack_wait.
    let (brokers, js) = in_to_out("relay", ", ack_wait: 5s").await;
    create_in_and_out(&js).await;
    store_in(&js, "in", N).await;

    let mut ferry = Ferry::start_ready(&brokers.config).await;
    js.wait_stream_len("OUT", 500, secs(30)).await;
    ferry.kill9().await;
    let at_kill = js.stream_len("OUT").await.expect("stream length");
    let unacked = consumer_info(&js, "IN", "relay").await;

    let mut ferry = Ferry::start_ready(&brokers.config).await;
    ferry
        .wait_for_line("JetStream consumer IN/relay: bound", secs(5))
        .await;
    let info = wait_all_acked(&js, "IN", "relay", N as u64, secs(60)).await;
    let out = js.read_stream("OUT").await;
    let (lost, duplicates) = lost_and_duplicates(N, "in", &out);
    println!(
        "kill -9 at {at_kill} stored ({} delivered, {} unacked): sent={N} stored={} \
         redeliveries={} duplicates={duplicates} lost={lost}",
        unacked.delivered.stream_sequence,
        unacked.num_ack_pending,
        out.len(),
        redeliveries(&info),
    );
    assert_eq!(lost, 0);
    // Whatever was stored but not acked when ferry died came again, and the stream dropped
    // it by its Nats-Msg-Id. (Not in order: the server hands unacked messages out again
    // after ack_wait, behind newer ones.)
    assert_eq!(duplicates, 0);
    assert_eq!(out.len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_mid_stream_and_restarted_loses_nothing() {
    const N: usize = 3000;
    // Deliveries lost with the connection come back after ack_wait.
    let (mut brokers, js) = in_to_out("relay", ", ack_wait: 5s").await;
    create_in_and_out(&js).await;
    store_in(&js, "in", N).await;

    let mut ferry = Ferry::start_ready(&brokers.config).await;
    js.wait_stream_len("OUT", 500, secs(30)).await;
    let mark = ferry.mark();
    brokers.broker_mut("core").kill9();
    ferry
        .wait_for_line_since(mark, "connection down", secs(15))
        .await;
    brokers.broker_mut("core").restart();
    ferry
        .wait_for_line_since(mark, "reconnected", secs(30))
        .await;

    let js = brokers.nats_peer("core").await;
    let info = wait_all_acked(&js, "IN", "relay", N as u64, secs(60)).await;
    let out = js.read_stream("OUT").await;
    let (lost, duplicates) = lost_and_duplicates(N, "in", &out);
    println!(
        "nats-server kill -9 and restart: sent={N} stored={} redeliveries={} \
         duplicates={duplicates} lost={lost}",
        out.len(),
        redeliveries(&info)
    );
    assert_eq!(lost, 0);
    assert_eq!(duplicates, 0);
    assert_sequences(&out, &["in"], N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_new_starts_after_the_messages_already_stored() {
    let (brokers, js) = in_to_out("relay", ", deliver: new").await;
    create_in_and_out(&js).await;
    store_in(&js, "old", 5).await;

    let _ferry = Ferry::start_ready(&brokers.config).await;
    store_in(&js, "new", 5).await;
    wait_all_acked(&js, "IN", "relay", 10, secs(30)).await;
    assert_sequences(&js.read_stream("OUT").await, &["new"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_acks_only_what_the_sink_stored_and_the_rest_comes_next_time() {
    const N: usize = 3000;
    let (brokers, js) = in_to_out("relay", "").await;
    create_in_and_out(&js).await;
    store_in(&js, "in", N).await;

    let mut ferry = Ferry::start_ready(&brokers.config).await;
    js.wait_stream_len("OUT", 500, secs(30)).await;
    let status = ferry.terminate().await;
    assert!(status.success(), "ferry exited with {status}");

    let info = consumer_info(&js, "IN", "relay").await;
    let acked = info.ack_floor.stream_sequence as usize;
    let stored = js.read_stream("OUT").await;
    println!(
        "SIGTERM: {acked} acked, {} stored, {} pending at the server",
        stored.len(),
        info.num_ack_pending
    );
    assert!(
        acked >= 500,
        "ferry acked what it delivered before exiting: {info:?}"
    );
    // Everything acked is in the sink's stream: acked means stored, never acked and dropped.
    let (lost, duplicates) = lost_and_duplicates(acked, "in", &stored);
    assert_eq!((lost, duplicates), (0, 0), "of the {acked} acked messages");

    let mut ferry = Ferry::start_ready(&brokers.config).await;
    wait_all_acked(&js, "IN", "relay", N as u64, secs(60)).await;
    let out = js.read_stream("OUT").await;
    let (lost, duplicates) = lost_and_duplicates(N, "in", &out);
    assert_eq!((lost, duplicates), (0, 0));
    ferry.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_liveness_probe_catches_a_connection_that_went_silent() {
    const N: usize = 200;
    let brokers = Scenario::new()
        .nats_with("dst", jetstream())
        .keys("dst", "probe: false")
        .connection("src", "dst")
        .through_proxy("src")
        // Pings so rare they cannot be what notices: only the probe can.
        .keys("src", "ping_interval: 1h, probe: { interval: 1s, timeout: 1s }")
        .routes(
            r#"
  - name: relay
    from: { connection: src, subject: "in.>", jetstream: { stream: IN, consumer: relay, ack_wait: 5s } }
    to: { connection: dst, subject: "out.data", jetstream: true }
"#,
        )
        .start_brokers();
    let js = brokers.nats_peer("dst").await;
    create_in_and_out(&js).await;
    let proxy = brokers.proxy("src");
    let mut ferry = Ferry::start_ready(&brokers.config).await;
    let mark = ferry.mark();
    // What the server sends into the stalled connection is lost with it, and comes back
    // after ack_wait.
    proxy.stall();
    let stalled = Instant::now();
    store_in(&js, "in", N).await;
    let line = ferry
        .wait_for_line_since(mark, "liveness probe", secs(10))
        .await;
    let noticed = stalled.elapsed();
    assert!(line.contains("did not come back within 1s"), "{line}");
    assert!(line.contains("connection=src"), "{line}");
    ferry
        .wait_for_line_since(mark, "connection down", secs(5))
        .await;
    println!("silent connection noticed by the probe after {noticed:?}");
    assert!(noticed < secs(5), "{noticed:?}");
    proxy.resume();
    ferry
        .wait_for_line_since(mark, "reconnected", secs(30))
        .await;
    wait_all_acked(&js, "IN", "relay", N as u64, secs(60)).await;
    let out = js.read_stream("OUT").await;
    assert_sequences(&out, &["in"], N);
}

// ---------------------------------------------------------------------------------------------
// the JetStream sink

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_to_jetstream_stores_every_message_with_its_id() {
    const N: usize = 500;
    let brokers = Scenario::new()
        .mosquitto("plant")
        .nats_with("core", jetstream())
        .routes(
            r#"
  - name: up
    from: { connection: plant, topic: "sensors/#", qos: 1 }
    to: { connection: core, subject: auto, jetstream: true }
"#,
        )
        .start_brokers();
    let js = brokers.nats_peer("core").await;
    js.create_stream("SENSORS", &["sensors.>"]).await;

    let _ferry = Ferry::start_ready(&brokers.config).await;
    let publisher = brokers.mqtt_peer("plant").await;
    publisher
        .publish_all(
            (0..N).map(|i| ("sensors/kitchen/temp".to_string(), seq_payload("s", i, 0))),
            1,
        )
        .await;
    js.wait_stream_len("SENSORS", N as u64, secs(30)).await;
    let stored = js.read_stream("SENSORS").await;
    assert_sequences(&stored, &["s"], N);
    assert_eq!(stored[0].topic, "sensors.kitchen.temp");
    let ids: std::collections::HashSet<&str> = stored
        .iter()
        .map(|m| {
            m.header("Nats-Msg-Id")
                .expect("every message carries Nats-Msg-Id")
        })
        .collect();
    assert_eq!(ids.len(), N, "each message has its own id");
    assert!(
        ids.iter().all(|id| id.starts_with("plant/")),
        "ids name the origin connection: {:?}",
        ids.iter().next()
    );
}

/// A transform that splits one message into three publishes to one JetStream sink: each
/// gets an id of its own (`<id>`, `<id>#1`, `<id>#2`), so deduplication keeps all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outputs_of_a_split_message_are_each_stored() {
    let brokers = on_jetstream(
        r#"
  - name: split
    from: { connection: core, subject: "in.>" }
    transform: '.readings[]'
    to: { connection: core, subject: out.readings, jetstream: true }
"#,
    );
    let js = brokers.nats_peer("core").await;
    js.create_stream("OUT", &["out.>"]).await;
    let mut ferry = Ferry::start_ready(&brokers.config).await;
    js.publish("in.batch", r#"{"readings":[1,2,3]}"#).await;
    js.flush().await;
    js.wait_stream_len("OUT", 3, secs(15)).await;
    let stored = js.read_stream("OUT").await;
    let payloads: Vec<String> = stored.iter().map(|m| m.text()).collect();
    assert_eq!(payloads, ["1", "2", "3"]);
    let ids: Vec<&str> = stored
        .iter()
        .map(|m| {
            m.header("Nats-Msg-Id")
                .expect("every message carries Nats-Msg-Id")
        })
        .collect();
    assert!(
        ids[1] == format!("{}#1", ids[0]) && ids[2] == format!("{}#2", ids[0]),
        "{ids:?}"
    );
    ferry.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_twice_with_one_id_is_stored_once() {
    const N: usize = 300;
    // Two routes read the same messages through two consumers and publish each one to the
    // same stream: every message is sent twice, with the same id (core/IN:<seq>).
    let brokers = on_jetstream(
        r#"
  - name: first
    from: { connection: core, subject: "in.>", jetstream: { stream: IN, consumer: first } }
    to: { connection: core, subject: "out.data", jetstream: true }
  - name: second
    from: { connection: core, subject: "in.>", jetstream: { stream: IN, consumer: second } }
    to: { connection: core, subject: "out.data", jetstream: true }
"#,
    );
    let js = brokers.nats_peer("core").await;
    create_in_and_out(&js).await;
    store_in(&js, "in", N).await;

    let _ferry = Ferry::start_ready(&brokers.config).await;
    wait_all_acked(&js, "IN", "first", N as u64, secs(30)).await;
    wait_all_acked(&js, "IN", "second", N as u64, secs(30)).await;
    let stored = js.read_stream("OUT").await;
    assert_eq!(stored.len(), N, "{} sends, {} stored", 2 * N, stored.len());
    let mut seqs: Vec<usize> = stored
        .iter()
        .map(|m| parse_seq(&m.payload).unwrap().1)
        .collect();
    seqs.sort();
    assert_in_order("in", &seqs, N);
    assert_eq!(stored[0].header("Nats-Msg-Id"), Some("core/IN:1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_no_stream_captures_is_retried_until_one_does() {
    let (brokers, js) = in_to_out("relay", "").await;
    js.create_stream("IN", &["in.>"]).await;
    store_in(&js, "in", 5).await;

    let mut ferry = Ferry::start_ready(&brokers.config).await;
    let line = ferry
        .wait_for_line("no JetStream stream captures subject `out.data`", secs(15))
        .await;
    assert!(line.contains("unavailable"), "{line}");
    let info = consumer_info(&js, "IN", "relay").await;
    assert_eq!(info.ack_floor.stream_sequence, 0, "nothing acked: {info:?}");

    js.create_stream("OUT", &["out.>"]).await;
    js.wait_stream_len("OUT", 5, secs(60)).await;
    assert_sequences(&js.read_stream("OUT").await, &["in"], 5);
    wait_all_acked(&js, "IN", "relay", 5, secs(10)).await;
}

// ---------------------------------------------------------------------------------------------
// the core NATS sink

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_sink_confirms_each_message_once_flushed() {
    const N: usize = 20_000;
    let brokers = on_jetstream(
        r#"
  - name: relay
    from: { connection: core, subject: "in.>", jetstream: { stream: IN, consumer: relay } }
    to: { connection: core, subject: "out.data" }
"#,
    );
    let js = brokers.nats_peer("core").await;
    js.create_stream("IN", &["in.>"]).await;
    store_in(&js, "in", N).await;
    let (_subscriber, mut inbox) = brokers.nats_subscriber("core", "out.>").await;

    let _ferry = Ferry::start_ready(&brokers.config).await;
    let mut got = inbox.collect(1, secs(30)).await;
    let first = Instant::now();
    got.extend(inbox.collect(N - 1, secs(60)).await);
    let elapsed = first.elapsed();
    assert_sequences(&got, &["in"], N);
    let info = wait_all_acked(&js, "IN", "relay", N as u64, secs(10)).await;
    assert_eq!(info.num_redelivered, 0);
    println!(
        "JetStream → core NATS (flush per message): {N} messages, first to last in \
         {elapsed:?}: {:.0} msg/s",
        (N - 1) as f64 / elapsed.as_secs_f64()
    );
}
