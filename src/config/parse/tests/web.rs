//! SSE, HTTP, sse_server and MigratoryData connections.

use super::*;

const WEB: &str = r#"
state_dir: /tmp/ferry-state
admin: { listen: 9090 }
connections:
  db:
    sse:
      url: https://db.example.com/realtime?x=1
      headers: { x-apikey: "${KEY}" }
      query: { apikey: "${KEY}" }
      idle_timeout: 90s
      handshake:
        on: PB_CONNECT
        url: /api/realtime
        body: '{"clientId": "{{ payload.clientId }}"}'
  hook:
    http: { url: "https://hooks.example.com/in/", timeout: 5s, max_concurrent: 2 }
  browser:
    sse_server: { path: /events, buffer: 50 }
  plant:
    mqtt: { url: mqtt://broker }
routes:
  - name: changes
    from: { connection: db, events: [post, put] }
    to:
      - { connection: plant, topic: "db/{{ event }}" }
      - { connection: hook, url: "{{ event }}", method: PUT }
      - { connection: browser }
"#;

#[test]
fn decodes_sse_http_and_sse_server() {
    let config = parse(WEB, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.state_dir(), PathBuf::from("/tmp/ferry-state"));
    assert_eq!(config.admin.unwrap().listen.to_string(), "127.0.0.1:9090");
    let ConnectionKind::Sse(sse) = &config.connections["db"].kind else {
        panic!()
    };
    assert_eq!(
        sse.url.expose(),
        "https://db.example.com/realtime?x=1&apikey=k3y",
        "query parameters are appended"
    );
    assert_eq!(sse.headers[0].1.expose(), "k3y");
    assert_eq!(sse.idle_timeout, Duration::from_secs(90));
    assert!(sse.resume);
    let handshake = sse.handshake.as_ref().unwrap();
    assert_eq!(
        (handshake.on.as_str(), handshake.method),
        ("PB_CONNECT", HttpMethod::Post)
    );
    let ConnectionKind::Http(http) = &config.connections["hook"].kind else {
        panic!()
    };
    assert_eq!((http.max_concurrent, http.timeout.as_secs()), (2, 5));
    let route = &config.routes[0];
    assert_eq!(
        route.from.spec,
        SourceSpec::Sse(SseSource {
            events: vec!["post".into(), "put".into()]
        })
    );
    assert_eq!(
        route.to[1].spec,
        SinkSpec::Http(HttpSink {
            url: Target::Template("{{ event }}".into()),
            method: HttpMethod::Put
        })
    );
    assert_eq!(
        route.to[2].spec,
        SinkSpec::SseServer(SseServerSink {
            event: Target::Auto
        })
    );
}

#[test]
fn sse_input_bounds_have_defaults_and_a_range() {
    let config = parse(WEB, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
    let ConnectionKind::Sse(sse) = &config.connections["db"].kind else {
        panic!()
    };
    assert_eq!(
        (sse.max_line_size, sse.max_event_size, sse.max_response_body),
        (16 << 20, 16 << 20, 64 << 10)
    );
    let set = WEB.replace(
            "      idle_timeout: 90s\n",
            "      idle_timeout: 90s\n      max_line_size: 1MiB\n      max_event_size: 2MiB\n      max_response_body: 4KiB\n",
        );
    let config = parse(&set, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
    let ConnectionKind::Sse(sse) = &config.connections["db"].kind else {
        panic!()
    };
    assert_eq!(
        (sse.max_line_size, sse.max_event_size, sse.max_response_body),
        (1 << 20, 2 << 20, 4 << 10)
    );
    let tiny = WEB.replace(
        "      idle_timeout: 90s\n",
        "      idle_timeout: 90s\n      max_line_size: 10\n",
    );
    let text = error_text(&tiny);
    assert!(
        text.contains("b.yaml:11:22")
            && text.contains("`max_line_size` must be between 1KiB and 1GiB"),
        "{text}"
    );
}

#[test]
fn refuses_wrong_directions_and_missing_pieces() {
    let text = WEB
        .replace("admin: { listen: 9090 }\n", "")
        .replace("{ connection: browser }", "{ connection: db }")
        .replace("from: { connection: db,", "from: { connection: hook,")
        .replace("x-apikey", "x api key");
    let e = error_text(&text);
    for expected in [
        "connection `browser` serves SSE on the admin listener, which is off",
        "it cannot be a sink",
        "it cannot be a source",
        "`x api key` is not a valid HTTP header name",
    ] {
        assert!(e.contains(expected), "missing `{expected}` in:\n{e}");
    }
    let e = error_text(&WEB.replace("https://db.example.com/realtime?x=1", "ftp://db"));
    assert!(
        e.contains("`ftp://db` is not an http:// or https:// URL"),
        "{e}"
    );
    let e = error_text(&WEB.replace("url: /api/realtime", "method: PATCH"));
    assert!(e.contains("a `handshake` needs `url`"), "{e}");
    assert!(e.contains("`PATCH` is not a valid method here"), "{e}");
}

const MD: &str = r#"
connections:
  md:
    migratorydata:
      servers: [http://127.0.0.1:8800, "https://md2.example.com"]
      token: ${KEY}
      poll_interval: 250ms
  plant:
    mqtt: { url: mqtt://broker }
routes:
  - name: in
    from: { connection: md, subject: /server/status, history: 5 }
    to: { connection: plant, topic: auto }
  - name: out
    from: { connection: plant, topic: "sensors/#" }
    to: { connection: md, subject: "/sensors/{{ topic[1] }}", retained: true, qos: guaranteed }
"#;

#[test]
fn decodes_migratorydata() {
    let config = parse(MD, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
    let ConnectionKind::MigratoryData(md) = &config.connections["md"].kind else {
        panic!()
    };
    assert_eq!(
        md.servers,
        ["http://127.0.0.1:8800/", "https://md2.example.com/"]
    );
    assert_eq!(md.token.expose(), "k3y");
    assert_eq!(md.poll_interval, Duration::from_millis(250));
    assert_eq!(md.timeout, Duration::from_secs(10));
    assert_eq!(
        config.routes[0].from.spec,
        SourceSpec::MigratoryData(MigratoryDataSource {
            subject: "/server/status".into(),
            history: Some(5)
        })
    );
    assert_eq!(
        config.routes[1].to[0].spec,
        SinkSpec::MigratoryData(MigratoryDataSink {
            subject: Target::Template("/sensors/{{ topic[1] }}".into()),
            retained: Retain::Fixed(true),
            qos: MigratoryDataQos::Guaranteed,
        })
    );
}

#[test]
fn refuses_migratorydata_mistakes_without_showing_the_token() {
    let e = error_text(
        &MD.replace("subject: /server/status", "subject: server/status")
            .replace("qos: guaranteed", "qos: best")
            .replace("http://127.0.0.1:8800", "http://127.0.0.1:8800/?token=k3y")
            .replace("poll_interval: 250ms", "poll_interval: 0s"),
    );
    for expected in [
        "b.yaml:12:",
        "`server/status` is not a MigratoryData subject: it must start with `/`",
        "`best` is not a valid MigratoryData qos",
        "is not an http:// or https:// server URL",
        "`poll_interval` cannot be 0",
    ] {
        assert!(e.contains(expected), "missing `{expected}` in:\n{e}");
    }
    assert!(!e.contains("k3y"), "{e}");
    let e = error_text(&MD.replace("      token: ${KEY}\n", ""));
    assert!(
        e.contains("a MigratoryData connection needs `token`"),
        "{e}"
    );
    let e = error_text(&MD.replace("/sensors/{{ topic[1] }}", "sensors"));
    assert!(e.contains("must start with `/`"), "{e}");
}
