//! The `migratorydata` connection (MigratoryData's REST API) against a real ferry, real
//! mosquitto and nats-server, and [`MigratoryDataFake`], the in-repo fake written only from
//! MigratoryData's public REST documentation (tests/support/migratorydata.rs says what it
//! follows and where it chooses). MQTT messages arrive on MigratoryData once each, in order,
//! with a closure per message and the sink's retained/qos; `FAILED` is retried until the
//! message is stored, `DENY` and `MESSAGE_SIZE_LIMIT_EXCEEDED` reach the dead-letter sink with
//! the status while the rest flow on; with two servers, stopping the first mid-stream loses
//! nothing and ferry goes back to it after `stable_after`; a subject read from MigratoryData
//! reaches NATS with its headers and, after a restart, resumes after the last delivered
//! message without replaying any; the token is never in the log or in `ferry check`.

mod support;

use support::*;

const TOKEN: &str = "md-token-hunter2";

/// The sequence numbers of [`seq_payload`] contents, in order.
fn seqs_of(contents: impl IntoIterator<Item = String>) -> Vec<usize> {
    contents
        .into_iter()
        .map(|c| {
            parse_seq(c.as_bytes())
                .unwrap_or_else(|| panic!("not a numbered message: {c:?}"))
                .1
        })
        .collect()
}

fn text(stream: &str, seq: usize) -> String {
    String::from_utf8(seq_payload(stream, seq, 0).to_vec()).unwrap()
}

/// Starts ferry on `yaml` with the token in `MIGRATORYDATA_TOKEN`, where `${...}` in `yaml`
/// reads it.
fn start_with_token(yaml: &str) -> Ferry {
    Ferry::start_with_env(yaml, &[("MIGRATORYDATA_TOKEN", TOKEN)])
}

/// [`start_with_token`], then waits until ferry is ready.
async fn start_ready_with_token(yaml: &str) -> Ferry {
    let mut ferry = start_with_token(yaml);
    ferry.wait_ready().await;
    ferry
}

/// `yaml` with `@STATE@`, `@MD@` and `@NATS@` filled in: ferry's state directory, the fake's
/// URL and the nats-server's.
fn with_state_md_and_nats(
    yaml: &str,
    state: &tempfile::TempDir,
    md: &MigratoryDataFake,
    nats: &NatsServer,
) -> String {
    fill(
        yaml,
        &[
            ("@STATE@", state.path().display().to_string()),
            ("@MD@", md.url()),
            ("@NATS@", nats.url()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_messages_arrive_on_migratorydata_once_in_order_and_the_token_stays_secret() {
    let md = MigratoryDataFake::start(TOKEN);
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let yaml = fill(
        r#"
connections:
  plant: { mqtt: { url: "@MQTT@" } }
  md:
    migratorydata:
      servers: ["@MD@"]
      token: "@TOKEN@"
routes:
  - name: up
    from: { connection: plant, topic: "sensors/#", qos: 1 }
    to: { connection: md, retained: true, qos: guaranteed }
"#,
        &[("@MQTT@", mosquitto.url()), ("@MD@", md.url())],
    );
    // `ferry check` explains the connection without its token.
    let check = ferry_check(&yaml.replace("@TOKEN@", TOKEN));
    assert_eq!(check.code, Some(0), "{}", check.all());
    assert!(
        check.all().contains("MigratoryData REST API at"),
        "{}",
        check.all()
    );
    assert!(!check.all().contains(TOKEN), "{}", check.all());

    let mut ferry = Ferry::start_with_env(
        &yaml.replace("@TOKEN@", "${MIGRATORYDATA_TOKEN}"),
        &[("MIGRATORYDATA_TOKEN", TOKEN)],
    );
    ferry.wait_ready().await;
    let peer = MqttPeer::connect(&mosquitto.url()).await;
    const N: usize = 100;
    peer.publish_all(
        (0..N).map(|i| ("sensors/kitchen".to_string(), seq_payload("s", i, 0))),
        1,
    )
    .await;

    // `auto`: the MQTT topic `sensors/kitchen` is the subject `/sensors/kitchen`.
    let stored = md.wait_for_stored("/sensors/kitchen", N, secs(30)).await;
    assert_in_order("s", &seqs_of(stored.iter().map(|m| m.content.clone())), N);
    assert!(stored.iter().all(|m| m.retained), "retained: true");
    let produces = md.produces();
    assert_eq!(produces.len(), N, "one produce per message: {produces:?}");
    let mut closures: Vec<&str> = produces
        .iter()
        .map(|p| p.closure.as_deref().expect("every produce has a closure"))
        .collect();
    closures.sort();
    closures.dedup();
    assert_eq!(closures.len(), N, "a closure per message");
    assert!(
        produces
            .iter()
            .all(|p| p.qos.as_deref() == Some("guaranteed"))
    );
    assert!(
        md.queries()
            .iter()
            .all(|q| q.contains("token=md-token-hunter2"))
    );

    ferry.assert_never_logged(TOKEN);
    assert_eq!(ferry.terminate().await.code(), Some(0));
    ferry.assert_never_logged(TOKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_is_retried_and_deny_and_size_limit_are_dead_lettered_with_their_status() {
    let md = MigratoryDataFake::start(TOKEN);
    let nats = NatsServer::start(NatsOptions::default());
    let yaml = fill(
        r#"
connections:
  core: { nats: { url: "@NATS@" } }
  md:
    migratorydata:
      servers: ["@MD@"]
      token: ${MIGRATORYDATA_TOKEN}
routes:
  - name: orders
    from: { connection: core, subject: orders }
    to: { connection: md, subject: /orders }
    dead_letter: { connection: core, subject: dead }
"#,
        &[("@NATS@", nats.url()), ("@MD@", md.url())],
    );
    md.force("FAILED", 2, Some("order:0:"));
    md.force("DENY", 1, Some("order:1:"));
    md.force("MESSAGE_SIZE_LIMIT_EXCEEDED", 1, Some("order:2:"));
    let mut ferry = start_ready_with_token(&yaml).await;
    let peer = NatsPeer::connect(&nats.url()).await;
    let mut dead = peer.subscribe("dead").await;
    const N: usize = 6;
    peer.publish_all((0..N).map(|i| ("orders".to_string(), seq_payload("order", i, 0))))
        .await;

    let letters = dead.collect(2, secs(30)).await;
    let stored = md.wait_for_stored("/orders", N - 2, secs(30)).await;
    assert_eq!(
        seqs_of(stored.iter().map(|m| m.content.clone())),
        [0, 3, 4, 5],
        "FAILED retried until stored, in order; the refused two not stored"
    );
    assert_eq!(letters[0].text(), text("order", 1));
    let error = letters[0].header("Ferry-Error").unwrap_or_default();
    assert!(error.contains("DENY"), "{letters:?}");
    assert_eq!(letters[1].text(), text("order", 2));
    let error = letters[1].header("Ferry-Error").unwrap_or_default();
    assert!(error.contains("MESSAGE_SIZE_LIMIT_EXCEEDED"), "{letters:?}");

    let statuses: Vec<(String, String)> = md
        .produces()
        .into_iter()
        .map(|p| (p.content, p.status))
        .collect();
    let of = |seq: usize| -> Vec<&str> {
        statuses
            .iter()
            .filter(|(c, _)| *c == text("order", seq))
            .map(|(_, s)| s.as_str())
            .collect()
    };
    assert_eq!(of(0), ["FAILED", "FAILED", "OK"]);
    let mut retried: Vec<String> = md
        .produces()
        .into_iter()
        .filter(|p| p.content == text("order", 0))
        .filter_map(|p| p.closure)
        .collect();
    retried.dedup();
    assert_eq!(
        retried.len(),
        1,
        "one closure across the retries: {retried:?}"
    );
    assert_eq!(of(1), ["DENY"], "a refusal is not retried");
    assert_eq!(of(2), ["MESSAGE_SIZE_LIMIT_EXCEEDED"]);
    ferry.wait_for_line("entitle", secs(5)).await;
    dead.expect_nothing(millis(300)).await;
    ferry.assert_never_logged(TOKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_servers_stopping_the_first_loses_nothing_and_ferry_comes_back_to_it() {
    let mut servers = MigratoryDataFake::cluster(FakeOptions::new(TOKEN), 2);
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let yaml = fill(
        r#"
connections:
  plant: { mqtt: { url: "@MQTT@" } }
  md:
    reconnect: { stable_after: 2s }
    migratorydata:
      servers: ["@MD1@", "@MD2@"]
      token: ${MIGRATORYDATA_TOKEN}
      timeout: 2s
routes:
  - name: up
    from: { connection: plant, topic: "f", qos: 1 }
    to: { connection: md, subject: /f }
"#,
        &[
            ("@MQTT@", mosquitto.url()),
            ("@MD1@", servers[0].url()),
            ("@MD2@", servers[1].url()),
        ],
    );
    let mut ferry = start_ready_with_token(&yaml).await;
    let peer = MqttPeer::connect(&mosquitto.url()).await;
    let publish = |range: std::ops::Range<usize>| {
        let peer = &peer;
        async move {
            peer.publish_all(range.map(|i| ("f".to_string(), seq_payload("f", i, 0))), 1)
                .await
        }
    };

    publish(0..30).await;
    servers[0].wait_for_stored("/f", 30, secs(30)).await;
    assert!(servers[0].produces().iter().all(|p| p.server == 0));
    let mark = ferry.mark();
    servers[0].stop().await;
    publish(30..60).await;
    let stored = servers[1].wait_for_stored("/f", 60, secs(30)).await;
    let mut seqs = seqs_of(stored.iter().map(|m| m.content.clone()));
    seqs.dedup(); // a produce cut off by the stop may be sent again: at least once
    assert_in_order("f", &seqs, 60);
    assert!(
        stored[30..].iter().all(|m| m.server == Some(1)),
        "after the stop, the second server takes every message"
    );
    let line = ferry
        .wait_for_line_since(mark, "failing over from", secs(5))
        .await;
    assert!(line.contains(&servers[1].url()), "{line}");
    let failovers = ferry.lines()[mark..]
        .iter()
        .filter(|l| l.contains("failing over"))
        .count();
    assert_eq!(failovers, 1, "logged once, not per retry");

    // The first server is back; once the second has been up for `stable_after` (a time, so
    // this waits it out), ferry returns to the first.
    servers[0].restart();
    tokio::time::sleep(millis(2200)).await;
    publish(60..70).await;
    let stored = servers[0]
        .wait_for_stored("/f", stored.len() + 10, secs(30))
        .await;
    let back: Vec<_> = stored.iter().filter(|m| m.server == Some(0)).collect();
    assert!(
        back.iter().any(|m| m.content == text("f", 69)),
        "the last messages went to the first server again: {back:?}"
    );
    ferry
        .wait_for_line("going back to the first server", secs(5))
        .await;
    ferry.assert_never_logged(TOKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_reaches_nats_with_its_headers_and_resumes_after_a_restart_without_replay() {
    let md = MigratoryDataFake::start(TOKEN);
    let nats = NatsServer::start(NatsOptions::default());
    let state = tempfile::tempdir().unwrap();
    let yaml = with_state_md_and_nats(
        r#"
state_dir: "@STATE@"
connections:
  md:
    migratorydata:
      servers: ["@MD@"]
      token: ${MIGRATORYDATA_TOKEN}
      poll_interval: 100ms
  core: { nats: { url: "@NATS@" } }
routes:
  - name: down
    from: { connection: md, subject: /plant/status, history: 100 }
    to: { connection: core, subject: auto }
"#,
        &state,
        &md,
        &nats,
    );
    let peer = NatsPeer::connect(&nats.url()).await;
    // `auto`: the subject `/plant/status` is the NATS subject `plant.status`.
    let mut inbox = peer.subscribe("plant.status").await;
    for i in 0..10 {
        md.publish("/plant/status", &text("p", i), i == 9);
    }

    let mut ferry = start_ready_with_token(&yaml).await;
    let first = inbox.collect(10, secs(30)).await;
    assert_sequences(&first, &["p"], 10);
    assert_eq!(
        first[0].header("MigratoryData-Message-Type"),
        Some("HISTORICAL")
    );
    assert_eq!(first[0].header("MigratoryData-Seq"), Some("1"));
    assert_eq!(
        first[0].header("MigratoryData-Epoch"),
        Some(md.epoch().to_string().as_str())
    );
    assert_eq!(first[9].header("MigratoryData-Retained"), Some("true"));
    for i in 10..15 {
        md.publish("/plant/status", &text("p", i), false);
    }
    let live = inbox.collect(5, secs(30)).await;
    assert_eq!(
        live[0].header("MigratoryData-Message-Type"),
        Some("RECOVERED")
    );
    assert_eq!(live[4].header("MigratoryData-Seq"), Some("15"));
    assert_eq!(ferry.terminate().await.code(), Some(0));
    ferry.assert_never_logged(TOKEN);

    // While ferry is away: ten more, and one with compressed content ferry cannot decode.
    for i in 15..20 {
        md.publish("/plant/status", &text("p", i), false);
    }
    md.publish_compressed("/plant/status", "eJzLSM3JyQcABiwCFQ==");
    for i in 20..25 {
        md.publish("/plant/status", &text("p", i), false);
    }
    let consumed = md.consumes().len();
    let mut ferry = start_ready_with_token(&yaml).await;
    let resumed = inbox.collect(10, secs(30)).await;
    let seqs: Vec<usize> = resumed
        .iter()
        .map(|m| parse_seq(&m.payload).expect("a numbered message").1)
        .collect();
    assert_eq!(seqs, (15..25).collect::<Vec<_>>(), "no replay, no loss");
    let after_restart = &md.consumes()[consumed];
    assert_eq!(
        (after_restart.epoch.clone(), after_restart.seq.clone()),
        (Some(md.epoch().to_string()), Some("15".to_string())),
        "the first poll after the restart resumes from the saved cursor"
    );
    ferry.wait_for_line("compressed content", secs(5)).await;
    inbox.expect_nothing(millis(500)).await;
    ferry.assert_never_logged(TOKEN);
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

/// The repository's example file, as a user would run it.
fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// examples/migratorydata-mqtt.yaml as written, with mosquitto standing in for MigratoryData's
/// MQTT listener (docs/connectors/migratorydata.md says so: no MigratoryData server runs here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_example_maps_subjects_both_ways() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let nats = NatsServer::start(NatsOptions::default());
    let mut ferry = Ferry::start_with_env(
        &example("migratorydata-mqtt.yaml"),
        &[
            ("MIGRATORYDATA_MQTT_URL", &mosquitto.url()),
            ("NATS_URL", &nats.url()),
        ],
    );
    ferry.wait_ready().await;
    let mqtt = MqttPeer::connect(&mosquitto.url()).await;
    let peer = NatsPeer::connect(&nats.url()).await;

    // The subject /server/status is the topic server/status, and the NATS subject server.status.
    let mut status = peer.subscribe("server.status").await;
    mqtt.publish("server/status", "up", 1, false).await;
    let got = status.collect(1, secs(10)).await;
    assert_eq!(got[0].text(), "up");

    // NATS commands.lamp.on is /commands/lamp/on, retained: a late MQTT subscriber gets it.
    // A watcher sees it go by first, so the late subscriber cannot get it live instead.
    let mut watcher = MqttPeer::connect(&mosquitto.url()).await;
    watcher.subscribe("commands/#", 1).await;
    peer.publish("commands.lamp.on", "1").await;
    peer.flush().await;
    watcher
        .inbox
        .recv(secs(10))
        .await
        .expect("the command relayed to MQTT");
    let mut late = MqttPeer::connect(&mosquitto.url()).await;
    late.subscribe("commands/#", 1).await;
    let command = late
        .inbox
        .recv(secs(10))
        .await
        .expect("the retained command");
    assert_eq!(command.topic, "commands/lamp/on");
    assert!(
        command.retain,
        "kept by the broker as retained: {command:?}"
    );
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

/// examples/migratorydata-rest.yaml as written, against two fake servers and mosquitto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_example_runs_as_written() {
    let servers = MigratoryDataFake::cluster(FakeOptions::new(TOKEN), 2);
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let state = tempfile::tempdir().unwrap();
    servers[0].publish("/server/status", "up", true);
    servers[0].force("DENY", 1, Some("forbidden"));
    let mut ferry = Ferry::start_with_env(
        &example("migratorydata-rest.yaml"),
        &[
            ("MIGRATORYDATA_SERVER_1", &servers[0].url()),
            ("MIGRATORYDATA_SERVER_2", &servers[1].url()),
            ("MIGRATORYDATA_TOKEN", TOKEN),
            ("MQTT_URL", &mosquitto.url()),
            ("STATE_DIRECTORY", &state.path().display().to_string()),
        ],
    );
    let mut mqtt = MqttPeer::connect(&mosquitto.url()).await;
    mqtt.subscribe("server/status", 1).await;
    mqtt.subscribe("ferry/dead/#", 1).await;
    ferry.wait_ready().await;
    let inbox = &mut mqtt.inbox;
    let status = inbox.collect(1, secs(10)).await;
    assert_eq!(
        (status[0].topic.as_str(), status[0].text().as_str()),
        ("server/status", "up")
    );

    let sender = MqttPeer::connect(&mosquitto.url()).await;
    sender.publish("sensors/kitchen", "21.5", 1, true).await;
    sender
        .publish("sensors/kitchen", "forbidden", 1, false)
        .await;
    let stored = servers[0]
        .wait_for_stored("/sensors/kitchen", 1, secs(10))
        .await;
    assert_eq!(
        (stored[0].content.as_str(), stored[0].retained),
        ("21.5", true)
    );
    let dead = inbox.collect(1, secs(10)).await;
    assert_eq!(dead[0].topic, "ferry/dead/sensors");
    assert_eq!(dead[0].text(), "forbidden");
    assert!(
        dead[0]
            .header("Ferry-Error")
            .unwrap_or_default()
            .contains("DENY"),
        "{dead:?}"
    );
    ferry.assert_never_logged(TOKEN);
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

/// Without `history:`, ferry starts from where the subject stands: what was there before is
/// not delivered, everything after is, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_a_source_starts_from_now() {
    let md = MigratoryDataFake::start(TOKEN);
    let nats = NatsServer::start(NatsOptions::default());
    let state = tempfile::tempdir().unwrap();
    let yaml = with_state_md_and_nats(
        r#"
state_dir: "@STATE@"
connections:
  md:
    migratorydata: { servers: ["@MD@"], token: "${MIGRATORYDATA_TOKEN}", poll_interval: 100ms }
  core: { nats: { url: "@NATS@" } }
routes:
  - name: down
    from: { connection: md, subject: /a }
    to: { connection: core, subject: a }
  - name: down-empty
    from: { connection: md, subject: /empty }
    to: { connection: core, subject: empty }
"#,
        &state,
        &md,
        &nats,
    );
    let peer = NatsPeer::connect(&nats.url()).await;
    let mut a = peer.subscribe("a").await;
    let mut empty = peer.subscribe("empty").await;
    for i in 0..3 {
        md.publish("/a", &text("old", i), true);
    }
    let mut ferry = start_ready_with_token(&yaml).await;
    // Once each subject was polled, /a's last message is ferry's starting point, and /empty
    // was found empty.
    md.wait_for_consumes("/a", 1, secs(10)).await;
    md.wait_for_consumes("/empty", 1, secs(10)).await;
    for i in 0..5 {
        md.publish("/a", &text("new", i), false);
        md.publish("/empty", &text("new", i), false);
    }
    assert_sequences(&a.collect(5, secs(10)).await, &["new"], 5);
    assert_sequences(&empty.collect(5, secs(10)).await, &["new"], 5);
    a.expect_nothing(millis(300)).await;
    assert_eq!(ferry.terminate().await.code(), Some(0));
}

/// `/readyz` names the MigratoryData connection while no server answers (without its token),
/// and is ready once one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_servers_without_showing_the_token() {
    let mut md = MigratoryDataFake::start(TOKEN);
    md.stop().await;
    let nats = NatsServer::start(NatsOptions::default());
    let port = free_port();
    let state = tempfile::tempdir().unwrap();
    let yaml = with_state_md_and_nats(
        r#"
state_dir: "@STATE@"
admin: { listen: "127.0.0.1:@PORT@" }
connections:
  md:
    reconnect: { initial_delay: 100ms, max_delay: 200ms }
    migratorydata: { servers: ["@MD@"], token: "${MIGRATORYDATA_TOKEN}" }
  core: { nats: { url: "@NATS@" } }
routes:
  - name: down
    from: { connection: md, subject: /a }
    to: { connection: core, subject: a }
"#,
        &state,
        &md,
        &nats,
    )
    .replace("@PORT@", &port.to_string());
    let mut ferry = start_with_token(&yaml);
    ferry.wait_for_line("connection down", secs(10)).await;
    // The NATS side must be up too before "ready" can be asked of the MigratoryData side alone
    // (on a loaded machine it may still be connecting when the fake comes back).
    ferry.wait_for_line("connected to nats://", secs(10)).await;
    let readyz = || async move {
        let response = http_client()
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .expect("GET /readyz");
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("md (migratorydata): down since"), "{body}");
    assert!(!body.contains(TOKEN), "{body}");

    md.restart();
    ferry.wait_for_line("reconnected to", secs(10)).await;
    let (status, body) = readyz().await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    ferry.assert_never_logged(TOKEN);
}
