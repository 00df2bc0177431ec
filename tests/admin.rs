//! The admin listener as an operator uses it, against a real ferry between real mosquitto and
//! nats-server: `/metrics` read by the official Prometheus parsers (both exposition formats)
//! after a known load through two routes, `/readyz` while a broker is down and once it is up,
//! `/routes`, and `ferry tap` on a route that keeps flowing.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::*;

/// Two routes from mosquitto to nats-server: `warm` passes readings above 20 °C (the filter)
/// to `iot.ROOM.temp`; `parsed` reshapes JSON and sends what is not JSON to `dead.raw`.
const TWO_ROUTES: &str = r#"
admin: { listen: "127.0.0.1:@PORT@", taps: true }
connections:
  mq: { mqtt: { url: "@MQTT@", client_id: ferry-admin-test } }
  core: { nats: { url: "@NATS@" } }
routes:
  - name: warm
    from: { connection: mq, topic: "sensors/+/temp", qos: 1 }
    filter: '.t > 20'
    to: { connection: core, subject: "iot.{{ topic[1] }}.temp" }
  - name: parsed
    from: { connection: mq, topic: "raw/#", qos: 1 }
    transform: '{v: .value}'
    to: { connection: core, subject: "parsed.raw" }
    dead_letter: { connection: core, subject: "dead.raw" }
"#;

struct Setup {
    mosquitto: Mosquitto,
    nats: NatsServer,
    ferry: Ferry,
    yaml: String,
    admin: String,
}

async fn two_routes() -> Setup {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let port = free_port();
    let yaml = two_routes_yaml(port, &mosquitto, &nats);
    let mut ferry = Ferry::start(&yaml);
    ferry.wait_ready().await;
    Setup {
        mosquitto,
        nats,
        ferry,
        yaml,
        admin: format!("http://127.0.0.1:{port}"),
    }
}

async fn get(url: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut request = http_client().get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, kind, response.text().await.unwrap())
}

async fn routes_json(admin: &str) -> Value {
    let (status, kind, body) = get(&format!("{admin}/routes"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(kind, "application/json");
    serde_json::from_str(&body).unwrap()
}

/// A known load through both routes; then every counter in `/metrics`, read by the official
/// Prometheus parsers in both formats, equals what was sent, filtered and failed, the latency
/// histograms counted every publish, and `/routes` says the same.
#[tokio::test]
async fn metrics_and_routes_count_the_traffic_sent() {
    let Setup {
        mosquitto,
        nats,
        mut ferry,
        admin,
        ..
    } = two_routes().await;
    let peer = NatsPeer::connect(&nats.url()).await;
    let mut iot = peer.subscribe("iot.>").await;
    let mut parsed = peer.subscribe("parsed.raw").await;
    let mut dead = peer.subscribe("dead.raw").await;
    peer.sync().await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    // warm: 30 readings, 20 above 20 °C; parsed: 15 JSON objects, 5 that are not JSON.
    publisher
        .publish_all(
            (0..30).map(|i| {
                let t = if i % 3 == 0 { 10 } else { 25 };
                (format!("sensors/r{i}/temp"), format!("{{\"t\":{t}}}"))
            }),
            1,
        )
        .await;
    publisher
        .publish_all(
            (0..20).map(|i| {
                let payload = if i % 4 == 0 {
                    format!("not json {i}")
                } else {
                    format!("{{\"value\":{i}}}")
                };
                ("raw/x".to_string(), payload)
            }),
            1,
        )
        .await;
    assert_eq!(iot.collect(20, secs(20)).await.len(), 20);
    assert_eq!(parsed.collect(15, secs(20)).await.len(), 15);
    assert_eq!(dead.collect(5, secs(20)).await.len(), 5);

    // The far side has everything; the counters follow within moments (a publish is counted
    // once its sink confirmed it). Scrape until they settle, bounded.
    let scrape_url = format!("{admin}/metrics");
    let deadline = tokio::time::Instant::now() + secs(10);
    let (text, open) = loop {
        let (status, kind, text) = get(&scrape_url, None).await;
        assert_eq!(status, 200);
        assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
        let (_, open_kind, open) = get(
            &scrape_url,
            Some("application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"),
        )
        .await;
        assert_eq!(
            open_kind,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let settled = {
            let families = parse_exposition(&open, Exposition::OpenMetrics);
            sample_value(
                &families,
                "ferry_messages_sent_total",
                &[("route", "parsed")],
            ) == 15.0
                && sample_value(&families, "ferry_messages_sent_total", &[("route", "warm")])
                    == 20.0
                && sample_value(
                    &families,
                    "ferry_messages_dead_lettered_total",
                    &[("route", "parsed")],
                ) == 5.0
                // The last source acknowledgement follows its publish.
                && ["warm", "parsed"].iter().all(|route| {
                    sample_value(&families, "ferry_pending_acks", &[("route", route)]) == 0.0
                })
        };
        if settled {
            break (text, open);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the counters did not reach the traffic sent within 10s:\n{open}"
        );
        tokio::time::sleep(millis(100)).await;
    };

    let text = parse_exposition(&text, Exposition::Text004);
    let open = parse_exposition(&open, Exposition::OpenMetrics);
    for families in [&text, &open] {
        let v = |name: &str, labels: &[(&str, &str)]| sample_value(families, name, labels);
        let warm = [("route", "warm")];
        let raw = [("route", "parsed")];
        assert_eq!(v("ferry_messages_received_total", &warm), 30.0);
        assert_eq!(v("ferry_messages_filtered_total", &warm), 10.0);
        assert_eq!(
            v(
                "ferry_messages_sent_total",
                &[("route", "warm"), ("sink", "core")]
            ),
            20.0
        );
        assert_eq!(v("ferry_messages_failed_total", &warm), 0.0);
        assert_eq!(v("ferry_messages_received_total", &raw), 20.0);
        assert_eq!(v("ferry_messages_filtered_total", &raw), 0.0);
        assert_eq!(v("ferry_messages_failed_total", &raw), 5.0);
        assert_eq!(v("ferry_messages_dead_lettered_total", &raw), 5.0);
        // Both sinks took every publish at the first try: nothing was published twice.
        assert_eq!(v("ferry_publishes_retried_total", &warm), 0.0);
        assert_eq!(v("ferry_publishes_retried_total", &raw), 0.0);
        for reason in ["queue_full_drop_oldest", "loop_max_hops", "echo"] {
            assert_eq!(
                v(
                    "ferry_messages_dropped_total",
                    &[("route", "warm"), ("reason", reason)]
                ),
                0.0
            );
        }
        // The histogram counted each confirmed publish once, dead letters aside.
        let latency = [("route", "warm"), ("sink", "core")];
        assert_eq!(v("ferry_sink_latency_seconds_count", &latency), 20.0);
        let mut inf = latency.to_vec();
        inf.push(("le", "+Inf"));
        assert_eq!(v("ferry_sink_latency_seconds_bucket", &inf), 20.0);
        let mut fastest = latency.to_vec();
        fastest.push(("le", "0.0001"));
        assert!(v("ferry_sink_latency_seconds_bucket", &fastest) <= 20.0);
        assert!(v("ferry_sink_latency_seconds_sum", &latency) > 0.0);
        assert_eq!(
            v(
                "ferry_sink_latency_seconds_count",
                &[("route", "parsed"), ("sink", "core")]
            ),
            15.0
        );
        for route in [&warm, &raw] {
            assert_eq!(v("ferry_queue_messages", route), 0.0);
            assert_eq!(v("ferry_queue_bytes", route), 0.0);
            assert_eq!(v("ferry_pending_acks", route), 0.0);
            assert_eq!(v("ferry_queue_max_messages", route), 10_000.0);
            assert_eq!(v("ferry_spool_bytes", route), 0.0);
        }
        for connection in ["mq", "core"] {
            assert_eq!(v("ferry_connection_up", &[("connection", connection)]), 1.0);
            assert_eq!(
                v(
                    "ferry_connection_state",
                    &[("connection", connection), ("state", "up")]
                ),
                1.0
            );
            assert_eq!(
                v(
                    "ferry_connection_reconnects_total",
                    &[("connection", connection)]
                ),
                0.0
            );
        }
        assert_eq!(
            v(
                "ferry_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            1.0
        );
        assert!(v("ferry_start_time_seconds", &[]) > 1.6e9);
    }
    // Both formats carry the same samples.
    let samples = |families: &[Family]| -> Vec<(String, Vec<(String, String)>)> {
        let mut all: Vec<_> = families
            .iter()
            .flat_map(|f| &f.samples)
            .map(|s| (s.name.clone(), s.labels.clone()))
            .collect();
        all.sort();
        all
    };
    assert_eq!(samples(&text), samples(&open));
    let kind = |name: &str| {
        open.iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no family {name}"))
            .kind
            .clone()
    };
    assert_eq!(kind("ferry_messages_received"), "counter");
    assert_eq!(kind("ferry_sink_latency_seconds"), "histogram");
    assert_eq!(kind("ferry_queue_messages"), "gauge");
    assert!(open.iter().all(|f| !f.help.is_empty()), "{open:?}");

    // /routes says the same, under its documented names.
    let routes = routes_json(&admin).await;
    let warm = &routes["routes"][0];
    assert_eq!(warm["name"], "warm");
    assert_eq!(warm["from"], "mq");
    assert_eq!(warm["to"], serde_json::json!(["core"]));
    assert_eq!(warm["dead_letter"], Value::Null);
    assert!(["at-least-once", "at-most-once"].contains(&warm["delivery"].as_str().unwrap()));
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        keys(warm),
        [
            "name",
            "from",
            "to",
            "dead_letter",
            "delivery",
            "counters",
            "queue",
            "spool_bytes"
        ]
        .map(String::from)
        .into()
    );
    let c = &warm["counters"];
    assert_eq!(
        (&c["received"], &c["sent"], &c["filtered"], &c["failed"]),
        (&30.into(), &20.into(), &10.into(), &0.into())
    );
    assert_eq!(c["sent_by_sink"]["core"], 20);
    assert_eq!(c["pending_acks"], 0);
    assert_eq!(c["retried"], 0);
    assert_eq!(
        keys(&warm["queue"]),
        [
            "messages",
            "bytes",
            "max_messages",
            "max_bytes",
            "when_full"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(warm["queue"]["when_full"], "block");
    let raw = &routes["routes"][1];
    assert_eq!(raw["name"], "parsed");
    assert_eq!(raw["dead_letter"], "core");
    assert_eq!(
        (
            &raw["counters"]["failed"],
            &raw["counters"]["dead_lettered"]
        ),
        (&5.into(), &5.into())
    );
    let connections = routes["connections"].as_array().unwrap();
    let names: BTreeSet<&str> = connections
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["core", "mq"].into());
    for c in connections {
        assert_eq!(c["state"], "up", "{c}");
        assert_eq!(c["reconnects"], 0);
        assert!(
            humantime::parse_rfc3339(c["since"].as_str().unwrap()).is_ok(),
            "{c}"
        );
        assert!(["mqtt", "nats"].contains(&c["protocol"].as_str().unwrap()));
    }
    assert!(ferry.terminate().await.success());
}

/// `/readyz` is 503 naming the connection whose broker is down (with its state and since
/// when), and 200 once the broker is up; `/healthz` answers all along.
#[tokio::test]
async fn readyz_names_a_connection_until_its_broker_is_up() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let mut nats = NatsServer::start(NatsOptions::default());
    nats.stop();
    let port = free_port();
    let yaml = two_routes_yaml(port, &mosquitto, &nats);
    let mut ferry = Ferry::start(&yaml);
    ferry
        .wait_for_line(
            &format!("admin listener on http://127.0.0.1:{port}"),
            secs(10),
        )
        .await;
    // Once mq is up, only core (whose server is down) keeps ferry from being ready.
    ferry.wait_for_line("connected to", secs(20)).await;
    let admin = format!("http://127.0.0.1:{port}");
    let (status, kind, body) = get(&format!("{admin}/readyz"), None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(kind, "text/plain; charset=utf-8");
    assert!(
        body.starts_with("not ready: 1 of 2 connection(s) not up\n"),
        "{body}"
    );
    let line = body.lines().nth(1).unwrap();
    assert!(
        line.starts_with("core (nats): down since ")
            || line.starts_with("core (nats): connecting since "),
        "{body}"
    );
    assert!(!body.contains("mq (mqtt)"), "{body}");
    let (status, _, health) = get(&format!("{admin}/healthz"), None).await;
    assert_eq!((status, health.as_str()), (200, "ok"));

    nats.start_again();
    let deadline = tokio::time::Instant::now() + secs(30);
    loop {
        let (status, _, body) = get(&format!("{admin}/readyz"), None).await;
        if status == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still 503 30s after nats-server came up:\n{body}"
        );
        tokio::time::sleep(millis(100)).await;
    }
    let routes = routes_json(&admin).await;
    let core = routes["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "core")
        .unwrap()
        .clone();
    assert_eq!(core["state"], "up");
    assert!(ferry.terminate().await.success());
}

/// `ferry tap ROUTE --count N` while readings flow: N events, before and after mapping (the
/// subject as the sink gets it), and the far side still gets every reading; `--json` prints
/// the daemon's lines; an unknown route exits 2 naming the routes; no daemon exits 1 saying
/// how to turn the admin listener on.
#[tokio::test]
async fn ferry_tap_shows_a_flowing_route_without_disturbing_it() {
    let Setup {
        mosquitto,
        nats,
        mut ferry,
        yaml,
        admin,
    } = two_routes().await;
    let peer = NatsPeer::connect(&nats.url()).await;
    let mut iot = peer.subscribe("iot.>").await;
    peer.sync().await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    // A steady stream of warm readings until the taps are done.
    let stop = tokio_util::sync::CancellationToken::new();
    let flow = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut sent = 0usize;
            while !stop.is_cancelled() {
                publisher
                    .publish(
                        &format!("sensors/room{}/temp", sent % 3),
                        format!("{{\"t\":{}}}", 21 + sent),
                        1,
                        false,
                    )
                    .await;
                sent += 1;
                tokio::time::sleep(millis(20)).await;
            }
            sent
        }
    });

    // `-c bridges.yaml`: the address comes from the config's admin.listen.
    let tap = {
        let yaml = yaml.clone();
        tokio::task::spawn_blocking(move || {
            ferry_command(
                &["tap", "warm", "--count", "6", "-c", "bridges.yaml"],
                &yaml,
                secs(30),
            )
        })
    };
    let out = tap.await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.all());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", out.stdout);
    let before = lines
        .iter()
        .find(|l| l.starts_with("before  sensors/room"))
        .unwrap_or_else(|| panic!("no before line:\n{}", out.stdout));
    let after = lines
        .iter()
        .find(|l| l.starts_with("after → core  iot.room"))
        .unwrap_or_else(|| panic!("no after line:\n{}", out.stdout));
    assert!(
        before.ends_with('}') && before.contains("  {\"t\":"),
        "{before}"
    );
    assert!(after.contains(".temp  {\"t\":"), "{after}");
    for line in &lines {
        assert!(
            line.starts_with("before  ") || line.starts_with("after → "),
            "{line}"
        );
    }

    let json = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || {
            ferry_command(
                &["tap", "warm", "-n", "2", "--json", "--admin", &admin],
                "",
                secs(30),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(json.code, Some(0), "{}", json.all());
    let events: Vec<Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len(), 2);
    for event in &events {
        assert!(["before", "after"].contains(&event["stage"].as_str().unwrap()));
        assert!(event["subject"].is_string() && event["payload"].is_string());
        assert!(event["id"].is_string() && event["time"].is_string());
        assert!(event["headers"].is_array());
        if event["stage"] == "after" {
            assert_eq!(event["sink"], "core");
        }
    }

    stop.cancel();
    let sent = flow.await.unwrap();
    // Every reading reached the far side, taps or not.
    let got = iot.collect(sent, secs(30)).await;
    assert_eq!(got.len(), sent, "the tap disturbed the flow");
    iot.expect_nothing(millis(300)).await;

    let unknown = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || ferry_command(&["tap", "nope", "--admin", &admin], "", secs(30))
    })
    .await
    .unwrap();
    assert_eq!(unknown.code, Some(2), "{}", unknown.all());
    assert!(
        unknown
            .stderr
            .contains("the running ferry has no route `nope`; its routes: warm, parsed"),
        "{}",
        unknown.stderr
    );
    assert!(ferry.terminate().await.success());

    let gone = tokio::task::spawn_blocking(move || {
        ferry_command(&["tap", "warm", "--admin", &admin], "", secs(30))
    })
    .await
    .unwrap();
    assert_eq!(gone.code, Some(1), "{}", gone.all());
    assert!(
        gone.stderr.contains("cannot reach ferry's admin listener")
            && gone.stderr.contains("admin: {listen: 127.0.0.1:"),
        "{}",
        gone.stderr
    );
}

/// [`TWO_ROUTES`] with the admin listener on `port` and the brokers' addresses.
fn two_routes_yaml(port: u16, mosquitto: &Mosquitto, nats: &NatsServer) -> String {
    fill(
        TWO_ROUTES,
        &[
            ("@PORT@", port.to_string()),
            ("@MQTT@", mosquitto.url()),
            ("@NATS@", nats.url()),
        ],
    )
}
