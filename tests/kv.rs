//! NATS KV buckets as sources and sinks, against a real nats-server with JetStream and a real
//! mosquitto: buckets made and read with async-nats's own KV client, as a NATS user does; MQTT
//! retained state read by late subscribers, as a device does.

mod support;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use support::*;

// ---------------------------------------------------------------------------------------------
// helpers

/// nats-server 2.15 with JetStream: async-nats's KV client cannot read 2.9's answer when it
/// makes a bucket.
fn jetstream() -> NatsOptions {
    NatsOptions {
        jetstream: true,
        binary: Some(nats_server_2_15()),
        ..NatsOptions::default()
    }
}

/// A JetStream server `core`, a mosquitto `plant` (MQTT 5) and `routes`; started, but not
/// ferry: the tests make their buckets first.
fn kv_and_mqtt(routes: &str) -> Brokers {
    Scenario::new()
        .settings("shutdown_timeout: 10s\n")
        .nats_with("core", jetstream())
        .mosquitto("plant")
        .keys("plant", "version: 5")
        .routes(routes)
        .start_brokers()
}

/// Makes bucket `name`, keeping `history` revisions of each key.
async fn bucket(peer: &NatsPeer, name: &str, history: i64) -> kv::Store {
    peer.jetstream()
        .create_key_value(kv::Config {
            bucket: name.into(),
            history,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("bucket {name}: {e}"))
}

/// The value of `key` as a NATS client reads it (`None`: absent or deleted).
async fn get(store: &kv::Store, key: &str) -> Option<String> {
    tokio::time::timeout(secs(5), store.get(key))
        .await
        .expect("kv get within 5s")
        .unwrap_or_else(|e| panic!("kv get {key}: {e}"))
        .map(|value| String::from_utf8_lossy(&value).into_owned())
}

/// Every revision of `key` the bucket holds: (operation, value).
async fn history(store: &kv::Store, key: &str) -> Vec<(kv::Operation, String)> {
    let mut entries = store.history(key).await.unwrap();
    let mut all = Vec::new();
    // A history ends once it reached the key's last revision.
    while let Some(entry) = tokio::time::timeout(secs(5), entries.next())
        .await
        .expect("history within 5s")
    {
        let entry = entry.unwrap();
        all.push((
            entry.operation,
            String::from_utf8_lossy(&entry.value).into_owned(),
        ));
    }
    all
}

/// Waits (bounded) on a watcher of the bucket until an entry for `key` with `operation` and
/// `value` arrives.
async fn wait_entry(watch: &mut kv::Watch, key: &str, operation: kv::Operation, value: &str) {
    let what = format!("{operation:?} {key} = {value:?}");
    tokio::time::timeout(secs(15), async {
        while let Some(entry) = watch.next().await {
            let entry = entry.unwrap();
            if entry.key == key && entry.operation == operation && entry.value == value.as_bytes() {
                return;
            }
        }
        panic!("the watch ended before {what}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within 15s"));
}

/// (topic, text) of each message.
fn texts(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter().map(|m| (m.topic.clone(), m.text())).collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    (expected.iter())
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// MQTT retained → KV

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_topics_become_keys_and_an_empty_one_deletes_its_key() {
    let brokers = kv_and_mqtt(
        r#"
  - name: into-kv
    from: { connection: plant, topic: "devices/+/state", qos: 1 }
    to: { connection: core, kv: { bucket: state, delete_on_empty: true } }
"#,
    );
    let js = brokers.nats_peer("core").await;
    let store = bucket(&js, "state", 5).await;
    let device = brokers.mqtt_peer("plant").await;
    // State the broker holds before ferry subscribes: the current state, mirrored too.
    for (name, value) in [("a", "on"), ("b", "open"), ("c", "42")] {
        device
            .publish(&format!("devices/{name}/state"), value, 1, true)
            .await;
    }
    let mut watch = store.watch(">").await.unwrap();
    let _ferry = Ferry::start_ready(&brokers.config).await;
    wait_entry(&mut watch, "devices.c.state", kv::Operation::Put, "42").await;

    device.publish("devices/a/state", "off", 1, true).await;
    device.publish("devices/b/state", "", 1, true).await;
    wait_entry(&mut watch, "devices.b.state", kv::Operation::Delete, "").await;

    assert_eq!(get(&store, "devices.a.state").await.as_deref(), Some("off"));
    assert_eq!(get(&store, "devices.b.state").await, None, "deleted");
    assert_eq!(get(&store, "devices.c.state").await.as_deref(), Some("42"));
    assert_eq!(
        history(&store, "devices.a.state").await,
        [
            (kv::Operation::Put, "on".into()),
            (kv::Operation::Put, "off".into())
        ],
        "each change stored once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_bucket_cannot_hold_is_dead_lettered_and_the_rest_goes_on() {
    let brokers = kv_and_mqtt(
        r#"
  - name: into-kv
    from: { connection: plant, topic: "devices/+/state", qos: 1 }
    to: { connection: core, subject: "devices.{{ topic[1] }}", kv: { bucket: state } }
    dead_letter: { connection: core, subject: "dead.kv" }
"#,
    );
    let js = brokers.nats_peer("core").await;
    let store = bucket(&js, "state", 1).await;
    let mut dead = js.subscribe("dead.kv").await;
    let mut watch = store.watch(">").await.unwrap();
    let _ferry = Ferry::start_ready(&brokers.config).await;
    let device = brokers.mqtt_peer("plant").await;
    // A space cannot be in a subject; `:` is in a subject but not in a KV key.
    device
        .publish("devices/living room/state", "x", 1, false)
        .await;
    device.publish("devices/a:b/state", "y", 1, false).await;
    device.publish("devices/hall/state", "z", 1, false).await;
    wait_entry(&mut watch, "devices.hall", kv::Operation::Put, "z").await;

    let letters = dead.collect(2, secs(10)).await;
    assert_eq!(
        (letters.iter().map(Msg::text)).collect::<Vec<_>>(),
        ["x", "y"]
    );
    let error = |m: &Msg| m.header("Ferry-Error").unwrap_or_default().to_string();
    assert!(error(&letters[0]).contains("whitespace"), "{letters:?}");
    assert!(
        error(&letters[1]).contains("`devices.a:b` is not a KV key"),
        "{letters:?}"
    );
    assert_eq!(
        letters[1].header("Ferry-Stage"),
        Some("sink"),
        "{letters:?}"
    );
    dead.expect_nothing(millis(300)).await;
    let keys: Vec<String> = store
        .keys()
        .await
        .unwrap()
        .map(|k| k.unwrap())
        .collect()
        .await;
    assert_eq!(keys, ["devices.hall"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_revision_refuses_a_stale_revision() {
    let brokers = kv_and_mqtt(
        r#"
  - name: set
    from: { connection: core, subject: "set.*" }
    to: { connection: core, subject: "devices.{{ subject[-1] }}", kv: { bucket: state, check_revision: true } }
    dead_letter: { connection: core, subject: "dead.kv" }
"#,
    );
    let js = brokers.nats_peer("core").await;
    let store = bucket(&js, "state", 5).await;
    let first = store.put("devices.a", "v1".into()).await.unwrap();
    let mut dead = js.subscribe("dead.kv").await;
    let mut watch = store.watch(">").await.unwrap();
    let _ferry = Ferry::start_ready(&brokers.config).await;

    let at = |revision: u64| vec![("KV-Revision", revision.to_string())];
    let publish = |payload: &'static str, headers: Vec<(&'static str, String)>| {
        let js = &js;
        async move {
            let mut map = async_nats::HeaderMap::new();
            for (k, v) in headers {
                map.insert(k, v.as_str());
            }
            js.client
                .publish_with_headers("set.a", map, Bytes::from_static(payload.as_bytes()))
                .await
                .unwrap();
            js.flush().await;
        }
    };
    publish("v2", at(first)).await; // the key is at `first`: put
    wait_entry(&mut watch, "devices.a", kv::Operation::Put, "v2").await;
    publish("v3", at(first)).await; // stale: the key moved on
    let letter = dead
        .recv(secs(10))
        .await
        .expect("the stale put dead-lettered");
    assert_eq!(letter.text(), "v3");
    assert!(
        (letter.header("Ferry-Error").unwrap_or_default()).contains("wrong last sequence"),
        "{letter:?}"
    );
    publish("v4", Vec::new()).await; // no revision: put as it is
    wait_entry(&mut watch, "devices.a", kv::Operation::Put, "v4").await;
    assert_eq!(
        history(&store, "devices.a").await,
        [
            (kv::Operation::Put, "v1".into()),
            (kv::Operation::Put, "v2".into()),
            (kv::Operation::Put, "v4".into())
        ]
    );
    dead.expect_nothing(millis(300)).await;
}

// ---------------------------------------------------------------------------------------------
// KV → MQTT retained

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_become_retained_topics_and_a_delete_or_purge_clears_them() {
    let brokers = kv_and_mqtt(
        r#"
  - name: from-kv
    from: { connection: core, subject: "devices.>", kv: { bucket: state, consumer: ferry-state } }
    to: { connection: plant, qos: 1, retain: true }
"#,
    );
    let js = brokers.nats_peer("core").await;
    let store = bucket(&js, "state", 5).await;
    store.put("devices.a.state", "on".into()).await.unwrap();
    store.put("devices.b.state", "open".into()).await.unwrap();
    let b = store.put("devices.b.state", "shut".into()).await.unwrap();
    store.put("other.x", "not watched".into()).await.unwrap();
    let mut live = brokers.mqtt_subscriber("plant", "devices/#", 1).await;
    let mut ferry = Ferry::start_ready(&brokers.config).await;
    ferry
        .wait_for_line("JetStream consumer KV_state/ferry-state: created", secs(5))
        .await;

    // The current value of each key (not b's older one), then each change.
    let current = live.inbox.collect(2, secs(10)).await;
    assert_eq!(
        texts(&current),
        pairs(&[("devices/a/state", "on"), ("devices/b/state", "shut")])
    );
    let b_entry = &current[1];
    assert_eq!(b_entry.header("KV-Operation"), Some("PUT"));
    assert_eq!(b_entry.header("KV-Revision"), Some(b.to_string().as_str()));
    assert_eq!(b_entry.header("KV-Bucket"), Some("state"));
    store.put("devices.c.state", "42".into()).await.unwrap();
    store.delete("devices.a.state").await.unwrap();
    store.purge("devices.b.state").await.unwrap();
    let changes = live.inbox.collect(3, secs(10)).await;
    assert_eq!(
        texts(&changes),
        pairs(&[
            ("devices/c/state", "42"),
            ("devices/a/state", ""),
            ("devices/b/state", "")
        ])
    );
    assert_eq!(changes[1].header("KV-Operation"), Some("DEL"));
    assert_eq!(changes[2].header("KV-Operation"), Some("PURGE"));
    live.inbox.expect_nothing(millis(300)).await;

    // A device subscribing now gets the current state: c's value, and nothing for a and b,
    // whose retained messages the empty ones cleared.
    let mut late = brokers.mqtt_subscriber("plant", "devices/#", 1).await;
    let retained = late.inbox.collect(1, secs(5)).await;
    assert_eq!(texts(&retained), pairs(&[("devices/c/state", "42")]));
    assert!(retained[0].retain);
    late.inbox.expect_nothing(millis(500)).await;
}

// ---------------------------------------------------------------------------------------------
// both at once: examples/retained-kv-mirror.yaml

/// examples/retained-kv-mirror.yaml as written (the servers' addresses filled in): state set
/// on either side, before ferry starts, while it runs and while it is restarted, deletes
/// included, reaches the other side once, and nothing comes back over a quiet period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_retained_kv_mirror_crosses_each_change_once() {
    let brokers = Scenario::new()
        .nats_with("core", jetstream())
        .mosquitto("plant")
        .routes("")
        .start_brokers();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/retained-kv-mirror.yaml"
    ))
    .unwrap();
    let config = fill(
        &example,
        &[
            ("mqtt://127.0.0.1:1883", brokers.mosquitto("plant").url()),
            ("nats://127.0.0.1:4222", brokers.nats("core").url()),
        ],
    );
    // What ferry check says the example promises: the loop and its guard, and each side.
    let check = ferry_check(&config).all();
    for promise in [
        "loop: route into-kv (plant `devices/+/state` → core `devices.*.state`) → route from-kv",
        "guarded: ferry's marker stops each message",
        "source: KV bucket `device_state` (keys `devices.*.state`) through durable consumer \
         `ferry-state-mirror`, from the current value of each key, then every change",
        "sink: KV bucket `device_state` via `core`, the subject as the key, confirmed by the \
         stream's ack",
        "an empty payload deletes the key",
    ] {
        assert!(check.contains(promise), "{promise:?} not in {check}");
    }
    let js = brokers.nats_peer("core").await;
    let store = bucket(&js, "device_state", 10).await;
    let device = brokers.mqtt_peer("plant").await;
    // Before ferry: a device's retained state, and a key a NATS client put.
    device.publish("devices/pump/state", "on", 1, true).await;
    store
        .put("devices.valve.state", "open".into())
        .await
        .unwrap();
    let mut mqtt = brokers.mqtt_subscriber("plant", "devices/#", 1).await;
    assert_eq!(
        texts(&mqtt.inbox.collect(1, secs(5)).await),
        pairs(&[("devices/pump/state", "on")]),
        "the device's retained state"
    );
    let mut watch = store.watch(">").await.unwrap();

    let mut ferry = Ferry::start_ready(&config).await;
    wait_entry(&mut watch, "devices.pump.state", kv::Operation::Put, "on").await;
    mqtt.inbox
        .expect_messages(&[("devices/valve/state", "open")], secs(10))
        .await;

    // While ferry runs: a change and a delete on each side.
    device.publish("devices/pump/state", "off", 1, true).await;
    wait_entry(&mut watch, "devices.pump.state", kv::Operation::Put, "off").await;
    store
        .put("devices.valve.state", "shut".into())
        .await
        .unwrap();
    mqtt.inbox
        .expect_messages(
            &[
                ("devices/pump/state", "off"),
                ("devices/valve/state", "shut"),
            ],
            secs(10),
        )
        .await;

    // A restart (SIGTERM) with a change on each side while ferry is away: each crosses once
    // when it is back (the bucket's durable consumer resumes after what it acknowledged; the
    // device's retained value comes with the new subscription), and what ferry itself
    // retained before is not put back.
    ferry.terminate().await;
    device.publish("devices/pump/state", "idle", 1, true).await;
    store
        .put("devices.valve.state", "half".into())
        .await
        .unwrap();
    let _ferry = Ferry::start_ready(&config).await;
    wait_entry(&mut watch, "devices.pump.state", kv::Operation::Put, "idle").await;
    mqtt.inbox
        .expect_messages(
            &[
                ("devices/pump/state", "idle"),
                ("devices/valve/state", "half"),
            ],
            secs(10),
        )
        .await;

    device.publish("devices/pump/state", "", 1, true).await;
    wait_entry(&mut watch, "devices.pump.state", kv::Operation::Delete, "").await;
    store.delete("devices.valve.state").await.unwrap();
    mqtt.inbox
        .expect_messages(
            &[("devices/pump/state", ""), ("devices/valve/state", "")],
            secs(10),
        )
        .await;

    // A quiet period: an echo would be a second copy of some change on either side.
    let echoes = mqtt.inbox.collect_for(secs(2)).await;
    assert!(echoes.is_empty(), "echoed to MQTT: {echoes:?}");
    let put = |v: &str| (kv::Operation::Put, v.to_string());
    let deleted = (kv::Operation::Delete, String::new());
    // The change made while ferry was away may be stored twice: mosquitto kept it for ferry's
    // persistent session, and sends it again as the retained value when ferry subscribes
    // (which a state mirror wants: a QoS 0 change is only in the retained copy). That is what
    // at-least-once allows after a restart; every other change is stored once.
    let pump = history(&store, "devices.pump.state").await;
    let idle = pump.iter().filter(|e| **e == put("idle")).count();
    assert!((1..=2).contains(&idle), "{pump:?}");
    let mut changes = pump.clone();
    changes.dedup();
    assert_eq!(
        changes,
        [put("on"), put("off"), put("idle"), deleted.clone()],
        "the device's changes: {pump:?}"
    );
    assert_eq!(
        history(&store, "devices.valve.state").await,
        [put("open"), put("shut"), put("half"), deleted],
        "the NATS client's changes, none written back"
    );
    // Both topics cleared: a device subscribing now gets nothing.
    let mut late = brokers.mqtt_subscriber("plant", "devices/#", 1).await;
    late.inbox.expect_nothing(millis(500)).await;
}

// ---------------------------------------------------------------------------------------------
// a restart in the middle of a stream of puts

/// Entries put before and while ferry restarts, and the window of entries ferry may hold
/// unacknowledged.
const PUTS: usize = 3000;
const WINDOW: usize = 100;

/// A bucket watched by a route into core NATS (`out.<key>`): `PUTS` entries are put (each key
/// once) while ferry relays them; it is stopped once a tenth crossed (`kill -9`, or SIGTERM
/// when `kill` is false), the puts going on, and a new ferry is started. Returns what crossed,
/// once every entry did.
async fn restarted_mid_stream(kill: bool) -> Tally {
    let brokers = Scenario::new()
        .settings("shutdown_timeout: 10s\n")
        .nats_with("core", jetstream())
        .routes(&fill(
            r#"
  - name: from-kv
    from:
      connection: core
      subject: "load.>"
      kv: { bucket: load, consumer: ferry-load, max_ack_pending: @WINDOW@, ack_wait: 5s }
    to: { connection: core, subject: "out.{{ subject }}" }
"#,
            &[("@WINDOW@", WINDOW.to_string())],
        ))
        .start_brokers();
    let js = brokers.nats_peer("core").await;
    let store = bucket(&js, "load", 1).await;
    let mut out = js.subscribe("out.>").await;
    let mut ferry = Ferry::start_ready(&brokers.config).await;
    let writer = tokio::spawn(async move {
        for i in 0..PUTS {
            let value = seq_payload("kv", i, 0);
            store.put(format!("load.{i}"), value).await.unwrap();
        }
    });
    let mut got = out.collect(PUTS / 10, secs(30)).await;
    if kill {
        ferry.kill9().await;
    } else {
        assert!(ferry.terminate().await.success());
    }
    got.extend(out.drain());
    let at_stop = got.len();
    assert!(
        !writer.is_finished(),
        "ferry stopped after the puts: not mid-stream"
    );

    let _ferry = Ferry::start_ready(&brokers.config).await;
    // What ferry held unacknowledged when it was killed comes back after ack_wait.
    let deadline = tokio::time::Instant::now() + secs(60);
    while Tally::of_msgs(PUTS, "kv", &got).lost > 0 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match out.recv(left).await {
            Some(m) => got.push(m),
            None => Tally::of_msgs(PUTS, "kv", &got).assert_none_lost("after the restart"),
        }
    }
    writer.await.unwrap();
    got.extend(out.collect_for(millis(500)).await);
    let how = if kill { "kill -9" } else { "SIGTERM" };
    Tally::of_msgs(PUTS, "kv", &got).report(&format!("kv source, {how} after {at_stop} crossed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_it_resumes_after_the_last_revision_acknowledged() {
    let tally = restarted_mid_stream(true).await;
    tally.assert_none_lost("kill -9");
    // At-least-once: only what ferry held unacknowledged may cross twice.
    assert!(tally.duplicates <= WINDOW, "{tally}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_with_sigterm_it_resumes_without_a_duplicate() {
    let tally = restarted_mid_stream(false).await;
    tally.assert_none_lost("SIGTERM");
    assert_eq!(tally.duplicates, 0, "{tally}");
}
