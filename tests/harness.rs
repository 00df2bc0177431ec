//! Self-tests of the harness in tests/support, without ferry: the brokers start, the peers
//! connect, and a message passes peer to peer through mosquitto (TCP, WebSocket, TLS) and
//! through nats-server (TCP, WebSocket). If these fail, every other integration test would
//! fail for reasons that have nothing to do with ferry.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_relays_between_two_peers_over_tcp_websocket_and_tls() {
    let pki = TestPki::generate();
    let broker = Mosquitto::start(MosquittoOptions {
        websocket: true,
        tls: Some(pki.server_tls()),
        ..Default::default()
    });

    let mut subscriber = MqttPeer::connect(&broker.url()).await;
    subscriber.subscribe("harness/#", 1).await;

    let tcp = MqttPeer::connect(&broker.url()).await;
    tcp.publish("harness/tcp", "over tcp", 1, false).await;
    let ws = MqttPeer::connect(&broker.ws_url()).await;
    ws.publish("harness/ws", "over websocket", 1, false).await;
    let tls = MqttPeer::connect_tls(&broker.tls_url(), &pki.ca)
        .await
        .expect("TLS with the right CA");
    tls.publish("harness/tls", "over tls", 1, false).await;

    let got = subscriber.inbox.collect(3, secs(10)).await;
    let got: Vec<(String, String)> = got.iter().map(|m| (m.topic.clone(), m.text())).collect();
    assert_eq!(
        got,
        [
            ("harness/tcp".to_string(), "over tcp".to_string()),
            ("harness/ws".to_string(), "over websocket".to_string()),
            ("harness/tls".to_string(), "over tls".to_string()),
        ]
    );

    // The unrelated CA must not be trusted: this is what ferry's "wrong CA" test relies on.
    let refused = MqttPeer::connect_tls(&broker.tls_url(), &pki.other_ca).await;
    assert!(
        refused.is_err(),
        "a TLS connection trusting an unrelated CA succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_carries_the_awkward_topics_the_round_trip_test_uses() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let mut sub = MqttPeer::connect(&broker.url()).await;
    sub.subscribe("#", 1).await;
    sub.subscribe("$app/#", 1).await;
    let publisher = MqttPeer::connect(&broker.url()).await;
    let topics = ["a/b.c/d", "x/$cost", "$app/x", "a//b", "a/b/"];
    for t in topics {
        publisher
            .publish(t, format!("payload of {t}"), 1, false)
            .await;
    }
    let mut got: Vec<String> = sub
        .inbox
        .collect(topics.len(), secs(10))
        .await
        .iter()
        .map(|m| m.topic.clone())
        .collect();
    got.sort();
    let mut want: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_relays_between_two_peers_over_tcp_and_websocket() {
    let server = NatsServer::start(NatsOptions {
        websocket: true,
        ..Default::default()
    });
    let subscriber = NatsPeer::connect(&server.url()).await;
    let mut inbox = subscriber.subscribe("harness.>").await;

    let tcp = NatsPeer::connect(&server.url()).await;
    tcp.publish("harness.tcp", "over tcp").await;
    tcp.flush().await;
    let ws = NatsPeer::connect(&server.ws_url()).await;
    ws.publish("harness.ws", "over websocket").await;
    ws.flush().await;

    let mut got: Vec<(String, String)> = inbox
        .collect(2, secs(10))
        .await
        .iter()
        .map(|m| (m.topic.clone(), m.text()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("harness.tcp".to_string(), "over tcp".to_string()),
            ("harness.ws".to_string(), "over websocket".to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_come_back_on_the_same_port_after_kill9() {
    let mut broker = Mosquitto::start(MosquittoOptions::default());
    let mut server = NatsServer::start(NatsOptions::default());
    let (mqtt_port, nats_port) = (broker.port, server.port);

    broker.kill9();
    server.kill9();
    assert!(
        !port_accepts(mqtt_port),
        "mosquitto still accepts connections after kill -9"
    );
    assert!(
        !port_accepts(nats_port),
        "nats-server still accepts connections after kill -9"
    );
    broker.restart();
    server.restart();
    assert_eq!((broker.port, server.port), (mqtt_port, nats_port));

    let mut sub = MqttPeer::connect(&broker.url()).await;
    sub.subscribe("after/restart", 1).await;
    MqttPeer::connect(&broker.url())
        .await
        .publish("after/restart", "hello", 1, false)
        .await;
    assert_eq!(sub.inbox.collect(1, secs(10)).await[0].text(), "hello");

    let peer = NatsPeer::connect(&server.url()).await;
    let mut inbox = peer.subscribe("after.restart").await;
    peer.publish("after.restart", "hello").await;
    assert_eq!(inbox.collect(1, secs(10)).await[0].text(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_nats_server_delivers_after_resume() {
    let server = NatsServer::start(NatsOptions::default());
    let subscriber = NatsPeer::connect(&server.url()).await;
    let mut inbox = subscriber.subscribe("pause.>").await;
    let publisher = NatsPeer::connect(&server.url()).await;

    server.pause();
    publisher.publish("pause.a", "while paused").await;
    publisher.flush().await;
    inbox.expect_nothing(millis(300)).await;
    server.resume();
    assert_eq!(inbox.collect(1, secs(10)).await[0].text(), "while paused");
}

/// A server counts as up only once the port is listened on by a socket of its own: a port
/// that someone else took after the harness picked it must not pass for it.
#[test]
fn a_port_counts_as_the_servers_only_when_its_own_socket_listens() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    assert!(listens_in_group(broker.port, broker.pid()));
    assert!(listens_in_group(nats.port, nats.pid()));

    let someone_else = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = someone_else.local_addr().unwrap().port();
    assert!(port_accepts(taken));
    assert!(!listens_in_group(taken, broker.pid()));
    assert!(!listens_in_group(nats.port, broker.pid()));
}

#[test]
fn position_of_reports_one_based_line_and_column() {
    let text = "a: 1\nroutes:\n  - to: { subjet: x }\n";
    assert_eq!(position_of(text, "subjet", 0), (3, 11));
    assert_eq!(position_of(text, "a", 0), (1, 1));
}

#[test]
fn sequence_checks_catch_loss_duplicates_and_reordering() {
    let msg = |seq| Msg {
        topic: "t".into(),
        payload: seq_payload("s", seq, 0),
        retain: false,
        headers: Vec::new(),
    };
    let ok: Vec<Msg> = (0..3).map(msg).collect();
    assert_sequences(&ok, &["s"], 3);
    for bad in [vec![0, 2], vec![0, 1, 1, 2], vec![0, 2, 1], vec![0, 1]] {
        let msgs: Vec<Msg> = bad.iter().map(|&s| msg(s)).collect();
        let caught = std::panic::catch_unwind(|| assert_sequences(&msgs, &["s"], 3));
        assert!(caught.is_err(), "{bad:?} passed the sequence check");
    }
}
