//! The mapping stage end to end: a route from YAML, a message in, what each sink gets out.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::*;
use crate::config::loops::Analysis;
use crate::config::{Config, Lookup, parse};

const CONNECTIONS: &str = r#"
connections:
  plant: { mqtt: { url: "mqtt://127.0.0.1:1883", version: 5 } }
  core: { nats: { url: "nats://127.0.0.1:4222" } }
"#;

fn config(routes: &str) -> Config {
    let lookup = Lookup {
        var: &|_| None,
        file: &|_| Ok(String::new()),
    };
    let text = format!("{CONNECTIONS}routes:\n{routes}");
    parse(&text, "test.yaml", &lookup).unwrap_or_else(|e| panic!("{e}"))
}

fn no_cycles() -> Analysis {
    Analysis {
        guarded: BTreeSet::new(),
        no_local: BTreeSet::new(),
        cycles: Vec::new(),
        truncated: false,
        brokers: Default::default(),
    }
}

fn mapping(routes: &str) -> Mapping {
    Mapping::new(&no_cycles().resolve(&config(routes), 0).unwrap(), "edge").unwrap()
}

fn message(origin: &str, subject: &str, payload: &str) -> Message {
    Message::new(origin.into(), subject, payload.as_bytes().to_vec())
}

/// The publishes of a mapped message as (sink, message); panics on anything else.
fn published(outcome: Outcome) -> Vec<(usize, Message)> {
    match outcome {
        Outcome::Mapped { steps, .. } => steps
            .into_iter()
            .map(|s| match s {
                Step::Publish { sink, message } => (sink, message),
                Step::Fail(f) => panic!("unexpected failure: {f}"),
            })
            .collect(),
        other => panic!("not mapped: {other:?}"),
    }
}

/// The first message a mapped message publishes.
fn first(outcome: Outcome) -> Message {
    published(outcome).remove(0).1
}

/// The publishes of a mapped message as (sink, subject, payload); panics on anything else.
fn publishes(outcome: Outcome) -> Vec<(usize, String, String)> {
    published(outcome)
        .into_iter()
        .map(|(sink, m)| {
            let payload = String::from_utf8_lossy(&m.payload).into_owned();
            (sink, m.subject, payload)
        })
        .collect()
}

fn header<'m>(m: &'m Message, name: &str) -> Option<&'m str> {
    marker::header(&m.headers, name)
}

#[test]
fn match_captures_name_subjects_and_headers() {
    let m = mapping(
        r#"
  - name: telemetry
    from: { connection: plant, topic: "sensors/#", match: '^sensors/(?P<room>[^/]+)/temp$' }
    headers: { remove: [x-debug], set: { room: "{{ match.room | upper }}" } }
    to: { connection: core, subject: "iot.{{ match.room }}.temp" }
"#,
    );
    let mut msg = message("plant", "sensors/kitchen/temp", "21.5");
    msg.headers = vec![("x-debug".into(), "1".into()), ("site".into(), "p1".into())];
    let out = &first(m.apply(&msg));
    assert_eq!(out.subject, "iot.kitchen.temp");
    assert_eq!(
        &out.payload[..],
        b"21.5",
        "no transform: the payload as it came"
    );
    assert_eq!(header(out, "room"), Some("KITCHEN"));
    assert_eq!(header(out, "site"), Some("p1"));
    assert_eq!(header(out, "x-debug"), None);
    assert_eq!(header(out, marker::VIA), Some("1;edge;plant,core"));
    assert!(matches!(
        m.apply(&message("plant", "sensors/kitchen/humidity", "1")),
        Outcome::Filtered
    ));
}

#[test]
fn a_transform_splits_and_templates_see_each_output() {
    let m = mapping(
        r#"
  - name: split
    from: { connection: core, subject: "batch.>" }
    transform: '.readings[]'
    to: { connection: plant, topic: "rooms/{{ payload.room }}" }
"#,
    );
    let out = publishes(m.apply(&message(
        "core",
        "batch.1",
        r#"{"readings":[{"room":"a","v":1},{"room":"b","v":2}]}"#,
    )));
    assert_eq!(
        out,
        vec![
            (0, "rooms/a".into(), r#"{"room":"a","v":1}"#.into()),
            (0, "rooms/b".into(), r#"{"room":"b","v":2}"#.into()),
        ]
    );
    assert!(matches!(
        m.apply(&message("core", "batch.2", r#"{"readings":[]}"#)),
        Outcome::Filtered
    ));
}

#[test]
fn jq_sees_the_message_around_the_payload() {
    let m = mapping(
        r#"
  - name: vars
    from: { connection: plant, topic: "a/#", match: '^a/(?P<x>.*)$' }
    filter: '$meta.qos == 1'
    transform: '{topic: $topic, subject: $subject, site: $headers.site, x: $match.x, origin: $meta.origin, retain: $meta.retain}'
    to: { connection: core }
"#,
    );
    let mut msg = message("plant", "a/b.c", "{}");
    msg.qos = 1;
    msg.headers.push(("site".into(), "p1".into()));
    let out = publishes(m.apply(&msg));
    assert_eq!(out[0].1, "a.b//c", "auto: the codec's subject");
    assert_eq!(
        out[0].2,
        r#"{"topic":"a/b.c","subject":"a.b//c","site":"p1","x":"b.c","origin":"plant","retain":false}"#
    );
    msg.qos = 0;
    assert!(matches!(m.apply(&msg), Outcome::Filtered));
}

#[test]
fn text_and_bytes_payloads() {
    let m = mapping(
        r#"
  - name: text
    from: { connection: core, subject: "t", payload_format: text }
    transform: 'ascii_upcase'
    to:
      - { connection: core, subject: raw, payload_format: text }
      - { connection: core, subject: json }
"#,
    );
    let out = publishes(m.apply(&message("core", "t", "hello")));
    assert_eq!(out[0].2, "HELLO");
    assert_eq!(out[1].2, "\"HELLO\"");
    let m = mapping(
        r#"
  - name: bytes
    from: { connection: core, subject: "b", payload_format: bytes }
    transform: 'length'
    to: { connection: core, subject: n }
"#,
    );
    let mut msg = message("core", "b", "");
    msg.payload = Bytes::from_static(b"\x00\xff\x01");
    assert_eq!(publishes(m.apply(&msg))[0].2, "3");
}

#[test]
fn envelopes_wrap_and_unwrap() {
    let wrap = mapping(
        r#"
  - name: wrap
    from: { connection: plant, topic: "raw/#", payload_format: text }
    to: { connection: core, subject: wrapped, envelope: true }
"#,
    );
    let mut msg = message("plant", "raw/a b", "plain text");
    msg.headers.push(("site".into(), "p1".into()));
    let wrapped = first(wrap.apply(&msg));
    let json: serde_json::Value = serde_json::from_slice(&wrapped.payload).unwrap();
    assert_eq!(json["topic"], "raw/a b");
    assert_eq!(json["payload"], "plain text");
    assert_eq!(json["headers"]["site"], "p1");
    assert!(json["time"].is_string());

    let unwrap = mapping(
        r#"
  - name: unwrap
    from: { connection: plant, topic: "wrapped", envelope: true, payload_format: text }
    to: { connection: plant, topic: "out/{{ topic }}", payload_format: text }
"#,
    );
    let mut carried = message("plant", "wrapped", "");
    carried.payload = wrapped.payload.clone();
    let out = &first(unwrap.apply(&carried));
    assert_eq!(out.subject, "out/raw/a b");
    assert_eq!(&out.payload[..], b"plain text");
    assert_eq!(header(out, "site"), Some("p1"));
}

#[test]
fn failures_name_their_stage_and_dead_letters_keep_the_message() {
    let m = mapping(
        r#"
  - name: rooms
    from: { connection: core, subject: "in.>" }
    transform: '.items[]'
    to: { connection: core, subject: "room.{{ payload.room }}" }
    dead_letter: { connection: core, subject: "dead.{{ route }}" }
"#,
    );
    let bad = message("core", "in.x", "not json");
    let Outcome::Failed(failure) = m.apply(&bad) else {
        panic!()
    };
    assert_eq!(failure.stage, Stage::Decode);
    let letter = m.dead_letter(&bad, &failure).unwrap().unwrap();
    assert_eq!(letter.subject, "dead.rooms");
    assert_eq!(&letter.payload[..], b"not json", "unchanged");
    assert_eq!(header(&letter, marker::ROUTE), Some("rooms"));
    assert_eq!(header(&letter, marker::STAGE), Some("decode"));
    assert!(header(&letter, marker::ERROR).unwrap().contains("not JSON"));

    // One output lacks the field its subject needs, one renders a subject NATS cannot hold:
    // only those fail; the good output is still published, in order.
    let Outcome::Mapped { steps, .. } = m.apply(&message(
        "core",
        "in.y",
        r#"{"items":[{"room":"a"},{"x":1},{"room":"b c"}]}"#,
    )) else {
        panic!()
    };
    assert!(matches!(&steps[0], Step::Publish { message, .. } if message.subject == "room.a"));
    assert!(matches!(&steps[1], Step::Fail(f) if f.stage == Stage::Template));
    assert!(
        matches!(&steps[2], Step::Fail(f) if f.stage == Stage::Template && f.reason.contains("whitespace")),
        "{steps:?}"
    );

    let Outcome::Failed(failure) = m.apply(&message("core", "in.z", r#"{"items": 3}"#)) else {
        panic!()
    };
    assert_eq!(failure.stage, Stage::Transform);
    let no_dead_letter = mapping(
        r#"
  - name: plain
    from: { connection: core, subject: "in.>" }
    to: { connection: core, subject: out }
"#,
    );
    assert!(no_dead_letter.dead_letter(&bad, &failure).is_none());
}

#[test]
fn the_loop_guard_drops_echoes_on_cycle_sinks_only() {
    let config = config(
        r#"
  - name: down
    from: { connection: core, subject: "bridge.>" }
    to:
      - { connection: plant }
      - { connection: core, subject: "mirror.{{ subject[-1] }}" }
"#,
    );
    let mut analysis = no_cycles();
    analysis.guarded.insert((0, 0));
    let m = Mapping::new(&analysis.resolve(&config, 0).unwrap(), "edge").unwrap();
    // A message that came from plant through this instance: not back to plant.
    let mut echo = message("core", "bridge.x", "1");
    echo.headers = vec![(marker::VIA.into(), "1;edge;plant,core".into())];
    let Outcome::Mapped { steps, echoes, .. } = m.apply(&echo) else {
        panic!()
    };
    assert_eq!(echoes, 1);
    assert_eq!(steps.len(), 1, "the mirror sink is not on a cycle");
    // The same from another instance is a first hop here.
    echo.headers[0].1 = "1;other;plant,core".into();
    let Outcome::Mapped { steps, echoes, .. } = m.apply(&echo) else {
        panic!()
    };
    assert_eq!((steps.len(), echoes), (2, 0));
    // Too many hops, whoever counted them.
    echo.headers[0].1 = "8;other;plant,core".into();
    assert!(matches!(m.apply(&echo), Outcome::TooManyHops(8)));
}

#[test]
fn dead_letters_see_captures_stay_unchanged_and_survive_an_envelope() {
    let m = mapping(
        r#"
  - name: sites
    from: { connection: plant, topic: "g/+/batch", match: '^g/(?P<site>[^/]+)/batch$' }
    transform: '.x'
    to: { connection: core, subject: ok, payload_format: text }
    dead_letter: { connection: plant, topic: "dead/{{ match.site }}", envelope: true }
"#,
    );
    let bad = message("plant", "g/p1/batch", "\u{1}not json");
    let Outcome::Failed(failure) = m.apply(&bad) else {
        panic!()
    };
    let letter = m.dead_letter(&bad, &failure).unwrap().unwrap();
    assert_eq!(letter.subject, "dead/p1");
    let json: serde_json::Value = serde_json::from_slice(&letter.payload).unwrap();
    assert_eq!(json["topic"], "g/p1/batch");
    assert_eq!(
        json["payload"], "AW5vdCBqc29u",
        "not JSON: carried as base64, not lost"
    );
    assert_eq!(json["headers"][marker::STAGE], "decode");
    assert!(
        header(&letter, marker::VIA).is_some(),
        "marked like any publish"
    );
}

#[test]
fn envelopes_carry_names_across_protocols() {
    let wrap = mapping(
        r#"
  - name: wrap
    from: { connection: core, subject: "raw.>" }
    to: { connection: plant, topic: carried, envelope: true }
"#,
    );
    let carried = first(wrap.apply(&message("core", "raw.a//b.c", "{}")));
    let unwrap = mapping(
        r#"
  - name: unwrap
    from: { connection: plant, topic: carried, envelope: true }
    to: { connection: plant, topic: "out/{{ topic }}" }
"#,
    );
    let mut arrived = carried.clone();
    arrived.origin = "plant".into();
    arrived.subject = "carried".into();
    assert_eq!(first(unwrap.apply(&arrived)).subject, "out/raw/a.b/c");
}

#[test]
fn headers_nats_cannot_carry_fail_the_publish_not_the_daemon() {
    let m = mapping(
        r#"
  - name: props
    from: { connection: plant, topic: "a/#" }
    to: { connection: core }
"#,
    );
    let mut msg = message("plant", "a/b", "1");
    msg.headers.push(("é ü".into(), "x".into()));
    let Outcome::Mapped { steps, .. } = m.apply(&msg) else {
        panic!()
    };
    assert!(
        matches!(&steps[0], Step::Fail(f) if f.stage == Stage::Headers && f.reason.contains("cannot travel over NATS")),
        "{steps:?}"
    );
}

/// The mapping is the one place a publish's name and headers are checked (the NATS sink does
/// not check again): on a core NATS or JetStream sink, on the dead-letter sink, and for what a
/// spool hands back.
#[test]
fn every_path_to_a_nats_sink_is_checked_here() {
    let m = mapping(
        r#"
  - name: props
    from: { connection: plant, topic: "a/#" }
    to:
      - { connection: core, subject: "core.{{ payload.s }}" }
      - { connection: core, subject: "js.{{ payload.s }}", jetstream: true }
    dead_letter: { connection: core, subject: "dead.{{ payload.s }}" }
"#,
    );
    let fails = |outcome: Outcome, stage: Stage, reason: &str| {
        let Outcome::Mapped { steps, .. } = outcome else {
            panic!("not mapped: {outcome:?}")
        };
        assert_eq!(steps.len(), 2, "{steps:?}");
        for step in &steps {
            assert!(
                matches!(step, Step::Fail(f) if f.stage == stage && f.reason.contains(reason)),
                "{steps:?}"
            );
        }
    };
    // A subject NATS cannot hold, on core NATS and on JetStream.
    let spaced = message("plant", "a/b", r#"{"s":"b c"}"#);
    fails(m.apply(&spaced), Stage::Template, "whitespace");
    // A header NATS cannot carry (an MQTT 5 user property), a name or a value.
    let mut named = message("plant", "a/b", r#"{"s":"x"}"#);
    named.headers.push(("a:b".into(), "x".into()));
    fails(m.apply(&named), Stage::Headers, "cannot travel over NATS");
    let mut broken = message("plant", "a/b", r#"{"s":"x"}"#);
    broken.headers.push(("note".into(), "one\ntwo".into()));
    fails(m.apply(&broken), Stage::Headers, "line break");

    // The dead letter leaves out the headers NATS cannot carry rather than lose the letter,
    // and one whose subject NATS cannot hold is not published at all.
    let failure = Failure {
        stage: Stage::Headers,
        reason: "test".into(),
    };
    let letter = m.dead_letter(&named, &failure).unwrap().unwrap();
    assert_eq!(letter.subject, "dead.x");
    assert!(header(&letter, "a:b").is_none(), "{letter:?}");
    assert!(
        letter
            .headers
            .iter()
            .all(|(k, v)| crate::connectors::nats::names::header(k, v).is_ok())
    );
    let letter = m.dead_letter(&spaced, &failure).unwrap();
    assert!(letter.unwrap_err().contains("whitespace"));

    // A spooled message is checked again before it is forwarded: the spool may hold what an
    // earlier configuration named for another protocol.
    let mut spooled = message("plant", "core.x", "1");
    assert!(m.check_spooled(1, &spooled).is_ok());
    spooled.subject = "sensors/kitchen temp".into();
    let failure = m.check_spooled(0, &spooled).unwrap_err();
    assert_eq!(failure.stage, Stage::Template);
    assert!(failure.reason.contains("whitespace"), "{failure}");
    spooled.subject = "core.x".into();
    spooled.headers.push(("a b".into(), "x".into()));
    let failure = m.check_spooled(1, &spooled).unwrap_err();
    assert_eq!(failure.stage, Stage::Headers);
    assert!(
        failure.reason.contains("cannot travel over NATS"),
        "{failure}"
    );
}

proptest::proptest! {
    /// A failure's reason (which may quote a remote payload or a server's answer) becomes a
    /// dead letter's `Ferry-Error` header: one line, at most 1 KiB, cut at a character
    /// boundary, whatever the text.
    #[test]
    fn any_reason_makes_a_one_line_header(reason in "(\\PC|\n|\r|\u{0}){0,1500}") {
        let value = super::header_value(&reason);
        proptest::prop_assert!(value.len() <= 1024);
        proptest::prop_assert!(!value.chars().any(char::is_control));
        proptest::prop_assert!(reason.starts_with(&value) || value.chars().count() <= reason.chars().count());
    }
}

/// A message id is formatted only on a route where something reads it.
#[test]
fn only_routes_that_read_ids_get_them() {
    let route = |to: &str, extra: &str| {
        mapping(&format!(
            "  - name: r\n    from: {{ connection: plant, topic: \"a/#\" }}\n    to: {to}\n{extra}"
        ))
        .uses_message_ids()
    };
    let core = r#"{ connection: core, subject: "a.b" }"#;
    assert!(!route(core, ""));
    assert!(!route(r#"{ connection: plant, topic: "b" }"#, ""));
    assert!(route(
        r#"{ connection: core, subject: "a.b", jetstream: true }"#,
        ""
    ));
    // A KV put is a JetStream publish: its `Nats-Msg-Id` drops a re-send.
    assert!(route(
        r#"{ connection: core, subject: "a.b", kv: { bucket: state } }"#,
        ""
    ));
    assert!(route(r#"{ connection: core, subject: "a.{{ id }}" }"#, ""));
    assert!(route(
        core,
        "    headers: { set: { x-id: \"{{ id }}\" } }\n"
    ));
    assert!(route(core, "    transform: '{v: ., id: $meta.id}'\n"));
    assert!(route(core, "    spool: {}\n"));
    assert!(route(
        core,
        "    dead_letter: { connection: core, subject: \"dead\", jetstream: true }\n"
    ));
    assert!(!route(
        core,
        "    headers: { set: { x-site: \"{{ topic[0] }}\" } }\n"
    ));
}

/// An MQTT 3.1.1 sink has nowhere to put headers: none are built for it (nor the loop
/// marker), unless an envelope carries them in the payload.
#[test]
fn a_sink_without_headers_gets_none() {
    let lookup = Lookup {
        var: &|_| None,
        file: &|_| Ok(String::new()),
    };
    let text = r#"
connections:
  core: { nats: { url: "nats://127.0.0.1:4222" } }
  old: { mqtt: { url: "mqtt://127.0.0.1:1883", version: "3.1.1" } }
routes:
  - name: r
    from: { connection: core, subject: "a.>" }
    headers: { set: { x-site: "p1" } }
    to:
      - { connection: old, topic: "plain" }
      - { connection: old, topic: "wrapped", envelope: true }
"#;
    let config = parse(text, "test.yaml", &lookup).unwrap_or_else(|e| panic!("{e}"));
    let m = Mapping::new(&no_cycles().resolve(&config, 0).unwrap(), "edge").unwrap();
    let mut msg = message("core", "a.b", "{}");
    msg.headers.push(("site".into(), "p1".into()));
    let out = published(m.apply(&msg));
    assert!(out[0].1.headers.is_empty(), "{:?}", out[0].1.headers);
    assert!(marker::header(&out[1].1.headers, "x-site").is_some());
    assert!(marker::header(&out[1].1.headers, marker::VIA).is_some());
}

#[test]
fn the_marker_of_a_first_hop_is_made_once_and_a_later_hop_stamped_anew() {
    let m = mapping(
        r#"
  - name: up
    from: { connection: plant, topic: "a/#" }
    to: { connection: core, subject: auto }
"#,
    );
    for _ in 0..2 {
        let out = first(m.apply(&message("plant", "a/b", "1")));
        assert_eq!(header(&out, marker::VIA), Some("1;edge;plant,core"));
        assert_eq!(out.headers.len(), 1);
    }
    // Hops made elsewhere count on.
    let mut relayed = message("plant", "a/b", "1");
    relayed.headers = vec![(marker::VIA.into(), "2;other;x,y".into())];
    let out = first(m.apply(&relayed));
    assert_eq!(header(&out, marker::VIA), Some("3;edge;plant,core"));

    // An instance name NATS cannot carry fails every publish as before, first hop or not.
    let m = Mapping::new(
        &no_cycles()
            .resolve(
                &config(
                    r#"
  - name: up
    from: { connection: plant, topic: "a/#" }
    to: { connection: core, subject: auto }
"#,
                ),
                0,
            )
            .unwrap(),
        "ed\nge",
    )
    .unwrap();
    for _ in 0..2 {
        let Outcome::Mapped { steps, .. } = m.apply(&message("plant", "a/b", "1")) else {
            panic!("not mapped")
        };
        assert!(
            matches!(&steps[..], [Step::Fail(f)] if f.stage == Stage::Headers && f.reason.contains("line break")),
            "{steps:?}"
        );
    }
}
