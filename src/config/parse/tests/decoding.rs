//! Settings of each part of the file, read and refused.

use super::*;

const GOOD: &str = r#"
defaults: &mqtt_defaults
  version: "3.1.1"
  keep_alive: 15s
connections:
  plant:
    mqtt:
      <<: *mqtt_defaults
      url: mqtt://user@broker:1884
      password: ${file:/run/secret}
  core:
    nats: { url: "${NATS_URL}", name: ferry }
routes:
  - name: telemetry
    from: { connection: plant, topics: ["sensors/+/temp", "x/#"], qos: 1, share: g }
    filter: '.value != null'
    transform: '{celsius: .value}'
    to:
      - { connection: core, subject: "iot.{{ topic[1] }}.temperature" }
      - { connection: plant, topic: "copy/{{ topic }}", retain: source }
    queue: { max_messages: 5, max_bytes: 1MiB, when_full: drop_oldest }
  - name: back
    from: { connection: core, subject: "cmd.>", queue: workers }
    to: { connection: plant }
"#;

#[test]
fn anchors_live_under_x_keys() {
    let text = GOOD.replace("defaults: &mqtt_defaults", "x-defaults: &mqtt_defaults");
    let config = parse(&text, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
    let ConnectionKind::Mqtt(m) = &config.connections["plant"].kind else {
        panic!()
    };
    assert_eq!(m.version, MqttVersion::V311, "merged from the anchor");
    let err = parse(GOOD, "b.yaml", &lookup()).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert!(
        err.errors[0].message.contains("unknown key `defaults`"),
        "{err}"
    );
}

#[test]
fn decodes_every_field() {
    let text = GOOD.replace(
        "defaults: &mqtt_defaults\n  version: \"3.1.1\"\n  keep_alive: 15s\n",
        "",
    );
    let text = text.replace(
        "      <<: *mqtt_defaults\n",
        "      version: \"3.1.1\"\n      keep_alive: 15s\n",
    );
    let config = parse(&text, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
    let ConnectionKind::Mqtt(m) = &config.connections["plant"].kind else {
        panic!()
    };
    assert_eq!(m.version, MqttVersion::V311);
    assert_eq!(m.port, 1884);
    assert_eq!(m.username.as_deref(), Some("user"));
    assert_eq!(m.password.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(m.keep_alive, Duration::from_secs(15));
    assert_eq!(m.client_id, "ferry-plant");
    let ConnectionKind::Nats(n) = &config.connections["core"].kind else {
        panic!()
    };
    assert_eq!(n.urls, vec!["nats://127.0.0.1:4222"]);
    let r = &config.routes[0];
    let SourceSpec::Mqtt(s) = &r.from.spec else {
        panic!()
    };
    assert_eq!(
        s.subscriptions(),
        vec!["$share/g/sensors/+/temp", "$share/g/x/#"]
    );
    assert_eq!(r.to.len(), 2);
    assert_eq!(r.queue.when_full, WhenFull::DropOldest);
    assert_eq!(r.queue.max_bytes, 1 << 20);
    let SinkSpec::Mqtt(sink) = &config.routes[1].to[0].spec else {
        panic!()
    };
    assert_eq!(sink.topic, Target::Auto);
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "secrets stay out of Debug"
    );
}

#[test]
fn reports_every_error_with_its_position() {
    let lines = errors(
        "connections:\n  core:\n    nats: { url: nats://x:4222 }\nroutes:\n  - name: r\n    from: { connection: core, subject: \"a b\" }\n    to: { connection: nope, subject: x }\n    filter: '.a =='\n",
    );
    let text = lines.join("\n");
    assert!(
        text.contains("b.yaml:6:40: error: NATS subject `a b` contains whitespace"),
        "{text}"
    );
    assert!(
        text.contains(
            "b.yaml:7:23: error: route `r` names connection `nope`, which is not defined"
        ),
        "{text}"
    );
    assert!(
        text.contains("error: jq expression in `filter` does not compile"),
        "{text}"
    );
}

/// A wrong value in a section does not hide what else is wrong in it: the checks after
/// reading still run on the rest.
#[test]
fn a_section_with_a_wrong_value_is_still_checked_for_the_rest() {
    let text = errors(
            "connections:\n  m:\n    mqtt: { url: \"ftp://b\", keep_alive: soon, tls: {}, lastwill: 1 }\nroutes: []\n",
        )
        .join("\n");
    assert!(text.contains("`keep_alive` is not a duration"), "{text}");
    assert!(text.contains("unknown key `lastwill`"), "{text}");
    assert!(
        text.contains("`ftp://` is not an MQTT url scheme"),
        "{text}"
    );
}

#[test]
fn unknown_keys_suggest() {
    let text =
        errors("connections:\n  c:\n    nats: { url: nats://x, nmae: a }\nroutes: []\n").join("\n");
    assert!(
        text.contains("b.yaml:3:28: error: unknown key `nmae` in a NATS connection"),
        "{text}"
    );
    assert!(text.contains("hint: did you mean `name`?"), "{text}");
}

#[test]
fn missing_variables_and_bad_values() {
    let text = errors(
            "connections:\n  m:\n    mqtt: { url: \"${NOPE}\", version: 4.5, keep_alive: soon }\nroutes: []\n",
        )
        .join("\n");
    assert!(
        text.contains("environment variable `NOPE` is not set"),
        "{text}"
    );
    assert!(
        text.contains("MQTT version `4.5` is not supported"),
        "{text}"
    );
    assert!(text.contains("`keep_alive` is not a duration"), "{text}");
}

#[test]
fn durations_and_sizes() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("soon"), None);
    assert_eq!(parse_size("16MiB"), Some(16 << 20));
    assert_eq!(parse_size("10"), Some(10));
    assert_eq!(parse_size("lots"), None);
}

const MAPPING: &str = r#"
connections:
  m: { mqtt: { url: "mqtt://127.0.0.1:1883" } }
  n: { nats: { url: "nats://127.0.0.1:4222" } }
loop_guard: { instance: edge-1, max_hops: 4 }
routes:
  - name: r
    from: { connection: m, topic: "s/#", match: '^s/(?P<room>[^/]+)$', payload_format: text, envelope: true }
    headers: { forward: false, remove: [a, B], set: { room: "{{ match.room }}" } }
    to: { connection: n, subject: "x.{{ match.room }}", payload_format: bytes, envelope: true }
    dead_letter: { connection: n, subject: dead }
"#;

#[test]
fn dead_letters_need_a_name_and_headers_a_good_one() {
    let text = errors(&MAPPING.replace("subject: dead }", "}")).join("\n");
    assert!(
        text.contains("a dead-letter sink needs a name of its own"),
        "{text}"
    );
    let text = errors(&MAPPING.replace("set: { room", "set: { Ferry-Via")).join("\n");
    assert!(
        text.contains("`Ferry-Via` is one of ferry's own headers"),
        "{text}"
    );
}

#[test]
fn decodes_the_mapping_keys() {
    let config = parse(MAPPING, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.loop_guard.instance.as_deref(), Some("edge-1"));
    assert_eq!(config.loop_guard.max_hops, 4);
    let r = &config.routes[0];
    assert_eq!(r.from.pattern.as_deref(), Some("^s/(?P<room>[^/]+)$"));
    assert_eq!(
        (r.from.format, r.from.envelope),
        (PayloadFormat::Text, true)
    );
    assert_eq!(
        (r.to[0].format, r.to[0].envelope),
        (PayloadFormat::Bytes, true)
    );
    assert!(!r.headers.forward);
    assert_eq!(r.headers.remove, vec!["a", "B"]);
    assert_eq!(r.headers.set[0].0, "room");
    assert_eq!(r.dead_letter.as_ref().unwrap().connection, "n");
}

#[test]
fn reports_mapping_mistakes() {
    let bad = MAPPING
        .replace("(?P<room>[^/]+)$", "(?P<room>[^/]+$")
        .replace("payload_format: bytes", "payload_format: binary")
        .replace("max_hops: 4", "max_hops: 0")
        .replace("set: { room", "set: { \"bad name\"");
    let text = errors(&bad).join("\n");
    assert!(
        text.contains("`match` is not a valid regular expression"),
        "{text}"
    );
    assert!(
        text.contains("`binary` is not a valid payload format"),
        "{text}"
    );
    assert!(text.contains("max_hops"), "{text}");
    assert!(
        text.contains("`bad name` cannot be a header name"),
        "{text}"
    );
    let text = errors(&MAPPING.replace("x.{{ match.room }}", "x.{{ match.site }}")).join("\n");
    assert!(
        text.contains("b.yaml:10:")
            && text.contains("uses `match.site`, which the source's `match:` does not capture"),
        "{text}"
    );
    let text = errors(&MAPPING.replace(
        "dead_letter: { connection: n",
        "dead_letter: { connection: nn",
    ))
    .join("\n");
    assert!(
        text.contains("connection `nn`, which is not defined"),
        "{text}"
    );
}

const SSE_SERVER: &str = r#"
admin: { listen: 9090 }
connections:
  m: { mqtt: { url: "mqtt://127.0.0.1:1883" } }
  web: { sse_server: { path: "/events/sensors", cors_origin: "https://dash.example.com" } }
routes:
  - name: r
    from: { connection: m, topic: "s/#" }
    to: { connection: web, event: "{{ topic[1] }}" }
"#;

#[test]
fn admin_locks_are_parsed_with_their_defaults() {
    let admin = |admin: &str| {
        let yaml = SSE_SERVER.replace("admin: { listen: 9090 }", admin);
        let config = parse(&yaml, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        config.admin.unwrap()
    };
    let loopback = admin("admin: {}");
    assert_eq!(loopback.allowed_hosts, ["localhost", "127.0.0.1", "[::1]"]);
    assert_eq!((loopback.token.is_none(), loopback.taps), (true, false));
    assert_eq!(loopback.max_connections, 256);
    assert_eq!(loopback.header_read_timeout, Duration::from_secs(5));
    assert_eq!(loopback.idle_timeout, Duration::from_secs(60));
    assert!(
        admin("admin: { listen: \"0.0.0.0:9\" }")
            .allowed_hosts
            .is_empty()
    );
    let locked = admin(
        "admin: { token: \"${file:/t}\", taps: true, allowed_hosts: [Ferry.Example, \"[::1]\"], max_connections: 9, header_read_timeout: 2s, idle_timeout: 30s, tls: { cert: /c.pem, key: /k.pem } }",
    );
    assert_eq!(locked.token.as_ref().map(Secret::expose), Some("s3cret"));
    assert_eq!(format!("{:?}", locked.token), "Some(***)");
    assert_eq!(locked.allowed_hosts, ["ferry.example", "[::1]"]);
    assert_eq!(locked.max_connections, 9);
    assert_eq!(locked.tls.unwrap().key, PathBuf::from("/k.pem"));
    assert!(
        admin("admin: { allowed_hosts: [a, \"*\"] }")
            .allowed_hosts
            .is_empty()
    );
    for (bad, says, at) in [
        (
            "allowed_hosts: [\"http://x\"]",
            "`http://x` is not a host name",
            40,
        ),
        ("allowed_hosts: [\"x:80\"]", "`x:80` is not a host name", 40),
        (
            "max_connections: 0",
            "`max_connections` must be a whole number",
            41,
        ),
        ("idle_timeout: 0s", "`idle_timeout` cannot be 0", 38),
        ("tls: { cert: /c.pem }", "needs `key`", 29),
    ] {
        let yaml = SSE_SERVER.replace(
            "admin: { listen: 9090 }",
            &format!("admin: {{ listen: 9090, {bad} }}"),
        );
        let text = errors(&yaml).join("\n");
        assert!(text.contains(says), "{bad}: {text}");
        assert!(
            text.contains(&format!("b.yaml:2:{at}:")),
            "{bad} at column {at}: {text}"
        );
    }
}

#[test]
fn admin_listens_on_loopback_by_default() {
    let listen = |admin: &str| {
        let yaml = SSE_SERVER.replace("admin: { listen: 9090 }", admin);
        let config = parse(&yaml, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        config.admin.unwrap().listen.to_string()
    };
    assert_eq!(
        listen("admin: {}"),
        format!("127.0.0.1:{DEFAULT_ADMIN_PORT}")
    );
    assert_eq!(listen("admin: { listen: 9000 }"), "127.0.0.1:9000");
    assert_eq!(listen("admin: { listen: \"[::]:9000\" }"), "[::]:9000");
    let bad = SSE_SERVER.replace("admin: { listen: 9090 }", "admin: { listen: nine }");
    let text = errors(&bad).join("\n");
    assert!(
        text.contains("`nine` is not an address to listen on"),
        "{text}"
    );
}

#[test]
fn decodes_sse_server_streams() {
    let config = parse(SSE_SERVER, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.admin.as_ref().unwrap().listen,
        "127.0.0.1:9090".parse().unwrap()
    );
    let ConnectionKind::SseServer(s) = &config.connections["web"].kind else {
        panic!()
    };
    assert_eq!(s.path, "/events/sensors");
    assert_eq!((s.buffer, s.keep_alive), (1000, Duration::from_secs(15)));
    assert_eq!(s.cors_origin.as_deref(), Some("https://dash.example.com"));
    let any = SSE_SERVER.replace("\"https://dash.example.com\"", "\"*\"");
    let config = parse(&any, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
    let ConnectionKind::SseServer(s) = &config.connections["web"].kind else {
        panic!()
    };
    assert_eq!(s.cors_origin.as_deref(), Some("*"));
}

#[test]
fn refuses_sse_server_mistakes() {
    let text = errors(&SSE_SERVER.replace("admin: { listen: 9090 }\n", "")).join("\n");
    assert!(
        text.contains("serves SSE on the admin listener, which is off"),
        "{text}"
    );
    for (path, says) in [
        ("/healthz", "is the admin listener's own path"),
        ("/metrics", "is the admin listener's own path"),
        ("/routes/warm/tap", "is the admin listener's own path"),
        ("/events/{id}", "is not a path ferry can serve a stream on"),
        ("/caf%C3%A9", "is not a path ferry can serve a stream on"),
        ("events", "is not a path ferry can serve a stream on"),
    ] {
        let text = errors(&SSE_SERVER.replace("/events/sensors", path)).join("\n");
        assert!(text.contains(says), "{path}: {text}");
    }
    for origin in [
        "https://dash.example.com/",
        "https://dash.example.com/app",
        "dash.example.com",
        "ftp://x",
    ] {
        let text = errors(&SSE_SERVER.replace("https://dash.example.com", origin)).join("\n");
        assert!(text.contains("is not an origin"), "{origin}: {text}");
    }
    let two = SSE_SERVER.replace(
        "  web: {",
        "  web2: { sse_server: { path: \"/events/sensors\" } }\n  web: {",
    );
    let text = errors(&two).join("\n");
    assert!(text.contains("both serve `/events/sensors`"), "{text}");
}

/// An http_server connection: read with its defaults, answered after delivery only on an
/// at-least-once route; refused without the admin listener, on another connection's path, or
/// with a header name that is not one.
#[test]
fn http_server_connections() {
    let yaml = SSE_SERVER.replace(
        "routes:",
        "  hooks: { http_server: { path: /hooks, keep_headers: [X-Event] } }\nroutes:\n  - name: in\n    from: { connection: hooks }\n    to: { connection: m, topic: \"in/{{ topic }}\", qos: 1 }\n  - name: fast\n    from: { connection: hooks }\n    to: { connection: m, topic: fast, qos: 0 }",
    );
    let config = parse(&yaml, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
    let confirm = |route: &str| match &config
        .routes
        .iter()
        .find(|r| r.name == route)
        .unwrap()
        .from
        .spec
    {
        SourceSpec::HttpServer(s) => s.confirm,
        other => panic!("{other:?}"),
    };
    assert!(confirm("in") && !confirm("fast"));
    match &config.connections["hooks"].kind {
        ConnectionKind::HttpServer(h) => {
            assert_eq!(
                (h.max_body, h.confirm_timeout),
                (1 << 20, Duration::from_secs(10))
            );
        }
        other => panic!("{other:?}"),
    }
    let off = errors(&yaml.replace("admin: { listen: 9090 }\n", "")).join("\n");
    assert!(
        off.contains("connection `hooks` takes POSTs on the admin listener, which is off"),
        "{off}"
    );
    let same = errors(&yaml.replace("path: /hooks", "path: /events/sensors")).join("\n");
    assert!(
        same.contains("connections `hooks` and `web` both serve `/events/sensors`")
            || same.contains("connections `web` and `hooks` both serve"),
        "{same}"
    );
    let header = errors(&yaml.replace("X-Event", "\"X Event\"")).join("\n");
    assert!(
        header.contains("`X Event` is not an HTTP header name"),
        "{header}"
    );
    let own = errors(&yaml.replace("path: /hooks", "path: /metrics/x")).join("\n");
    assert!(own.contains("is the admin listener's own path"), "{own}");
}

#[test]
fn a_connection_names_one_protocol() {
    let text = "connections:\n  a: { reconnect: { initial_delay: 1s } }\n  b: { mqtt: { url: \"mqtt://x\" }, nats: { url: \"nats://y\" } }\nroutes: []\n";
    assert_eq!(
        errors(text),
        [
            "b.yaml:2:3: error: connection `a` names no protocol",
            "  hint: put its settings under `mqtt:`, `nats:`, `sse:`, `http:`, `sse_server:`, `http_server:` or `migratorydata:`",
            "b.yaml:3:6: error: connection `b` is both `mqtt` and `nats`",
            "  hint: a connection is one endpoint: split it into two connections",
        ]
    );
}
