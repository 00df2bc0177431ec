//! The JSON Schema of `bridges.yaml` (`ferry schema`), for editors: completion, hover text and
//! red squiggles while typing, before `ferry check` ever runs; and the schema `ferry check`
//! itself checks each section against (see `validate.rs`).
//!
//! It is generated from the types the file is read into (`file.rs` at the top): their doc
//! comments are the hover text and their serde defaults the schema's defaults. The tests at
//! the bottom check that every shipped configuration validates, and that mistakes are refused
//! by the schema as by `ferry check`.
//!
//! The schema is as loose as the parser where the parser is loose: every scalar may be a
//! `${...}` interpolation, numbers may be written as strings, text may be a number. It cannot
//! know which protocol a route's `connection:` names, so a source or sink is any of the
//! protocols' shapes; `ferry check` stays the authority.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

use super::file::ConfigFile;

/// The schema of `bridges.yaml` as pretty JSON, what `ferry schema` prints.
pub fn json() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).expect("a schema is JSON");
    text.push('\n');
    text
}

/// The schema of `bridges.yaml` (JSON Schema draft 2020-12).
pub fn schema() -> Schema {
    generator().into_root_schema_for::<ConfigFile>()
}

/// The generator of the schema of `bridges.yaml` or of one of its sections.
fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.transforms.push(Box::new(RecursiveTransform(refuse_null)));
        })
        .into_generator()
}

/// The schema `ferry check` checks the file's sections against, built into the binary: `ferry
/// schema`'s without its descriptions, and which definition in it each section type is, by the
/// type's `schema_id`. Generating the schemas took some 6 M instructions, most of what reading
/// a small file costs; parsing this copy takes a small part of that. The test
/// `the_built_in_schema_is_the_generated_one` keeps it in step with the types
/// (`FERRY_BLESS=1 cargo test --lib config::schema` writes it).
const BUILT_IN: &str = include_str!("built_in_schema.json");

/// The built-in schema, parsed, while anyone holds it.
static HELD: Mutex<Weak<BuiltIn>> = Mutex::new(Weak::new());

struct BuiltIn {
    /// What `ferry schema` prints, without descriptions: its `$defs` are every section's.
    schema: Value,
    /// A section type's `schema_id` → the name of its definition (`null`: the file's top level).
    sections: Map<String, Value>,
}

/// Keeps the built-in schema parsed while it lives. Reading a document holds one, so that its
/// thousands of sections share one parse; once read, the schema goes (a daemon keeps none).
pub(super) struct Hold(#[allow(dead_code, reason = "held, never read")] Arc<BuiltIn>);

pub(super) fn hold() -> Hold {
    Hold(built_in())
}

fn built_in() -> Arc<BuiltIn> {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(built_in) = held.upgrade() {
        return built_in;
    }
    let Ok(Value::Object(mut file)) = serde_json::from_str::<Value>(BUILT_IN) else {
        unreachable!("the built-in schema is a JSON object (a test reads it)");
    };
    let built_in = Arc::new(BuiltIn {
        schema: file.remove("schema").unwrap_or_default(),
        sections: match file.remove("sections") {
            Some(Value::Object(sections)) => sections,
            _ => Map::new(),
        },
    });
    *held = Arc::downgrade(&built_in);
    built_in
}

/// The schema a section of type `T` is checked against: a root (with the `$defs` its
/// references name) and `T`'s part of it.
pub(super) struct SectionSchema {
    root: Root,
    /// `T`'s definition in the root's `$defs`; `None`: the root itself.
    definition: Option<String>,
}

enum Root {
    BuiltIn(Arc<BuiltIn>),
    Generated(&'static Value),
}

impl SectionSchema {
    pub fn root(&self) -> &Value {
        match &self.root {
            Root::BuiltIn(built_in) => &built_in.schema,
            Root::Generated(root) => root,
        }
    }

    /// The section's own schema.
    pub fn part(&self) -> &Value {
        match &self.definition {
            Some(name) => &self.root()["$defs"][name],
            None => self.root(),
        }
    }
}

/// The schema of the section type `T`: the built-in one, or for a type it does not know,
/// generated (and kept, see [`root_of`]).
pub(super) fn section_schema<T: JsonSchema>() -> SectionSchema {
    let built_in = built_in();
    match built_in.sections.get(T::schema_id().as_ref()) {
        Some(definition) => {
            let definition = definition.as_str().map(String::from);
            SectionSchema {
                root: Root::BuiltIn(built_in),
                definition,
            }
        }
        None => {
            #[cfg(test)]
            tests::GENERATED.with_borrow_mut(|generated| generated.push(T::schema_id().into()));
            SectionSchema {
                root: Root::Generated(root_of::<T>()),
                definition: None,
            }
        }
    }
}

/// The root schema (with its `$defs`) of the section type `T`, as JSON, generated the first time
/// it is asked for and kept for the rest of the process, by `schema_id` (which schemars itself
/// takes to tell types apart). A file with thousands of routes reads thousands of sections of a
/// dozen types, and generating a schema costs far more than checking a section against it.
fn root_of<T: JsonSchema>() -> &'static Value {
    // Leaked on purpose: one schema per section type, a small fixed set, kept for good.
    static ROOTS: LazyLock<Mutex<HashMap<Cow<'static, str>, &'static Value>>> =
        LazyLock::new(Mutex::default);
    let mut roots = ROOTS.lock().unwrap_or_else(PoisonError::into_inner);
    roots
        .entry(T::schema_id())
        .or_insert_with(|| Box::leak(Box::new(generator().into_root_schema_for::<T>().to_value())))
}

/// schemars lets an `Option` field be `null`; the parser refuses `key: null` (an absent key
/// takes its default, an empty one is a mistake), so the schema does too.
fn refuse_null(schema: &mut Schema) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            obj.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(any)) = obj.get_mut("anyOf") {
        any.retain(|s| s != &serde_json::json!({ "type": "null" }));
        if any.len() == 1 {
            // `anyOf: [X]` is X: lift it, keeping this level's description and default.
            if let Some(Value::Object(only)) = any.pop() {
                obj.remove("anyOf");
                for (key, value) in only {
                    obj.entry(key).or_insert(value);
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    use schemars::JsonSchema;
    use serde_json::{Map, Value, json};

    use super::super::interpolate::Lookup;
    use super::super::parse::parse;
    use super::super::yaml::{self, Node};

    thread_local! {
        /// The section types whose schema this test's thread generated: none the built-in
        /// schema knows.
        pub(super) static GENERATED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// The schema `T`'s sections are checked against, generated as `ferry check` did before
    /// the built-in copy: its `schema_id`, its definition's name and its root schema.
    fn generated<T: JsonSchema>() -> (String, String, Value) {
        let root = super::generator().into_root_schema_for::<T>().to_value();
        (T::schema_id().into(), T::schema_name().into(), root)
    }

    /// Every section type the parser reads on its own (and those the tests read so), with
    /// its generated schema.
    fn section_types() -> Vec<(String, String, Value)> {
        use crate::config::admin_listener::AdminSection;
        use crate::config::connections::ConnectionSection;
        use crate::config::model::{
            HeaderRules, JetStreamSource, LastWill, LoopGuard, Probe, Queue, Reconnect, Request,
            Spool, Tls,
        };
        use crate::config::route_ends::{Endpoint, SinkCommon, SourceCommon};
        use crate::config::route_section::RouteSection;
        use crate::connectors::http::config::{HttpSection, HttpSinkKeys};
        use crate::connectors::http_server::config::{HttpServerConnection, HttpServerSourceKeys};
        use crate::connectors::migratorydata::config::{
            MigratoryDataSection, MigratoryDataSinkKeys, MigratoryDataSourceKeys,
        };
        use crate::connectors::mqtt::config::{MqttSection, MqttSinkKeys, MqttSourceKeys};
        use crate::connectors::nats::config::{
            KvSink, KvSource, NatsSection, NatsSinkKeys, NatsSourceKeys, PriorityGroup,
        };
        use crate::connectors::sse::config::{HandshakeSection, SseSection, SseSourceKeys};
        use crate::connectors::sse_server::config::{SseServerConnection, SseServerSinkKeys};
        use crate::connectors::stdio::config::{StdioSinkKeys, StdioSourceKeys};
        vec![
            generated::<ConnectionSection>(),
            generated::<RouteSection>(),
            generated::<AdminSection>(),
            generated::<LoopGuard>(),
            generated::<Reconnect>(),
            generated::<Request>(),
            generated::<Spool>(),
            generated::<HeaderRules>(),
            generated::<Queue>(),
            generated::<MqttSection>(),
            generated::<NatsSection>(),
            generated::<SseSection>(),
            generated::<HttpSection>(),
            generated::<SseServerConnection>(),
            generated::<HttpServerConnection>(),
            generated::<MigratoryDataSection>(),
            generated::<Endpoint<SourceCommon, MqttSourceKeys>>(),
            generated::<Endpoint<SourceCommon, NatsSourceKeys>>(),
            generated::<Endpoint<SourceCommon, SseSourceKeys>>(),
            generated::<Endpoint<SourceCommon, MigratoryDataSourceKeys>>(),
            generated::<Endpoint<SourceCommon, HttpServerSourceKeys>>(),
            generated::<Endpoint<SourceCommon, StdioSourceKeys>>(),
            generated::<Endpoint<SinkCommon, MqttSinkKeys>>(),
            generated::<Endpoint<SinkCommon, NatsSinkKeys>>(),
            generated::<Endpoint<SinkCommon, HttpSinkKeys>>(),
            generated::<Endpoint<SinkCommon, SseServerSinkKeys>>(),
            generated::<Endpoint<SinkCommon, MigratoryDataSinkKeys>>(),
            generated::<Endpoint<SinkCommon, StdioSinkKeys>>(),
            // Read on their own only by the tests.
            generated::<Probe>(),
            generated::<Tls>(),
            generated::<LastWill>(),
            generated::<HandshakeSection>(),
            generated::<JetStreamSource>(),
            generated::<PriorityGroup>(),
            generated::<KvSource>(),
            generated::<KvSink>(),
        ]
    }

    /// `schema` without the descriptions, which only editors show.
    fn without_descriptions(schema: &mut Value) {
        match schema {
            Value::Object(object) => {
                object.remove("description");
                for (key, value) in object.iter_mut() {
                    match key.as_str() {
                        // Names of the user's (keys, definitions): each maps to a schema.
                        "properties" | "$defs" | "patternProperties" => {
                            for value in value
                                .as_object_mut()
                                .into_iter()
                                .flat_map(|m| m.values_mut())
                            {
                                without_descriptions(value);
                            }
                        }
                        // Values of the file, not schemas.
                        "default" | "examples" | "const" | "enum" => {}
                        _ => without_descriptions(value),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(without_descriptions),
            _ => {}
        }
    }

    /// The built-in schema as the types generate it now: `ferry schema`'s, without its
    /// descriptions, with every section type's definitions, and which definition each
    /// section type is. One name is one definition: two that differ fail here.
    fn built_in_now() -> Value {
        let mut schema = super::schema().to_value();
        without_descriptions(&mut schema);
        let mut sections = Map::new();
        sections.insert(super::ConfigFile::schema_id().into(), Value::Null);
        for (id, name, mut root) in section_types() {
            without_descriptions(&mut root);
            let Value::Object(mut top) = root else {
                panic!("{id}'s schema is no object");
            };
            let definitions = top.remove("$defs");
            top.remove("$schema");
            top.remove("title");
            let known = schema["$defs"].as_object_mut().expect("the file has $defs");
            let mut define = |name: String, definition: Value| match known.get(&name) {
                Some(known) => assert_eq!(
                    known, &definition,
                    "{id}: two definitions named {name} differ"
                ),
                None => drop(known.insert(name, definition)),
            };
            for (name, definition) in definitions.into_iter().flat_map(|d| match d {
                Value::Object(d) => d,
                _ => Map::new(),
            }) {
                define(name, definition);
            }
            define(name.clone(), Value::Object(top));
            sections.insert(id, Value::String(name));
        }
        json!({ "sections": sections, "schema": schema })
    }

    /// The schema built into the binary is the one the types generate. With `FERRY_BLESS=1`
    /// it is written instead.
    #[test]
    fn the_built_in_schema_is_the_generated_one() {
        let now = built_in_now();
        let path = repo_file("src/config/built_in_schema.json");
        let mut text = serde_json::to_string(&now).unwrap();
        text.push('\n');
        if std::env::var_os("FERRY_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &text).unwrap();
            return;
        }
        let built_in: Value = serde_json::from_str(super::BUILT_IN).unwrap();
        assert!(
            built_in == now,
            "{} is not what the configuration types generate: FERRY_BLESS=1 cargo test --lib \
             config::schema writes it",
            path.display()
        );
    }

    /// Reading a file, or `ferry relay`'s endpoints, generates no schema: every section type
    /// the parser reads is in the built-in schema.
    #[test]
    fn reading_generates_no_schema() {
        parse(EVERY_KEY, "every.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        for (from, to) in [("-", "mqtt://b/t"), ("nats://n/s", "-")] {
            let args = crate::config::endpoints::RelayArgs {
                from: from.into(),
                to: to.into(),
                ..Default::default()
            };
            crate::config::endpoints::relay_config(&args).unwrap_or_else(|e| panic!("{e}"));
        }
        GENERATED.with_borrow(|generated| assert!(generated.is_empty(), "{generated:?}"));
    }

    /// A configuration that writes every key the parser knows, each kind of connection, source
    /// and sink at least once.
    const EVERY_KEY: &str = r#"
x-tuning: &tuning
  keep_alive: 15s
shutdown_timeout: 10s
startup_timeout: 30s
threads: 1
state_dir: /var/lib/ferry
admin:
  listen: 127.0.0.1:9090
  token: "${file:/etc/ferry/admin-token}"
  taps: true
  allowed_hosts: [ferry.example.com, "[::1]"]
  max_connections: 512
  header_read_timeout: 5s
  idle_timeout: 1m
  tls: { cert: /etc/ferry/admin.pem, key: /etc/ferry/admin.key }
loop_guard: { instance: edge-1, max_hops: 8 }
connections:
  plant:
    reconnect: { initial_delay: 100ms, max_delay: 30s, connect_timeout: 10s, stable_after: 30s }
    mqtt:
      <<: *tuning
      url: mqtts://broker.plant.local:8883
      version: 5
      client_id: ferry-plant
      clean_start: false
      session_expiry: 1h
      username: ferry
      password: ${file:/run/secrets/mqtt}
      tls: { ca: /etc/ferry/ca.pem, cert: /etc/ferry/client.pem, key: /etc/ferry/client.key, insecure_skip_verify: false }
      max_packet_size: 16MiB
      max_outgoing_packet_size: 256MiB
      last_will: { topic: ferry/status, payload: offline, qos: 1, retain: true }
      probe: { interval: 30s, timeout: 10s, topic: ferry/probe }
  legacy:
    mqtt: { url: mqtt://legacy.local, version: "3.1.1", probe: false }
  core:
    nats:
      url: [nats://n1:4222, nats://n2:4222]
      name: ferry
      user: ferry
      password: ${NATS_PASSWORD}
      tls: { ca: /etc/ferry/ca.pem }
      ping_interval: 20s
      probe: { interval: 30s, timeout: 10s, topic: _FERRY.probe }
  orders: { nats: { url: tls://n3:4222, token: "${NATS_TOKEN}" } }
  archive: { nats: { url: nats://n4:4222, nkey: "${NATS_NKEY}" } }
  cloud: { nats: { url: nats://n5:4222, creds: /etc/ferry/ferry.creds } }
  db:
    sse:
      url: https://db.example.com/realtime
      method: POST
      body: '{"subscribe": true}'
      headers: { x-apikey: "${DB_KEY}" }
      query: { apikey: "${DB_KEY}" }
      tls: { insecure_skip_verify: false }
      idle_timeout: 60s
      resume: true
      max_line_size: 16MiB
      max_event_size: 16MiB
      max_response_body: 64KiB
      handshake:
        on: PB_CONNECT
        method: POST
        url: /api/realtime
        headers: { x-client: "{{ payload.clientId }}" }
        body: '{"clientId": "{{ payload.clientId }}"}'
  hook:
    http:
      url: https://hooks.example.com/in/
      headers: { authorization: "Bearer ${TOKEN}" }
      tls: { ca: /etc/ferry/ca.pem }
      timeout: 5s
      max_concurrent: 2
  browser:
    sse_server: { path: /events/sensors, buffer: 100, keep_alive: 15s, cors_origin: "*", token: "${STREAM_TOKEN}", max_clients: 500 }
  md:
    migratorydata:
      servers: [http://md1:8800, https://md2:8443]
      token: "${MIGRATORYDATA_TOKEN}"
      tls: { ca: /etc/ferry/ca.pem }
      timeout: 10s
      poll_interval: 1s
      max_response_size: 16MiB
routes:
  - name: md-in
    from: { connection: md, subject: /server/status, history: 10 }
    to: { connection: md, subject: "/copy{{ subject }}", retained: source, qos: guaranteed }
  - name: telemetry
    from:
      connection: plant
      topic: "sensors/+/temp"
      qos: 1
      share: g
      no_local: true
      match: '^sensors/(?P<room>[^/]+)/temp$'
      payload_format: json
      envelope: false
    filter: '.value != null'
    transform: '{room: .room, celsius: .value}'
    headers: { forward: true, remove: [x-internal], set: { room: "{{ match.room }}" } }
    to:
      - { connection: core, subject: "iot.{{ match.room }}.temperature", jetstream: false, payload_format: json, envelope: false }
      - { connection: legacy, topic: "copy/{{ topic }}", qos: 1, retain: source }
      - { connection: hook, url: "readings/{{ match.room }}", method: PUT }
      - { connection: browser, event: "{{ match.room }}" }
    queue: { max_messages: 10000, max_bytes: 64MiB, when_full: block }
    delivery: at-most-once
    spool: { dir: /var/lib/ferry/spool/telemetry, max_bytes: 1GiB }
    dead_letter: { connection: core, subject: dead.telemetry }
  - name: commands
    from: { connection: core, subject: "cmd.>", queue: workers }
    to: { connection: plant, topic: auto }
  - name: orders
    from:
      connection: orders
      subject: "orders.>"
      jetstream: { stream: ORDERS, consumer: ferry-orders, max_ack_pending: 1000, ack_wait: 30s, deliver: new }
    to: { connection: legacy }
  - name: changes
    from: { connection: db, events: [post, put, delete] }
    to: { connection: plant, topic: "db/{{ event }}" }
  - name: legacy
    from: { connection: legacy, topics: [a/#, b/#] }
    to: { connection: archive, subject: auto }
"#;

    fn lookup() -> Lookup<'static> {
        Lookup {
            var: &|_| Some("s3cret".to_string()),
            file: &|_| Ok("s3cret\n".to_string()),
        }
    }

    /// The YAML tree as JSON, as an editor's YAML language server sees it (anchors and merge
    /// keys resolved).
    fn to_json(node: &Node) -> Value {
        match &node.value {
            yaml::Value::Null => Value::Null,
            yaml::Value::Bool(b) => json!(b),
            yaml::Value::Int(i) => json!(i),
            yaml::Value::Float(f) => json!(f),
            yaml::Value::Str(s) => json!(s),
            yaml::Value::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
            yaml::Value::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), to_json(v)))
                    .collect::<Map<_, _>>(),
            ),
        }
    }

    fn schema_json() -> Value {
        super::schema().to_value()
    }

    /// Validates `text` against the schema: `Err` with boon's account of what is wrong.
    fn validate(text: &str) -> Result<(), String> {
        let node = yaml::parse(text).map_err(|(pos, e)| format!("YAML at {pos:?}: {e}"))?;
        let instance = to_json(&node);
        // Compiled once: checking the schema against the draft's meta-schema is the slow part.
        static COMPILED: OnceLock<(boon::Schemas, boon::SchemaIndex)> = OnceLock::new();
        let (schemas, index) = COMPILED.get_or_init(|| {
            let mut schemas = boon::Schemas::new();
            let mut compiler = boon::Compiler::new();
            let url = "file:///ferry/bridges.schema.json";
            compiler.add_resource(url, schema_json()).unwrap();
            let index = compiler
                .compile(url, &mut schemas)
                .unwrap_or_else(|e| panic!("the schema does not compile: {e:#}"));
            (schemas, index)
        });
        schemas
            .validate(&instance, *index)
            .map_err(|e| format!("{e:#}"))
    }

    fn repo_file(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[test]
    fn every_shipped_configuration_validates() {
        let mut files = vec![
            repo_file("bridges.yaml"),
            repo_file("packaging/bridges.yaml"),
        ];
        for entry in std::fs::read_dir(repo_file("examples")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
        assert!(files.len() >= 6, "{files:?}");
        for path in files {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let Err(e) = validate(&text) {
                panic!(
                    "{} does not validate against the schema:\n{e}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn every_key_validates_and_parses() {
        parse(EVERY_KEY, "every.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        validate(EVERY_KEY).unwrap_or_else(|e| panic!("{e}"));
    }

    /// A misspelt key, at any level, is refused by the schema as by the parser; so is a value
    /// outside a key's choices.
    #[test]
    fn mistakes_are_refused_at_every_level() {
        let cases = [
            (
                "shutdown_timeout: 10s",
                "shutdown_timout: 10s",
                "shutdown_timout",
            ),
            ("listen: 127.0.0.1", "listne: 127.0.0.1", "listne"),
            (
                "      client_id: ferry",
                "      clientid: ferry",
                "clientid",
            ),
            ("{ initial_delay", "{ initial_dalay", "initial_dalay"),
            (
                "tls: { ca: /etc/ferry/ca.pem, cert",
                "tls: { cafile: /etc/ferry/ca.pem, cert",
                "cafile",
            ),
            ("last_will: { topic", "last_will: { topik", "topik"),
            (
                "probe: { interval: 30s, timeout: 10s, topic: ferry",
                "probe: { intervall: 30s, timeout: 10s, topic: ferry",
                "intervall",
            ),
            ("  legacy:\n    mqtt:", "  legacy:\n    mqtt3:", "mqtt3"),
            ("      ping_interval", "      ping", "ping"),
            ("        on: PB_CONNECT", "        when: PB_CONNECT", "when"),
            ("cors_origin", "cors", "cors"),
            ("    transform:", "    transfrom:", "transfrom"),
            ("      share: g", "      shared: g", "shared"),
            ("ack_wait", "ackwait", "ackwait"),
            (
                "subject: dead.telemetry",
                "subjet: dead.telemetry",
                "subjet",
            ),
            ("retain: source", "retian: source", "retian"),
            ("when_full: block", "whenfull: block", "whenfull"),
            ("{ forward: true", "{ forwrd: true", "forwrd"),
            ("spool: { dir", "spool: { directory", "directory"),
            ("events: [post", "event: [post", "event"),
        ];
        for (from, to, key) in cases {
            assert_eq!(EVERY_KEY.matches(from).count(), 1, "{from:?} is not unique");
            let text = EVERY_KEY.replace(from, to);
            let refused = parse(&text, "every.yaml", &lookup())
                .expect_err(&format!("the parser accepted `{key}`"))
                .to_string();
            assert!(
                refused.contains(&format!("unknown key `{key}`")),
                "{key}: {refused}"
            );
            assert!(validate(&text).is_err(), "the schema accepted `{key}`");
        }
        for (from, to) in [
            ("when_full: block", "when_full: drop_all"),
            ("qos: 1\n", "qos: 3\n"),
            ("delivery: at-most-once", "delivery: exactly-once"),
            ("version: 5", "version: 6"),
            ("shutdown_timeout: 10s", "shutdown_timeout: soon"),
            ("max_bytes: 64MiB", "max_bytes: lots"),
            ("shutdown_timeout: 10s", "shutdown_timeout:"),
        ] {
            assert_eq!(EVERY_KEY.matches(from).count(), 1, "{from:?} is not unique");
            let text = EVERY_KEY.replace(from, to);
            assert!(
                parse(&text, "every.yaml", &lookup()).is_err(),
                "the parser accepted {to:?}"
            );
            assert!(validate(&text).is_err(), "the schema accepted {to:?}");
        }
        // What the parser takes loosely, the schema takes too: interpolations, numbers as
        // text, text as numbers.
        for (from, to) in [
            ("max_hops: 8", "max_hops: \"${HOPS}\""),
            ("when_full: block", "when_full: \"${WHEN_FULL:-block}\""),
            ("client_id: ferry-plant", "client_id: 42"),
            ("max_messages: 10000", "max_messages: \"10000\""),
            ("shutdown_timeout: 10s", "shutdown_timeout: 2.5"),
        ] {
            let text = EVERY_KEY.replace(from, to);
            if to.contains("${") {
                let lookup = Lookup {
                    var: &|name| Some(if name == "HOPS" { "4" } else { "block" }.to_string()),
                    file: &|_| Ok("s3cret".to_string()),
                };
                parse(&text, "every.yaml", &lookup).unwrap_or_else(|e| panic!("{to}: {e}"));
            } else {
                parse(&text, "every.yaml", &lookup()).unwrap_or_else(|e| panic!("{to}: {e}"));
            }
            validate(&text).unwrap_or_else(|e| panic!("{to}: {e}"));
        }
    }

    #[test]
    fn schema_is_draft_2020_12_with_defaults_and_hover_text() {
        let schema = schema_json();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["additionalProperties"], false);
        assert!(schema["patternProperties"]["^x-"].is_object());
        let queue = &schema["$defs"]["Queue"]["properties"];
        assert_eq!(queue["max_messages"]["default"], 10000);
        assert_eq!(queue["when_full"]["default"], "block");
        let mqtt = &schema["$defs"]["MqttConnection"]["properties"];
        assert_eq!(mqtt["keep_alive"]["default"], "30s");
        assert!(
            mqtt["password"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("${file:PATH}")),
            "{}",
            mqtt["password"]
        );
    }
}
