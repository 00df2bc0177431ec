//! Secrets that never print, and TLS that cannot be talked down, against a real ferry with its
//! log at trace level (every crate's): NATS credentials written in URLs (user:password and a
//! token, literal and from the environment), HTTP and SSE query keys and header values, are
//! absent from `ferry check`, the log, `/readyz` and `/routes` while the connections are
//! refused and while they are up; a NATS connection with a `tls:` block refuses a server that
//! offers plaintext before anything with the password leaves ferry; `ferry check` names the
//! connections whose certificates are not verified.

mod support;

use std::sync::{Arc, Mutex};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Each secret must be absent from `text` (`what` names where it was looked for).
fn assert_hidden(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{what} shows the secret `{secret}`:\n{text}"
        );
    }
}

async fn admin_get(admin: &str, path: &str) -> String {
    let url = format!("{admin}{path}");
    let response = within(
        secs(10),
        &format!("GET {url}"),
        http_client().get(&url).send(),
    )
    .await
    .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response.text().await.unwrap()
}

/// The log, `/readyz`, `/routes` and `ferry check` on the same config: none shows a secret.
async fn assert_nowhere(
    ferry: &Ferry,
    admin: &str,
    yaml: &str,
    env: &[(&str, &str)],
    secrets: &[&str],
) {
    assert_hidden("the trace-level log", &ferry.lines().join("\n"), secrets);
    assert_hidden("/readyz", &admin_get(admin, "/readyz").await, secrets);
    assert_hidden("/routes", &admin_get(admin, "/routes").await, secrets);
    let check = ferry_command_with_env(&["check", "-c", "bridges.yaml"], yaml, env, secs(30));
    assert_eq!(
        check.code,
        Some(0),
        "ferry check refused the config:\n{}",
        check.all()
    );
    assert_hidden("ferry check", &check.all(), secrets);
}

/// One NATS route per connection (in.NAME → out.NAME on the same connection), so that each is
/// opened.
fn nats_routes(names: &[&str]) -> String {
    let mut routes = String::from("routes:\n");
    for name in names {
        routes.push_str(&format!(
            "  - name: r_{name}\n    from: {{ connection: {name}, subject: in.{name} }}\n    to: {{ connection: {name}, subject: out.{name} }}\n"
        ));
    }
    routes
}

fn nats_with(extra: &[&str]) -> NatsServer {
    NatsServer::start(NatsOptions {
        extra_config: extra.iter().map(|l| l.to_string()).collect(),
        ..Default::default()
    })
}

/// Waits for a log line about connection `name` that `pred` accepts.
async fn wait_for_connection(
    ferry: &mut Ferry,
    name: &str,
    what: &str,
    pred: impl Fn(&str) -> bool,
) {
    let needle = format!("connection={name}");
    ferry
        .wait_for_match_since(
            0,
            &format!("{what} for {name}"),
            |l| l.contains(&needle) && pred(l),
            secs(30),
        )
        .await;
}

#[tokio::test]
async fn nats_credentials_never_show_while_refused_or_up() {
    let users = nats_with(&[
        "authorization { users: [ {user: ferry, password: PwLiteral7f3a}, {user: ferry2, password: PwFromEnv91c2} ] }",
    ]);
    let token_a = nats_with(&["authorization { token: TokLiteral55d1 }"]);
    let token_b = nats_with(&["authorization { token: TokFromEnv82bb }"]);
    let closed = free_port();
    let admin_port = free_port();
    let names = [
        "pw_literal",
        "pw_env",
        "token_literal",
        "token_env",
        "pw_refused",
        "token_refused",
    ];
    let yaml = format!(
        r#"
admin: {{ listen: "127.0.0.1:{admin_port}" }}
connections:
  pw_literal: {{ nats: {{ url: "nats://ferry:PwLiteral7f3a@127.0.0.1:{u}" }} }}
  pw_env: {{ nats: {{ url: "nats://ferry2:${{FERRY_TEST_NATS_PW}}@127.0.0.1:{u}" }} }}
  token_literal: {{ nats: {{ url: "nats://TokLiteral55d1@127.0.0.1:{a}" }} }}
  token_env: {{ nats: {{ url: ["nats://${{FERRY_TEST_NATS_TOKEN}}@127.0.0.1:{b}"] }} }}
  pw_refused: {{ nats: {{ url: "nats://ferry:${{FERRY_TEST_DOWN_PW}}@127.0.0.1:{closed}" }} }}
  token_refused: {{ nats: {{ url: "nats://TokRefused40e1@127.0.0.1:{closed}" }} }}
{routes}"#,
        u = users.port,
        a = token_a.port,
        b = token_b.port,
        routes = nats_routes(&names),
    );
    let env = [
        ("FERRY_TEST_NATS_PW", "PwFromEnv91c2"),
        ("FERRY_TEST_NATS_TOKEN", "TokFromEnv82bb"),
        ("FERRY_TEST_DOWN_PW", "DownPwEnv0a9e"),
    ];
    let secrets = [
        "PwLiteral7f3a",
        "PwFromEnv91c2",
        "TokLiteral55d1",
        "TokFromEnv82bb",
        "DownPwEnv0a9e",
        "TokRefused40e1",
    ];
    let mut all_env = env.to_vec();
    all_env.push(("RUST_LOG", "trace"));
    let mut ferry = Ferry::start_with_env(&yaml, &all_env);
    let admin = format!("http://127.0.0.1:{admin_port}");
    for name in ["pw_refused", "token_refused"] {
        wait_for_connection(&mut ferry, name, "connection down", |l| {
            l.contains("connection down")
        })
        .await;
    }
    // Refused: the errors, and everything logged meanwhile, hold no credential.
    let readyz = admin_get(&admin, "/readyz").await;
    assert!(readyz.contains("pw_refused (nats): down since"), "{readyz}");
    assert_nowhere(&ferry, &admin, &yaml, &env, &secrets).await;

    // Up: the credentials moved out of the URLs still authenticate, and a message crosses each
    // authenticated connection.
    for name in ["pw_literal", "pw_env", "token_literal", "token_env"] {
        wait_for_connection(&mut ferry, name, "`connected`", |l| {
            l.contains("connected to")
        })
        .await;
    }
    let peer = NatsPeer::connect(&format!(
        "nats://ferry:PwLiteral7f3a@127.0.0.1:{}",
        users.port
    ))
    .await;
    let mut out = peer.subscribe("out.pw_env").await;
    peer.sync().await;
    peer.publish("in.pw_env", "crossed").await;
    let got = out.recv(secs(10)).await.expect("a message through pw_env");
    assert_eq!(got.text(), "crossed");
    assert_nowhere(&ferry, &admin, &yaml, &env, &secrets).await;

    // What `ferry check` shows instead: the URLs without their credentials.
    let check = ferry_command_with_env(&["check", "-c", "bridges.yaml"], &yaml, &env, secs(30));
    assert!(
        check.stdout.contains(&format!(
            "connection token_env: NATS at nats://127.0.0.1:{}",
            token_b.port
        )),
        "{}",
        check.all()
    );
}

/// A password or token bound for another host over plaintext is warned about; over TLS, or to
/// this machine, it is not.
#[test]
fn check_warns_of_credentials_sent_in_plaintext() {
    let yaml = r#"
connections:
  far: { nats: { url: "nats://ferry:FarPw1b2c@nats.example.com:4222" } }
  far_tls: { nats: { url: "tls://ferry:TlsPw3d4e@nats.example.com:4222" } }
  hook: { http: { url: "http://hooks.example.com/in?apikey=HookKey5f6a" } }
  near: { nats: { url: "nats://ferry:NearPw7a8b@127.0.0.1:4222" } }
routes:
  - name: r
    from: { connection: far, subject: a }
    to:
      - { connection: far_tls, subject: b }
      - { connection: hook }
      - { connection: near, subject: c }
"#;
    let check = ferry_check(yaml);
    assert_eq!(check.code, Some(0), "{}", check.all());
    let out = check.all();
    assert_hidden(
        "ferry check",
        &out,
        &["FarPw1b2c", "TlsPw3d4e", "HookKey5f6a", "NearPw7a8b"],
    );
    let warned = |name: &str| {
        out.lines()
            .any(|l| l.starts_with(&format!("warning: connection {name}: sends")))
    };
    assert!(warned("far"), "{out}");
    assert!(warned("hook"), "{out}");
    assert!(!warned("far_tls"), "{out}");
    assert!(!warned("near"), "{out}");
}

#[tokio::test]
async fn http_and_sse_query_and_header_secrets_never_show() {
    let nats = NatsServer::start(NatsOptions::default());
    let hook = WebhookServer::start();
    hook.respond_default(200, &[], "");
    let closed = free_port();
    let admin_port = free_port();
    let yaml = format!(
        r#"
admin: {{ listen: "127.0.0.1:{admin_port}" }}
connections:
  core: {{ nats: {{ url: "{nats}" }} }}
  hook_up:
    http:
      url: "{hook}/in?api_key=HookQueryKey31&x=1"
      headers: {{ Authorization: "Bearer ${{FERRY_TEST_HOOK_TOKEN}}" }}
  hook_down:
    http:
      url: "http://127.0.0.1:{closed}/in?token=DownQueryTok42"
      headers: {{ X-Api-Key: DownHeaderKey19 }}
  feed:
    sse:
      url: "http://127.0.0.1:{closed}/stream?access_token=SseQueryTok63"
      query: {{ apiKey: "${{FERRY_TEST_SSE_KEY}}" }}
      headers: {{ Cookie: "session=SseCookie88" }}
      handshake:
        on: PB_CONNECT
        url: "/api/realtime?sig=HandshakeSig24"
        headers: {{ Authorization: "${{FERRY_TEST_HANDSHAKE}}" }}
routes:
  - name: up
    from: {{ connection: core, subject: in.up }}
    to: {{ connection: hook_up }}
  - name: down
    from: {{ connection: core, subject: in.down }}
    to: {{ connection: hook_down }}
  - name: stream
    from: {{ connection: feed }}
    to: {{ connection: core, subject: from.feed }}
"#,
        nats = nats.url(),
        hook = hook.url(),
    );
    let env = [
        ("FERRY_TEST_HOOK_TOKEN", "HookBearer77aa"),
        ("FERRY_TEST_SSE_KEY", "SseEnvKey5150"),
        ("FERRY_TEST_HANDSHAKE", "HandshakeAuth6d6d"),
    ];
    let secrets = [
        "HookQueryKey31",
        "HookBearer77aa",
        "DownQueryTok42",
        "DownHeaderKey19",
        "SseQueryTok63",
        "SseEnvKey5150",
        "SseCookie88",
        "HandshakeSig24",
        "HandshakeAuth6d6d",
    ];
    let mut all_env = env.to_vec();
    all_env.push(("RUST_LOG", "trace"));
    let mut ferry = Ferry::start_with_env(&yaml, &all_env);
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_for_connection(&mut ferry, "feed", "connection down", |l| {
        l.contains("connection down")
    })
    .await;
    wait_for_connection(&mut ferry, "core", "`connected`", |l| {
        l.contains("connected to")
    })
    .await;

    let peer = NatsPeer::connect(&nats.url()).await;
    peer.publish("in.up", "{}").await;
    peer.publish("in.down", "{}").await;
    // The credentials reach the server they are for...
    let requests = hook.wait_for_requests(1, secs(10)).await;
    assert!(
        requests[0].uri.contains("api_key=HookQueryKey31"),
        "{}",
        requests[0].uri
    );
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer HookBearer77aa")
    );
    // ...and the unreachable one is reported, without them.
    wait_for_connection(&mut ferry, "hook_down", "a warning", |l| l.contains("WARN")).await;
    assert_nowhere(&ferry, &admin, &yaml, &env, &secrets).await;
}

/// A fake NATS server on a loopback port: it announces plaintext (an INFO without
/// `tls_required`), as a man in the middle stripping TLS would, and records every byte a
/// client sends it.
struct PlaintextNats {
    port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<usize>>,
}

impl PlaintextNats {
    async fn start() -> PlaintextNats {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (r, c) = (received.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                *c.lock().unwrap() += 1;
                let r = r.clone();
                tokio::spawn(async move {
                    let info = "INFO {\"server_id\":\"fake\",\"version\":\"2.10.0\",\"proto\":1,\"host\":\"127.0.0.1\",\"max_payload\":1048576,\"auth_required\":true}\r\n";
                    let _ = socket.write_all(info.as_bytes()).await;
                    let mut buf = [0u8; 4096];
                    // Whatever the client sends within a second, then close.
                    while let Ok(Ok(n)) = tokio::time::timeout(secs(1), socket.read(&mut buf)).await
                    {
                        if n == 0 {
                            break;
                        }
                        r.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        PlaintextNats {
            port,
            received,
            connections,
        }
    }
}

#[tokio::test]
async fn a_tls_block_refuses_a_server_offering_plaintext() {
    let fake = PlaintextNats::start().await;
    let pki = TestPki::generate();
    let yaml = format!(
        r#"
connections:
  guarded:
    nats:
      url: "nats://ferry:TlsGuardPw5b7c@127.0.0.1:{port}"
      tls: {{ ca: "{ca}" }}
{routes}"#,
        port = fake.port,
        ca = pki.ca.display(),
        routes = nats_routes(&["guarded"]),
    );
    let mut ferry = Ferry::start_with_env(&yaml, &[("RUST_LOG", "trace")]);
    let down = ferry
        .wait_for_match_since(
            0,
            "`connection down` for guarded",
            |l| l.contains("connection=guarded") && l.contains("connection down"),
            secs(30),
        )
        .await;
    // Let it try at least twice: the refusal is not a one-off.
    ferry
        .wait_for_match_since(
            0,
            "a second attempt",
            |_| *fake.connections.lock().unwrap() >= 2,
            secs(30),
        )
        .await;
    let received = fake.received.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&received);
    assert!(
        !text.contains("CONNECT") && !text.contains("TlsGuardPw5b7c"),
        "the client sent its CONNECT to a server offering plaintext:\n{text}"
    );
    assert_eq!(
        received.first(),
        Some(&0x16),
        "the client should have started a TLS handshake (a ClientHello), got: {text:?}"
    );
    assert!(
        down.contains("the TLS handshake, which this connection requires"),
        "the reason should say TLS failed and is required: {down}"
    );
    assert_hidden("the log", &ferry.lines().join("\n"), &["TlsGuardPw5b7c"]);
}

#[test]
fn check_names_every_connection_with_verification_off() {
    let yaml = r#"
connections:
  mq_unverified: { mqtt: { url: "mqtts://broker.example.com:8883", tls: { insecure_skip_verify: true } } }
  nats_unverified: { nats: { url: "tls://nats.example.com:4222", tls: { insecure_skip_verify: true } } }
  hook_unverified: { http: { url: "https://hooks.example.com/in", tls: { insecure_skip_verify: true } } }
  nats_verified: { nats: { url: "tls://nats.example.com:4222", tls: {} } }
routes:
  - name: r
    from: { connection: mq_unverified, topic: a }
    to:
      - { connection: nats_unverified, subject: b }
      - { connection: hook_unverified }
      - { connection: nats_verified, subject: c }
"#;
    let check = ferry_check(yaml);
    assert_eq!(check.code, Some(0), "{}", check.all());
    let out = check.all();
    let named = |name: &str| {
        out.lines().any(|l| {
            l.starts_with(&format!(
                "warning: connection {name}: TLS certificate verification is OFF"
            ))
        })
    };
    for name in ["mq_unverified", "nats_unverified", "hook_unverified"] {
        assert!(named(name), "{name} not named:\n{out}");
    }
    assert!(!named("nats_verified"), "{out}");
}

/// A transform that fails on a long value: the dead letter's reason (its `Ferry-Error`
/// header) and the log quote only a short prefix of the value; the dead letter's payload is the
/// message, whole.
#[tokio::test]
async fn a_jq_error_quotes_only_a_prefix_of_the_value() {
    let nats = NatsServer::start(NatsOptions::default());
    let yaml = format!(
        r#"
connections:
  core: {{ nats: {{ url: "{}" }} }}
routes:
  - name: cards
    from: {{ connection: core, subject: in.cards }}
    transform: '.card.number'
    to: {{ connection: core, subject: out.cards }}
    dead_letter: {{ connection: core, subject: dead.cards }}
"#,
        nats.url()
    );
    let mut ferry = Ferry::start(&yaml);
    ferry.wait_ready().await;
    let peer = NatsPeer::connect(&nats.url()).await;
    let mut dead = peer.subscribe("dead.cards").await;
    peer.sync().await;
    let card = "4111 1111 1111 1111 exp 12/29 cvv 123 holder Jane Q Public";
    let payload = format!(r#"{{"card":"{card}"}}"#);
    peer.publish("in.cards", payload.clone()).await;
    let letter = dead.recv(secs(10)).await.expect("a dead letter");
    assert_eq!(
        letter.text(),
        payload,
        "the dead letter carries the message whole"
    );
    let reason = letter.header("Ferry-Error").expect("a Ferry-Error header");
    assert!(reason.contains("cannot index \"4111 1111"), "{reason}");
    assert!(reason.contains('…'), "{reason}");
    assert_hidden(
        "the dead letter's reason",
        reason,
        &["cvv 123", "Jane Q Public"],
    );
    let logged = ferry
        .wait_for_line("cannot index \"4111 1111", secs(10))
        .await;
    assert!(logged.contains('…'), "{logged}");
    assert_hidden(
        "the log",
        &ferry.lines().join("\n"),
        &["cvv 123", "Jane Q Public"],
    );
}

/// MQTT passwords, written in the URL (from the environment) or in `password:`, while the
/// broker refuses one connection and accepts the other.
#[tokio::test]
async fn mqtt_passwords_never_show_while_refused_or_up() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let status = std::process::Command::new(require_binary("mosquitto_passwd", "mosquitto"))
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["ferry", "MqttPw3c4d"])
        .status()
        .unwrap();
    assert!(status.success());
    let mosquitto = Mosquitto::start(MosquittoOptions {
        extra_config: vec![
            "allow_anonymous false".into(),
            format!("password_file {}", passwords.display()),
        ],
        ..Default::default()
    });
    let admin_port = free_port();
    let port = mosquitto.port;
    let yaml = format!(
        r#"
admin: {{ listen: "127.0.0.1:{admin_port}" }}
connections:
  mq_up: {{ mqtt: {{ url: "mqtt://ferry:${{FERRY_TEST_MQTT_PW}}@127.0.0.1:{port}", client_id: secrets-up }} }}
  mq_refused: {{ mqtt: {{ url: "mqtt://127.0.0.1:{port}", username: ferry, password: MqttWrong9e0f, client_id: secrets-refused }} }}
routes:
  - name: up
    from: {{ connection: mq_up, topic: in/up }}
    to: {{ connection: mq_up, topic: out/up }}
  - name: refused
    from: {{ connection: mq_refused, topic: in/refused }}
    to: {{ connection: mq_refused, topic: out/refused }}
"#
    );
    let env = [("FERRY_TEST_MQTT_PW", "MqttPw3c4d")];
    let secrets = ["MqttPw3c4d", "MqttWrong9e0f"];
    let mut ferry = Ferry::start_with_env(&yaml, &[env[0], ("RUST_LOG", "trace")]);
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_for_connection(&mut ferry, "mq_refused", "connection down", |l| {
        l.contains("connection down")
    })
    .await;
    wait_for_connection(&mut ferry, "mq_up", "`connected`", |l| {
        l.contains("connected to")
    })
    .await;
    assert_nowhere(&ferry, &admin, &yaml, &env, &secrets).await;
}

/// `ferry run` says it too, as the connection opens: a password bound for another host over
/// plaintext is a warning in the log (the host is a documentation address: nothing answers).
#[tokio::test]
async fn run_warns_of_a_password_sent_in_plaintext() {
    let yaml = format!(
        r#"
connections:
  far: {{ nats: {{ url: "nats://ferry:${{FERRY_TEST_FAR_PW}}@192.0.2.1:4222" }} }}
{}"#,
        nats_routes(&["far"])
    );
    let mut ferry = Ferry::start_with_env(&yaml, &[("FERRY_TEST_FAR_PW", "FarRunPw2d3e")]);
    let warning = ferry
        .wait_for_line(
            "sends a password unencrypted to nats://192.0.2.1:4222",
            secs(10),
        )
        .await;
    assert!(
        warning.contains("WARN") && warning.contains("connection=far"),
        "{warning}"
    );
    assert_hidden("the log", &ferry.lines().join("\n"), &["FarRunPw2d3e"]);
}
