//! Thousands of routes on one MQTT connection: ferry subscribes every filter (more than its
//! client's request queue holds at once), comes up, and each route still takes only its own
//! messages, once.

mod support;

use std::time::Duration;

use support::*;

const ROUTES: usize = 5_000;

/// `ROUTES` routes on connection `plant`, route i reading `site<i>/+/temp` into NATS subject
/// `out.site<i>`.
fn routes() -> String {
    (0..ROUTES)
        .map(|i| {
            format!(
                "  - name: r{i}\n    from: {{ connection: plant, topic: \"site{i}/+/temp\" }}\n    \
                 to: {{ connection: core, subject: out.site{i} }}\n"
            )
        })
        .collect()
}

/// Starts ferry with `ROUTES` routes on one connection (with `keys`), waits until it is ready,
/// and publishes to the first, a middle and the last route's topic: each message arrives at
/// its own route's subject, once, and nowhere else.
async fn every_route_delivers(keys: &str) {
    let brokers = Scenario::new()
        .mosquitto("plant")
        .keys("plant", keys)
        .nats("core")
        .routes(&routes())
        .start_brokers();
    // Ready means every connection is up: connected and subscribed. Generous: a debug build
    // reads and checks 5,000 routes first.
    let mut ferry = Ferry::start(&brokers.config);
    ferry.wait_for_line("ferry ready", secs(120)).await;
    let run = Running { ferry, brokers };
    let (_subscriber, mut inbox) = run.nats_subscriber("core", "out.>").await;
    let publisher = run.mqtt_peer("plant").await;
    let picked = [0, ROUTES / 2, ROUTES - 1];
    for i in picked {
        publisher
            .publish(&format!("site{i}/kitchen/temp"), format!("{i}"), 1, false)
            .await;
    }
    let mut got = inbox.collect(picked.len(), secs(30)).await;
    got.extend(inbox.collect_for(Duration::from_millis(500)).await);
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|m| {
            (
                m.topic.clone(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(String, String)> = picked
        .iter()
        .map(|i| (format!("out.site{i}"), i.to_string()))
        .collect();
    expected.sort();
    assert_eq!(seen, expected, "each message at its own route's sink, once");
}

/// MQTT 5 with subscription identifiers: a SUBSCRIBE per filter, 5,000 of them.
#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_routes_on_one_mqtt5_connection_come_up_and_deliver() {
    every_route_delivers("client_id: ferry-many-v5").await;
}

/// MQTT 3.1.1: every filter in as few SUBSCRIBE packets as fit the packet bound.
#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_routes_on_one_mqtt311_connection_come_up_and_deliver() {
    every_route_delivers(r#"version: "3.1.1", client_id: ferry-many-v311"#).await;
}

/// Routes whose filters overlap, their own and each other's, on one connection (`keys`): a
/// message on `a/b` matches four subscriptions, and mosquitto (on MQTT 5) sends a copy for
/// each; each route still takes it once.
async fn overlapping_routes_take_one_copy_each(keys: &str) {
    let run = Scenario::new()
        .mosquitto("plant")
        .keys("plant", keys)
        .nats("core")
        .routes(
            r#"
  - name: all
    from: { connection: plant, topic: "a/#" }
    to: { connection: core, subject: out.all }
  - name: two
    from: { connection: plant, topics: ["a/+", "a/b"] }
    to: { connection: core, subject: out.two }
  - name: same
    from: { connection: plant, topic: "a/+" }
    to: { connection: core, subject: out.same }
  - name: other
    from: { connection: plant, topic: "b/+" }
    to: { connection: core, subject: out.other }
"#,
        )
        .start()
        .await;
    let (_subscriber, mut inbox) = run.nats_subscriber("core", "out.>").await;
    let publisher = run.mqtt_peer("plant").await;
    publisher.publish("a/b", "1", 1, false).await;
    let mut got = inbox.collect(3, secs(10)).await;
    got.extend(inbox.collect_for(Duration::from_millis(500)).await);
    let mut subjects: Vec<String> = got.into_iter().map(|m| m.topic).collect();
    subjects.sort();
    assert_eq!(subjects, ["out.all", "out.same", "out.two"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_routes_take_one_copy_each_on_mqtt5() {
    overlapping_routes_take_one_copy_each("client_id: ferry-overlap-v5").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_routes_take_one_copy_each_on_mqtt311() {
    overlapping_routes_take_one_copy_each(r#"version: "3.1.1", client_id: ferry-overlap-v311"#)
        .await;
}
