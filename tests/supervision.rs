//! Supervision: a task that panics is restarted, shown on `/readyz` and `/metrics` while it is
//! down, and an at-least-once route loses nothing; a message that panics a route worker twice
//! is dead-lettered instead of stopping the route for good.
//!
//! The panics are injected by the fault hooks that debug builds of ferry carry (the ones
//! `cargo test` builds): `FERRY_FAULT_PANIC="route NAME/TASK"` (or `connection NAME/TASK`)
//! makes that task's next poll after a SIGUSR1 panic, and `FERRY_FAULT_PANIC_PAYLOAD=TEXT`
//! makes a route worker panic on every message whose payload holds TEXT. So these tests keep
//! meaning something once every real panic is fixed.
//!
//! Real mosquitto and nats-server on free ports; the route reads MQTT at QoS 1 with a
//! persistent session, so what a dead worker had not confirmed comes again from the broker.

mod support;

use support::*;

/// Admin listener on `port`; route `load` from MQTT `load/#` (QoS 1, persistent session) to
/// NATS `out.load`, at least once, with failures to `dead.load`. `mq_reconnect` is the MQTT
/// connection's `reconnect:` (which also paces the restarts of its tasks).
fn config(port: u16, mosquitto: &Mosquitto, nats: &NatsServer, mq_reconnect: &str) -> String {
    format!(
        r#"
admin: {{ listen: "127.0.0.1:{port}" }}
connections:
  mq:
    mqtt:
      url: "{mqtt}"
      client_id: ferry-supervision
      clean_start: false
      session_expiry: 1h
    reconnect: {mq_reconnect}
  nc:
    nats: {{ url: "{nats}" }}
routes:
  - name: load
    from: {{ connection: mq, topic: "load/#", qos: 1 }}
    to: {{ connection: nc, subject: out.load }}
    dead_letter: {{ connection: nc, subject: dead.load }}
    delivery: at-least-once
"#,
        mqtt = mosquitto.url(),
        nats = nats.url(),
    )
}

/// What each test starts with: the brokers, ferry on [`config`] with one fault hook set in its
/// environment, ready, a NATS peer reading `out.load`, and an MQTT publisher. A test binds
/// every field: one left out would be dropped (a broker stopped) at once.
struct Supervised {
    _mosquitto: Mosquitto,
    _nats: NatsServer,
    /// ferry's admin listener, `http://127.0.0.1:PORT`.
    admin: String,
    ferry: Ferry,
    peer: NatsPeer,
    out: Inbox,
    publisher: MqttPeer,
}

async fn start(mq_reconnect: &str, fault: (&str, &str)) -> Supervised {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let port = free_port();
    let yaml = config(port, &mosquitto, &nats, mq_reconnect);
    let mut ferry = Ferry::start_with_env(&yaml, &[fault]);
    ferry.wait_ready().await;
    let peer = NatsPeer::connect(&nats.url()).await;
    let out = peer.subscribe("out.load").await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    Supervised {
        _mosquitto: mosquitto,
        _nats: nats,
        admin: format!("http://127.0.0.1:{port}"),
        ferry,
        peer,
        out,
        publisher,
    }
}

/// Arms the fault hook (SIGUSR1) and returns ferry's log mark from before it.
async fn arm_the_fault(ferry: &mut Ferry) -> usize {
    let mark = ferry.mark();
    ferry.signal("USR1");
    ferry
        .wait_for_line_since(mark, "arming the fault", secs(10))
        .await;
    mark
}

async fn get(url: &str) -> (u16, String) {
    let response = http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of the `ferry_task_restarts` sample with these labels, from `/metrics`.
async fn restarts(admin: &str, kind: &str, owner: &str, task: &str) -> u64 {
    let (status, body) = get(&format!("{admin}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    let labels = format!(r#"kind="{kind}",owner="{owner}",task="{task}""#);
    body.lines()
        .find(|l| l.starts_with("ferry_task_restarts_total{") && l.contains(&labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Publishes messages `from..to` of stream `load` on `load/n`, QoS 1.
async fn publish_range(publisher: &MqttPeer, from: usize, to: usize) {
    publisher
        .publish_all(
            (from..to).map(|i| ("load/n".to_string(), seq_payload("load", i, 64))),
            1,
        )
        .await;
}

/// Collects from `inbox` until message `count - 1` of `load` arrived, and checks that every one
/// of `0..count` did, counting `earlier` (collected before) too; duplicates are allowed: what
/// a dead task had not confirmed comes again.
async fn expect_all(inbox: &mut Inbox, count: usize, earlier: Vec<Msg>) -> Tally {
    let got = inbox.collect_until_seq("load", count - 1, secs(60)).await;
    // What was in flight when the task died may come again after the last one.
    let mut got = [earlier, got].concat();
    got.extend(inbox.collect_for(millis(500)).await);
    let tally = Tally::of_msgs(count, "load", &got).report("load");
    tally.assert_none_lost("load");
    tally
}

/// A route worker that panics mid-stream is restarted (logged, counted on `/metrics`), and
/// every message arrives: what the dead worker had not confirmed comes again from the broker.
#[tokio::test]
async fn a_route_worker_killed_by_a_panic_is_restarted_and_loses_nothing() {
    let Supervised {
        _mosquitto,
        _nats,
        admin,
        mut ferry,
        peer: _peer,
        mut out,
        publisher,
    } = start(
        "{ initial_delay: 100ms }",
        ("FERRY_FAULT_PANIC", "route load/worker"),
    )
    .await;

    publish_range(&publisher, 0, 200).await;
    out.collect(100, secs(30)).await;
    let mark = arm_the_fault(&mut ferry).await;
    publish_range(&publisher, 200, 400).await;
    ferry
        .wait_for_line_since(mark, "route load: task `worker` panicked", secs(30))
        .await;
    ferry
        .wait_for_line_since(
            mark,
            "route load: restarted after its task `worker`",
            secs(30),
        )
        .await;
    publish_range(&publisher, 400, 500).await;
    // The first 100 were collected above; the rest (and any re-sent copies) come now.
    let last = "load:499:";
    let mut got = out
        .collect_until("message load:499", |m| m.text().starts_with(last), secs(60))
        .await;
    got.extend(out.collect_for(millis(500)).await);
    let seqs: std::collections::BTreeSet<usize> = got
        .iter()
        .filter_map(|m| parse_seq(&m.payload).map(|(_, n)| n))
        .collect();
    let missing: Vec<usize> = (100..500).filter(|n| !seqs.contains(n)).collect();
    assert!(missing.is_empty(), "lost after the panic: {missing:?}");

    assert_eq!(restarts(&admin, "route", "load", "worker").await, 1);
    let (status, body) = get(&format!("{admin}/readyz")).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert!(ferry.is_running());
    assert!(ferry.terminate().await.success());
}

/// A connection task that panics takes its connection down until the restart: `/readyz` says
/// which task failed and why while it waits (the connection's `reconnect:` paces it), then is
/// ready again, and the route relays everything, before and after.
#[tokio::test]
async fn a_connection_task_killed_by_a_panic_is_restarted_and_readyz_shows_it() {
    // The first restart of mq's tasks waits at least a second: time to see it on /readyz.
    let reconnect = "{ initial_delay: 2s, max_delay: 4s }";
    let fault = ("FERRY_FAULT_PANIC", "connection mq/event loop");
    let Supervised {
        _mosquitto,
        _nats,
        admin,
        mut ferry,
        peer: _peer,
        mut out,
        publisher,
    } = start(reconnect, fault).await;
    publish_range(&publisher, 0, 50).await;
    let earlier = out.collect(50, secs(30)).await;

    let mark = arm_the_fault(&mut ferry).await;
    // The next event of the MQTT client (this publish) polls the event loop, which panics.
    publish_range(&publisher, 50, 100).await;
    ferry
        .wait_for_line_since(mark, "connection mq: task `event loop` panicked", secs(30))
        .await;
    let (status, body) = get(&format!("{admin}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("connection mq: task `event loop` panicked: fault injected"),
        "{body}"
    );
    assert!(body.contains("restarting since"), "{body}");
    let (status, body) = get(&format!("{admin}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"ferry_task_down{kind="connection",owner="mq",task="event loop"} 1"#),
        "{body}"
    );

    // Back: ready again, and everything relayed.
    let deadline = tokio::time::Instant::now() + secs(30);
    loop {
        let (status, body) = get(&format!("{admin}/readyz")).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still 503 30s after the panic:\n{body}"
        );
        tokio::time::sleep(millis(100)).await;
    }
    publish_range(&publisher, 100, 150).await;
    expect_all(&mut out, 150, earlier).await;
    assert_eq!(restarts(&admin, "connection", "mq", "event loop").await, 1);
    assert!(ferry.terminate().await.success());
}

/// A message that panics the route worker twice is dead-lettered with the reason, the
/// messages around it all arrive, and ferry keeps running.
#[tokio::test]
async fn a_message_that_panics_the_worker_twice_is_dead_lettered() {
    let Supervised {
        _mosquitto,
        _nats,
        admin,
        mut ferry,
        peer,
        mut out,
        publisher,
    } = start(
        "{ initial_delay: 100ms }",
        ("FERRY_FAULT_PANIC_PAYLOAD", "poison"),
    )
    .await;
    let mut dead = peer.subscribe("dead.load").await;

    publish_range(&publisher, 0, 20).await;
    publisher.publish("load/n", "poison pill", 1, false).await;
    publish_range(&publisher, 20, 40).await;

    let letter = dead
        .recv(secs(60))
        .await
        .expect("the poison message is dead-lettered");
    assert_eq!(letter.text(), "poison pill");
    assert_eq!(letter.header("Ferry-Stage"), Some("worker"));
    let error = letter.header("Ferry-Error").unwrap_or_default();
    assert!(error.contains("panicked the route worker twice"), "{error}");
    expect_all(&mut out, 40, Vec::new()).await;
    dead.expect_nothing(millis(500)).await;
    // One restart (the first panic); the second panic dead-lettered it in the new worker.
    assert_eq!(restarts(&admin, "route", "load", "worker").await, 1);
    assert!(ferry.is_running());
    assert!(ferry.terminate().await.success());
}
