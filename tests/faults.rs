//! The fault tests: ferry relays numbered MQTT QoS 1 (or JetStream) messages into
//! a JetStream stream while the test breaks something — ferry killed with `kill -9`, brokers
//! restarted, NATS down for 30 s with a spool, a TCP connection that stops forwarding without
//! closing, SIGTERM under load, one of two load-sharing instances killed — and then reads the
//! whole stream back and counts what arrived.
//!
//! Each test prints one line of counts per phase, `sent=… received=… duplicates=… lost=…
//! reordered=…` (run `cargo test --test faults -- --nocapture` to see them), and asserts what
//! ferry promises there: at-least-once means `lost=0` always; duplicates are allowed after a
//! crash (counted and reported) and asserted to be zero only where ferry promises it (normal
//! running, and re-sends into JetStream, which `Nats-Msg-Id` deduplicates).
//!
//! The sink is a JetStream stream because it is the one witness that survives everything the
//! tests do: a core NATS subscriber misses what is published while it reconnects, a stream
//! keeps it, and the test reads it back after the fact. Brokers are real (mosquitto,
//! nats-server) on free loopback ports; ferry runs with short timeouts (keep-alive 2 s, probes
//! every 1 s with a 2 s timeout, reconnects within 1 s) so that each test takes seconds.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;
use tempfile::TempDir;

/// The stream that captures what ferry publishes (`sink.>`).
const STREAM: &str = "LOAD";
/// The subject ferry's JetStream sink publishes to.
const SINK_SUBJECT: &str = "sink.load";
/// The name [`seq_payload`] gives the load: payloads are `load:SEQ:xxx…`.
const LOAD: &str = "load";
/// Payload size of each message, in bytes.
const PAYLOAD: usize = 128;

/// ferry's MQTT keep-alive in these tests.
const KEEP_ALIVE: Duration = secs(2);
/// ferry's liveness probe: interval and timeout.
const PROBE_INTERVAL: Duration = secs(1);
const PROBE_TIMEOUT: Duration = secs(2);

// ---------------------------------------------------------------------------------------------
// the setup

/// What one ferry instance of a test looks like; [`Relay::yaml`] writes its bridges.yaml.
#[derive(Clone)]
struct Relay {
    mqtt_url: String,
    nats_url: String,
    /// Also the MQTT client id's suffix and `loop_guard.instance`: it marks what this
    /// instance published (its loop marker, `Ferry-Via`), which tells two instances' work apart.
    instance: String,
    /// ferry's state directory (spool, ...), kept across restarts of this instance.
    state_dir: std::path::PathBuf,
    /// `share:` group of the MQTT source.
    share: Option<String>,
    spool: bool,
    shutdown_timeout: Duration,
    /// The route's source: MQTT `load/#` at QoS 1 (None), or this JetStream source.
    jetstream_source: Option<&'static str>,
}

impl Relay {
    fn new(mqtt_url: &str, nats_url: &str, instance: &str, state_dir: &Path) -> Relay {
        Relay {
            mqtt_url: mqtt_url.to_string(),
            nats_url: nats_url.to_string(),
            instance: instance.to_string(),
            state_dir: state_dir.to_path_buf(),
            share: None,
            spool: false,
            shutdown_timeout: secs(10),
            jetstream_source: None,
        }
    }

    /// bridges.yaml: one route, MQTT QoS 1 (persistent session) or JetStream → the JetStream
    /// stream, `delivery: at-least-once`, every timeout short.
    fn yaml(&self) -> String {
        let share = match &self.share {
            Some(group) => format!(", share: {group}"),
            None => String::new(),
        };
        let from = match self.jetstream_source {
            None => format!("{{ connection: mq, topic: \"load/#\", qos: 1{share} }}"),
            Some(source) => source.to_string(),
        };
        let spool = if self.spool {
            format!(
                "    spool: {{ dir: \"{}\", max_bytes: 256MiB }}\n",
                self.state_dir.join("spool").display()
            )
        } else {
            String::new()
        };
        // Only a route's own connections: an unused one would only add noise to the log.
        let mqtt = if self.jetstream_source.is_none() {
            format!(
                r#"
  mq:
    mqtt:
      url: "{mqtt}"
      client_id: ferry-{instance}
      clean_start: false
      session_expiry: 1h
      keep_alive: {keep_alive}s
      probe: {{ interval: {probe_interval}s, timeout: {probe_timeout}s }}
    reconnect: {{ initial_delay: 50ms, max_delay: 1s, connect_timeout: 2s, stable_after: 5s }}"#,
                mqtt = self.mqtt_url,
                instance = self.instance,
                keep_alive = KEEP_ALIVE.as_secs(),
                probe_interval = PROBE_INTERVAL.as_secs(),
                probe_timeout = PROBE_TIMEOUT.as_secs(),
            )
        } else {
            String::new()
        };
        format!(
            r#"
shutdown_timeout: {shutdown}ms
state_dir: "{state_dir}"
loop_guard: {{ instance: {instance} }}
connections:{mqtt}
  nc:
    nats:
      url: "{nats}"
      ping_interval: 1s
      probe: {{ interval: {probe_interval}s, timeout: {probe_timeout}s }}
    reconnect: {{ initial_delay: 50ms, max_delay: 1s, connect_timeout: 2s, stable_after: 5s }}
routes:
  - name: load
    from: {from}
    to: {{ connection: nc, subject: "{SINK_SUBJECT}", jetstream: true }}
    delivery: at-least-once
{spool}"#,
            shutdown = self.shutdown_timeout.as_millis(),
            state_dir = self.state_dir.display(),
            instance = self.instance,
            nats = self.nats_url,
            probe_interval = PROBE_INTERVAL.as_secs(),
            probe_timeout = PROBE_TIMEOUT.as_secs(),
        )
    }

    /// Starts this instance and waits for `ferry ready`.
    async fn start(&self) -> Ferry {
        let mut ferry = Ferry::start(&self.yaml());
        ferry.wait_ready().await;
        ferry
    }
}

/// mosquitto, a JetStream nats-server, the stream that captures ferry's output, and the test's
/// own NATS client that reads it.
struct Brokers {
    mosquitto: Mosquitto,
    nats: NatsServer,
    observer: NatsPeer,
}

impl Brokers {
    /// mosquitto without a per-client queue limit (its default, 1000, drops QoS 1 messages
    /// queued for a slow or absent client: the broker must not be the one losing them).
    async fn start(mosquitto: MosquittoOptions) -> Brokers {
        let mosquitto = Mosquitto::start(MosquittoOptions {
            max_queued_messages: Some(0),
            ..mosquitto
        });
        let nats = NatsServer::start(NatsOptions {
            jetstream: true,
            ..Default::default()
        });
        let observer = NatsPeer::connect(&nats.url()).await;
        observer.create_stream(STREAM, &["sink.>"]).await;
        Brokers {
            mosquitto,
            nats,
            observer,
        }
    }

    /// Keeps both brokers' logs (their own directories go with the test) in a directory that
    /// stays, prints where, and prints the end of each: who disconnected whom, and why.
    fn print_logs(&self) {
        let kept = tempfile::Builder::new()
            .prefix("ferry-faults-logs-")
            .tempdir()
            .unwrap()
            .keep();
        for (name, log) in [
            ("mosquitto", self.mosquitto.log()),
            ("nats-server", self.nats.log()),
        ] {
            std::fs::write(kept.join(format!("{name}.log")), &log).unwrap();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- the last lines of {name}'s log (all of it: {}):\n{}",
                kept.join(format!("{name}.log")).display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }

    fn relay(&self, instance: &str, state_dir: &Path) -> Relay {
        Relay::new(&self.mosquitto.url(), &self.nats.url(), instance, state_dir)
    }
}

fn state_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("ferry-faults-state-")
        .tempdir()
        .unwrap()
}

/// Publishes `load:SEQ` for every SEQ in `seqs` at QoS 1 on `load/data`, pipelined, and
/// returns once mosquitto acknowledged every one.
async fn publish_load(publisher: &MqttPeer, seqs: std::ops::Range<usize>) {
    publisher
        .publish_all(
            seqs.map(|i| ("load/data".to_string(), seq_payload(LOAD, i, PAYLOAD))),
            1,
        )
        .await;
}

/// [`publish_load`] in the background, on a publisher of its own.
async fn publish_load_in_background(
    mqtt_url: &str,
    seqs: std::ops::Range<usize>,
) -> tokio::task::JoinHandle<()> {
    let publisher = MqttPeer::connect(mqtt_url).await;
    tokio::spawn(async move { publish_load(&publisher, seqs).await })
}

/// Reads the stream until every one of `0..sent` is in it (re-reading when it grows, as
/// redeliveries and late messages come in); gives up after `timeout`, or once the stream
/// has not grown for [`GIVE_UP_QUIET`] while messages are missing. Prints the tally as
/// `label: sent=… …` (and, when some are lost, the brokers' logs) and returns it with the
/// messages.
async fn collect(
    brokers: &Brokers,
    sent: usize,
    timeout: Duration,
    label: &str,
) -> (Tally, Vec<Msg>) {
    let observer = &brokers.observer;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut read_len = 0;
    let mut last_growth = (0, tokio::time::Instant::now());
    loop {
        let len = observer.stream_len(STREAM).await.unwrap_or(0) as usize;
        let now = tokio::time::Instant::now();
        if len != last_growth.0 {
            last_growth = (len, now);
        }
        let give_up = now >= deadline || now - last_growth.1 >= GIVE_UP_QUIET;
        if (len >= sent && len > read_len) || give_up {
            let msgs = observer.read_stream(STREAM).await;
            read_len = msgs.len();
            let tally = Tally::of_msgs(sent, LOAD, &msgs);
            if tally.lost == 0 || give_up {
                let tally = tally.report(label);
                if tally.lost > 0 {
                    brokers.print_logs();
                }
                println!(
                    "{label}: collected in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                return (tally, msgs);
            }
        }
        tokio::time::sleep(millis(50)).await;
    }
}

/// How long [`collect`] waits for a stream that stopped growing while messages are missing:
/// well beyond every retry and redelivery delay of these tests (reconnects within 1 s,
/// JetStream `ack_wait` 3 s).
const GIVE_UP_QUIET: Duration = secs(20);

/// How many of `msgs` each ferry instance published (its loop marker, `Ferry-Via`).
fn per_instance(msgs: &[Msg]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for m in msgs {
        let instance = m.ferry_instance().unwrap_or("(none)").to_string();
        *counts.entry(instance).or_default() += 1;
    }
    counts
}

/// `kill -9` and waits until the process is gone.
async fn kill9(ferry: &mut Ferry) {
    ferry.signal("KILL");
    ferry.wait_exit(secs(10)).await;
}

// ---------------------------------------------------------------------------------------------
// the harness's own fault: the proxy

/// The proxy that test 4 relies on really stalls: bytes stop in both directions while the
/// sockets stay open, new connections are held (`stall`) or let through (`stall_existing`),
/// and everything flows again on `resume`; `sever` closes what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_stalls_without_closing_and_resumes() {
    let nats = NatsServer::start(NatsOptions::default());
    let proxy = TcpProxy::start(nats.port).await;
    let publisher = NatsPeer::connect(&nats.url()).await;
    let through = NatsPeer::connect(&proxy.nats_url()).await;
    let mut inbox = through.subscribe("p.>").await;
    assert_eq!(proxy.accepted(), 1);

    publisher.publish("p.one", "1").await;
    assert_eq!(inbox.collect(1, secs(5)).await[0].text(), "1");

    proxy.stall();
    publisher.publish("p.two", "2").await;
    publisher.flush().await;
    let mut held = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    inbox.expect_nothing(secs(1)).await;
    assert_eq!(
        server_greeting(&mut held).await,
        None,
        "a new connection reached the server through a stalled proxy"
    );
    assert_eq!(proxy.open(), 2, "a stalled proxy keeps its sockets open");

    proxy.resume();
    assert_eq!(inbox.collect(1, secs(5)).await[0].text(), "2");
    assert!(
        server_greeting(&mut held).await.is_some(),
        "the held connection did not reach the server after resume"
    );

    proxy.stall_existing();
    publisher.publish("p.three", "3").await;
    publisher.flush().await;
    let mut fresh = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    assert!(
        server_greeting(&mut fresh).await.is_some(),
        "stall_existing held a new connection"
    );
    inbox.expect_nothing(secs(1)).await;
    proxy.resume();
    assert_eq!(inbox.collect(1, secs(5)).await[0].text(), "3");
    drop((held, fresh));

    proxy.sever();
    let deadline = Instant::now() + secs(5);
    // The old connection is closed; the client noticed and came back through the proxy.
    while proxy.open() != 1 || proxy.accepted() < 4 {
        assert!(
            Instant::now() < deadline,
            "after sever: {} open, {} accepted (the client should have reconnected once)",
            proxy.open(),
            proxy.accepted()
        );
        tokio::time::sleep(millis(20)).await;
    }
    through.sync().await;
    publisher.publish("p.four", "4").await;
    inbox
        .collect_until("message 4", |m| m.text() == "4", secs(5))
        .await;
}

/// The first bytes nats-server sends on a new connection (its `INFO`), or None if nothing
/// comes within a second.
async fn server_greeting(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(secs(1), stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(buf[..n].to_vec()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. kill -9 under load

/// 50,000 QoS 1 messages MQTT → JetStream; ferry is killed with `kill -9` after a random
/// number of them reached the stream and started again with the same config (same client id,
/// same persistent session, same state directory). mosquitto kept every message ferry had not
/// acknowledged (PUBACK only after JetStream's PubAck), so all of them end up in the stream.
/// Those ferry had stored but not yet acknowledged come again: duplicates, counted and
/// reported, allowed by at-least-once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing() {
    const N: usize = 50_000;
    let brokers = Brokers::start(MosquittoOptions::default()).await;
    let state = state_dir();
    let relay = brokers.relay("kill9", state.path());
    let mut ferry = relay.start().await;

    let started = Instant::now();
    let publisher = publish_load_in_background(&brokers.mosquitto.url(), 0..N).await;
    let kill_at = fastrand::u64(5_000..40_000);
    let reached = brokers
        .observer
        .wait_stream_len(STREAM, kill_at, secs(120))
        .await;
    kill9(&mut ferry).await;
    println!(
        "kill -9 of ferry after {reached} messages reached the stream (aimed at {kill_at}), \
         {:.1}s in",
        started.elapsed().as_secs_f64()
    );

    let mut ferry = relay.start().await;
    publisher.await.unwrap();
    let (tally, _) = collect(&brokers, N, secs(120), "kill -9 under load").await;
    tally.assert_none_lost("kill -9 under load");
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    ferry.terminate().await;
}

// ---------------------------------------------------------------------------------------------
// 2. broker restarts

/// mosquitto (persistence on) is restarted while ferry holds a backlog, then nats-server
/// (JetStream stored on disk) is restarted while ferry relays: ferry resumes its persistent
/// session, gets back what it had not acknowledged, re-publishes what JetStream had not
/// confirmed, and nothing is lost.
///
/// For mosquitto's restart the backlog is made sure of: nats-server is frozen (SIGSTOP) while
/// the batch is published, so ferry holds a window of unacknowledged messages and mosquitto
/// queues the rest in ferry's session; both cross the restart. (The publisher is connected to
/// mosquitto too, so it publishes before the restart, not across it.) For nats-server's,
/// ferry is relaying a batch that is still being published when the server stops.
///
/// Both brokers are stopped with SIGTERM, as a service manager restarts them: mosquitto only
/// writes its persistence file on the way out, and nats-server may still hold the last
/// milliseconds of stored messages in its write buffer — a `kill -9` would make the brokers,
/// not ferry, lose what they had acknowledged.
///
/// Usually `duplicates=1000` (the unacknowledged window crossing mosquitto's restart) and
/// `lost=0`. (Before the MQTT event loop kept polling while its route was full, a JetStream
/// publish timing out after nats-server's restart could cost the MQTT connection its
/// keep-alive, and the redeliveries cycled: `sent=30000 received=109579 duplicates=81825
/// lost=2246` after 145 s under CPU contention.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarts_mid_stream_lose_nothing() {
    const BATCH: usize = 15_000;
    let mut brokers = Brokers::start(MosquittoOptions {
        persistence: true,
        ..Default::default()
    })
    .await;
    let state = state_dir();
    let relay = brokers.relay("restarts", state.path());
    let mut ferry = relay.start().await;
    let started = Instant::now();

    let publisher = MqttPeer::connect(&brokers.mosquitto.url()).await;
    brokers.nats.pause();
    publish_load(&publisher, 0..BATCH).await;
    drop(publisher);
    let mark = ferry.mark();
    brokers.mosquitto.stop();
    brokers.mosquitto.start_again();
    brokers.nats.resume();
    println!(
        "mosquitto restarted holding ferry's backlog of {BATCH}, {:.1}s in",
        started.elapsed().as_secs_f64()
    );
    ferry
        .wait_for_match_since(
            mark,
            "the MQTT connection's reconnect",
            |l| l.contains("reconnected") && l.contains("connection=mq"),
            secs(30),
        )
        .await;

    let publisher = publish_load_in_background(&brokers.mosquitto.url(), BATCH..2 * BATCH).await;
    let before = brokers
        .observer
        .wait_stream_len(STREAM, (BATCH + BATCH / 5) as u64, secs(60))
        .await;
    brokers.nats.stop();
    brokers.nats.start_again();
    println!(
        "nats-server restarted with {before} of {} messages in the stream, {:.1}s in",
        2 * BATCH,
        started.elapsed().as_secs_f64()
    );
    publisher.await.unwrap();

    let (tally, _) = collect(&brokers, 2 * BATCH, secs(120), "broker restarts").await;
    tally.assert_none_lost("broker restarts");
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    ferry.terminate().await;
}

// ---------------------------------------------------------------------------------------------
// 3. NATS down for 30 s, with a spool

/// nats-server is down for 30 s while MQTT QoS 1 messages keep coming. With a spool, ferry
/// keeps taking them — it acknowledges each one to mosquitto once it is on disk — so
/// mosquitto's message store empties while NATS is still down (read from mosquitto's own
/// `$SYS/broker/store/messages/count`: without the spool, ferry would stop acknowledging and
/// mosquitto would hold every message). When NATS returns, everything arrives, in order, once.
/// ferry's memory stays bounded meanwhile: the backlog is on disk, not in RAM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_30s_with_spool_keeps_taking_mqtt_and_delivers_in_order() {
    const BEFORE: usize = 1_000;
    const DURING: usize = 20_000;
    const AFTER: usize = 1_000;
    const N: usize = BEFORE + DURING + AFTER;
    const OUTAGE: Duration = secs(30);
    const RSS_BOUND_KIB: u64 = 64 * 1024;
    const MAX_IN_FLIGHT: u64 = 3;
    let mut brokers = Brokers::start(MosquittoOptions {
        sys_interval: Some(1),
        ..Default::default()
    })
    .await;
    let state = state_dir();
    let mut relay = brokers.relay("spool", state.path());
    relay.spool = true;
    let mut ferry = relay.start().await;
    let publisher = MqttPeer::connect(&brokers.mosquitto.url()).await;
    let mut sys = MqttPeer::connect(&brokers.mosquitto.url()).await;
    sys.subscribe(STORE_COUNT, 0).await;
    sys.subscribe(RETAINED_COUNT, 0).await;
    let sys = &mut sys.inbox;

    publish_load(&publisher, 0..BEFORE).await;
    brokers
        .observer
        .wait_stream_len(STREAM, BEFORE as u64, secs(30))
        .await;
    // In normal running ferry acknowledges what it relayed: mosquitto holds (almost) nothing.
    // A probe of ferry's own may be in flight.
    unacked_at_most(sys, MAX_IN_FLIGHT, secs(10)).await;

    let mark = ferry.mark();
    brokers.nats.stop();
    let down_at = Instant::now();
    ferry
        .wait_for_match_since(
            mark,
            "the NATS connection going down",
            |l| l.contains("connection down") && l.contains("connection=nc"),
            secs(10),
        )
        .await;
    let rss = RssSampler::start(ferry.pid());

    publish_load(&publisher, BEFORE..BEFORE + DURING).await;
    let published_in = down_at.elapsed();
    // ferry took (spooled and acknowledged) all of them while NATS is still down.
    let held = unacked_at_most(sys, MAX_IN_FLIGHT, OUTAGE.saturating_sub(published_in)).await;
    let spooled_in = down_at.elapsed();
    assert!(
        spooled_in < OUTAGE,
        "the outage is over before ferry took the messages"
    );
    println!(
        "NATS down: {DURING} messages published in {:.1}s, all acknowledged by ferry after \
         {:.1}s (mosquitto holds {held} unacknowledged)",
        published_in.as_secs_f64(),
        spooled_in.as_secs_f64()
    );

    tokio::time::sleep(OUTAGE.saturating_sub(down_at.elapsed())).await;
    let peak = rss.peak_kib();
    drop(rss);
    println!(
        "ferry's peak RSS while NATS was down: {:.1} MiB (bound {} MiB)",
        peak as f64 / 1024.0,
        RSS_BOUND_KIB / 1024
    );
    brokers.nats.start_again();
    publish_load(&publisher, BEFORE + DURING..N).await;

    let (tally, _) = collect(&brokers, N, secs(120), "NATS down 30s, spool").await;
    tally.assert_none_lost("NATS down 30s, spool");
    assert_eq!(
        tally.reordered, 0,
        "{tally}: the spool must deliver in order"
    );
    assert_eq!(
        tally.duplicates, 0,
        "{tally}: nothing crashed, and a re-sent message carries the same Nats-Msg-Id"
    );
    assert!(
        peak < RSS_BOUND_KIB,
        "ferry's RSS reached {peak} KiB while NATS was down (bound {RSS_BOUND_KIB} KiB)"
    );
    ferry.terminate().await;
}

/// mosquitto's statistics on what it holds: every message in its store, and of those the
/// retained ones (its own `$SYS` topics among them).
const STORE_COUNT: &str = "$SYS/broker/store/messages/count";
const RETAINED_COUNT: &str = "$SYS/broker/retained messages/count";

/// Waits until mosquitto holds at most `max` messages besides retained ones — messages queued
/// for clients or in flight to them, unacknowledged — per its `$SYS` statistics, and returns
/// that number; panics after `timeout` with the last one.
async fn unacked_at_most(sys: &mut Inbox, max: u64, timeout: Duration) -> u64 {
    let (mut store, mut retained) = (None, None);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let (Some(store), Some(retained)) = (store, retained) {
            let held: u64 = u64::saturating_sub(store, retained);
            if held <= max {
                return held;
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(m) = sys.recv(left).await else {
            panic!(
                "mosquitto still holds {:?} unacknowledged messages after {timeout:?} (store \
                 {store:?}, retained {retained:?}; waiting for at most {max}): ferry does not \
                 acknowledge them",
                store.zip(retained).map(|(s, r)| s.saturating_sub(r))
            );
        };
        let count = m.text().trim().parse().ok();
        match m.topic.as_str() {
            STORE_COUNT => store = count,
            RETAINED_COUNT => retained = count,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. a stalled TCP connection

/// The longest ferry may take to notice a connection that went silent: its keep-alive (MQTT
/// waits a keep-alive for the PINGRESP) or its probe, plus a margin for a busy machine.
fn stall_detection_bound() -> Duration {
    (KEEP_ALIVE * 2).max(PROBE_INTERVAL + PROBE_TIMEOUT) + secs(4)
}

/// Which connection the proxy sits in front of.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Stalled {
    Mqtt,
    Nats,
}

/// The proxy between ferry and `which` broker stops forwarding without closing anything,
/// while messages keep coming. ferry must log the connection down within its keep-alive /
/// probe timeout (plus a margin), reconnect once the path works again, and lose nothing.
async fn stalled_connection(which: Stalled) {
    const PHASE: usize = 2_000;
    let brokers = Brokers::start(MosquittoOptions::default()).await;
    let state = state_dir();
    let mut relay = brokers.relay(&format!("stall-{which:?}").to_lowercase(), state.path());
    let proxy = match which {
        Stalled::Mqtt => {
            let proxy = TcpProxy::start(brokers.mosquitto.port).await;
            relay.mqtt_url = proxy.mqtt_url();
            proxy
        }
        Stalled::Nats => {
            let proxy = TcpProxy::start(brokers.nats.port).await;
            relay.nats_url = proxy.nats_url();
            proxy
        }
    };
    let connection = match which {
        Stalled::Mqtt => "mq",
        Stalled::Nats => "nc",
    };
    let mut ferry = relay.start().await;
    let publisher = MqttPeer::connect(&brokers.mosquitto.url()).await;
    publish_load(&publisher, 0..PHASE).await;
    brokers
        .observer
        .wait_stream_len(STREAM, PHASE as u64, secs(30))
        .await;

    let mark = ferry.mark();
    let accepted = proxy.accepted();
    proxy.stall();
    let stalled_at = Instant::now();
    publish_load(&publisher, PHASE..2 * PHASE).await;
    ferry
        .wait_for_match_since(
            mark,
            &format!("connection {connection} down"),
            |l| l.contains("connection down") && l.contains(&format!("connection={connection}")),
            secs(30),
        )
        .await;
    let noticed = stalled_at.elapsed();
    println!(
        "stalled {which:?} connection: ferry noticed after {:.1}s (bound {:?})",
        noticed.as_secs_f64(),
        stall_detection_bound()
    );
    assert!(
        noticed <= stall_detection_bound(),
        "ferry took {noticed:?} to notice the stalled {which:?} connection (keep-alive \
         {KEEP_ALIVE:?}, probe every {PROBE_INTERVAL:?} with timeout {PROBE_TIMEOUT:?})"
    );

    match which {
        // A middlebox that lost the flow: the old connection never works again, new ones do.
        Stalled::Mqtt => {
            proxy.sever();
            proxy.resume();
        }
        // A link that comes back: what was held goes through, late.
        Stalled::Nats => proxy.resume(),
    }
    ferry
        .wait_for_match_since(
            mark,
            &format!("connection {connection} back"),
            |l| l.contains("reconnected") && l.contains(&format!("connection={connection}")),
            secs(30),
        )
        .await;
    println!(
        "stalled {which:?} connection: back after {:.1}s, {} new connection(s) through the proxy",
        stalled_at.elapsed().as_secs_f64(),
        proxy.accepted() - accepted
    );
    assert!(
        proxy.accepted() > accepted,
        "ferry did not open a new connection"
    );

    let label = format!("stalled {which:?} connection");
    let (tally, _) = collect(&brokers, 2 * PHASE, secs(60), &label).await;
    tally.assert_none_lost(&label);
    if which == Stalled::Nats {
        // The MQTT side never broke, so nothing came twice from mosquitto; a JetStream publish
        // that was stored but whose PubAck was held is re-sent with the same Nats-Msg-Id.
        assert_eq!(tally.duplicates, 0, "{tally}: JetStream should deduplicate");
    }
    ferry.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_mqtt_connection_is_noticed_and_recovers() {
    stalled_connection(Stalled::Mqtt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_nats_connection_is_noticed_and_recovers() {
    stalled_connection(Stalled::Nats).await;
}

/// The sink stops answering (nats-server frozen with SIGSTOP) for 8 s — four MQTT keep-alives
/// — while ferry relays a backlog. Nothing is wrong with the MQTT connection: ferry must keep
/// it alive (PINGREQ within the keep-alive) while its route waits, so mosquitto does not drop
/// it; nothing is lost, and nothing is delivered twice.
///
/// mosquitto 2.0.11 does not keep to ferry's receive maximum, so it sends more than ferry
/// holds while the route is full. ferry leaves those unacknowledged and, once the route caught
/// up, reconnects on purpose so that mosquitto sends them again (see
/// `connectors::mqtt::event_loop`): those reconnects are allowed, each logged with its reason,
/// and the session survives them. A reconnect for any other reason fails the test, as does a
/// keep-alive timeout at mosquitto.
///
/// Before the fix (the event loop stopped polling once its queue was full, so no PINGREQ went
/// out): mosquitto dropped ferry for a missed keep-alive, `sent=20000 received=30448
/// duplicates=10448 lost=0`. After: `received=20000 duplicates=0`, 1 to 4 deliberate
/// reconnects, no keep-alive timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_frozen_longer_than_keep_alive_keeps_the_mqtt_session() {
    const N: usize = 20_000;
    const FROZEN: Duration = secs(8);
    /// What ferry says when it reconnects so that mosquitto sends the held-back messages again.
    const HELD_BACK: &str = "were left with the broker; reconnecting";
    let brokers = Brokers::start(MosquittoOptions::default()).await;
    let state = state_dir();
    let relay = brokers.relay("frozen", state.path());
    let mut ferry = relay.start().await;
    let publisher = MqttPeer::connect(&brokers.mosquitto.url()).await;
    publish_load(&publisher, 0..N).await;
    brokers
        .observer
        .wait_stream_len(STREAM, 2_000, secs(30))
        .await;
    let mark = ferry.mark();
    brokers.nats.pause();
    tokio::time::sleep(FROZEN).await;
    brokers.nats.resume();

    let (tally, _) = collect(&brokers, N, secs(120), "sink frozen 8s").await;
    let downs: Vec<String> = ferry.lines()[mark..]
        .iter()
        .filter(|l| l.contains("connection down") && l.contains("connection=mq"))
        .cloned()
        .collect();
    let (held_back, other_downs): (Vec<String>, Vec<String>) =
        downs.into_iter().partition(|l| l.contains(HELD_BACK));
    let timeouts: Vec<String> = brokers
        .mosquitto
        .log()
        .lines()
        .filter(|l| l.contains("ferry-frozen") && l.contains("exceeded timeout"))
        .map(str::to_string)
        .collect();
    let log = brokers.mosquitto.log();
    let connects = log.matches("as ferry-frozen").count();
    let broken = log
        .matches("ferry-frozen disconnected: Broken pipe")
        .count();
    println!(
        "sink frozen 8s: ferry reconnected {} time(s) to have held-back messages sent again and \
         {} time(s) for another reason; mosquitto saw {connects} connection(s) from ferry \
         ({broken} ended by a broken pipe) and dropped {} for a missed keep-alive",
        held_back.len(),
        other_downs.len(),
        timeouts.len()
    );
    tally.assert_none_lost("sink frozen 8s");
    assert!(
        other_downs.is_empty() && timeouts.is_empty(),
        "{tally}: the MQTT connection was dropped while only the sink was frozen: ferry \
         {other_downs:?}; mosquitto {timeouts:?}"
    );
    assert_eq!(
        tally.duplicates, 0,
        "{tally}: nothing broke, nothing should come twice"
    );
    // One connection at the start, one per reconnect: none that ferry did not log.
    assert_eq!(
        connects,
        1 + held_back.len(),
        "mosquitto saw connections from ferry that ferry did not log"
    );
    ferry.terminate().await;
}

// ---------------------------------------------------------------------------------------------
// 5. SIGTERM under load

/// SIGTERM while messages flow, twice: once with a healthy sink (ferry delivers what it holds
/// and exits 0), once with nats-server frozen (SIGSTOP), so that what ferry holds cannot be
/// delivered before `shutdown_timeout`: it must leave those unacknowledged at mosquitto, never
/// acknowledge and drop them. Each time a new ferry starts with the same session and picks
/// up the rest; in the end every message is in the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_leaves_undelivered_messages_at_the_source() {
    const N: usize = 20_000;
    let brokers = Brokers::start(MosquittoOptions::default()).await;
    let state = state_dir();
    let mut relay = brokers.relay("sigterm", state.path());
    relay.shutdown_timeout = secs(2);
    let started = Instant::now();
    let mut ferry = relay.start().await;
    let publisher = publish_load_in_background(&brokers.mosquitto.url(), 0..N).await;

    // A healthy sink: what ferry holds is delivered, then it exits 0.
    let at = fastrand::u64(1_000..6_000);
    brokers.observer.wait_stream_len(STREAM, at, secs(60)).await;
    ferry.signal("TERM");
    let status = ferry.wait_exit(secs(15)).await;
    let len = brokers.observer.stream_len(STREAM).await.unwrap_or(0);
    println!(
        "SIGTERM after {at} messages: ferry exited ({status}) with {len} in the stream, {:.1}s in",
        started.elapsed().as_secs_f64()
    );
    assert!(status.success(), "ferry exited with {status} after SIGTERM");

    // A frozen sink: ferry cannot deliver what it holds before its shutdown deadline.
    let mut ferry = relay.start().await;
    let at = (len + fastrand::u64(1_000..4_000)).min(N as u64 - 2_000);
    brokers.observer.wait_stream_len(STREAM, at, secs(60)).await;
    brokers.nats.pause();
    let term_at = Instant::now();
    ferry.signal("TERM");
    let status = ferry.wait_exit(relay.shutdown_timeout + secs(10)).await;
    println!(
        "SIGTERM with nats-server frozen: ferry exited ({status}) after {:.1}s",
        term_at.elapsed().as_secs_f64()
    );
    brokers.nats.resume();

    let mut ferry = relay.start().await;
    publisher.await.unwrap();
    let (tally, _) = collect(&brokers, N, secs(120), "SIGTERM under load").await;
    tally.assert_none_lost("SIGTERM under load");
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    ferry.terminate().await;
}

// ---------------------------------------------------------------------------------------------
// 6. two instances sharing the load

/// Two ferry instances read one MQTT shared subscription (`share: relays`), each with its own
/// client id and persistent session. In normal running mosquitto hands each message to one of
/// them: all arrive, none twice, and both did part of the work.
///
/// Then one of them (`share-a`) is killed with `kill -9` while it holds messages: its path to
/// NATS is stalled first (a [`TcpProxy`]), so what mosquitto hands it piles up unconfirmed in
/// ferry. The other carries on with its share. mosquitto keeps what it had sent `share-a`
/// without a PUBACK — and, as mosquitto 2.0 does for an offline member of a shared group
/// with a persistent session, queues `share-a`'s turns of the round robin for it — in that
/// client's session, and hands them only to that client: so `share-a` is restarted with its
/// session, and then nothing is lost. (Had ferry acknowledged them on arrival, they would have
/// died with it.) Order is not promised across two instances: `reordered` is only reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_an_mqtt_subscription_and_survive_a_kill() {
    const NORMAL: usize = 10_000;
    const HOLDING: usize = 20_000;
    const N: usize = 30_000;
    let brokers = Brokers::start(MosquittoOptions::default()).await;
    let (state_a, state_b) = (state_dir(), state_dir());
    let proxy_a = TcpProxy::start(brokers.nats.port).await;
    let mut relay_a = brokers.relay("share-a", state_a.path());
    relay_a.share = Some("relays".into());
    relay_a.nats_url = proxy_a.nats_url();
    let mut relay_b = brokers.relay("share-b", state_b.path());
    relay_b.share = Some("relays".into());
    let mut a = relay_a.start().await;
    let mut b = relay_b.start().await;
    let publisher = MqttPeer::connect(&brokers.mosquitto.url()).await;

    publish_load(&publisher, 0..NORMAL).await;
    let (tally, msgs) = collect(&brokers, NORMAL, secs(60), "MQTT share, normal").await;
    let shares = per_instance(&msgs);
    println!("MQTT share, normal: per instance {shares:?}");
    tally.assert_none_lost("MQTT share, normal");
    assert_eq!(
        tally.duplicates, 0,
        "{tally}: a shared subscription delivers each message once"
    );
    assert!(
        shares.len() == 2 && shares.values().all(|&n| n > 0),
        "both instances should have relayed part of the load: {shares:?}"
    );

    // share-a cannot deliver; share-b relays its share; then share-a dies holding its own.
    proxy_a.stall();
    publish_load(&publisher, NORMAL..HOLDING).await;
    let before_kill = brokers
        .observer
        .wait_stream_settled(STREAM, secs(2), secs(60))
        .await;
    kill9(&mut a).await;
    proxy_a.sever();
    proxy_a.resume();
    println!(
        "MQTT share: share-a killed holding messages ({before_kill} of {HOLDING} in the stream)"
    );

    // The survivor carries on alone.
    publish_load(&publisher, HOLDING..N).await;
    let settled = brokers
        .observer
        .wait_stream_settled(STREAM, secs(2), secs(60))
        .await;
    let alone = brokers.observer.read_stream(STREAM).await;
    let after_kill = per_instance(&alone[before_kill as usize..]);
    println!("MQTT share: share-b alone took the stream to {settled}: {after_kill:?}");
    assert!(
        after_kill.get("share-b").copied().unwrap_or(0) > 0 && !after_kill.contains_key("share-a"),
        "after the kill share-b, and only share-b, should relay: {after_kill:?}"
    );
    let waiting = Tally::of_msgs(N, LOAD, &alone)
        .report("MQTT share, survivor alone")
        .lost;

    // share-a comes back with its session; mosquitto hands it what it kept.
    let mut a = relay_a.start().await;
    let (tally, _) = collect(&brokers, N, secs(60), "MQTT share, after restart").await;
    println!("MQTT share: {waiting} messages waited in share-a's session for its restart");
    tally.assert_none_lost("MQTT share, after restart");
    a.terminate().await;
    b.terminate().await;
}

/// Two ferry instances pull from one JetStream durable consumer (the same `consumer:` name:
/// JetStream hands each message to one puller) and publish into a second stream. In normal
/// running every message arrives once and both did part of the work.
///
/// Then one of them (`js-a`) is killed with `kill -9` while it holds messages: its connection
/// is stalled (a [`TcpProxy`]) while the load flows, so what it pulled sits unacknowledged
/// in ferry. The other carries on, and gets `js-a`'s messages when JetStream redelivers them
/// after `ack_wait` (3 s here), with no restart needed. A message `js-a` had already stored
/// in the output stream comes again from `js-b` with the same `Nats-Msg-Id`
/// (`<stream>:<sequence>`), so the output stream holds each message once. Order is not
/// promised across two instances: `reordered` is only reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_jetstream_consumer_and_survive_a_kill() {
    const NORMAL: usize = 10_000;
    const N: usize = 30_000;
    let brokers = Brokers::start(MosquittoOptions::default()).await;
    brokers.observer.create_stream("SRC", &["src.>"]).await;
    let source = "{ connection: nc, subject: \"src.load\", jetstream: { stream: SRC, consumer: ferry-share, max_ack_pending: 1000, ack_wait: 3s, deliver: all } }";
    let (state_a, state_b) = (state_dir(), state_dir());
    let proxy_a = TcpProxy::start(brokers.nats.port).await;
    let mut relay_a = brokers.relay("js-a", state_a.path());
    relay_a.jetstream_source = Some(source);
    relay_a.nats_url = proxy_a.nats_url();
    let mut relay_b = brokers.relay("js-b", state_b.path());
    relay_b.jetstream_source = Some(source);
    let mut a = relay_a.start().await;
    let mut b = relay_b.start().await;

    let publish = |seqs: std::ops::Range<usize>| {
        seqs.map(|i| ("src.load".to_string(), seq_payload(LOAD, i, PAYLOAD)))
    };
    brokers
        .observer
        .jetstream_publish_all(publish(0..NORMAL))
        .await;
    let (tally, msgs) = collect(&brokers, NORMAL, secs(60), "JetStream consumer, normal").await;
    let shares = per_instance(&msgs);
    println!("JetStream consumer, normal: per instance {shares:?}");
    tally.assert_none_lost("JetStream consumer, normal");
    assert_eq!(
        tally.duplicates, 0,
        "{tally}: one durable consumer delivers each message once"
    );
    assert!(
        shares.len() == 2 && shares.values().all(|&n| n > 0),
        "both instances should have relayed part of the load: {shares:?}"
    );

    // Mid-stream, js-a's connection stalls with what it pulled, and it dies with it.
    let publisher = NatsPeer::connect(&brokers.nats.url()).await;
    let background = tokio::spawn(async move {
        publisher.jetstream_publish_all(publish(NORMAL..N)).await;
    });
    brokers
        .observer
        .wait_stream_len(STREAM, NORMAL as u64 + 2_000, secs(60))
        .await;
    proxy_a.stall();
    brokers
        .observer
        .wait_stream_len(STREAM, NORMAL as u64 + 4_000, secs(60))
        .await;
    kill9(&mut a).await;
    let killed_with = brokers.observer.stream_len(STREAM).await.unwrap_or(0);
    println!("JetStream consumer: js-a killed holding messages ({killed_with} in the stream)");
    background.await.unwrap();

    let (tally, msgs) = collect(&brokers, N, secs(60), "JetStream consumer, one killed").await;
    let after_kill = per_instance(&msgs[killed_with as usize..]);
    println!("JetStream consumer: after the kill {after_kill:?}");
    tally.assert_none_lost("JetStream consumer, one killed");
    assert_eq!(
        tally.duplicates, 0,
        "{tally}: re-sends of redelivered messages carry the same Nats-Msg-Id"
    );
    b.terminate().await;
}
