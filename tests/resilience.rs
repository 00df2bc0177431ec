//! Failures and pressure: broker crashes and restarts, a sink slower than its source
//! (`when_full: block | drop_newest | drop_oldest`, with ferry's memory bounded), and a
//! graceful SIGTERM that delivers what is already queued.
//!
//! A slow sink is made for real: the sink's broker is paused with SIGSTOP, so ferry's writes
//! fill the socket buffers and then block, and resumed with SIGCONT.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::*;

/// mosquitto `mq` and nats-server `nc`, a route each way: `up` (MQTT `stream/#` to NATS, its
/// queue as given) and `down` (NATS `cmd.>` to MQTT).
fn up_and_down(mosquitto: MosquittoOptions, queue: &str) -> Scenario {
    Scenario::new()
        .settings("shutdown_timeout: 30s\n")
        .mosquitto_with("mq", mosquitto)
        .keys("mq", "client_id: ferry-resilience")
        .nats("nc")
        .routes(&format!(
            r#"
  - name: up
    from: {{ connection: mq, topic: "stream/#", qos: 1 }}
    to: {{ connection: nc, subject: auto }}
    queue: {queue}
  - name: down
    from: {{ connection: nc, subject: "cmd.>" }}
    to: {{ connection: mq, topic: auto, qos: 1 }}
"#
        ))
}

/// Publishes `stream/probe` on MQTT until one comes out on NATS as `stream.probe` (a route
/// whose source subscription is live again), dropping everything else that arrives meanwhile.
async fn mqtt_probe_until_through(publisher: &MqttPeer, inbox: &mut Inbox) {
    let deadline = tokio::time::Instant::now() + secs(60);
    loop {
        publisher.publish("stream/probe", "probe", 1, false).await;
        while let Some(m) = inbox.recv(millis(250)).await {
            if m.topic == "stream.probe" {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no MQTT→NATS probe came through within 60s"
        );
    }
}

/// Publishes `cmd.probe` on NATS until one comes out on MQTT as `cmd/probe`.
async fn nats_probe_until_through(publisher: &NatsPeer, inbox: &mut Inbox) {
    let deadline = tokio::time::Instant::now() + secs(60);
    loop {
        publisher.publish("cmd.probe", "probe").await;
        publisher.flush().await;
        while let Some(m) = inbox.recv(millis(250)).await {
            if m.topic == "cmd/probe" {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no NATS→MQTT probe came through within 60s"
        );
    }
}

/// Collects until `stream`'s message `count - 1` arrives and checks that `stream` arrived
/// complete, once each, in order (messages of other streams and probes are ignored).
async fn expect_stream(inbox: &mut Inbox, stream: &str, count: usize) {
    let got = inbox.collect_until_seq(stream, count - 1, secs(60)).await;
    let mine: Vec<Msg> = got
        .into_iter()
        .filter(|m| parse_seq(&m.payload).is_some_and(|(s, _)| s == stream))
        .collect();
    assert_sequences(&mine, &[stream], count);
}

/// Publishes `count` messages of stream `name` on `stream/<name>` (QoS 1) and expects every
/// one of them on NATS, once and in order.
async fn relay_stream(publisher: &MqttPeer, inbox: &mut Inbox, name: &str, count: usize) {
    let topic = format!("stream/{name}");
    publisher
        .publish_all(
            (0..count).map(|i| (topic.clone(), seq_payload(name, i, 0))),
            1,
        )
        .await;
    expect_stream(inbox, name, count).await;
}

/// Publishes `stream:0..` on `stream/during` every 2 ms until stopped: traffic in flight while
/// a broker dies.
fn background_publisher(
    publisher: Arc<MqttPeer>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let _ = publisher
                .client
                .publish(
                    "stream/during",
                    seq_payload("during", n, 0),
                    mqtt5::PublishOptions::new(mqtt5::QoS::AtLeastOnce),
                )
                .await;
            n += 1;
            tokio::time::sleep(millis(2)).await;
        }
        n
    })
}

/// Relays a first stream of 100 (`before`), then kills `broker` (SIGKILL) while a
/// [`background_publisher`] publishes, and waits until ferry saw the connection go down.
/// Returns ferry's log mark from before the kill, and the publisher's stop flag and task.
async fn kill_mid_stream(
    run: &mut Running,
    broker: &str,
    publisher: &Arc<MqttPeer>,
    inbox: &mut Inbox,
) -> (usize, Arc<AtomicBool>, tokio::task::JoinHandle<usize>) {
    relay_stream(publisher, inbox, "before", 100).await;
    let stop = Arc::new(AtomicBool::new(false));
    let during = background_publisher(publisher.clone(), stop.clone());
    let mark = run.ferry.mark();
    run.brokers.broker_mut(broker).kill9();
    run.ferry
        .wait_for_line_since(mark, "connection down", secs(30))
        .await;
    (mark, stop, during)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_mid_stream_and_restarted_traffic_resumes() {
    let mut run = up_and_down(MosquittoOptions::default(), "{ when_full: block }")
        .start()
        .await;

    let (_subscriber, mut inbox) = run.nats_subscriber("nc", "stream.>").await;
    let publisher = Arc::new(run.mqtt_peer("mq").await);
    let (mark, stop, during) = kill_mid_stream(&mut run, "nc", &publisher, &mut inbox).await;
    let ferry = &mut run.ferry;
    run.brokers.broker_mut("nc").restart();
    ferry
        .wait_for_line_since(mark, "reconnected", secs(60))
        .await;
    stop.store(true, Ordering::Relaxed);
    let sent_during = during.await.unwrap();
    eprintln!("[test] {sent_during} messages published while nats-server was down or coming back");
    assert!(ferry.is_running());

    // A fresh subscriber: the old one's subscription died with the server.
    let (_subscriber, mut inbox) = run.nats_subscriber("nc", "stream.>").await;
    mqtt_probe_until_through(&publisher, &mut inbox).await;
    relay_stream(&publisher, &mut inbox, "after", 200).await;

    assert!(
        run.ferry.terminate().await.success(),
        "ferry did not exit 0 after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_killed_and_restarted_ferry_resubscribes_and_publishes_again() {
    let mut run = up_and_down(MosquittoOptions::default(), "{ when_full: block }")
        .start()
        .await;

    let (nats_peer, mut from_mqtt) = run.nats_subscriber("nc", "stream.>").await;
    let publisher = Arc::new(run.mqtt_peer("mq").await);
    let (mark, stop, during) = kill_mid_stream(&mut run, "mq", &publisher, &mut from_mqtt).await;
    let ferry = &mut run.ferry;
    stop.store(true, Ordering::Relaxed);
    during.abort();
    run.brokers.broker_mut("mq").restart();
    ferry
        .wait_for_line_since(mark, "reconnected", secs(60))
        .await;
    assert!(ferry.is_running());

    // The route whose source is MQTT must have subscribed again (clean session: the broker
    // forgot the subscription).
    let publisher = run.mqtt_peer("mq").await;
    mqtt_probe_until_through(&publisher, &mut from_mqtt).await;
    relay_stream(&publisher, &mut from_mqtt, "after", 200).await;

    // And the route whose sink is MQTT publishes again.
    let mut to_mqtt = run.mqtt_subscriber("mq", "cmd/#", 1).await;
    nats_probe_until_through(&nats_peer, &mut to_mqtt.inbox).await;
    nats_peer
        .publish_all((0..200).map(|i| ("cmd.after".to_string(), seq_payload("cmd", i, 0))))
        .await;
    expect_stream(&mut to_mqtt.inbox, "cmd", 200).await;

    assert!(
        run.ferry.terminate().await.success(),
        "ferry did not exit 0 after SIGTERM"
    );
}

// ---------------------------------------------------------------------------------------------
// when_full

/// 32,000 messages of 4 KiB (128 MiB): far more than socket buffers and ferry's queue hold,
/// so while the sink is paused ferry must block or drop, and a ferry that buffered it all
/// would blow the memory limit.
const FLOOD: usize = 32_000;
const FLOOD_SIZE: usize = 4096;
const RSS_LIMIT_KIB: u64 = 100 * 1024;

/// Sets up mosquitto (no per-client queue limit: the broker must not be the one dropping),
/// nats-server, ferry with a 10-message queue and `when_full`, a NATS subscriber, and an MQTT
/// publisher; checks that a first message passes before the test pauses anything.
async fn flood_setup(when_full: &str) -> (Running, NatsPeer, Inbox, MqttPeer) {
    let unlimited = MosquittoOptions {
        max_queued_messages: Some(0),
        ..Default::default()
    };
    let queue = format!("{{ max_messages: 10, when_full: {when_full} }}");
    let run = up_and_down(unlimited, &queue).start().await;
    let (subscriber, mut inbox) = run.nats_subscriber("nc", "stream.>").await;
    let publisher = run.mqtt_peer("mq").await;
    publisher.publish("stream/warm", "warm", 1, false).await;
    assert_eq!(inbox.collect(1, secs(15)).await[0].topic, "stream.warm");
    (run, subscriber, inbox, publisher)
}

fn flood_messages() -> impl Iterator<Item = (String, bytes::Bytes)> {
    (0..FLOOD).map(|i| {
        (
            "stream/flood".to_string(),
            seq_payload("flood", i, FLOOD_SIZE),
        )
    })
}

/// The largest count ferry reported as dropped: `N dropped so far` lines, or `N dropped` /
/// `dropped=N` / `dropped: N` in its exit summary.
fn max_dropped(lines: &[String]) -> u64 {
    let mut max = 0;
    for line in lines {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .collect();
        for (i, w) in words.iter().enumerate() {
            if *w == "dropped"
                && i > 0
                && let Ok(n) = words[i - 1].parse::<u64>()
            {
                max = max.max(n);
            }
            for prefix in ["dropped=", "dropped:"] {
                if let Some(n) = w.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok()) {
                    max = max.max(n);
                }
            }
        }
    }
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_full_block_loses_nothing_and_memory_stays_bounded() {
    let (mut run, _sub, mut inbox, publisher) = flood_setup("block").await;
    let (nats, ferry) = (run.brokers.nats("nc"), &mut run.ferry);

    nats.pause();
    let rss = RssSampler::start(ferry.pid());
    publisher.publish_all(flood_messages(), 1).await;
    // Every message is now either inside ferry or queued for it at the broker.
    nats.resume();
    let got = inbox.collect(FLOOD, secs(180)).await;
    let peak = rss.peak_kib();
    assert_sequences(&got, &["flood"], FLOOD);
    assert!(
        peak < RSS_LIMIT_KIB,
        "ferry's RSS peaked at {peak} KiB while its sink was stalled"
    );
    assert!(
        !ferry
            .lines()
            .iter()
            .any(|l| l.contains("dropping messages")),
        "a `when_full: block` route dropped messages"
    );
    assert!(
        ferry.terminate().await.success(),
        "ferry did not exit 0 after SIGTERM"
    );
}

/// Pauses the sink's nats-server, floods the route (sampling ferry's memory from then on) until
/// ferry says it is dropping messages, and resumes the server.
async fn flood_until_dropping(
    ferry: &mut Ferry,
    nats: &NatsServer,
    publisher: &MqttPeer,
) -> RssSampler {
    let mark = ferry.mark();
    nats.pause();
    let rss = RssSampler::start(ferry.pid());
    publisher.publish_all(flood_messages(), 1).await;
    ferry
        .wait_for_line_since(mark, "dropping messages", secs(60))
        .await;
    nats.resume();
    rss
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_full_drop_newest_counts_what_it_drops_and_memory_stays_bounded() {
    let (mut run, _sub, mut inbox, publisher) = flood_setup("drop_newest").await;
    let (nats, ferry) = (run.brokers.nats("nc"), &mut run.ferry);

    let rss = flood_until_dropping(ferry, nats, &publisher).await;

    // drop_newest may also drop a probe, so probe until one comes through: then every flood
    // message before it has been delivered or dropped.
    let mut got = Vec::new();
    let mut probes = 0;
    let deadline = tokio::time::Instant::now() + secs(120);
    'probing: loop {
        publisher
            .publish("stream/probe", format!("probe:{probes}:"), 1, false)
            .await;
        probes += 1;
        while let Some(m) = inbox.recv(millis(300)).await {
            let is_probe = m.topic == "stream.probe";
            got.push(m);
            if is_probe {
                break 'probing;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no probe came through within 120s"
        );
    }
    let peak = rss.peak_kib();
    assert!(
        ferry.terminate().await.success(),
        "ferry did not exit 0 after SIGTERM"
    );

    // Arrived + dropped must account for every message sent after the pause. ferry's final
    // count is in its log now; its last deliveries may still be on their way to us.
    let sent = (FLOOD + probes) as u64;
    let dropped = max_dropped(&ferry.lines());
    let deadline = tokio::time::Instant::now() + secs(30);
    while (got.len() as u64) + dropped < sent && tokio::time::Instant::now() < deadline {
        if let Some(m) = inbox.recv(millis(200)).await {
            got.push(m);
        }
    }
    let arrived = got.len() as u64;
    assert_eq!(
        arrived + dropped,
        sent,
        "{arrived} arrived + {dropped} reported dropped != {sent} sent (flood {FLOOD} + {probes} probes)"
    );
    assert!(
        dropped > 0,
        "nothing was dropped: the sink was never slower than the source"
    );

    let flood: Vec<usize> = got
        .iter()
        .filter(|m| m.topic == "stream.flood")
        .map(|m| parse_seq(&m.payload).unwrap().1)
        .collect();
    assert!(
        flood.windows(2).all(|w| w[0] < w[1]),
        "flood messages duplicated or out of order"
    );
    assert_eq!(
        flood.first(),
        Some(&0),
        "drop_newest dropped the oldest message, seq 0"
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "ferry's RSS peaked at {peak} KiB while its sink was stalled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_full_drop_oldest_keeps_the_newest_and_memory_stays_bounded() {
    let (mut run, _sub, mut inbox, publisher) = flood_setup("drop_oldest").await;
    let (nats, ferry) = (run.brokers.nats("nc"), &mut run.ferry);

    let rss = flood_until_dropping(ferry, nats, &publisher).await;

    // drop_oldest never refuses the newest message, so a single probe always comes through,
    // after every flood message that was not dropped.
    publisher.publish("stream/probe", "probe", 1, false).await;
    let got = inbox.collect_until_topic("stream.probe", secs(120)).await;
    let peak = rss.peak_kib();
    assert!(
        ferry.terminate().await.success(),
        "ferry did not exit 0 after SIGTERM"
    );

    let flood: Vec<usize> = got
        .iter()
        .filter(|m| m.topic == "stream.flood")
        .map(|m| parse_seq(&m.payload).unwrap().1)
        .collect();
    let sent = (FLOOD + 1) as u64;
    let arrived = got.len() as u64;
    let dropped = max_dropped(&ferry.lines());
    assert_eq!(
        arrived + dropped,
        sent,
        "{arrived} arrived + {dropped} reported dropped != {sent} sent"
    );
    assert!(
        dropped > 0,
        "nothing was dropped: the sink was never slower than the source"
    );
    assert!(
        flood.windows(2).all(|w| w[0] < w[1]),
        "flood messages duplicated or out of order"
    );
    assert_eq!(
        flood.last(),
        Some(&(FLOOD - 1)),
        "drop_oldest dropped the newest message"
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "ferry's RSS peaked at {peak} KiB while its sink was stalled"
    );
}

// ---------------------------------------------------------------------------------------------
// SIGTERM

/// Messages ferry already holds when SIGTERM arrives are delivered before it exits 0. The MQTT
/// sink's broker is paused so they pile up in ferry's queue; a probe over a second route on
/// the same NATS connection proves ferry has read them all before the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_queued_messages_and_exits_0() {
    let mut run = Scenario::new()
        .settings("shutdown_timeout: 30s\n")
        .nats("nc")
        .mosquitto_with(
            "slow",
            MosquittoOptions {
                max_queued_messages: Some(0),
                ..Default::default()
            },
        )
        .keys("slow", "client_id: ferry-slow")
        .mosquitto("fast")
        .keys("fast", "client_id: ferry-fast")
        .routes(
            r#"
  - name: work
    from: { connection: nc, subject: "work.>" }
    to: { connection: slow, topic: auto, qos: 1 }
    queue: { max_messages: 10000, when_full: block }
  - name: probe
    from: { connection: nc, subject: "probe.>" }
    to: { connection: fast, topic: auto, qos: 1 }
"#,
        )
        .start()
        .await;

    let mut work_sub = run.mqtt_subscriber("slow", "work/#", 1).await;
    let mut probe_sub = run.mqtt_subscriber("fast", "probe/#", 1).await;
    let publisher = run.nats_peer("nc").await;
    let (slow, ferry) = (run.brokers.mosquitto("slow"), &mut run.ferry);
    publisher.publish("work.warm", "warm").await;
    assert_eq!(
        work_sub.inbox.collect(1, secs(15)).await[0].topic,
        "work/warm"
    );

    const N: usize = 500;
    slow.pause();
    publisher
        .publish_all((0..N).map(|i| ("work.items".to_string(), seq_payload("work", i, 100))))
        .await;
    publisher.publish("probe.go", "go").await;
    publisher.flush().await;
    probe_sub
        .inbox
        .collect_until_topic("probe/go", secs(15))
        .await;

    // ferry has read all N; most of them wait in its queue for the paused broker.
    ferry.signal("TERM");
    slow.resume();
    let status = ferry.wait_exit(secs(60)).await;
    assert!(status.success(), "ferry exited with {status} after SIGTERM");
    let got = work_sub.inbox.collect(N, secs(30)).await;
    assert_sequences(&got, &["work"], N);
}
