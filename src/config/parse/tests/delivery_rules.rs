//! Delivery guarantees, spools, JetStream and probes.

use super::*;

const CONNECTIONS: &str = r#"
connections:
  plant: { mqtt: { url: mqtt://broker } }
  legacy: { mqtt: { url: mqtt://broker, version: "3.1.1", clean_start: true, probe: false } }
  core:
    nats:
      url: nats://server
      ping_interval: 5s
      probe: { interval: 2s, timeout: 1s, topic: _FERRY.me }
"#;

#[test]
fn decodes_delivery_spool_jetstream_and_probes() {
    let text = format!(
        "{CONNECTIONS}{}",
        r#"routes:
  - name: up
    from: { connection: plant, topic: "s/#", qos: 1 }
    to: { connection: core, subject: iot.s, jetstream: true }
    delivery: at-least-once
    spool: { dir: /tmp/spool-up, max_bytes: 2MiB }
  - name: down
    from:
      connection: core
      subject: "cmd.>"
      jetstream: { stream: CMD, consumer: ferry-cmd, max_ack_pending: 50, ack_wait: 5s, deliver: new }
    to: { connection: plant, topic: cmd, qos: 1 }
    spool: {}
    reconnect_note: &x 1
"#
    );
    // The stray key shows an unknown key is still refused next to the new ones.
    assert!(parse_text(&text).unwrap_err().contains("reconnect_note"));
    let config = parse_text(&text.replace("    reconnect_note: &x 1\n", ""))
        .unwrap_or_else(|e| panic!("{e}"));
    let ConnectionKind::Mqtt(plant) = &config.connections["plant"].kind else {
        panic!()
    };
    // A persistent session by default, with a day of session expiry on MQTT 5.
    assert!(!plant.clean_start);
    assert_eq!(
        plant.session_expiry,
        Some(Duration::from_secs(24 * 60 * 60))
    );
    assert_eq!(plant.probe, Some(Probe::default()));
    let ConnectionKind::Mqtt(legacy) = &config.connections["legacy"].kind else {
        panic!()
    };
    assert_eq!((legacy.clean_start, legacy.session_expiry), (true, None));
    assert_eq!(legacy.probe, None);
    let ConnectionKind::Nats(core) = &config.connections["core"].kind else {
        panic!()
    };
    assert_eq!(core.ping_interval, Duration::from_secs(5));
    assert_eq!(
        core.probe,
        Some(Probe {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            topic: Some("_FERRY.me".into()),
        })
    );
    let up = &config.routes[0];
    assert_eq!(up.delivery, Some(Delivery::AtLeastOnce));
    assert_eq!(config.spool_dir(up), Some(PathBuf::from("/tmp/spool-up")));
    assert_eq!(up.spool.as_ref().unwrap().max_bytes, 2 << 20);
    let SinkSpec::Nats(sink) = &up.to[0].spec else {
        panic!()
    };
    assert!(sink.jetstream);
    let down = &config.routes[1];
    assert_eq!(down.delivery, None);
    assert_eq!(
        config.spool_dir(down),
        Some(config.state_dir().join("spool").join("down"))
    );
    let SourceSpec::Nats(source) = &down.from.spec else {
        panic!()
    };
    assert_eq!(
        source.jetstream,
        Some(JetStreamSource {
            stream: "CMD".into(),
            consumer: "ferry-cmd".into(),
            max_ack_pending: 50,
            ack_wait: Duration::from_secs(5),
            deliver: JetStreamDeliver::New,
            priority_group: None,
        })
    );
    assert_eq!(
        delivery::guarantee(down, &config.connections).delivery,
        Delivery::AtLeastOnce
    );
}

#[test]
fn refuses_at_least_once_where_a_side_cannot_keep_it() {
    let route = |from: &str, to: &str, extra: &str| {
        format!(
            "{CONNECTIONS}routes:\n  - name: r\n    from: {from}\n    to: {to}\n    delivery: at-least-once\n{extra}"
        )
    };
    let cases = [
        (
            route(
                "{ connection: core, subject: a }",
                "{ connection: plant, topic: a, qos: 1 }",
                "",
            ),
            "core NATS subscription `a` on `core` has no redelivery",
            "jetstream: { stream: NAME, consumer: NAME }",
        ),
        (
            route(
                "{ connection: plant, topic: a }",
                "{ connection: core, subject: a }",
                "",
            ),
            "at QoS 0, which the broker never redelivers",
            "set `qos: 1` on the source",
        ),
        (
            route(
                "{ connection: legacy, topic: a, qos: 1 }",
                "{ connection: core, subject: a }",
                "",
            ),
            "starts a clean session",
            "remove `clean_start: true`",
        ),
        (
            route(
                "{ connection: plant, topic: a, qos: 1 }",
                "{ connection: legacy, topic: b }",
                "",
            ),
            "publishes to `legacy` at QoS 0",
            "set `qos: 1` on the sink",
        ),
        (
            route(
                "{ connection: plant, topic: a, qos: 1 }",
                "{ connection: core, subject: a }",
                "    queue: { when_full: drop_oldest }\n",
            ),
            "drops messages when it is full",
            "when_full: block",
        ),
    ];
    for (text, what, fix) in cases {
        let error = parse_text(&text).unwrap_err();
        assert!(error.contains("b.yaml:"), "{error}");
        assert!(error.contains(what), "{what:?} not in {error}");
        assert!(error.contains(fix), "{fix:?} not in {error}");
    }
    // A bad name and a probe without interval are refused with the rule.
    let error = parse_text(&route(
        "{ connection: core, subject: a, jetstream: { stream: a.b, consumer: c } }",
        "{ connection: plant, topic: a, qos: 1 }",
        "",
    ))
    .unwrap_err();
    assert!(
        error.contains("`a.b` is not a valid JetStream stream name"),
        "{error}"
    );
}
