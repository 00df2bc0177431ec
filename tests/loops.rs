//! Loops between routes: `ferry check` refuses a loop no marker can break and warns about one
//! that can echo once; `loop_guard.max_hops` stops two ferries that feed each other.

mod support;

use std::time::Duration;

use support::*;

/// A loopback URL nothing listens on: `ferry check` must not connect anywhere.
fn unused(scheme: &str) -> String {
    format!("{scheme}://127.0.0.1:{}", free_port())
}

// ---------------------------------------------------------------------------------------------
// 6. the endless loop

/// Two MQTT brokers, each route relaying `x/#` from one to the other: what route
/// `east-to-west` publishes, route `west-to-east` reads back, and the other way round.
/// `VERSION` is the MQTT version of both connections.
const TWO_BROKER_LOOP: &str = r#"
connections:
  east:
    mqtt: { url: "@EAST@", version: "VERSION", client_id: ferry-east }
  west:
    mqtt: { url: "@WEST@", version: "VERSION", client_id: ferry-west }
routes:
  - name: east-to-west
    from: { connection: east, topic: "x/#", qos: 1 }
    to: { connection: west, topic: auto, qos: 1 }
  - name: west-to-east
    from: { connection: west, topic: "x/#", qos: 1 }
    to: { connection: east, topic: auto, qos: 1 }
"#;

fn two_broker_loop(version: &str) -> String {
    fill(
        &TWO_BROKER_LOOP.replace("VERSION", version),
        &[("@EAST@", unused("mqtt")), ("@WEST@", unused("mqtt"))],
    )
}

/// Over MQTT 3.1.1 nothing can mark a relayed message, so the two routes would pass every
/// message back and forth forever: `ferry check` refuses the file (exit 2) with an error that
/// says `loop` and names both routes. The same pair over MQTT 5 (user properties carry the
/// marks) is accepted, so it is the unbreakable loop that is refused, not the shape.
#[test]
fn check_refuses_an_endless_mqtt_3_1_1_loop_naming_both_routes() {
    let out = ferry_check(&two_broker_loop("3.1.1"));
    let text = out.all();
    assert_eq!(
        out.code,
        Some(2),
        "`ferry check` must refuse an endless loop; output:\n{text}"
    );
    let error = error_block(&text, "loop");
    for route in ["east-to-west", "west-to-east"] {
        assert!(
            error.contains(route),
            "the loop error does not name route `{route}`:\n{error}\n--- output:\n{text}"
        );
    }

    let marked = ferry_check(&two_broker_loop("5"));
    assert_eq!(
        marked.code,
        Some(0),
        "the same loop over MQTT 5 can be broken by the loop guard's marks and must be \
         accepted; output:\n{}",
        marked.all()
    );
}

/// `ferry run` refuses the endless loop before connecting, like every bad configuration.
#[test]
fn run_refuses_an_endless_mqtt_3_1_1_loop_before_starting() {
    let out = ferry_run_until_exit(&two_broker_loop("3.1.1"), secs(20));
    let text = out.all();
    assert_eq!(
        out.code,
        Some(2),
        "`ferry run` must refuse an endless loop with exit 2; output:\n{text}"
    );
    let error = error_block(&text, "loop");
    for route in ["east-to-west", "west-to-east"] {
        assert!(error.contains(route), "route `{route}` not named:\n{error}");
    }
}

/// The first error line that mentions `word` (both case-insensitively), with the three lines
/// after it (its hints); panics with the whole output if there is none.
fn error_block(output: &str, word: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let at = lines
        .iter()
        .position(|l| {
            let l = l.to_lowercase();
            l.contains("error") && l.contains(word)
        })
        .unwrap_or_else(|| panic!("no error line mentions `{word}`; output:\n{output}"));
    lines[at..(at + 4).min(lines.len())].join("\n")
}

// ---------------------------------------------------------------------------------------------
// 7. the echo warning

/// A two-way MQTT ⇄ NATS bridge over overlapping names; `VERSION` is the MQTT version.
const TWO_WAY: &str = r#"
connections:
  mq:
    mqtt: { url: "@MQTT@", version: "VERSION" }
  nc:
    nats: { url: "@NATS@" }
routes:
  - name: up
    from: { connection: mq, topic: "bridge/#", qos: 1 }
    to: { connection: nc, subject: auto }
  - name: down
    from: { connection: nc, subject: "bridge.>" }
    to: { connection: mq, topic: auto, qos: 1 }
"#;

fn two_way(version: &str) -> String {
    fill(
        &TWO_WAY.replace("VERSION", version),
        &[("@MQTT@", unused("mqtt")), ("@NATS@", unused("nats"))],
    )
}

/// Over MQTT 3.1.1 the marks travel only on the NATS side, so a message from NATS can come
/// back once: `ferry check` accepts the file (exit 0) but warns about the echo and names the
/// topics at risk. Over MQTT 5 the marks travel both ways: no such warning.
#[test]
fn check_warns_about_echoes_on_a_mqtt_3_1_1_nats_pair() {
    let out = ferry_check(&two_way("3.1.1"));
    let text = out.all();
    assert_eq!(
        out.code,
        Some(0),
        "a breakable loop is accepted; output:\n{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.to_lowercase().contains("echo"))
        .unwrap_or_else(|| panic!("no warning mentions `echo`; output:\n{text}"));
    // The warning and its hint lines.
    let warning = lines[at.saturating_sub(1)..(at + 4).min(lines.len())].join("\n");
    assert!(
        warning.to_lowercase().contains("warn"),
        "the `echo` line is not a warning:\n{warning}\n--- output:\n{text}"
    );
    assert!(
        warning.contains("bridge/") || warning.contains("bridge."),
        "the echo warning does not name the topics at risk (bridge/...):\n{warning}"
    );

    let v5 = ferry_check(&two_way("5"));
    assert_eq!(v5.code, Some(0), "output:\n{}", v5.all());
    assert!(
        !v5.all().to_lowercase().contains("echo"),
        "over MQTT 5 the marks travel both ways, yet `ferry check` warns about echoes:\n{}",
        v5.all()
    );
}

// ---------------------------------------------------------------------------------------------
// 8. max_hops between two ferries

/// Two ferry processes feed each other through the same MQTT broker and NATS server: ferry A
/// relays NATS `hop.>` to MQTT, ferry B relays MQTT `hop/#` back to NATS. Each one's own route
/// graph has no cycle (and their connection names differ), so only the hop count can stop the
/// ping-pong: with `max_hops: 3`, one message published on NATS is relayed at most 3 times in
/// all, it reaches MQTT at most 3 times, and then the traffic stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hops_stops_two_ferries_feeding_each_other() {
    const MAX_HOPS: usize = 3;
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let urls = [("@MQTT@", mosquitto.url()), ("@NATS@", nats.url())];
    let mut ferry_a = Ferry::start(&fill(
        r#"
loop_guard: { instance: ferry-a, max_hops: 3 }
connections:
  a-mq:
    mqtt: { url: "@MQTT@", version: 5, client_id: ferry-a-mq }
  a-nc:
    nats: { url: "@NATS@" }
routes:
  - name: a-down
    from: { connection: a-nc, subject: "hop.>" }
    to: { connection: a-mq, topic: auto, qos: 1 }
"#,
        &urls,
    ));
    let mut ferry_b = Ferry::start(&fill(
        r#"
loop_guard: { instance: ferry-b, max_hops: 3 }
connections:
  b-mq:
    mqtt: { url: "@MQTT@", version: 5, client_id: ferry-b-mq }
  b-nc:
    nats: { url: "@NATS@" }
routes:
  - name: b-up
    from: { connection: b-mq, topic: "hop/#", qos: 1 }
    to: { connection: b-nc, subject: auto }
"#,
        &urls,
    ));
    ferry_a.wait_ready().await;
    ferry_b.wait_ready().await;

    let nats_watcher = NatsPeer::connect(&nats.url()).await;
    let mut at_nats = nats_watcher.subscribe("hop.>").await;
    let mut mqtt_watcher = MqttPeer::connect(&mosquitto.url()).await;
    mqtt_watcher.subscribe("hop/#", 1).await;
    let publisher = NatsPeer::connect(&nats.url()).await;
    publisher.publish("hop.ping", "ping-1").await;
    publisher.flush().await;

    // The first relay, then everything until both sides have been quiet for 3 s; a loop
    // that never stops fails within 30 s (or at 200 copies).
    let mut mqtt_copies = mqtt_watcher.inbox.collect(1, secs(15)).await;
    let (more_mqtt, nats_copies) = until_quiet(
        &mut mqtt_watcher.inbox,
        &mut at_nats,
        secs(3),
        secs(30),
        200,
    )
    .await;
    mqtt_copies.extend(more_mqtt);

    for m in mqtt_copies.iter().chain(&nats_copies) {
        assert_eq!(m.text(), "ping-1", "unexpected message {m:?}");
    }
    // On NATS: the original (no ferry headers) and what ferry B relayed.
    let (relayed_nats, original): (Vec<&Msg>, Vec<&Msg>) = nats_copies
        .iter()
        .partition(|m| m.ferry_instance().is_some());
    assert_eq!(
        original.len(),
        1,
        "the original NATS message (without ferry headers) should be seen once: {nats_copies:?}"
    );
    for m in &mqtt_copies {
        assert_eq!(m.topic, "hop/ping");
        assert_eq!(
            m.ferry_instance(),
            Some("ferry-a"),
            "an MQTT copy not published by ferry A: {:?}",
            m.headers
        );
        assert_hops_within(m, MAX_HOPS);
    }
    for m in &relayed_nats {
        assert_eq!(m.topic, "hop.ping");
        assert_eq!(
            m.ferry_instance(),
            Some("ferry-b"),
            "a NATS copy not published by ferry B: {:?}",
            m.headers
        );
        assert_hops_within(m, MAX_HOPS);
    }
    // The hop count decides exactly: A publishes hop 1 to MQTT, B hop 2 to NATS, A hop 3 to
    // MQTT, and B drops what arrives with 3 hops (max_hops: 3).
    let hops = |msgs: &[&Msg]| -> Vec<String> {
        msgs.iter()
            .map(|m| m.ferry_hops().map_or("?".into(), |h| h.to_string()))
            .collect()
    };
    assert_eq!(
        hops(&mqtt_copies.iter().collect::<Vec<_>>()),
        ["1", "3"],
        "MQTT copies"
    );
    assert_eq!(hops(&relayed_nats), ["2"], "NATS copies relayed by ferry B");
}

/// A loop marker (`Ferry-Via`) counting from 1 to `max` hops.
fn assert_hops_within(m: &Msg, max: usize) {
    let hops = m
        .ferry_hops()
        .unwrap_or_else(|| panic!("no loop marker with a hop count: {m:?} {:?}", m.headers))
        as usize;
    assert!(
        (1..=max).contains(&hops),
        "hop count {hops} is outside 1..={max}: {m:?} {:?}",
        m.headers
    );
}

/// Collects from two inboxes until neither has received anything for `quiet`; panics if that
/// takes longer than `limit` or more than `cap` messages arrive (traffic that never stops).
async fn until_quiet(
    a: &mut Inbox,
    b: &mut Inbox,
    quiet: Duration,
    limit: Duration,
    cap: usize,
) -> (Vec<Msg>, Vec<Msg>) {
    let deadline = tokio::time::Instant::now() + limit;
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    loop {
        let next = tokio::select! {
            m = a.recv(quiet) => m.map(|m| (true, m)),
            m = b.recv(quiet) => m.map(|m| (false, m)),
        };
        match next {
            Some((true, m)) => got_a.push(m),
            Some((false, m)) => got_b.push(m),
            None => {
                // One side was quiet for `quiet`; the other may have had a message at the
                // very same moment.
                let (late_a, late_b) = (a.drain(), b.drain());
                if late_a.is_empty() && late_b.is_empty() {
                    return (got_a, got_b);
                }
                got_a.extend(late_a);
                got_b.extend(late_b);
            }
        }
        let total = got_a.len() + got_b.len();
        assert!(
            tokio::time::Instant::now() < deadline && total <= cap,
            "the traffic did not stop: {total} messages (at most {cap} within {limit:?} \
             expected) (first: {:?} / {:?})",
            got_a.first(),
            got_b.first()
        );
    }
}
