//! W3C trace context across hops: an MQTT 5 device's `traceparent` user property, through
//! ferry onto NATS, through ferry again into an HTTP endpoint, arrives as one trace with one
//! new span per ferry hop; a malformed `traceparent` is replaced by a new trace and counted; a
//! route that starts traces gives one to a message without; ferry's logs and taps name the
//! trace id. Real mosquitto and nats-server; the HTTP endpoint is the tests' recording server.

mod support;

use support::*;

/// The W3C specification's own example (also in examples/trace-context.yaml's comment).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `(version, trace id, parent id, flags)` of a well-formed `traceparent`, or a panic naming it.
fn parts(value: &str) -> (String, String, String, String) {
    let p: Vec<&str> = value.split('-').collect();
    assert!(
        p.len() == 4
            && p[0] == "00"
            && p[1].len() == 32
            && p[2].len() == 16
            && p[3].len() == 2
            && value.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
            && !value.chars().any(|c| c.is_ascii_uppercase())
            && p[1].chars().any(|c| c != '0')
            && p[2].chars().any(|c| c != '0'),
        "not a valid version-00 traceparent: {value:?}"
    );
    (p[0].into(), p[1].into(), p[2].into(), p[3].into())
}

/// examples/trace-context.yaml, run as written (the brokers, the endpoint and the admin port
/// filled in): a device publishes over MQTT 5 (`plant`), `uplink` takes it onto NATS (`core`),
/// `ingest` from NATS to the HTTP endpoint and starts a trace for messages without one.
struct TwoHops {
    _mosquitto: Mosquitto,
    nats: NatsServer,
    mosquitto_url: String,
    _ferry: Ferry,
}

async fn two_hops(hook: &WebhookServer, admin_port: u16) -> TwoHops {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/trace-context.yaml"
    ))
    .unwrap();
    let config = fill(
        &example,
        &[
            ("${MQTT_URL:-mqtt://127.0.0.1:1883}", mosquitto.url()),
            ("${NATS_URL:-nats://127.0.0.1:4222}", nats.url()),
            (
                "${SERVICE_URL:-http://127.0.0.1:8080/ingest/}",
                format!("{}/ingest/", hook.url()),
            ),
            ("127.0.0.1:9090", format!("127.0.0.1:{admin_port}")),
        ],
    );
    let mut ferry = Ferry::start(&config);
    ferry.wait_ready().await;
    TwoHops {
        mosquitto_url: mosquitto.url(),
        _mosquitto: mosquitto,
        nats,
        _ferry: ferry,
    }
}

/// The route's counters as `/routes` shows them.
async fn counters(admin_port: u16, route: &str) -> serde_json::Value {
    let body = http_client()
        .get(format!("http://127.0.0.1:{admin_port}/routes"))
        .send()
        .await
        .expect("/routes answers")
        .text()
        .await
        .expect("/routes' body");
    let routes: serde_json::Value = serde_json::from_str(&body).expect("/routes is JSON");
    routes["routes"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == route))
        .unwrap_or_else(|| panic!("no route {route} in {routes}"))["counters"]
        .clone()
}

#[tokio::test]
async fn one_trace_crosses_mqtt_nats_and_http_with_a_span_per_hop() {
    within(secs(90), "the trace test", async {
        let hook = WebhookServer::start();
        let admin_port = free_port();
        let run = two_hops(&hook, admin_port).await;
        let watcher = NatsPeer::connect(&run.nats.url()).await;
        let mut on_nats = watcher.subscribe("sensors.>").await;
        let device = MqttPeer::connect(&run.mosquitto_url).await;

        // 1. Traced at the device, with vendor state.
        device
            .publish_with_user_properties(
                "sensors/traced",
                "21.5",
                &[("traceparent", TRACEPARENT), ("tracestate", "congo=t61rcWkgMzE")],
            )
            .await;
        // 2. A malformed traceparent (upper-case hex is not allowed).
        device
            .publish_with_user_properties(
                "sensors/malformed",
                "22.5",
                &[("traceparent", &TRACEPARENT.to_uppercase()), ("tracestate", "a=b")],
            )
            .await;
        // 3. No trace at all.
        device.publish("sensors/untraced", "23.5", 1, false).await;

        let on_nats = on_nats.collect(3, secs(20)).await;
        let at_hook = hook.wait_for_requests(3, secs(20)).await;
        let nats = |topic: &str| {
            on_nats
                .iter()
                .find(|m| m.topic == format!("sensors.{topic}"))
                .unwrap_or_else(|| panic!("nothing on sensors.{topic}"))
        };
        let http = |name: &str| {
            at_hook
                .iter()
                .find(|r| r.uri.ends_with(name))
                .unwrap_or_else(|| panic!("no request for {name}"))
        };

        // The traced message: the same trace and flags all the way, a new parent at each hop,
        // the vendor state carried.
        let (_, nats_trace, nats_parent, nats_flags) =
            parts(nats("traced").header("traceparent").expect("traceparent on NATS"));
        let (_, http_trace, http_parent, http_flags) =
            parts(http("traced").header("traceparent").expect("traceparent over HTTP"));
        assert_eq!((nats_trace.as_str(), http_trace.as_str()), (TRACE_ID, TRACE_ID));
        assert_eq!((nats_flags.as_str(), http_flags.as_str()), ("01", "01"));
        let device_parent = "00f067aa0ba902b7";
        assert!(
            nats_parent != device_parent && http_parent != device_parent && nats_parent != http_parent,
            "each ferry hop is a span of its own: device {device_parent}, NATS {nats_parent}, HTTP {http_parent}"
        );
        assert_eq!(nats("traced").header("tracestate"), Some("congo=t61rcWkgMzE"));
        assert_eq!(http("traced").header("tracestate"), Some("congo=t61rcWkgMzE"));
        assert_eq!(
            nats("traced").header_values("traceparent").len(),
            1,
            "the device's traceparent is replaced, not repeated"
        );

        // The malformed one: a new, valid trace from the first hop on, without the state that
        // came with it; counted on the route that replaced it.
        let (_, new_trace, _, _) =
            parts(nats("malformed").header("traceparent").expect("a new trace"));
        assert_ne!(new_trace, TRACE_ID, "a new trace, not the malformed one read leniently");
        assert_eq!(nats("malformed").header("tracestate"), None);
        let (_, hook_trace, _, _) = parts(http("malformed").header("traceparent").unwrap());
        assert_eq!(hook_trace, new_trace, "the new trace goes on across the second hop");

        // The untraced one: nothing added by `uplink` (it only propagates); `ingest` starts one.
        assert_eq!(nats("untraced").header("traceparent"), None);
        parts(http("untraced").header("traceparent").expect("ingest starts traces"));

        // Counted where it happened, and only there: a route counts a message before it
        // publishes it, so with both deliveries seen the counts are final.
        let uplink = counters(admin_port, "uplink").await;
        let ingest = counters(admin_port, "ingest").await;
        assert_eq!(
            (&uplink["traces_replaced"], &ingest["traces_replaced"]),
            (&serde_json::json!(1), &serde_json::json!(0)),
            "traces_replaced: uplink {uplink}, ingest {ingest}"
        );
        let metrics = http_client()
            .get(format!("http://127.0.0.1:{admin_port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let families = parse_exposition(&metrics, Exposition::Text004);
        assert_eq!(
            sample_value(&families, "ferry_traces_replaced_total", &[("route", "uplink")]),
            1.0
        );
    })
    .await;
}

/// A message that fails on a route is logged with its trace id, so an operator following a
/// trace finds where it stopped; a route with `trace: off` passes the headers as they came.
#[tokio::test]
async fn failures_are_logged_with_the_trace_id_and_trace_off_leaves_headers_alone() {
    within(secs(90), "the trace log test", async {
        let mut run = Scenario::new()
            .mosquitto("plant")
            .keys("plant", "version: 5")
            .nats("core")
            .routes(
                r#"
  - name: parsed
    from: { connection: plant, topic: "json/#", qos: 1 }
    transform: "{value: .v}"
    to: { connection: core, subject: auto }
  - name: raw
    from: { connection: plant, topic: "raw/#", qos: 1 }
    headers: { trace: off }
    to: { connection: core, subject: auto }
"#,
            )
            .start()
            .await;
        let (_watcher, mut on_nats) = run.nats_subscriber("core", ">").await;
        let device = run.mqtt_peer("plant").await;
        let mark = run.ferry.mark();
        device
            .publish_with_user_properties("json/a", "not json", &[("traceparent", TRACEPARENT)])
            .await;
        let line = run
            .ferry
            .wait_for_line_since(mark, "not delivered", secs(20))
            .await;
        assert!(
            line.contains(&format!("(trace {TRACE_ID})")),
            "the failure's log line names the trace: {line}"
        );

        device
            .publish_with_user_properties("raw/a", "x", &[("traceparent", "not-a-trace")])
            .await;
        let got = on_nats.collect(1, secs(20)).await;
        assert_eq!(got[0].topic, "raw.a");
        assert_eq!(
            got[0].header("traceparent"),
            Some("not-a-trace"),
            "trace: off forwards the header untouched"
        );
    })
    .await;
}

/// `ferry check` says what a route that does not keep the default does with traces.
#[test]
fn ferry_check_explains_a_route_that_starts_traces() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/trace-context.yaml"
    ))
    .unwrap();
    let out = ferry_check(&example);
    let stdout = &out.stdout;
    assert_eq!(out.code, Some(0), "{stdout}{}", out.stderr);
    let ingest = stdout.split("route ingest:").nth(1).expect("route ingest");
    assert!(
        ingest.contains("trace: continues a message's W3C trace as a new span, and starts one"),
        "{stdout}"
    );
    let uplink = stdout.split("route uplink:").nth(1).unwrap();
    let uplink = uplink.split("route ingest:").next().unwrap();
    assert!(
        !uplink.contains("trace:"),
        "the default goes unsaid: {stdout}"
    );
}

/// A webhook sender's trace goes on through an `http_server` source: curl's `traceparent` and
/// `tracestate` reach the MQTT 5 subscriber as ferry's child span, with no `keep_headers`.
#[tokio::test]
async fn a_webhook_senders_trace_goes_on_through_http_in() {
    within(secs(60), "the http_server trace test", async {
        let port = free_port();
        let run = Scenario::new()
            .mosquitto("plant")
            .keys("plant", "version: 5")
            .settings(&format!("admin: {{ listen: \"127.0.0.1:{port}\" }}"))
            .other_connection("hooks", "{ http_server: { path: /hooks } }")
            .routes(
                r#"
  - name: webhooks
    from: { connection: hooks }
    to: { connection: plant, topic: "hooks/{{ topic }}", qos: 1 }
    delivery: at-least-once
"#,
            )
            .start()
            .await;
        let mut subscriber = run.mqtt_subscriber("plant", "hooks/#", 1).await;
        let curl = require_binary("curl", "curl");
        let status = tokio::process::Command::new(curl)
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "20",
            ])
            .args(["-H", &format!("traceparent: {TRACEPARENT}")])
            .args(["-H", "tracestate: congo=t61rcWkgMzE", "-d", "{}"])
            .arg(format!("http://127.0.0.1:{port}/hooks/build"))
            .output()
            .await
            .expect("curl runs");
        assert_eq!(String::from_utf8_lossy(&status.stdout), "202");
        let m = subscriber.inbox.recv(secs(20)).await.expect("published");
        let (_, trace, parent, flags) = parts(m.header("traceparent").expect("traceparent"));
        assert_eq!((trace.as_str(), flags.as_str()), (TRACE_ID, "01"));
        assert_ne!(
            parent, "00f067aa0ba902b7",
            "ferry's hop is a span of its own"
        );
        assert_eq!(m.header("tracestate"), Some("congo=t61rcWkgMzE"));
    })
    .await;
}
