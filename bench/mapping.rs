//! Micro-benchmarks of the mapping stage: the MQTT ⇄ NATS codec, subject templates, a jq
//! reshape and a whole route's `Mapping::apply`. Run with `cargo bench --bench mapping`; the
//! figures and the targets they are held to are in `bench/RESULTS-mapping.md`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use jaq_json::Val;

use ferry::config::loops;
use ferry::config::{self, Lookup, PayloadFormat};
use ferry::mapping::codec::{subject_to_topic, topic_to_subject};
use ferry::mapping::jq::Program;
use ferry::mapping::payload::Payload;
use ferry::mapping::template::{Scope, Template};
use ferry::mapping::{Mapping, Outcome, Step};
use ferry::message::Message;
use ferry::pipeline::jq_worker::JqWorker;

/// A typical topic: five levels, one with a `.` in it (which the codec escapes as `//`).
const TOPIC: &str = "plant/line-3/sensors/kitchen.temp/value";
/// The shorter topic of the telemetry example, `sensors/+/temp`.
const SENSOR_TOPIC: &str = "sensors/kitchen/temp";
/// A sensor reading of 200 bytes.
const PAYLOAD: &str = r#"{"room":"kitchen","value":21.5,"ts":"2026-11-22T10:00:00.000Z","unit":"celsius","sensor":"bme280-0042","battery":0.87,"rssi":-67,"firmware":"1.4.2","seq":123456789,"site":"plant-1","line":3,"ok":true}"#;
/// The reshape the issue names.
const RESHAPE: &str = "{room: .room, celsius: .value, at: .ts}";

/// Route 0 is a telemetry route like `examples/mqtt-to-nats.yaml`: MQTT → NATS, a jq filter and
/// transform, a templated subject. Route 1 only names the subject (no jq): the route's own
/// overhead.
const ROUTE: &str = r#"
connections:
  plant: { mqtt: { url: "mqtt://127.0.0.1:1883", version: 5 } }
  core: { nats: { url: "nats://127.0.0.1:4222" } }
routes:
  - name: temperatures
    from: { connection: plant, topic: "sensors/+/temp", qos: 1 }
    filter: '.value != null'
    transform: '{room: .room, celsius: .value, at: .ts}'
    to: { connection: core, subject: "iot.{{ topic[1] }}.temperature" }
  - name: names-only
    from: { connection: plant, topic: "sensors/+/temp" }
    to: { connection: core, subject: "iot.{{ topic[1] }}.temperature" }
"#;

fn message(topic: &str) -> Message {
    Message::new(
        Arc::from("plant"),
        topic,
        Bytes::from_static(PAYLOAD.as_bytes()),
    )
}

/// Renders `template` for `message`, as the route renders a sink's subject.
fn render(template: &Template, message: &Message, payload: &Payload) -> String {
    template
        .render(&Scope {
            route: "bench",
            message,
            protocol: ferry::config::Protocol::Mqtt,
            captures: &[],
            payload,
            format: PayloadFormat::Json,
        })
        .expect("the template renders")
}

fn codec(c: &mut Criterion) {
    let subject = topic_to_subject(TOPIC);
    assert_eq!(subject, "plant.line-3.sensors.kitchen//temp.value");
    let mut group = c.benchmark_group("codec");
    group.bench_function("topic_to_subject", |b| {
        b.iter(|| topic_to_subject(black_box(TOPIC)))
    });
    group.bench_function("subject_to_topic", |b| {
        b.iter(|| subject_to_topic(black_box(&subject)))
    });
    group.finish();
}

fn template(c: &mut Criterion) {
    let payload = Payload::Raw(Bytes::from_static(PAYLOAD.as_bytes()));
    let mut group = c.benchmark_group("template");

    let sensor = message(SENSOR_TOPIC);
    let indexed = Template::compile("iot.{{ topic[1] }}.temperature").unwrap();
    assert_eq!(
        render(&indexed, &sensor, &payload),
        "iot.kitchen.temperature"
    );
    group.bench_function("topic_index", |b| {
        b.iter(|| render(&indexed, black_box(&sensor), &payload))
    });

    // Template plus codec: what naming a typical message costs end to end.
    let typical = message(TOPIC);
    let forward = Template::compile("fwd.{{ topic | nats }}").unwrap();
    assert_eq!(
        render(&forward, &typical, &payload),
        "fwd.plant.line-3.sensors.kitchen//temp.value"
    );
    group.bench_function("nats_filter", |b| {
        b.iter(|| render(&forward, black_box(&typical), &payload))
    });

    // `subject: auto` on a NATS sink: no template, only the codec (`Scope::subject`).
    group.bench_function("auto_subject", |b| {
        b.iter(|| {
            Scope {
                route: "bench",
                message: black_box(&typical),
                protocol: ferry::config::Protocol::Mqtt,
                captures: &[],
                payload: &payload,
                format: PayloadFormat::Json,
            }
            .subject()
        })
    });

    // A constant template: ferry's fixed cost per render (its context), no variable used.
    let constant = Template::compile("iot.all.temperature").unwrap();
    group.bench_function("constant", |b| {
        b.iter(|| render(&constant, black_box(&typical), &payload))
    });
    // The same template straight through minijinja with an empty context: the library's floor.
    let mut env = minijinja::Environment::new();
    env.add_template("t", "iot.all.temperature").unwrap();
    group.bench_function("minijinja_floor", |b| {
        b.iter(|| env.get_template("t").unwrap().render(()).unwrap())
    });
    group.finish();
}

fn jq(c: &mut Criterion) {
    assert_eq!(PAYLOAD.len(), 200);
    let program = Program::compile(RESHAPE).unwrap();
    let vars: [Val; 5] = Default::default();
    let reshape = |bytes: &[u8]| -> String {
        let input = jaq_json::read::parse_single(bytes).expect("JSON");
        let outputs = program.run(input, &vars).expect("the reshape runs");
        outputs[0].to_string()
    };
    assert_eq!(
        reshape(PAYLOAD.as_bytes()),
        r#"{"room":"kitchen","celsius":21.5,"at":"2026-11-22T10:00:00.000Z"}"#
    );
    let mut group = c.benchmark_group("jq");
    // The real per-message cost: parse the payload, run the program, write its output.
    group.bench_function("reshape_200B", |b| {
        b.iter(|| reshape(black_box(PAYLOAD.as_bytes())))
    });
    // Its parts, to tell where the time goes.
    group.bench_function("parse_200B", |b| {
        b.iter(|| jaq_json::read::parse_single(black_box(PAYLOAD.as_bytes())).unwrap())
    });
    let input = jaq_json::read::parse_single(PAYLOAD.as_bytes()).unwrap();
    group.bench_function("run_only", |b| {
        b.iter(|| program.run(black_box(input.clone()), &vars).unwrap())
    });
    let output = program.run(input.clone(), &vars).unwrap().remove(0);
    group.bench_function("to_string_only", |b| {
        b.iter(|| black_box(&output).to_string())
    });
    let identity = Program::compile(".").unwrap();
    group.bench_function("run_identity", |b| {
        b.iter(|| identity.run(black_box(input.clone()), &vars).unwrap())
    });
    group.finish();
}

/// The one message `outcome` publishes, as (subject, payload); panics on anything else.
fn published(outcome: Outcome) -> (String, Bytes) {
    match outcome {
        Outcome::Mapped { mut steps, .. } if steps.len() == 1 => match steps.remove(0) {
            Step::Publish { message, .. } => (message.subject, message.payload),
            Step::Fail(f) => panic!("failed: {f}"),
        },
        other => panic!("not one publish: {other:?}"),
    }
}

fn apply(c: &mut Criterion) {
    let config = config::parse(ROUTE, "bench.yaml", &Lookup::system()).expect("valid config");
    let analysis = loops::analyse(&config);
    let telemetry = Mapping::new(&analysis.resolve(&config, 0).unwrap(), "bench").unwrap();
    let names_only = Mapping::new(&analysis.resolve(&config, 1).unwrap(), "bench").unwrap();
    let msg = message(SENSOR_TOPIC);
    let (subject, payload) = published(telemetry.apply(&msg));
    assert_eq!(subject, "iot.kitchen.temperature");
    assert_eq!(
        &payload[..],
        br#"{"room":"kitchen","celsius":21.5,"at":"2026-11-22T10:00:00.000Z"}"#
    );
    let (subject, payload) = published(names_only.apply(&msg));
    assert_eq!(subject, "iot.kitchen.temperature");
    assert_eq!(&payload[..], PAYLOAD.as_bytes());

    let mut group = c.benchmark_group("mapping");
    group.bench_function("apply_mqtt_to_nats", |b| {
        b.iter(|| telemetry.apply(black_box(&msg)))
    });
    group.bench_function("apply_template_only", |b| {
        b.iter(|| names_only.apply(black_box(&msg)))
    });
    group.finish();
}

/// Trace context: the same MQTT → NATS route (`subject: auto`, no jq) with `trace: off`, the
/// default `propagate` and `start`, for a message without a `traceparent` and one with. What
/// `untraced` costs over `trace_off` is what the feature costs a message that has no trace.
const TRACE_ROUTES: &str = r#"
connections:
  plant: { mqtt: { url: "mqtt://127.0.0.1:1883", version: 5 } }
  core: { nats: { url: "nats://127.0.0.1:4222" } }
routes:
  - name: trace-off
    from: { connection: plant, topic: "sensors/#" }
    headers: { trace: off }
    to: { connection: core, subject: auto }
  - name: propagate
    from: { connection: plant, topic: "sensors/#" }
    to: { connection: core, subject: auto }
  - name: start
    from: { connection: plant, topic: "sensors/#" }
    headers: { trace: start }
    to: { connection: core, subject: auto }
"#;

fn trace(c: &mut Criterion) {
    let config = config::parse(TRACE_ROUTES, "bench.yaml", &Lookup::system()).expect("valid");
    let analysis = loops::analyse(&config);
    let route = |i| Mapping::new(&analysis.resolve(&config, i).unwrap(), "bench").unwrap();
    let (off, propagate, start) = (route(0), route(1), route(2));
    let untraced = message(SENSOR_TOPIC);
    let mut traced = message(SENSOR_TOPIC);
    traced.headers.push((
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    ));
    let mut group = c.benchmark_group("trace");
    group.bench_function("trace_off", |b| b.iter(|| off.apply(black_box(&untraced))));
    group.bench_function("untraced", |b| {
        b.iter(|| propagate.apply(black_box(&untraced)))
    });
    group.bench_function("traced", |b| b.iter(|| propagate.apply(black_box(&traced))));
    group.bench_function("started", |b| b.iter(|| start.apply(black_box(&untraced))));
    group.finish();
}

/// The same telemetry route with its filter and transform in a worker process under a budget,
/// as the daemon runs it: what the hand-off costs per message, against `mapping/apply_*`.
fn worker(c: &mut Criterion) {
    let config = config::parse(ROUTE, "bench.yaml", &Lookup::system()).expect("valid config");
    let analysis = loops::analyse(&config);
    let telemetry = Mapping::new(&analysis.resolve(&config, 0).unwrap(), "bench").unwrap();
    let route = &config.routes[0];
    let jq = JqWorker::new(
        route.filter.as_deref(),
        route.transform.as_deref(),
        route.from.format,
        route.transform_budget,
    )
    .unwrap()
    .with_executable(env!("CARGO_BIN_EXE_ferry").into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let apply = |msg: &Message| {
        runtime.block_on(async {
            match telemetry.prepare(msg) {
                Err(outcome) => outcome,
                Ok(pending) => {
                    let outputs = jq.run(pending.payload(), pending.vars.as_ref()).await;
                    telemetry.finish(pending, outputs)
                }
            }
        })
    };
    let msg = message(SENSOR_TOPIC);
    let (subject, payload) = published(apply(&msg));
    assert_eq!(subject, "iot.kitchen.temperature");
    assert_eq!(
        &payload[..],
        br#"{"room":"kitchen","celsius":21.5,"at":"2026-11-22T10:00:00.000Z"}"#
    );
    let mut group = c.benchmark_group("worker");
    group.bench_function("apply_mqtt_to_nats", |b| b.iter(|| apply(black_box(&msg))));
    let identity = JqWorker::new(None, Some("."), PayloadFormat::Json, Default::default())
        .unwrap()
        .with_executable(env!("CARGO_BIN_EXE_ferry").into());
    group.bench_function("round_trip_identity", |b| {
        b.iter(|| runtime.block_on(identity.run(black_box(PAYLOAD.as_bytes()), None)))
    });
    group.finish();
}

fn settings() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = settings();
    targets = codec, template, jq, apply, trace, worker
}
criterion_main!(benches);
