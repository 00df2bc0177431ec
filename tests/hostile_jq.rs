//! jq programs under a budget, from the outside: a transform that never ends (`def f: f; f`)
//! and one that asks for more memory than there is (`.s * .n` with a huge `n` from the
//! payload) are each stopped and dead-lettered with the reason, while the messages around them
//! and another route's keep flowing; ferry never exits, and no CPU stays spent on them.

mod support;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use support::*;

/// The user and system CPU time of process `pid`, in clock ticks (/proc/PID/stat).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its `)` are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The processes whose parent is `pid`, with their command lines.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            out.push((child, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    out
}

/// CPU ticks ferry and every child of it spent over `window`.
async fn cpu_spent(pid: u32, window: Duration) -> u64 {
    let total = || {
        cpu_ticks(pid).unwrap_or(0)
            + children(pid)
                .iter()
                .filter_map(|(c, _)| cpu_ticks(*c))
                .sum::<u64>()
    };
    let before = total();
    // A measurement over a window, not a wait for an event: the thing measured is that
    // nothing happens.
    tokio::time::sleep(window).await;
    total().saturating_sub(before)
}

const ROUTE: &str = r#"
connections:
  mq:
    mqtt: { url: "@MQTT@", version: 5 }
  nc:
    nats: { url: "@NATS@" }
routes:
  - name: shaped
    from: { connection: mq, topic: "in/#", qos: 1 }
    transform: 'def spin: spin; if .op == "spin" then spin elif .op == "grow" then {s: (.s * .n)} else {n: .n} end'
    transform_timeout: 500ms
    transform_memory: 128MiB
    to: { connection: nc, subject: out.shaped }
    dead_letter: { connection: nc, subject: dead.shaped }
  - name: other
    from: { connection: mq, topic: "other/#", qos: 1 }
    filter: '.n >= 0'
    to: { connection: nc, subject: out.other }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_and_huge_transforms_are_dead_lettered_while_traffic_flows() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let mut ferry = Ferry::start(&fill(
        ROUTE,
        &[("@MQTT@", mosquitto.url()), ("@NATS@", nats.url())],
    ));
    ferry.wait_ready().await;
    let watcher = NatsPeer::connect(&nats.url()).await;
    let mut shaped = watcher.subscribe("out.shaped").await;
    let mut other = watcher.subscribe("out.other").await;
    let mut dead = watcher.subscribe("dead.>").await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;

    // The hostile payloads, in the order they go out among the good ones.
    let spin = Bytes::from_static(br#"{"op":"spin"}"#);
    // 8 bytes a trillion times: beyond any machine (in-process, ferry aborted: exit 134).
    let huge = Bytes::from_static(br#"{"op":"grow","s":"xxxxxxxx","n":1000000000000}"#);
    // 160 MB: an allocation the machine could make, but past the route's 128MiB.
    let large = Bytes::from_static(br#"{"op":"grow","s":"xxxxxxxx","n":20000000}"#);
    const GOOD: usize = 300;
    for i in 0..GOOD {
        let hostile = match i {
            50 => Some(&spin),
            150 => Some(&huge),
            200 => Some(&spin),
            250 => Some(&large),
            _ => None,
        };
        if let Some(payload) = hostile {
            publisher.publish("in/x", payload.clone(), 1, false).await;
        }
        let good = json!({"op": "pass", "n": i}).to_string();
        publisher.publish("in/x", good, 1, false).await;
        publisher
            .publish("other/x", json!({"n": i}).to_string(), 1, false)
            .await;
    }

    // Every good message of both routes arrives, once each, in order.
    for (inbox, what) in [(&mut shaped, "shaped"), (&mut other, "other")] {
        let got = inbox.collect(GOOD, secs(30)).await;
        let numbers: Vec<Value> = got.iter().map(|m| m.json()["n"].clone()).collect();
        let expected: Vec<Value> = (0..GOOD).map(|i| json!(i)).collect();
        assert_eq!(
            numbers, expected,
            "route {what}: lost, doubled or reordered"
        );
        inbox.expect_nothing(millis(200)).await;
    }

    // Each hostile message is a dead letter, unchanged, with the budget it ran past.
    let letters = dead.collect(4, secs(15)).await;
    for (letter, payload, reason) in [
        (&letters[0], &spin, "time budget exceeded"),
        (&letters[1], &huge, "memory budget exceeded"),
        (&letters[2], &spin, "time budget exceeded"),
        (&letters[3], &large, "memory budget exceeded"),
    ] {
        assert_eq!(&letter.payload, payload, "{letter:?}");
        assert_eq!(letter.header("Ferry-Route"), Some("shaped"), "{letter:?}");
        assert_eq!(
            letter.header("Ferry-Stage"),
            Some("transform"),
            "{letter:?}"
        );
        let error = letter.header("Ferry-Error").unwrap_or_default();
        assert!(error.contains(reason), "want `{reason}`, got `{error}`");
    }
    dead.expect_nothing(millis(200)).await;

    // ferry is the process it was, and nothing it started still spins: each route with jq
    // has at most its one worker, and ferry with all its children is idle.
    assert!(ferry.is_running(), "ferry exited: {}", ferry.tail(30));
    let workers: Vec<_> = children(ferry.pid())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("__jq-worker"))
        .collect();
    assert!(
        workers.len() <= 2,
        "stopped jq workers left behind: {workers:?}"
    );
    let spent = cpu_spent(ferry.pid(), secs(2)).await;
    assert!(
        spent < 40,
        "ferry and its workers spent {spent} ticks of CPU in 2 s of idling: a stopped program still runs"
    );
}

/// The budget's settings are checked like any other: a zero timeout and a memory cap the
/// worker could not even start under are refused at `file:line:col`, with a hint.
#[test]
fn budget_settings_are_checked() {
    let yaml = |budget: &str| {
        format!(
            r#"
connections:
  mq:
    mqtt: {{ url: "mqtt://127.0.0.1:1" }}
routes:
  - name: r
    from: {{ connection: mq, topic: "a" }}
    transform: '.'
{budget}
    to: {{ connection: mq, topic: b }}
"#
        )
    };
    let out = ferry_check(&yaml(
        "    transform_timeout: 0s\n    transform_memory: 1MiB",
    ));
    let text = out.all();
    assert_eq!(out.code, Some(2), "{text}");
    assert!(
        text.contains("`transform_timeout` must be longer than 0"),
        "{text}"
    );
    assert!(
        text.contains("`transform_memory` must be at least 64MiB"),
        "{text}"
    );
    assert!(
        text.contains(":9:"),
        "no line:col for transform_timeout: {text}"
    );
    let out = ferry_check(&yaml("    transform_timeout: soon"));
    let text = out.all();
    assert!(
        text.contains("`transform_timeout` is not a duration"),
        "{text}"
    );
    let out = ferry_check(&yaml(
        "    transform_timeout: 2s\n    transform_memory: 1GiB",
    ));
    assert_eq!(out.code, Some(0), "{}", out.all());
}
