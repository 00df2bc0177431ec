//! Self-tests of the HTTP/SSE test servers in tests/support: each against the real program
//! (nginx + nchan, PocketBase, curl), the restdb.io fake against its documented behaviour, and
//! the SSE parser against the WHATWG parsing rules.

mod support;

use serde_json::json;
use support::*;

// ---------------------------------------------------------------------------------------------
// The SSE parser

fn parse_all(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseParser) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(parser.feed(chunk));
    }
    (events, parser)
}

fn event(id: &str, name: &str, data: &str) -> SseEvent {
    SseEvent {
        id: id.into(),
        event: name.into(),
        data: data.into(),
    }
}

#[test]
fn sse_parser_follows_the_whatwg_rules_however_the_bytes_are_split() {
    let stream: &[u8] = b"\xEF\xBB\xBF: hello\r\n\
        data:no space\r\n\
        data:  two spaces\r\n\
        \r\n\
        event: named\rid: 7\rdata: cr only\r\r\
        data\n\
        \n\
        event: dropped\n\
        \n\
        id: 8\n\
        retry: 1500\n\
        retry: 2s\n\
        data: first\n\
        data:\n\
        data: third\n\
        unknown: field\n\
        \n\
        id\n\
        data: {\"a\":1}\n\
        \n\
        data: unfinished";
    let expected = vec![
        event("", "message", "no space\n two spaces"),
        event("7", "named", "cr only"),
        event("7", "message", ""),
        event("8", "message", "first\n\nthird"),
        event("", "message", "{\"a\":1}"),
    ];
    let (events, parser) = parse_all(&[stream]);
    assert_eq!(events, expected);
    assert_eq!(parser.retry, Some(1500));
    assert_eq!(parser.comments, vec![" hello".to_string()]);
    // The same bytes split at every position, and fed one byte at a time, parse the same.
    for at in 0..stream.len() {
        let (events, _) = parse_all(&[&stream[..at], &stream[at..]]);
        assert_eq!(events, expected, "split at byte {at}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(parse_all(&bytes).0, expected);
}

// ---------------------------------------------------------------------------------------------
// nchan

#[tokio::test]
async fn nchan_replays_everything_or_exactly_what_follows_a_last_event_id() {
    within(secs(60), "the nchan self-test", async {
        let nchan = Nchan::start();
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(nchan.publish("ch", &format!("m{i}")).await);
        }
        for id in &ids {
            let (t, n) = id.split_once(':').expect("nchan ids are T:N");
            assert!(t.parse::<u64>().is_ok() && n.parse::<u64>().is_ok(), "{id}");
        }

        // From the start: all 20, in order, with the ids the publisher was told.
        let mut all = SseClient::connect(&nchan.sub_url("ch"), &[]).await;
        assert_eq!(all.status(), 200);
        assert_eq!(
            all.header("content-type").as_deref(),
            Some("text/event-stream; charset=utf-8")
        );
        let got = all.collect(20, secs(10)).await;
        for (i, e) in got.iter().enumerate() {
            assert_eq!(
                (e.id.as_str(), e.event.as_str()),
                (ids[i].as_str(), "message")
            );
            assert_eq!(e.data, format!("m{i}"));
        }
        assert_eq!(all.comment_texts(), vec![" hi".to_string()]);
        assert_eq!(all.retry(), None);

        // After the 10th: exactly the other 10, then only what is published next.
        let mut rest =
            SseClient::connect(&nchan.sub_url("ch"), &[("Last-Event-ID", &ids[9])]).await;
        let got = rest.collect(10, secs(10)).await;
        let data: Vec<&str> = got.iter().map(|e| e.data.as_str()).collect();
        let want: Vec<String> = (10..20).map(|i| format!("m{i}")).collect();
        assert_eq!(data, want);
        let next = nchan
            .publish_event("ch", "greeting", "line one\nline two")
            .await;
        let e = rest.collect(1, secs(10)).await.remove(0);
        assert_eq!(
            e,
            SseEvent {
                id: next.clone(),
                event: "greeting".into(),
                data: "line one\nline two".into()
            }
        );
        assert_eq!(all.collect(1, secs(10)).await.remove(0).id, next);

        // The id of the newest message: nothing until the next publish.
        let mut newest =
            SseClient::connect(&nchan.sub_url("ch"), &[("Last-Event-ID", &next)]).await;
        let last = nchan.publish("ch", "m21").await;
        let e = newest.collect(1, secs(10)).await.remove(0);
        assert_eq!((e.id, e.data), (last, "m21".to_string()));
    })
    .await;
}

#[tokio::test]
async fn nchan_leaves_no_nginx_behind() {
    within(secs(30), "the nchan cleanup self-test", async {
        let nchan = Nchan::start();
        let processes = nchan.processes();
        let master = nchan.pid();
        // The master, one worker, the watcher of tied_command.
        assert!(
            processes.len() >= 3 && processes.contains(&master),
            "{processes:?}"
        );
        drop(nchan); // returns once the group is gone
        assert_eq!(group_members(master), Vec::<u32>::new());
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// PocketBase

#[tokio::test]
async fn pocketbase_realtime_sends_create_update_delete_after_a_subscription() {
    within(secs(60), "the PocketBase self-test", async {
        let pb = PocketBase::start();
        pb.create_collection("notes").await;

        let mut sse = SseClient::connect(&pb.realtime_url(), &[]).await;
        assert_eq!(sse.status(), 200);
        let connect = sse.collect(1, secs(10)).await.remove(0);
        assert_eq!(connect.event, "PB_CONNECT");
        let client_id = connect.json()["clientId"].as_str().unwrap().to_string();
        assert_eq!(connect.id, client_id);

        pb.subscribe(&client_id, &["notes/*"]).await;
        // One change at a time: PocketBase may deliver the events of quick successive changes
        // out of order (see PocketBase's documentation in tests/support/servers.rs).
        let id = pb
            .create_record("notes", json!({"title": "hello", "n": 1}))
            .await;
        let created = sse.collect(1, secs(10)).await.remove(0);
        pb.update_record("notes", &id, json!({"title": "hello again", "n": 2}))
            .await;
        let updated = sse.collect(1, secs(10)).await.remove(0);
        pb.delete_record("notes", &id).await;
        let deleted = sse.collect(1, secs(10)).await.remove(0);

        for (e, action, title) in [
            (&created, "create", "hello"),
            (&updated, "update", "hello again"),
            (&deleted, "delete", "hello again"),
        ] {
            assert_eq!(
                (e.event.as_str(), e.id.as_str()),
                ("notes/*", client_id.as_str())
            );
            let data = e.json();
            assert_eq!(data["action"], action, "{e:?}");
            assert_eq!(data["record"]["id"], id.as_str());
            assert_eq!(data["record"]["collectionName"], "notes");
            assert_eq!(data["record"]["title"], title);
        }
        assert!(
            sse.raw()
                .starts_with(&format!("id:{client_id}\nevent:PB_CONNECT\n"))
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The restdb.io fake

#[tokio::test]
async fn restdb_fake_checks_the_key_streams_changes_and_publishes_and_replays() {
    within(secs(30), "the restdb fake self-test", async {
        let fake = RestdbFake::start_with(RestdbOptions {
            ping_interval: millis(200),
            ..RestdbOptions::new("secret-key")
        });
        let http = http_client();
        for request in [
            http.get(fake.realtime_url()),
            http.get(fake.realtime_url()).header("x-apikey", "wrong"),
            http.post(fake.realtime_url())
                .body(r#"{"event":"x","data":1}"#),
        ] {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 401);
        }
        assert_eq!(fake.refused(), 3);
        assert!(fake.connections().is_empty());

        let key = [("x-apikey", "secret-key")];
        let mut pings = SseClient::connect(&fake.realtime_url(), &key).await;
        let mut sse = SseClient::connect(&fake.realtime_url(), &key).await;
        sse.ignore("ping");
        assert_eq!(sse.status(), 200);
        assert_eq!(
            sse.header("content-type").as_deref(),
            Some("text/event-stream")
        );
        fake.emit_post("people", json!({"_id": "p1", "name": "Ada"}));
        fake.emit_put("people", "p1");
        fake.emit_delete("people", &["p1", "p2"]);
        let events = sse.collect(3, secs(5)).await;
        assert_eq!(
            events
                .iter()
                .map(|e| (e.id.as_str(), e.event.as_str()))
                .collect::<Vec<_>>(),
            [("1", "post"), ("2", "put"), ("3", "delete")]
        );
        assert_eq!(
            events[0].json(),
            json!({"event": "post", "collection": "people", "data": {"_id": "p1", "name": "Ada"}})
        );
        assert_eq!(
            events[1].json(),
            json!({"event": "put", "collection": "people", "data": "p1"})
        );
        assert_eq!(
            events[2].json(),
            json!({"event": "delete", "collection": "people", "data": ["p1", "p2"]})
        );
        assert_eq!(sse.retry(), Some(1000));

        // A custom event published over REST reaches every stream as `publish`.
        let response = http
            .post(fake.realtime_url())
            .header("x-apikey", "secret-key")
            .body(r#"{"event":"chat","data":{"text":"hi"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let published = sse.collect(1, secs(5)).await.remove(0);
        assert_eq!(published.id, "4");
        assert_eq!(
            published.json(),
            json!({"event": "chat", "data": {"text": "hi"}})
        );
        assert_eq!(
            fake.published(),
            [Published {
                event: "chat".into(),
                data: json!({"text": "hi"})
            }]
        );

        // Pings carry a time and no id: the last event id stays at the last real event.
        let ping = pings.until_event("ping", secs(5)).await.pop().unwrap();
        assert_eq!(ping.id, "4");
        assert!(ping.data.ends_with('Z'), "{ping:?}");

        // A client resuming after id 2 gets 3 and 4 from the history, then live events; the
        // key may also come as ?apikey=.
        let url = format!("{}?apikey=secret-key", fake.realtime_url());
        let mut resumed = SseClient::connect(&url, &[("Last-Event-ID", "2")]).await;
        resumed.ignore("ping");
        fake.emit_put("people", "p3");
        let ids: Vec<String> = resumed
            .collect(3, secs(5))
            .await
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, ["3", "4", "5"]);
        let connections = fake.wait_for_connections(3, secs(5)).await;
        assert_eq!(connections[1].last_event_id, None);
        assert!(connections[1].key_in_header);
        assert_eq!(connections[2].last_event_id.as_deref(), Some("2"));
        assert!(!connections[2].key_in_header);

        // The server ends every stream; the clients see them close.
        fake.disconnect_all();
        sse.wait_closed(secs(5)).await;
        resumed.wait_closed(secs(5)).await;
        assert_eq!(fake.open_connections(), 0);
    })
    .await;
}

#[tokio::test]
async fn restdb_fake_resumes_across_a_restart() {
    within(secs(30), "the restdb restart self-test", async {
        let mut fake = RestdbFake::start("k");
        let key = ("x-apikey", "k");
        fake.emit("custom", json!(1));
        fake.stop().await;
        assert!(!port_accepts(fake.port()));
        fake.restart();
        fake.emit("custom", json!(2));
        let mut sse =
            SseClient::connect(&fake.realtime_url(), &[key, ("Last-Event-ID", "1")]).await;
        let e = sse.collect(1, secs(5)).await.remove(0);
        assert_eq!(
            (e.id.as_str(), e.event.as_str(), e.data.as_str()),
            ("2", "custom", "2")
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The webhook receiver

#[tokio::test]
async fn webhook_server_answers_from_its_script_in_order_and_records_everything() {
    within(secs(30), "the webhook self-test", async {
        let hook = WebhookServer::start();
        hook.respond_next(503, &[], "");
        hook.respond_next(503, &[], "");
        hook.respond_next(429, &[("Retry-After", "1")], "");
        hook.respond_next(400, &[("Content-Type", "text/plain")], "bad payload");
        let http = http_client();
        let mut answers = Vec::new();
        for i in 0..5 {
            let response = http
                .post(format!("{}/hook/{i}?q=x", hook.url()))
                .header("X-Test", format!("n{i}"))
                .body(format!("{{\"i\":{i}}}"))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            answers.push((status, retry_after, response.text().await.unwrap()));
        }
        assert_eq!(
            answers,
            [
                (503, None, String::new()),
                (503, None, String::new()),
                (429, Some("1".into()), String::new()),
                (400, None, "bad payload".into()),
                (200, None, String::new()),
            ]
        );
        let requests = hook.wait_for_requests(5, secs(5)).await;
        for (i, r) in requests.iter().enumerate() {
            assert_eq!(r.method, "POST");
            assert_eq!(r.uri, format!("/hook/{i}?q=x"));
            assert_eq!(r.header("x-test"), Some(format!("n{i}").as_str()));
            assert_eq!(r.json(), json!({"i": i}));
        }
        assert!(requests.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(
            requests.iter().map(|r| r.status).collect::<Vec<_>>(),
            [503, 503, 429, 400, 200]
        );

        // With a delay, concurrent requests overlap and the server counts them.
        hook.set_delay(millis(300));
        let sends = (0..3).map(|_| http.get(hook.url()).send());
        for response in futures_util::future::join_all(sends).await {
            assert_eq!(response.unwrap().status().as_u16(), 200);
        }
        assert_eq!(hook.max_in_flight(), 3);
        assert_eq!(hook.in_flight(), 0);
    })
    .await;
}
