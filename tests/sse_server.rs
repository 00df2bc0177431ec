//! The `sse_server` sink, read by a real client: curl (through [`SseClient`], which parses the
//! stream as a browser's EventSource would) against a real ferry fed by real mosquitto and
//! nats-server. Covers event names, ids and data as sent, `Last-Event-ID` replay (within and
//! beyond the buffer, across a ferry restart), keep-alive comments, several clients at once,
//! the admin listener's `/healthz` and its refusal of a taken port, and the example.

mod support;

use support::*;

/// Starts ferry with an admin listener on a free port, the `to-browser` route from MQTT
/// `sensors/#` (QoS 1) to an sse_server connection at `/events/sensors` written with the
/// `extra` keys (", buffer: 80"). Returns ferry and the stream's URL.
async fn mqtt_to_stream(mosquitto: &Mosquitto, extra: &str) -> (Ferry, String, u16) {
    let port = free_port();
    let mut ferry = Ferry::start(&fill(
        r#"
admin: { listen: "127.0.0.1:@PORT@" }
connections:
  mq: { mqtt: { url: "@MQTT@", client_id: ferry-sse-server } }
  web: { sse_server: { path: /events/sensors@EXTRA@ } }
routes:
  - name: to-browser
    from: { connection: mq, topic: "sensors/#", qos: 1 }
    to: { connection: web }
"#,
        &[
            ("@PORT@", port.to_string()),
            ("@MQTT@", mosquitto.url()),
            ("@EXTRA@", extra.to_string()),
        ],
    ));
    ferry.wait_ready().await;
    ferry
        .wait_for_line(
            &format!("admin listener on http://127.0.0.1:{port}"),
            secs(5),
        )
        .await;
    (
        ferry,
        format!("http://127.0.0.1:{port}/events/sensors"),
        port,
    )
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            e.id.parse()
                .unwrap_or_else(|_| panic!("id is not a number: {e:?}"))
        })
        .collect()
}

/// Each id is one more than the one before.
fn assert_consecutive(ids: &[u64]) {
    for pair in ids.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "ids not consecutive: {ids:?}");
    }
}

/// `n` JSON payloads `{"seq": i}` published on `sensors/s{i % 4}/temp`, in order.
fn readings(range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range
        .map(|i| {
            (
                format!("sensors/s{}/temp", i % 4),
                format!("{{\"seq\":{i}}}"),
            )
        })
        .collect()
}

/// 100 messages published on mosquitto reach curl in order as events named after their
/// topics, with consecutive ids and their data exactly (multi-line JSON as several `data:`
/// lines, CRLF as LF); a payload that is not text is refused without disturbing the rest.
#[tokio::test]
async fn mqtt_messages_reach_a_real_client_as_events() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let (mut ferry, url, _) =
        mqtt_to_stream(&mosquitto, ", cors_origin: \"https://dash.example.com\"").await;
    let mut client = SseClient::connect(&url, &[]).await;
    assert_eq!(client.status(), 200);
    assert_eq!(
        client.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(client.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(
        client.header("access-control-allow-origin").as_deref(),
        Some("https://dash.example.com")
    );

    let mut sent = Vec::new();
    for (i, (topic, payload)) in readings(0..100).into_iter().enumerate() {
        let payload = match i % 10 {
            3 => format!("{{\n  \"seq\": {i},\n  \"lines\": [1,\n    2]\n}}"),
            7 => format!("{{\r\n\"seq\": {i}\r\n}}"),
            _ => payload,
        };
        sent.push((topic, payload));
    }
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    let mut messages: Vec<(String, Vec<u8>)> = sent
        .iter()
        .map(|(t, p)| (t.clone(), p.clone().into_bytes()))
        .collect();
    // Not text: refused by the sink, counted, logged; the stream goes on.
    messages.insert(50, ("sensors/bin/temp".into(), vec![0xff, 0xfe, 0x00]));
    publisher.publish_all(messages, 1).await;

    let events = client.collect(100, secs(30)).await;
    for ((topic, payload), event) in sent.iter().zip(&events) {
        assert_eq!(&event.event, topic, "{event:?}");
        assert_eq!(event.data, payload.replace("\r\n", "\n"), "{event:?}");
    }
    assert!(
        client.raw().contains("data: {\ndata:   \"seq\": 3,\n"),
        "multi-line payloads are several data: lines:\n{}",
        client.raw()
    );
    assert_consecutive(&ids(&events));
    ferry.wait_for_line("not UTF-8 text", secs(5)).await;
    assert!(ferry.is_running());
}

/// A client that reconnects with `Last-Event-ID` gets exactly what it missed, in order, then
/// the live events; one whose id is older than the buffer gets the whole buffer and a comment
/// that events are missing; one with an id never sent gets only the live events.
#[tokio::test]
async fn last_event_id_resumes_where_the_client_left_off() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let (_ferry, url, _) = mqtt_to_stream(&mosquitto, ", buffer: 80").await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    // Reads everything, so the test knows when ferry has served what was published.
    let mut watcher = SseClient::connect(&url, &[]).await;

    let mut first = SseClient::connect(&url, &[]).await;
    publisher.publish_all(readings(0..40), 1).await;
    let got = first.collect(40, secs(30)).await;
    let all_ids = ids(&got);
    let last_seen = got[39].id.clone();
    drop(first); // curl killed: the browser went away

    publisher.publish_all(readings(40..100), 1).await;
    let all = watcher.collect(100, secs(30)).await;
    assert_eq!(&ids(&all)[..40], &all_ids[..]);
    let marker = |n: usize| format!("{{\"seq\":{n}}}");

    let mut resumed = SseClient::connect(&url, &[("Last-Event-ID", &last_seen)]).await;
    let missed = resumed.collect(60, secs(10)).await;
    assert_eq!(missed, all[40..], "exactly the 60 it missed, in order");

    // Older than the buffer (80): the whole buffer, and a note.
    let mut behind = SseClient::connect(&url, &[("Last-Event-ID", &all[0].id)]).await;
    let buffered = behind.collect(80, secs(10)).await;
    assert_eq!(buffered, all[20..], "the last 80");
    assert!(
        behind
            .comment_texts()
            .iter()
            .any(|c| c.contains(&format!("events after id {} are missing", all[0].id))),
        "{:?}",
        behind.comment_texts()
    );

    // An id this ferry never sent: live events only.
    let unknown = (ids(&all)[99] + 1000).to_string();
    let mut ahead = SseClient::connect(&url, &[("Last-Event-ID", &unknown)]).await;

    // The next live event is the next thing each of them gets: nothing doubled, nothing extra.
    publisher
        .publish("sensors/s0/temp", marker(100), 1, false)
        .await;
    for client in [&mut resumed, &mut behind, &mut ahead, &mut watcher] {
        let next = client.collect(1, secs(10)).await;
        assert_eq!(next[0].data, marker(100), "{}", client.url());
        assert_eq!(ids(&next)[0], ids(&all)[99] + 1);
    }
}

/// The ids keep increasing across a ferry restart (they start at the clock), so a browser
/// resuming with an id from before the restart is told events are missing and then gets the
/// new ones, never ids it thinks it has seen.
#[tokio::test]
async fn ids_keep_increasing_across_a_restart() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    let (mut ferry, url, port) = mqtt_to_stream(&mosquitto, "").await;
    let mut client = SseClient::connect(&url, &[]).await;
    publisher.publish_all(readings(0..5), 1).await;
    let before = client.collect(5, secs(30)).await;
    assert!(ferry.terminate().await.success());
    client.wait_closed(secs(5)).await;

    // The same config on the same port.
    let config = std::fs::read_to_string(&ferry.config).unwrap();
    assert!(config.contains(&format!("127.0.0.1:{port}")));
    let mut ferry = Ferry::start(&config);
    ferry.wait_ready().await;
    let mut resumed = SseClient::connect(&url, &[("Last-Event-ID", &before[4].id)]).await;
    publisher.publish_all(readings(5..10), 1).await;
    let after = resumed.collect(5, secs(30)).await;
    assert!(
        ids(&after)[0] > ids(&before)[4],
        "{before:?} then {after:?}"
    );
    assert_consecutive(&ids(&after));
    assert_eq!(after[0].data, "{\"seq\":5}");
    assert!(
        resumed
            .comment_texts()
            .iter()
            .any(|c| c.contains("are missing")),
        "{:?}",
        resumed.comment_texts()
    );
}

/// An idle stream gets a comment every `keep_alive`, and nothing else.
#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let (_ferry, url, _) = mqtt_to_stream(&mosquitto, ", keep_alive: 200ms").await;
    let mut client = SseClient::connect(&url, &[]).await;
    within(secs(10), "two keep-alive comments", async {
        while client.comments() < 2 {
            tokio::time::sleep(millis(20)).await;
        }
    })
    .await;
    assert!(
        client
            .comment_texts()
            .iter()
            .all(|c| c.trim() == "keep-alive"),
        "{:?}",
        client.comment_texts()
    );
    assert!(client.next_event(millis(1)).await.is_none());
    assert!(!client.closed());
}

/// Two clients at once both get every message, from NATS this time (the event is the subject);
/// one going away does not disturb the other or the route; a query filters by event name; on
/// shutdown the streams end and ferry exits promptly.
#[tokio::test]
async fn several_clients_each_get_everything() {
    let nats = NatsServer::start(NatsOptions::default());
    let port = free_port();
    let mut ferry = Ferry::start(&fill(
        r#"
admin: { listen: "@PORT@" }
connections:
  nc: { nats: { url: "@NATS@" } }
  web: { sse_server: { path: /live } }
routes:
  - name: to-browser
    from: { connection: nc, subject: "iot.>" }
    to: { connection: web }
"#,
        &[("@PORT@", port.to_string()), ("@NATS@", nats.url())],
    ));
    ferry.wait_ready().await;
    let url = format!("http://127.0.0.1:{port}/live");
    let mut a = SseClient::connect(&url, &[]).await;
    let mut b = SseClient::connect(&url, &[]).await;
    let mut only_kitchen = SseClient::connect(&format!("{url}?event=iot.kitchen"), &[]).await;
    let publisher = NatsPeer::connect(&nats.url()).await;
    let subject = |i: usize| {
        if i.is_multiple_of(2) {
            "iot.kitchen"
        } else {
            "iot.hall"
        }
    };
    publisher
        .publish_all((0..100).map(|i| (subject(i).to_string(), format!("{i}"))))
        .await;
    let from_a = a.collect(100, secs(30)).await;
    let from_b = b.collect(100, secs(30)).await;
    assert_eq!(from_a, from_b);
    for (i, event) in from_a.iter().enumerate() {
        assert_eq!(
            (event.event.as_str(), event.data.as_str()),
            (subject(i), &*i.to_string())
        );
    }
    let kitchen = only_kitchen.collect(50, secs(10)).await;
    assert!(
        kitchen.iter().all(|e| e.event == "iot.kitchen"),
        "{kitchen:?}"
    );

    drop(a);
    publisher
        .publish_all((100..150).map(|i| (subject(i).to_string(), format!("{i}"))))
        .await;
    let more = b.collect(50, secs(30)).await;
    let data: Vec<String> = more.iter().map(|e| e.data.clone()).collect();
    let expected: Vec<String> = (100..150).map(|i| i.to_string()).collect();
    assert_eq!(data, expected);

    let mark = ferry.mark();
    assert!(ferry.terminate().await.success());
    b.wait_closed(secs(5)).await;
    only_kitchen.wait_closed(secs(5)).await;
    assert!(
        !ferry.lines()[mark..]
            .iter()
            .any(|l| l.contains("did not close")),
        "{}",
        ferry.tail(20)
    );
}

/// `/healthz` answers, unknown paths are 404; a taken admin port makes `ferry run` exit 1
/// saying so.
#[tokio::test]
async fn the_admin_listener_answers_health_and_refuses_a_taken_port() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let (_ferry, url, port) = mqtt_to_stream(&mosquitto, "").await;
    let http = http_client();
    let health = http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    let missing = http.get(format!("{url}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let out = ferry_run_until_exit(
        &fill(
            r#"
admin: { listen: "@PORT@" }
connections:
  mq: { mqtt: { url: "@MQTT@" } }
  web: { sse_server: { path: /events } }
routes:
  - name: r
    from: { connection: mq, topic: "a/#" }
    to: { connection: web }
"#,
            &[
                ("@PORT@", taken_port.to_string()),
                ("@MQTT@", mosquitto.url()),
            ],
        ),
        secs(20),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.all()
            .contains(&format!("cannot listen on 127.0.0.1:{taken_port}: ")),
        "{}",
        out.all()
    );
    drop(taken);
}

/// examples/mqtt-to-browser.yaml, run as written (the broker and the port filled in): readings
/// arrive named after their room, and `?event=` picks rooms; the page's origin may read it.
#[tokio::test]
async fn example_mqtt_to_browser() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let port = free_port();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/mqtt-to-browser.yaml"
    ))
    .unwrap();
    let mut ferry = Ferry::start(&fill(
        &example,
        &[
            ("${MQTT_URL:-mqtt://127.0.0.1:1883}", mosquitto.url()),
            ("127.0.0.1:9090", format!("127.0.0.1:{port}")),
        ],
    ));
    ferry.wait_ready().await;
    let url = format!("http://127.0.0.1:{port}/events/sensors");
    let mut page = SseClient::connect(&url, &[("Origin", "https://dash.example.com")]).await;
    assert_eq!(
        page.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    let mut hall = SseClient::connect(&format!("{url}?event=hall"), &[]).await;
    let publisher = MqttPeer::connect(&mosquitto.url()).await;
    let rooms = ["kitchen", "hall", "attic"];
    publisher
        .publish_all(
            (0..30).map(|i| {
                let room = rooms[i % 3];
                (
                    format!("sensors/{room}/temp"),
                    format!("{{\"room\":\"{room}\",\"value\":{i}}}"),
                )
            }),
            1,
        )
        .await;
    let events = page.collect(30, secs(30)).await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.event, rooms[i % 3]);
        assert_eq!(event.json()["value"], i);
    }
    let halls = hall.collect(10, secs(10)).await;
    assert!(
        halls.iter().all(|e| e.json()["room"] == "hall"),
        "{halls:?}"
    );
}
