//! Transports and protocol versions: MQTT 3.1.1 and 5, MQTT over TLS (a CA the test makes,
//! trusted as `ca:` or as the system's roots, refused when ferry trusts an unrelated CA or the
//! machine's own roots), MQTT over WebSocket, NATS over WebSocket.
//!
//! Each test gives ferry one MQTT and one NATS connection written a particular way and checks
//! that messages flow both ways through them; the test's own peers use the brokers' plain
//! listeners.

mod support;

use support::*;

const N: usize = 20;

/// Starts ferry with the given `mq` (MQTT) and `nc` (NATS) connection bodies and two routes,
/// `up` (MQTT `up/#` → NATS, auto) and `down` (NATS `down.>` → MQTT, auto, QoS 1); checks
/// that N messages pass each way, in order.
async fn assert_two_way(mq: &str, nc: &str, mosquitto: &Mosquitto, nats: &NatsServer) -> Ferry {
    assert_two_way_with_env(mq, nc, mosquitto, nats, &[]).await
}

/// `assert_two_way`, with ferry started with `env` added to its environment.
async fn assert_two_way_with_env(
    mq: &str,
    nc: &str,
    mosquitto: &Mosquitto,
    nats: &NatsServer,
    env: &[(&str, &str)],
) -> Ferry {
    let mut ferry = Ferry::start_with_env(
        &format!(
            r#"
connections:
  mq:
    mqtt: {mq}
  nc:
    nats: {nc}
routes:
  - name: up
    from: {{ connection: mq, topic: "up/#", qos: 1 }}
    to: {{ connection: nc, subject: auto }}
  - name: down
    from: {{ connection: nc, subject: "down.>" }}
    to: {{ connection: mq, topic: auto, qos: 1 }}
"#
        ),
        env,
    );
    ferry.wait_ready().await;

    let nats_peer = NatsPeer::connect(&nats.url()).await;
    let mut in_nats = nats_peer.subscribe("up.>").await;
    let mut mqtt_peer = MqttPeer::connect(&mosquitto.url()).await;
    mqtt_peer.subscribe("down/#", 1).await;

    mqtt_peer
        .publish_all(
            (0..N).map(|i| ("up/x".to_string(), seq_payload("up", i, 0))),
            1,
        )
        .await;
    let got = in_nats.collect(N, secs(20)).await;
    assert!(
        got.iter().all(|m| m.topic == "up.x"),
        "MQTT up/x should arrive as NATS up.x: {got:?}"
    );
    assert_sequences(&got, &["up"], N);

    nats_peer
        .publish_all((0..N).map(|i| ("down.y".to_string(), seq_payload("down", i, 0))))
        .await;
    let got = mqtt_peer.inbox.collect(N, secs(20)).await;
    assert!(
        got.iter().all(|m| m.topic == "down/y"),
        "NATS down.y should arrive as MQTT down/y: {got:?}"
    );
    assert_sequences(&got, &["down"], N);
    ferry
}

/// mosquitto logs `New client connected from ... as ID (pN, ...)`, N being its own protocol
/// number: p2 is MQTT 3.1.1, p5 is MQTT 5.
fn assert_protocol_level(mosquitto: &Mosquitto, client_id: &str, level: &str) {
    let log = mosquitto.log();
    let wanted = format!("as {client_id} ({level}");
    assert!(
        log.lines().any(|l| l.contains(&wanted)),
        "mosquitto's log has no `{wanted}`: ferry did not connect with the configured MQTT \
         version; log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_connection_relays_both_ways() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let mq = format!(
        r#"{{ url: "{}", version: "3.1.1", client_id: ferry-v311 }}"#,
        mosquitto.url()
    );
    let nc = format!(r#"{{ url: "{}" }}"#, nats.url());
    let _ferry = assert_two_way(&mq, &nc, &mosquitto, &nats).await;
    assert_protocol_level(&mosquitto, "ferry-v311", "p2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_connection_relays_both_ways() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let mq = format!(
        r#"{{ url: "{}", version: 5, client_id: ferry-v5 }}"#,
        mosquitto.url()
    );
    let nc = format!(r#"{{ url: "{}" }}"#, nats.url());
    let _ferry = assert_two_way(&mq, &nc, &mosquitto, &nats).await;
    assert_protocol_level(&mosquitto, "ferry-v5", "p5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_with_the_test_ca_relays_both_ways() {
    let pki = TestPki::generate();
    let tls = format!(r#", tls: {{ ca: "{}" }}"#, pki.ca.display());
    assert_two_way_over_tls(&pki, &tls, &[]).await;
}

/// Without a `ca:`, the system's root certificates are read at the first handshake; with the
/// test CA as the system's (`SSL_CERT_FILE`, which the system store honours), the server is
/// trusted and the connection relays both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_without_a_ca_trusts_a_server_the_system_roots_sign() {
    let pki = TestPki::generate();
    let ca = pki.ca.display().to_string();
    assert_two_way_over_tls(&pki, "", &[("SSL_CERT_FILE", &ca)]).await;
}

/// `assert_two_way` with the MQTT connection on mosquitto's TLS listener (`pki`'s server
/// certificate), its settings ending with `tls` (`, tls: {...}`, or nothing), and ferry
/// started with `env` added to its environment.
async fn assert_two_way_over_tls(pki: &TestPki, tls: &str, env: &[(&str, &str)]) {
    let mosquitto = Mosquitto::start(MosquittoOptions {
        tls: Some(pki.server_tls()),
        ..Default::default()
    });
    let nats = NatsServer::start(NatsOptions::default());
    let mq = format!(
        r#"{{ url: "{}", client_id: ferry-tls{tls} }}"#,
        mosquitto.tls_url()
    );
    let nc = format!(r#"{{ url: "{}" }}"#, nats.url());
    let _ferry = assert_two_way_with_env(&mq, &nc, &mosquitto, &nats, env).await;
}

/// Trusting an unrelated CA, the TLS connection is refused: ferry logs a certificate error,
/// relays nothing from that connection, and keeps running (a healthy route on a second
/// connection still works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_with_the_wrong_ca_is_refused_and_ferry_keeps_running() {
    let pki = TestPki::generate();
    let tls = format!(r#"{{ ca: "{}" }}"#, pki.other_ca.display());
    assert_untrusted_server_refused(&pki, &tls).await;
}

/// Without a `ca:`, the system's root certificates decide (read at the first handshake), and
/// none of them signed the test CA: refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_without_a_ca_checks_the_system_roots_and_refuses_the_test_ca() {
    let pki = TestPki::generate();
    assert_untrusted_server_refused(&pki, "{}").await;
}

/// Starts mosquitto with `pki`'s server certificate and ferry with a connection to its TLS
/// listener whose `tls:` block is `tls`, which must not trust it; checks the refusal.
async fn assert_untrusted_server_refused(pki: &TestPki, tls: &str) {
    let mosquitto = Mosquitto::start(MosquittoOptions {
        tls: Some(pki.server_tls()),
        ..Default::default()
    });
    let nats = NatsServer::start(NatsOptions::default());
    let mut ferry = Ferry::start(&format!(
        r#"
connections:
  untrusted:
    mqtt: {{ url: "{url}", client_id: ferry-wrong-ca, tls: {tls} }}
  plain:
    mqtt: {{ url: "{plain}", client_id: ferry-plain }}
  nc:
    nats: {{ url: "{nats}" }}
routes:
  - name: over-untrusted-tls
    from: {{ connection: untrusted, topic: "secret/#", qos: 1 }}
    to: {{ connection: nc, subject: "leaked" }}
  - name: healthy
    from: {{ connection: plain, topic: "probe/#", qos: 1 }}
    to: {{ connection: nc, subject: "probed" }}
"#,
        url = mosquitto.tls_url(),
        plain = mosquitto.url(),
        nats = nats.url()
    ));
    let line = ferry
        .wait_for_match_since(
            0,
            "a certificate error",
            |l| {
                let l = l.to_lowercase();
                l.contains("certificate")
                    || l.contains("unknownissuer")
                    || l.contains("unknown issuer")
            },
            secs(30),
        )
        .await;
    eprintln!("[test] certificate error: {line}");

    let watcher = NatsPeer::connect(&nats.url()).await;
    let mut inbox = watcher.subscribe(">").await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    // The healthy route subscribes on its own schedule: probe until one probe comes through.
    probe_until_through(&publisher, &mut inbox).await;
    publisher
        .publish("secret/x", "must not be relayed", 1, false)
        .await;
    publisher.publish("probe/after", "after", 1, false).await;
    let got = inbox
        .collect_until("the second probe", |m| m.text() == "after", secs(15))
        .await;
    assert!(
        got.iter().all(|m| m.topic == "probed"),
        "relayed over an untrusted connection: {got:?}"
    );
    inbox.expect_nothing(millis(500)).await;
    assert!(
        ferry.is_running(),
        "ferry exited because one connection's certificate was refused"
    );
    assert!(
        !ferry.lines().iter().any(|l| l.contains("ferry ready")),
        "ferry said `ferry ready` although a connection is refused"
    );
}

/// Publishes `probe/n` every 200 ms until one arrives on NATS as `probed` (30 s at most).
async fn probe_until_through(publisher: &MqttPeer, inbox: &mut Inbox) {
    let deadline = tokio::time::Instant::now() + secs(30);
    for n in 0.. {
        publisher
            .publish(&format!("probe/{n}"), "probe", 1, false)
            .await;
        if let Some(m) = inbox.recv(millis(200)).await {
            assert_eq!(m.topic, "probed", "unexpected message: {m:?}");
            inbox.drain();
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no probe came through the healthy route in 30s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_websocket_relays_both_ways() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions {
        websocket: true,
        ..Default::default()
    });
    let mq = format!(r#"{{ url: "{}" }}"#, mosquitto.url());
    let nc = format!(r#"{{ url: "{}" }}"#, nats.ws_url());
    let _ferry = assert_two_way(&mq, &nc, &mosquitto, &nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket_relays_both_ways() {
    let mosquitto = Mosquitto::start(MosquittoOptions {
        websocket: true,
        ..Default::default()
    });
    let nats = NatsServer::start(NatsOptions::default());
    let mq = format!(
        r#"{{ url: "{}", client_id: ferry-ws }}"#,
        mosquitto.ws_url()
    );
    let nc = format!(r#"{{ url: "{}" }}"#, nats.url());
    // Only the WebSocket listener is at that URL: a relay that works went over WebSocket.
    let _ferry = assert_two_way(&mq, &nc, &mosquitto, &nats).await;
}

/// NATS user/password from a `${file:...}` secret: the relay works against a server that
/// requires it; with a wrong password ferry reports the connection down and keeps running, and
/// neither password ever appears in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_user_and_password_from_a_secret_file() {
    const PASSWORD: &str = "s3cret-pw-4711";
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions {
        extra_config: vec![format!(
            "authorization {{ user: ferry, password: \"{PASSWORD}\" }}"
        )],
        ..Default::default()
    });
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("right"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(secrets.path().join("wrong"), "not-the-password\n").unwrap();
    let config = |file: &str| {
        format!(
            r#"
connections:
  mq:
    mqtt: {{ url: "{mqtt}" }}
  nc:
    nats: {{ url: "{nats}", user: ferry, password: "${{file:{dir}/{file}}}" }}
    reconnect: {{ initial_delay: 100ms, max_delay: 500ms }}
routes:
  - name: up
    from: {{ connection: mq, topic: "up/#", qos: 1 }}
    to: {{ connection: nc, subject: auto }}
"#,
            mqtt = mosquitto.url(),
            nats = nats.url(),
            dir = secrets.path().display()
        )
    };

    let mut ferry = Ferry::start(&config("right"));
    ferry.wait_ready().await;
    let authed = format!("nats://ferry:{PASSWORD}@127.0.0.1:{}", nats.port);
    let nats_peer = NatsPeer::connect(&authed).await;
    let mut in_nats = nats_peer.subscribe("up.>").await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    publisher
        .publish_all(
            (0..N).map(|i| ("up/x".to_string(), seq_payload("up", i, 0))),
            1,
        )
        .await;
    assert_sequences(&in_nats.collect(N, secs(20)).await, &["up"], N);
    assert_eq!(ferry.terminate().await.code(), Some(0));
    assert!(
        !ferry.lines().join("\n").contains(PASSWORD),
        "the password leaked into the log"
    );

    let mut refused = Ferry::start(&config("wrong"));
    refused.wait_for_line("connection down", secs(20)).await;
    assert!(
        refused.is_running(),
        "a refused connection must not stop ferry"
    );
    let log = refused.lines().join("\n");
    assert!(
        log.to_lowercase().contains("authorization"),
        "the log should say why the connection failed:\n{log}"
    );
    assert!(
        !log.contains("not-the-password") && !log.contains(PASSWORD),
        "a password leaked:\n{log}"
    );
}
