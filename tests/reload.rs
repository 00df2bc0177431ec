//! Reload on SIGHUP: a good new file restarts only what changed while the rest keeps flowing;
//! a bad one is refused and the old configuration keeps running.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use support::*;

/// Messages of the steady stream through the route no reload touches.
const STEADY: usize = 3_000;

/// The configuration: `steady` (MQTT → NATS, at-least-once) is never edited and uses
/// connections no edit touches; `changing` (NATS → MQTT) gets a new transform, then a
/// neighbour on its source connection (`added`), which comes and goes.
fn config(mqtt: &str, nats: &str, version: u32, with_added: bool) -> String {
    let added = if with_added {
        r#"
  - name: added
    from: { connection: nc2, subject: "extra.>" }
    to: { connection: mq, topic: "extra/out" }
"#
    } else {
        ""
    };
    format!(
        r#"
connections:
  mq:
    mqtt: {{ url: "{mqtt}", client_id: ferry-reload }}
  nc:
    nats: {{ url: "{nats}" }}
  nc2:
    nats: {{ url: "{nats}" }}
routes:
  - name: steady
    from: {{ connection: mq, topic: "steady/#", qos: 1 }}
    to: {{ connection: nc, subject: auto }}
    delivery: at-least-once
  - name: changing
    from: {{ connection: nc2, subject: "in.>" }}
    to: {{ connection: mq, topic: "changing/out" }}
    transform: '{{version: {version}, body: .}}'
{added}"#
    )
}

/// Publishes `"x"` on `in.a` and returns what route `changing` made of it.
async fn through_changing(nats_peer: &NatsPeer, changing_inbox: &mut Inbox) -> Msg {
    nats_peer.publish("in.a", "\"x\"").await;
    (changing_inbox.recv(secs(10)).await).expect("changing relays")
}

/// What arrives at `inbox` before the final `end` message (on `end_subject`), which must come
/// within 60 s.
async fn until_end(inbox: &mut Inbox, end_subject: &str) -> Vec<Msg> {
    let mut got = inbox.collect_until_topic(end_subject, secs(60)).await;
    got.pop();
    got
}

/// Four reloads while 3,000 QoS 1 messages stream through `steady`: a new transform, a broken
/// file, a route added, a route removed. Every steady message arrives once and in order, the
/// log says `steady` was left alone each time, and each change takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untouched_route_keeps_flowing_through_reloads() {
    let mosquitto = Mosquitto::start(MosquittoOptions {
        max_queued_messages: Some(0),
        ..Default::default()
    });
    let nats = NatsServer::start(NatsOptions::default());
    let (mqtt_url, nats_url) = (mosquitto.url(), nats.url());
    let mut ferry = Ferry::start_ready(&config(&mqtt_url, &nats_url, 1, false)).await;

    let nats_peer = NatsPeer::connect(&nats_url).await;
    let mut steady_inbox = nats_peer.subscribe("steady.>").await;
    let mut changing = MqttPeer::connect(&mqtt_url).await;
    changing.subscribe("changing/out", 1).await;
    let changing_inbox = &mut changing.inbox;
    let mut extra = MqttPeer::connect(&mqtt_url).await;
    extra.subscribe("extra/out", 1).await;
    let extra_inbox = &mut extra.inbox;

    // The steady stream, paced so that it spans every reload below.
    let streaming = Arc::new(AtomicBool::new(true));
    let publisher = MqttPeer::connect(&mqtt_url).await;
    let still = streaming.clone();
    let stream = tokio::spawn(async move {
        for seq in 0..STEADY {
            publisher
                .publish("steady/s0", seq_payload("s0", seq, 32), 1, false)
                .await;
            if still.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        publisher.publish("steady/end", "end", 1, false).await;
    });

    // The transform before any reload.
    let m = through_changing(&nats_peer, changing_inbox).await;
    assert_eq!(m.json()["version"], 1, "{m:?}");

    // 1. A new transform: only `changing` restarts.
    let line = reload(&mut ferry, &config(&mqtt_url, &nats_url, 2, false)).await;
    assert!(line.contains("restarted: changing"), "{line}");
    assert!(line.contains("unchanged: steady"), "{line}");
    let m = through_changing(&nats_peer, changing_inbox).await;
    assert_eq!(m.json()["version"], 2, "the new transform applies: {m:?}");

    // 2. A broken file: refused with its position, the old configuration keeps running.
    let mark = ferry.mark();
    std::fs::write(
        &ferry.config,
        config(&mqtt_url, &nats_url, 3, false) + "  - nme: x\n",
    )
    .unwrap();
    ferry.signal("HUP");
    let refused = ferry
        .wait_for_line_since(mark, "unknown key `nme`", secs(20))
        .await;
    assert!(
        refused.contains("bridges.yaml:"),
        "file:line:col: {refused}"
    );
    ferry
        .wait_for_line_since(mark, "keeps running", secs(20))
        .await;
    let m = through_changing(&nats_peer, changing_inbox).await;
    assert_eq!(m.json()["version"], 2, "still the old configuration: {m:?}");

    // 3. A route added on `changing`'s source connection: that connection and `changing`
    //    restart, `steady` does not.
    let line = reload(&mut ferry, &config(&mqtt_url, &nats_url, 2, true)).await;
    assert!(line.contains("routes started: added"), "{line}");
    assert!(line.contains("unchanged: steady"), "{line}");
    assert!(line.contains("restarted: nc2"), "{line}");
    nats_peer.publish("extra.a", "hello").await;
    let m = extra_inbox
        .recv(secs(10))
        .await
        .expect("the added route relays");
    assert_eq!(m.text(), "hello");

    // 4. And removed again.
    let line = reload(&mut ferry, &config(&mqtt_url, &nats_url, 2, false)).await;
    assert!(line.contains("stopped: added"), "{line}");
    assert!(line.contains("unchanged: steady"), "{line}");
    nats_peer.publish("extra.a", "gone").await;
    through_changing(&nats_peer, changing_inbox).await;
    extra_inbox.expect_nothing(Duration::from_millis(300)).await;

    assert!(
        !stream.is_finished(),
        "the steady stream must span every reload; pace it slower"
    );
    streaming.store(false, Ordering::Relaxed);
    stream.await.unwrap();
    let got = until_end(&mut steady_inbox, "steady.end").await;
    let tally = Tally::of_msgs(STEADY, "s0", &got).report("steady through four reloads");
    tally.assert_none_lost("steady");
    assert_eq!(tally.duplicates, 0, "{tally}");
    assert_eq!(tally.reordered, 0, "{tally}");
}

/// A reload that restarts the source connection of an at-least-once route (its queue
/// changed) while messages stream in: nothing is lost, because the route delivers and
/// acknowledges what the old connection received before it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_source_connection_loses_nothing() {
    let mosquitto = Mosquitto::start(MosquittoOptions {
        max_queued_messages: Some(0),
        ..Default::default()
    });
    let nats = NatsServer::start(NatsOptions::default());
    let yaml = |max_messages: usize| {
        let route_keys =
            format!("    delivery: at-least-once\n    queue: {{ max_messages: {max_messages} }}\n");
        mqtt_to_nats(
            &mosquitto,
            &nats,
            "ferry-reload-source",
            "load",
            &route_keys,
        )
    };
    let mut ferry = Ferry::start_ready(&yaml(1000)).await;
    let nats_peer = NatsPeer::connect(&nats.url()).await;
    let mut inbox = nats_peer.subscribe("load.>").await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    let stream = tokio::spawn(async move {
        for seq in 0..2_000 {
            publisher
                .publish("load/s0", seq_payload("s0", seq, 32), 1, false)
                .await;
            if seq % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        publisher.publish("load/end", "end", 1, false).await;
    });
    let first = inbox.recv(secs(10)).await.expect("the stream flows");
    for max_messages in [500, 2000] {
        let line = reload(&mut ferry, &yaml(max_messages)).await;
        assert!(line.contains("restarted: load"), "{line}");
        assert!(line.contains("restarted: mq"), "{line}");
    }
    stream.await.unwrap();
    let mut got = until_end(&mut inbox, "load.end").await;
    got.insert(0, first);
    let tally = Tally::of_msgs(2_000, "s0", &got).report("source connection restarted twice");
    tally.assert_none_lost("load");
}

/// Connections `mq` (MQTT, client id `client_id`) and `nc` (NATS), and route `name`:
/// `<name>/#` on `mq` at QoS 1 to `nc`, subject `auto`, then `route_keys` (YAML lines).
fn mqtt_to_nats(
    mosquitto: &Mosquitto,
    nats: &NatsServer,
    client_id: &str,
    name: &str,
    route_keys: &str,
) -> String {
    let (mqtt, nats) = (mosquitto.url(), nats.url());
    format!(
        r#"
connections:
  mq:
    mqtt: {{ url: "{mqtt}", client_id: {client_id} }}
  nc:
    nats: {{ url: "{nats}" }}
routes:
  - name: {name}
    from: {{ connection: mq, topic: "{name}/#", qos: 1 }}
    to: {{ connection: nc, subject: auto }}
{route_keys}"#
    )
}

/// Writes `yaml` over ferry's config file, sends SIGHUP, and returns the line that sums up what
/// the reload changed.
async fn reload(ferry: &mut Ferry, yaml: &str) -> String {
    let mark = ferry.mark();
    std::fs::write(&ferry.config, yaml).unwrap();
    ferry.signal("HUP");
    ferry
        .wait_for_line_since(mark, "routes started:", secs(30))
        .await
}

/// A route with a spool restarts on a reload: the new worker takes the spool over (the old one
/// let go of its lock first) and relays through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_with_a_spool_restarts() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let yaml = |version: u32| {
        let route_keys = format!(
            "    transform: '{{version: {version}, body: .}}'\n    spool: {{ max_bytes: 10MiB }}\n"
        );
        let route = mqtt_to_nats(
            &mosquitto,
            &nats,
            "ferry-reload-spool",
            "spooled",
            &route_keys,
        );
        format!("state_dir: state{route}")
    };
    let mut ferry = Ferry::start_ready(&yaml(1)).await;
    let nats_peer = NatsPeer::connect(&nats.url()).await;
    let mut inbox = nats_peer.subscribe("spooled.>").await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    for version in [1, 2, 3] {
        if version > 1 {
            let line = reload(&mut ferry, &yaml(version)).await;
            assert!(line.contains("restarted: spooled"), "{line}");
            assert!(!line.contains("failed"), "{line}");
        }
        publisher.publish("spooled/a", "\"x\"", 1, false).await;
        let m = inbox
            .recv(secs(10))
            .await
            .expect("the spooled route relays");
        assert_eq!(m.json()["version"], version, "{m:?}");
    }
}
