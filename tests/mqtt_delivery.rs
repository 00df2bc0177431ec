//! At-least-once on MQTT: ferry acknowledges a message to the broker only once its sinks have
//! it, so what ferry did not deliver (a sink down, ferry killed) stays with the broker and
//! comes again; a route that reads an MQTT connection and publishes back through it never
//! stalls it. Every test states what it counted: sent, received, duplicates, lost.

mod support;

use std::time::Duration;

use support::*;

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

/// A numbered load: `sent` messages of stream `name`, published at QoS 1 and counted where
/// they arrive.
#[derive(Clone, Copy)]
struct Load {
    name: &'static str,
    sent: usize,
}

impl Load {
    fn new(name: &'static str, sent: usize) -> Load {
        Load { name, sent }
    }

    /// Publishes the load on `topic`, each message acknowledged.
    async fn publish(self, peer: &MqttPeer, topic: &str) {
        peer.publish_all(messages(topic, self.name, self.sent), 1)
            .await;
    }

    /// Publishes the load on `topic` in a task of its own, so the test acts while it goes
    /// through; the task hands the peer back when done.
    fn publish_meanwhile(
        self,
        peer: MqttPeer,
        topic: &'static str,
    ) -> tokio::task::JoinHandle<MqttPeer> {
        tokio::spawn(async move {
            self.publish(&peer, topic).await;
            peer
        })
    }

    /// [`collect_stream`] of this load.
    async fn receive(
        self,
        inbox: &mut Inbox,
        got: Vec<Msg>,
        timeout: Duration,
        settle: Duration,
    ) -> Vec<Msg> {
        collect_stream(inbox, self.name, self.sent, got, timeout, settle).await
    }

    /// Counts the load in `got`, reported under `label`; fails the test if one was lost.
    fn assert_none_lost(self, got: &[Msg], label: &str) -> Tally {
        let tally = Tally::of_msgs(self.sent, self.name, got).report(label);
        tally.assert_none_lost(label);
        tally
    }
}

/// The broker must keep everything for a ferry that is down or slow: no per-client limit.
fn unlimited() -> MosquittoOptions {
    MosquittoOptions {
        max_queued_messages: Some(0),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// A route that publishes back to the connection it reads

/// One route reads `in/#` and publishes every message back to `out/echo` on the same MQTT
/// connection, QoS 1 both ways, through a two-message queue that blocks when full. Each
/// publish waits for its PUBACK, which only the connection's event loop can read: it must keep
/// polling while the route's queue is full. 10,000 messages: all arrive, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_publishing_back_to_its_own_connection_never_stalls_it() {
    let echo = Load::new("echo", 10_000);
    let mut run = Scenario::new()
        .mosquitto_with("mq", unlimited())
        .keys("mq", "client_id: ferry-echo")
        .routes(
            r#"
  - name: echo
    from: { connection: mq, topic: "in/#", qos: 1 }
    to: { connection: mq, topic: out/echo, qos: 1 }
    queue: { max_messages: 2, when_full: block }
"#,
        )
        .start()
        .await;
    let mut subscriber = run.mqtt_subscriber("mq", "out/#", 1).await;
    let publisher = run.mqtt_peer("mq").await;

    echo.publish(&publisher, "in/s").await;
    let got = echo
        .receive(&mut subscriber.inbox, Vec::new(), secs(120), millis(500))
        .await;

    let tally = echo.assert_none_lost(&got, "same connection");
    assert_eq!(tally.duplicates, 0, "duplicates in normal running");
    assert_eq!(tally.reordered, 0, "messages out of order");
    assert!(run.ferry.terminate().await.success());
}

/// The connection's event loop while its socket is full: one route reads `in/#` and
/// publishes every 256 KiB message to four topics back through the same connection, QoS 1 all
/// the way, and the connection goes through a proxy that stops forwarding for 50 ms out of
/// every 100 ms. So the client's `poll` often waits in a write, the socket being full, while
/// the routes confirm messages and the event loop is woken to send their acks. That `poll`
/// must run on to its end: dropped half-way, it loses the PUBACK or PUBLISH it had taken from
/// its queue (the message is never acknowledged, or never published), or a PUBACK it had read
/// (the route publishes the message again). Every copy arrives exactly once, in order, the
/// connection never fails, and nothing is left unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_released_while_the_client_writes_lose_and_repeat_nothing() {
    const SENT: usize = 200;
    const COPIES: [&str; 4] = ["out/1", "out/2", "out/3", "out/4"];
    let mut run = Scenario::new()
        .mosquitto_with("mq", unlimited())
        .through_proxy("mq")
        .keys("mq", "client_id: ferry-busy")
        .routes(
            r#"
  - name: fan-out
    from: { connection: mq, topic: "in/#", qos: 1 }
    to:
      - { connection: mq, topic: out/1, qos: 1 }
      - { connection: mq, topic: out/2, qos: 1 }
      - { connection: mq, topic: out/3, qos: 1 }
      - { connection: mq, topic: out/4, qos: 1 }
"#,
        )
        .start()
        .await;
    let mut subscriber = run.mqtt_subscriber("mq", "out/#", 1).await;
    let publisher = run.mqtt_peer("mq").await;
    let mark = run.ferry.mark();

    let load = (0..SENT).map(|seq| ("in/busy".to_string(), seq_payload("busy", seq, 256 << 10)));
    let publishing = tokio::spawn(async move { publisher.publish_all(load, 1).await });
    let deadline = tokio::time::Instant::now() + secs(120);
    let mut got = Vec::new();
    while got.len() < SENT * COPIES.len() && tokio::time::Instant::now() < deadline {
        run.proxy("mq").stall_existing();
        got.extend(subscriber.inbox.collect_for(millis(50)).await);
        run.proxy("mq").resume();
        got.extend(subscriber.inbox.collect_for(millis(50)).await);
    }
    publishing.await.unwrap();
    got.extend(subscriber.inbox.collect_for(millis(500)).await);

    for topic in COPIES {
        let copies: Vec<Msg> = got.iter().filter(|m| m.topic == topic).cloned().collect();
        let tally = Tally::of_msgs(SENT, "busy", &copies).report(topic);
        tally.assert_none_lost(topic);
        assert_eq!(tally.duplicates, 0, "{topic}: messages published twice");
        assert_eq!(tally.reordered, 0, "{topic}: messages out of order");
    }
    // The routes may fill up, and the connection then reconnects on purpose to fetch what it
    // left with the broker meanwhile (see `held_back` in the event loop); nothing else may
    // bring it down.
    let down = (run.ferry.lines().into_iter().skip(mark))
        .filter(|l| l.contains("connection down") && !l.contains("were left with the broker"))
        .collect::<Vec<_>>();
    assert!(down.is_empty(), "the connection went down: {down:?}");
    assert!(run.ferry.terminate().await.success());
    assert_eq!(
        left_unacknowledged(&run.ferry),
        0,
        "messages delivered but left unacknowledged"
    );
}

// ---------------------------------------------------------------------------------------------
// Acks wait for the sink

/// Two brokers without a per-client limit, `plant` (its connection's client id `client_id`,
/// then `plant_keys`) and `out` (`<client_id>-out`), and route `up`: `up/#` on plant to
/// `relayed/<level 1>` on out, QoS 1 both sides, then `route_keys`.
fn plant_to_out(client_id: &str, plant_keys: &str, route_keys: &str) -> Scenario {
    Scenario::new()
        .mosquitto_with("plant", unlimited())
        .keys("plant", &format!("client_id: {client_id}{plant_keys}"))
        .mosquitto_with("out", unlimited())
        .keys("out", &format!("client_id: {client_id}-out"))
        .routes(&format!(
            r#"
  - name: up
    from: {{ connection: plant, topic: "up/#", qos: 1 }}
    to: {{ connection: out, topic: "relayed/{{{{ topic[1] }}}}", qos: 1 }}{route_keys}
"#
        ))
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
    let held = Load::new("held", 500);
    let state = tempfile::tempdir().unwrap();
    let mut brokers = plant_to_out(
        "ferry-held",
        ", clean_start: false, session_expiry: 1h",
        "\n    queue: { max_messages: 100, when_full: block }",
    )
    .settings(&format!(
        "state_dir: \"{}\"\nshutdown_timeout: 2s\n",
        state.path().display()
    ))
    .start_brokers();
    brokers.broker_mut("out").kill9();

    let mut ferry = Ferry::start(&brokers.config);
    ferry.wait_for_line("subscriptions)", secs(30)).await;
    let publisher = brokers.mqtt_peer("plant").await;
    held.publish(&publisher, "up/s").await;
    ferry.wait_for_line("sink out unavailable", secs(30)).await;
    assert!(ferry.terminate().await.success());
    let unacknowledged = left_unacknowledged(&ferry);
    eprintln!("[dead sink] ferry stopped holding {unacknowledged} unacknowledged message(s)");
    assert!(
        unacknowledged > 0,
        "ferry held no unacknowledged message at shutdown"
    );

    brokers.broker_mut("out").restart();
    let mut subscriber = brokers.mqtt_subscriber("out", "relayed/#", 1).await;
    let mut ferry = Ferry::start(&brokers.config);
    let got = held
        .receive(&mut subscriber.inbox, Vec::new(), secs(60), millis(500))
        .await;
    held.assert_none_lost(&got, "dead sink");
    assert!(ferry.terminate().await.success());
}

/// 20,000 QoS 1 messages from one broker to another; ferry is killed with SIGKILL while
/// relaying them and started again with the same client ids: the source broker kept the
/// session, and with it every message ferry had not acknowledged, which ferry acknowledges only
/// once the other broker acknowledged its copy. Nothing is lost; duplicates (delivered, not yet
/// acknowledged at the kill) are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_killed_mid_stream_loses_nothing() {
    let kill = Load::new("kill", 20_000);
    let brokers = plant_to_out("ferry-killed", "", "").start_brokers();
    let mut subscriber = brokers.mqtt_subscriber("out", "relayed/#", 1).await;

    let mut ferry = Ferry::start_ready(&brokers.config).await;
    let publishing = kill.publish_meanwhile(brokers.mqtt_peer("plant").await, "up/s");
    // Kill once a good part went through, while the rest is still coming.
    let mut before = subscriber.inbox.collect(kill.sent / 4, secs(60)).await;
    ferry.kill9().await;
    before.extend(subscriber.inbox.drain());

    let mut ferry = Ferry::start(&brokers.config);
    let _publisher = publishing.await.unwrap();
    let got = kill
        .receive(&mut subscriber.inbox, before, secs(120), secs(1))
        .await;
    kill.assert_none_lost(&got, "kill -9");
    assert!(ferry.terminate().await.success());
}

/// SIGTERM in the middle of a burst: what ferry took in is delivered and its acks go out
/// before DISCONNECT; what it had not handed to the route yet stays unacknowledged. The next
/// ferry on the same session gets exactly the rest: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_mid_stream_neither_loses_nor_repeats() {
    const SENT: usize = 10_000;
    let brokers =
        plant_to_out("ferry-clean-stop", "", "\n    queue: { max_messages: 10 }").start_brokers();
    let mut subscriber = brokers.mqtt_subscriber("out", "relayed/#", 1).await;

    let mut ferry = Ferry::start(&brokers.config);
    ferry.wait_ready().await;
    let publisher = brokers.mqtt_peer("plant").await;
    let publishing = tokio::spawn(async move {
        publisher
            .publish_all(messages("up/s", "stop", SENT), 1)
            .await;
        publisher
    });
    let mut before = subscriber.inbox.collect(SENT / 4, secs(60)).await;
    assert!(ferry.terminate().await.success());
    before.extend(subscriber.inbox.drain());
    let held = left_unacknowledged(&ferry);

    let mut ferry = Ferry::start(&brokers.config);
    let _publisher = publishing.await.unwrap();
    let got = collect_stream(
        &mut subscriber.inbox,
        "stop",
        SENT,
        before,
        secs(120),
        secs(1),
    )
    .await;
    let tally = Tally::of_msgs(SENT, "stop", &got).report("SIGTERM");
    eprintln!("[SIGTERM] the first ferry left {held} message(s) unacknowledged");
    assert!(
        held > 0,
        "the first ferry had taken in everything: nothing was tested"
    );
    tally.assert_none_lost("SIGTERM");
    assert_eq!(tally.duplicates, 0, "delivered twice across a clean stop");
    assert!(ferry.terminate().await.success());
}

/// SIGTERM while the source's broker is too busy to read (stopped with SIGSTOP until ferry has
/// sent DISCONNECT): ferry's last acks wait in the socket, and when the broker wakes up a
/// publisher has sent it more messages for ferry's subscription. Had ferry closed its socket
/// after DISCONNECT, the broker's writes of those messages would fail and it would drop the
/// connection before reading the acks (mosquitto logs "disconnected: Broken pipe"), then
/// deliver the acknowledged messages again to the next ferry: hundreds of duplicates. ferry
/// closes only once the broker closed the connection, so the broker read every ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_waits_for_a_busy_broker_to_read_the_last_acks() {
    const SENT: usize = 2_000;
    let mut brokers =
        plant_to_out("ferry-busy-stop", "", "\n    queue: { max_messages: 10 }").start_brokers();
    let mut subscriber = brokers.mqtt_subscriber("out", "relayed/#", 1).await;
    let mut ferry = Ferry::start(&brokers.config);
    ferry.wait_ready().await;
    let publisher = brokers.mqtt_peer("plant").await;
    publisher
        .publish_all(messages("up/s", "busy", SENT), 1)
        .await;
    let mut got = subscriber.inbox.collect(SENT / 10, secs(60)).await;

    brokers.broker_mut("plant").pause();
    ferry.signal("TERM");
    // Until ferry sent DISCONNECT on `plant` (and waits for the broker), or exited.
    ferry
        .wait_for_match_or_exit(
            0,
            "DISCONNECT sent on plant",
            |l| l.contains("waiting for the broker to close") && l.contains("connection=plant"),
            secs(30),
        )
        .await;
    // More messages for ferry's subscription, in the broker's socket when it wakes up.
    publisher
        .publish_all(messages("up/late", "late", 100), 0)
        .await;
    brokers.broker_mut("plant").resume();
    assert!(ferry.wait_exit(secs(30)).await.success());
    got.extend(subscriber.inbox.drain());

    let mut ferry = Ferry::start(&brokers.config);
    let got = collect_stream(&mut subscriber.inbox, "busy", SENT, got, secs(60), secs(1)).await;
    let tally = Tally::of_msgs(SENT, "busy", &got).report("busy stop");
    tally.assert_none_lost("busy stop");
    assert_eq!(tally.duplicates, 0, "delivered twice across a clean stop");
    assert!(ferry.terminate().await.success());
}

/// A restarted ferry takes over the session the broker kept for its client id as its own: the
/// connection that is a source also publishes (QoS 2, so every packet id the dead process may
/// have left half-released is released first) and subscribes (the probe's topic is
/// subscribed again), which the client would refuse had it resumed the session without local
/// state. The messages that arrive while ferry is down come too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_ferry_publishes_and_subscribes_on_its_kept_session() {
    let first = Load::new("first", 200);
    let second = Load::new("second", 200);
    let mut brokers = Scenario::new()
        .mosquitto_with("mq", unlimited())
        .keys("mq", "client_id: ferry-kept")
        .routes(
            r#"
  - name: echo
    from: { connection: mq, topic: "in/#", qos: 1 }
    to: { connection: mq, topic: "out/{{ topic[1] }}", qos: 2 }
"#,
        )
        .start_brokers();
    let mut subscriber = brokers.mqtt_subscriber("mq", "out/#", 2).await;
    let publisher = brokers.mqtt_peer("mq").await;

    let mut ferry = Ferry::start_ready(&brokers.config).await;
    let publishing = first.publish_meanwhile(publisher, "in/a");
    let mut got = subscriber.inbox.collect(first.sent / 4, secs(30)).await;
    ferry.kill9().await;
    let publisher = publishing.await.unwrap();
    // While ferry is down: the broker keeps these for its session.
    second.publish(&publisher, "in/b").await;

    let mut ferry = Ferry::start(&brokers.config);
    let ready = ferry.wait_ready().await;
    let subscribed = ferry.wait_for_line("subscriptions)", secs(10)).await;
    eprintln!("[kept session] {ready}\n[kept session] {subscribed}");
    assert!(
        !ferry
            .lines()
            .iter()
            .any(|l| l.contains("without local session state")),
        "the client resumed the kept session broker-only"
    );
    got = first
        .receive(&mut subscriber.inbox, got, secs(60), millis(0))
        .await;
    got = second
        .receive(&mut subscriber.inbox, got, secs(60), millis(500))
        .await;
    let first = first.assert_none_lost(&got, "kept session, first");
    let second = second.assert_none_lost(&got, "kept session, second");
    // The held ids released, the restarted ferry stays on its first connection: a broker that
    // still counted them against its receive maximum would close it at every few publishes,
    // each time delivering again what the routes had not confirmed.
    let downs: Vec<String> = (ferry.lines().into_iter())
        .filter(|l| l.contains("connection down"))
        .collect();
    assert!(
        downs.is_empty(),
        "the restarted ferry lost its connection: {downs:?}\nmosquitto:\n{}",
        brokers.broker_mut("mq").log()
    );
    // Only what the dead process had in flight comes twice; what arrived while ferry was down
    // at most once more for each id the broker held.
    assert!(
        first.duplicates <= first.sent,
        "kept session, first: {first}"
    );
    assert!(
        second.duplicates <= HELD_IDS,
        "kept session, second: {second}"
    );
    assert!(ferry.terminate().await.success());
}

/// mosquitto's default receive maximum (`max_inflight_messages`): the QoS 2 packet ids a
/// killed ferry can leave held in its session.
const HELD_IDS: usize = 20;

// ---------------------------------------------------------------------------------------------
// Liveness

/// Keys for a connection only its probe can find dead: a probe every second, a keep-alive too
/// long to notice first.
fn watched_by_its_probe(client_id: &str) -> String {
    format!("client_id: {client_id}, keep_alive: 60s, probe: {{ interval: 1s, timeout: 1s }}")
}

/// Route `relay`: `in/#` on connection `watched` to `out/<level 1>` on connection `to`, QoS 1.
fn relay_from_watched_to(to: &str) -> String {
    fill(
        r#"
  - name: relay
    from: { connection: watched, topic: "in/#", qos: 1 }
    to: { connection: @TO@, topic: "out/{{ topic[1] }}", qos: 1 }
"#,
        &[("@TO@", to.to_string())],
    )
}

/// Waits until ferry, after `mark`, logs `noticed` (within `timeout`), then `reconnected`
/// (within 15 s): it found its connection dead and replaced it.
async fn wait_noticed_and_reconnected(
    ferry: &mut Ferry,
    mark: usize,
    noticed: &str,
    timeout: Duration,
) {
    ferry.wait_for_line_since(mark, noticed, timeout).await;
    ferry
        .wait_for_line_since(mark, "reconnected", secs(15))
        .await;
}

/// Reads `in/#` through the stalling proxy (probe every second, keep-alive long enough not to
/// notice first) and publishes to `out/...` directly. A first batch passes; then the proxy
/// stalls ferry's connection and a second batch is published: only the probe can tell that
/// the connection is dead. ferry drops it, reconnects (through the proxy again) and the
/// broker delivers the second batch on the new connection: nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_notices_a_silent_connection_and_ferry_recovers_without_loss() {
    let before = Load::new("before", 100);
    let after = Load::new("after", 100);
    let mut run = Scenario::new()
        .mosquitto_with("direct", unlimited())
        .keys("direct", "client_id: ferry-direct")
        .connection("watched", "direct")
        .through_proxy("watched")
        .keys("watched", &watched_by_its_probe("ferry-watched"))
        .routes(&relay_from_watched_to("direct"))
        .start()
        .await;
    let mut subscriber = run.mqtt_subscriber("direct", "out/#", 1).await;
    let publisher = run.mqtt_peer("direct").await;

    before.publish(&publisher, "in/a").await;
    let got = before
        .receive(&mut subscriber.inbox, Vec::new(), secs(30), millis(0))
        .await;
    Tally::of_msgs(before.sent, before.name, &got).assert_none_lost("before");

    let mark = run.ferry.mark();
    run.proxy("watched").stall_existing();
    after.publish(&publisher, "in/b").await;
    let started = std::time::Instant::now();
    wait_noticed_and_reconnected(&mut run.ferry, mark, "did not come back within", secs(10)).await;
    eprintln!(
        "[probe] noticed and reconnected {:?} after the stall",
        started.elapsed()
    );
    let got = after
        .receive(&mut subscriber.inbox, Vec::new(), secs(30), millis(500))
        .await;
    after.assert_none_lost(&got, "probe");
    assert!(run.ferry.terminate().await.success());
}

/// Acks belong to the connection their messages arrived on. The sink's broker is paused, so
/// the route holds a batch unconfirmed; meanwhile the source connection goes silent and ferry
/// replaces it, and the broker delivers the batch again on the new connection. When the sink's
/// broker resumes, the route confirms the old copies too: their acks must not go out on the
/// new connection (the client would fail it over an unknown packet id, or acknowledge a
/// redelivered copy before it was delivered). Every message arrives, the connection never
/// fails over an ack, and at the end nothing is left unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_of_a_replaced_connection_never_reach_the_new_one() {
    let held = Load::new("held", 50);
    let mut run = Scenario::new()
        .mosquitto_with("watched", unlimited())
        .through_proxy("watched")
        .keys("watched", &watched_by_its_probe("ferry-generations"))
        .mosquitto_with("out", unlimited())
        .keys("out", "client_id: ferry-generations-out")
        .routes(&relay_from_watched_to("out"))
        .start()
        .await;
    let mut subscriber = run.mqtt_subscriber("out", "out/#", 1).await;
    let publisher = run.mqtt_peer("watched").await;

    run.broker_mut("out").pause();
    held.publish(&publisher, "in/held").await;
    let mark = run.ferry.mark();
    run.proxy("watched").stall_existing();
    wait_noticed_and_reconnected(&mut run.ferry, mark, "did not come back within", secs(10)).await;
    run.broker_mut("out").resume();

    let got = held
        .receive(&mut subscriber.inbox, Vec::new(), secs(60), millis(500))
        .await;
    held.assert_none_lost(&got, "generations");
    let failed_over_an_ack = (run.ferry.lines().into_iter())
        .filter(|l| l.contains("unsolicited"))
        .collect::<Vec<_>>();
    assert!(failed_over_an_ack.is_empty(), "{failed_over_an_ack:?}");
    assert!(run.ferry.terminate().await.success());
    assert_eq!(
        left_unacknowledged(&run.ferry),
        0,
        "messages delivered but left unacknowledged"
    );
}

/// A connection without a probe (it only publishes) stalls: the keep-alive notices. The
/// route's message goes out on the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_notices_a_stalled_sink_connection() {
    let mut run = Scenario::new()
        .mosquitto_with("out", unlimited())
        .through_proxy("out")
        .keys("out", "client_id: ferry-stalled-sink, keep_alive: 1s")
        .nats("nc")
        .routes(
            r#"
  - name: down
    from: { connection: nc, subject: "cmd.>" }
    to: { connection: out, topic: "cmd/{{ subject[1] }}", qos: 1 }
"#,
        )
        .start()
        .await;
    let mut subscriber = run.mqtt_subscriber("out", "cmd/#", 1).await;
    let publisher = run.nats_peer("nc").await;
    publisher.publish("cmd.first", "first").await;
    subscriber.inbox.collect(1, secs(10)).await;

    let mark = run.ferry.mark();
    run.proxy("out").stall_existing();
    publisher.publish("cmd.second", "second").await;
    wait_noticed_and_reconnected(&mut run.ferry, mark, "connection down", secs(10)).await;
    let got = subscriber
        .inbox
        .collect_until("the second message", |m| m.text() == "second", secs(30))
        .await;
    eprintln!("[keep-alive] {} message(s) after the stall", got.len());
    assert!(run.ferry.terminate().await.success());
}

/// A sink connection's event loop goes on past the PUBLISHes and PUBACKs of its messages, and
/// past its pings, without a turn of ferry's own for each: what it goes past still counts as
/// progress, so a connection kept busy (and then idle) for more than twice its keep-alive is
/// never taken for stalled, and every message arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sink_connection_is_never_taken_for_stalled() {
    const MESSAGES: usize = 60;
    let mut run = Scenario::new()
        .mosquitto_with("out", unlimited())
        .keys("out", "client_id: ferry-busy-sink, keep_alive: 1s")
        .nats("nc")
        .routes(
            r#"
  - name: down
    from: { connection: nc, subject: "cmd.>" }
    to: { connection: out, topic: "cmd/{{ subject[1] }}", qos: 1 }
"#,
        )
        .start()
        .await;
    let mut subscriber = run.mqtt_subscriber("out", "cmd/#", 1).await;
    let publisher = run.nats_peer("nc").await;
    // Three seconds of messages (three keep-alives), then as long again idle: the watchdog
    // gives up on a connection after two keep-alives without progress.
    for i in 0..MESSAGES {
        publisher.publish(&format!("cmd.m{i}"), "busy").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = subscriber.inbox.collect(MESSAGES, secs(10)).await;
    tokio::time::sleep(secs(3)).await;
    let mut topics: Vec<_> = got.iter().map(|m| m.topic.clone()).collect();
    topics.sort();
    topics.dedup();
    assert_eq!(topics.len(), MESSAGES, "every message once");
    let lines = run.ferry.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("stalled") || l.contains("connection down")),
        "ferry took its busy connection for stalled:\n{}",
        run.ferry.tail(20)
    );
    assert!(run.ferry.terminate().await.success());
}

/// The write itself blocks: ferry's sink connection stalls while it sends a 12 MiB message,
/// more than the socket buffers hold, so the client's `poll` waits in that write and its own
/// keep-alive (which needs `poll`) cannot run. ferry's watchdog, outside `poll`, notices; the
/// client sends the message again on the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_never_completes_is_noticed() {
    const SIZE: usize = 12 << 20;
    let mut run = Scenario::new()
        .mosquitto_with("src", unlimited())
        .keys("src", "client_id: ferry-big-in, max_packet_size: 64MiB")
        .connection("out", "src")
        .through_proxy("out")
        .keys("out", "client_id: ferry-big-out, keep_alive: 1s")
        .routes(
            r#"
  - name: big
    from: { connection: src, topic: "big/in", qos: 1 }
    to: { connection: out, topic: big/out, qos: 1 }
"#,
        )
        .start()
        .await;
    let mut subscriber = run.mqtt_subscriber("src", "big/out", 1).await;
    let publisher = run.mqtt_peer("src").await;

    let mark = run.ferry.mark();
    run.proxy("out").stall_existing();
    publisher.publish("big/in", vec![7u8; SIZE], 1, false).await;
    let noticed = "the connection is stalled";
    wait_noticed_and_reconnected(&mut run.ferry, mark, noticed, secs(15)).await;
    let got = subscriber.inbox.collect(1, secs(30)).await;
    assert_eq!(got[0].payload.len(), SIZE);
    assert!(run.ferry.terminate().await.success());
}

// ---------------------------------------------------------------------------------------------
// Measurement (not a check): `cargo test --test mqtt_delivery -- --ignored --nocapture`

/// Relay rates with the MQTT 5 persistent session (the default), and how often the client's
/// session checkpoint was offered to ferry's session file and written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_relay_rates_with_a_persistent_session() {
    const N: usize = 20_000;
    let state = tempfile::tempdir().unwrap();
    let mut run = Scenario::new()
        .settings(&format!("state_dir: \"{}\"", state.path().display()))
        .mosquitto_with("mq", unlimited())
        .keys("mq", "client_id: ferry-measure")
        .nats("nc")
        .routes(
            r#"
  - name: up
    from: { connection: mq, topic: "up/#", qos: 1 }
    to: { connection: nc, subject: "up.x" }
  - name: echo
    from: { connection: mq, topic: "echo/#", qos: 1 }
    to: { connection: mq, topic: echoed/x, qos: 1 }
  - name: down
    from: { connection: nc, subject: "down.>" }
    to: { connection: mq, topic: down/x, qos: 1 }
"#,
        )
        .start()
        .await;
    let (nats_peer, mut up) = run.nats_subscriber("nc", "up.>").await;
    let mut mqtt_sub = run.mqtt_subscriber("mq", "echoed/#", 1).await;
    mqtt_sub.subscribe("down/#", 1).await;
    let publisher = run.mqtt_peer("mq").await;

    let rate =
        |count: usize, started: std::time::Instant| count as f64 / started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    publisher.publish_all(messages("up/s", "up", N), 1).await;
    collect_stream(&mut up, "up", N, Vec::new(), secs(300), millis(0)).await;
    eprintln!(
        "[measure] MQTT QoS 1 -> NATS: {:.0} msg/s",
        rate(N, started)
    );

    let started = std::time::Instant::now();
    let echo = Load::new("echo", N / 4);
    echo.publish(&publisher, "echo/s").await;
    echo.receive(&mut mqtt_sub.inbox, Vec::new(), secs(300), millis(0))
        .await;
    eprintln!(
        "[measure] MQTT QoS 1 -> same connection QoS 1: {:.0} msg/s",
        rate(N / 4, started)
    );

    let started = std::time::Instant::now();
    nats_peer
        .publish_all((0..N / 4).map(|i| ("down.x".to_string(), seq_payload("down", i, 64))))
        .await;
    collect_stream(
        &mut mqtt_sub.inbox,
        "down",
        N / 4,
        Vec::new(),
        secs(300),
        millis(0),
    )
    .await;
    eprintln!(
        "[measure] NATS -> MQTT QoS 1: {:.0} msg/s",
        rate(N / 4, started)
    );
    assert!(run.ferry.terminate().await.success());
    for line in (run.ferry.lines().iter()).filter(|l| l.contains("session checkpoints")) {
        eprintln!("[measure] {line}");
    }
}

/// A broker that accepts each connection and drops it right after its CONNACK (a bad ACL, a
/// crash loop, a load balancer without a backend) sees ferry's reconnects paced by the
/// backoff: the delay keeps growing, because no connection stays up for `stable_after`, and
/// each reconnect is in ferry's log. Over 5 s with `initial_delay: 100ms` and `max_delay: 1s`
/// the delays add up to at most ~10 attempts (before the fix, a connect interrupted by a route
/// confirming a message retried at once: up to ~95 connections a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_dropping_every_connection_sees_reconnects_paced_by_the_backoff() {
    const WATCHED: Duration = secs(5);
    let mut run = Scenario::new()
        .mosquitto_with("direct", unlimited())
        .keys("direct", "client_id: ferry-direct")
        .connection("flaky", "direct")
        .through_proxy("flaky")
        .keys("flaky", "client_id: ferry-flaky")
        .connection_settings(
            "flaky",
            "reconnect: { initial_delay: 100ms, max_delay: 1s, connect_timeout: 2s, stable_after: 30s }",
        )
        .routes(
            r#"
  - name: relay
    from: { connection: flaky, topic: "in/#", qos: 1 }
    to: { connection: direct, topic: "out/x", qos: 1 }
"#,
        )
        .start()
        .await;
    let mark = run.ferry.mark();
    let proxy = run.proxy("flaky");
    proxy.drop_after_first_reply();
    let before = proxy.accepted();
    proxy.sever();
    tokio::time::sleep(WATCHED).await;
    let attempts = proxy.accepted() - before;
    let downs = run.ferry.lines()[mark..]
        .iter()
        .filter(|l| l.contains("connection down") && l.contains("connection=flaky"))
        .count();
    eprintln!(
        "[backoff] {attempts} connection attempts in {WATCHED:?}; ferry logged the connection \
         down {downs} time(s)"
    );
    assert!(
        (3..=12).contains(&attempts),
        "{attempts} connection attempts in {WATCHED:?}: not paced by the backoff \
         (100ms doubling to 1s allows ~10)"
    );
    // Each connection came up (CONNACK) and went down: each drop is in the log.
    assert!(
        downs + 1 >= attempts,
        "{attempts} attempts, but ferry logged only {downs} drops"
    );
    assert!(run.ferry.terminate().await.success());
}
