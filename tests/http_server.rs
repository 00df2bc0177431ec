//! HTTP in (`http_server`): curl POSTs into a real ferry whose routes publish to a real
//! mosquitto. Covers what a webhook sender relies on: 202 only once the message is on the
//! broker (and every one of them there, in order, with its name from the path and its kept
//! headers), 200 at once on an at-most-once route, 503 with `Retry-After` when the route's queue
//! is full, 504 when the sinks do not confirm in time, and the refusals (401 without the bearer
//! token, 405 for GET, 413 for a body over `max_body`), none of which disturbs the traffic.

mod support;

use support::*;

/// The token the `hooks` connection asks for, from the environment as a secret should be.
const TOKEN: &str = "hook-s3cret";

/// What curl got: the status and the response's headers, lower case.
struct Answer {
    status: u16,
    headers: String,
}

/// POSTs `body` to `url` with curl, with `extra` arguments (headers), and returns the answer.
async fn curl_post(url: &str, extra: &[&str], body: &[u8]) -> Answer {
    let curl = require_binary("curl", "curl");
    let mut command = tokio::process::Command::new(curl);
    command
        .args(["-sS", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}"])
        .args(["--max-time", "30", "-X", "POST", "--data-binary", "@-"])
        .args(extra)
        .arg(url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().expect("curl runs");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(body).await.expect("body written");
    }
    let output = child.wait_with_output().await.expect("curl ends");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (headers, status) = text.split_at(text.len().saturating_sub(3));
    Answer {
        status: status
            .parse()
            .unwrap_or_else(|_| panic!("curl said: {text}")),
        headers: headers.to_lowercase(),
    }
}

/// A mosquitto, and ferry with an admin listener on a free port where `hooks` takes POSTs at
/// `/hooks` for `routes` (YAML). Returns the running scenario and the base URL.
async fn hooks(routes: &str, hooks_extra: &str) -> (Running, String) {
    let port = free_port();
    let brokers = Scenario::new()
        .mosquitto("mq")
        .settings(&format!("admin: {{ listen: \"127.0.0.1:{port}\" }}"))
        .other_connection(
            "hooks",
            &format!(
                "{{ http_server: {{ path: /hooks, token: \"${{HOOK_TOKEN}}\"{hooks_extra} }} }}"
            ),
        )
        .routes(routes)
        .start_brokers();
    let ferry = Ferry::start_with_env(&brokers.config, &[("HOOK_TOKEN", TOKEN)]);
    let mut running = Running { ferry, brokers };
    running.ferry.wait_ready().await;
    (running, format!("http://127.0.0.1:{port}/hooks"))
}

fn bearer() -> String {
    format!("Authorization: Bearer {TOKEN}")
}

/// 50 webhooks POSTed one after the other: each answered 202 once mosquitto has it, all
/// published in order on `hooks/<path>` with their bodies and kept headers; then the refusals
/// are answered as such, and the traffic after them goes on.
#[tokio::test]
async fn posts_are_accepted_once_on_the_broker_and_refusals_lose_nothing() {
    let routes = r#"
  - name: webhooks
    from: { connection: hooks }
    to: { connection: mq, topic: "hooks/{{ topic }}", qos: 1 }
    delivery: at-least-once
"#;
    let (running, url) = hooks(routes, ", keep_headers: [X-GitHub-Event], max_body: 1KiB").await;
    let mut subscriber = running.mqtt_subscriber("mq", "hooks/#", 1).await;
    let auth = bearer();
    for i in 0..50 {
        let answer = curl_post(
            &format!("{url}/github/push"),
            &[
                "-H",
                &auth,
                "-H",
                "X-GitHub-Event: push",
                "-H",
                "Content-Type: application/json",
            ],
            format!("{{\"seq\":{i}}}").as_bytes(),
        )
        .await;
        assert_eq!(answer.status, 202, "POST {i}: {}", answer.headers);
    }
    let got = subscriber.inbox.collect(50, secs(10)).await;
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.topic, "hooks/github/push");
        assert_eq!(
            m.text(),
            format!("{{\"seq\":{i}}}"),
            "out of order or changed"
        );
    }
    // Content-Type becomes MQTT 5's content type property, not a user property.
    let properties = &got[0].headers;
    assert!(
        properties.contains(&("x-github-event".into(), "push".into())),
        "kept header missing: {properties:?}"
    );

    let no_token = curl_post(&url, &[], b"x").await;
    assert_eq!(no_token.status, 401);
    assert!(no_token.headers.contains("www-authenticate: bearer"));
    let wrong = curl_post(&url, &["-H", "Authorization: Bearer nope"], b"x").await;
    assert_eq!(wrong.status, 401);
    let get = curl_post(&url, &["-X", "GET", "-H", &auth], b"").await;
    assert_eq!(get.status, 405);
    assert!(get.headers.contains("allow: post"));
    let big = curl_post(&url, &["-H", &auth], &vec![b'x'; 2048]).await;
    assert_eq!(big.status, 413);
    subscriber.inbox.expect_nothing(millis(300)).await;

    let after = curl_post(&format!("{url}/last"), &["-H", &auth], b"after").await;
    assert_eq!(after.status, 202);
    let last = subscriber
        .inbox
        .recv(secs(10))
        .await
        .expect("the POST after the refusals");
    assert_eq!(
        (last.topic.as_str(), last.text().as_str()),
        ("hooks/last", "after")
    );
}

/// An at-most-once route answers 200 as soon as it took the message.
#[tokio::test]
async fn an_at_most_once_route_answers_at_once() {
    let routes = r#"
  - name: webhooks
    from: { connection: hooks }
    to: { connection: mq, topic: "fast/{{ topic }}", qos: 0 }
    delivery: at-most-once
"#;
    let (running, url) = hooks(routes, "").await;
    let mut subscriber = running.mqtt_subscriber("mq", "fast/#", 0).await;
    let answer = curl_post(&format!("{url}/a"), &["-H", &bearer()], b"one").await;
    assert_eq!(answer.status, 200);
    let m = subscriber.inbox.recv(secs(10)).await.expect("relayed");
    assert_eq!((m.topic.as_str(), m.text().as_str()), ("fast/a", "one"));
}

/// With the broker gone, the first POSTs wait for their sinks and get 504 after
/// `confirm_timeout`; once the route's queue is full, the next is answered 503 with
/// `Retry-After` at once.
#[tokio::test]
async fn a_full_queue_is_answered_503_and_unconfirmed_posts_504() {
    let routes = r#"
  - name: webhooks
    from: { connection: hooks }
    to: { connection: mq, topic: "slow/{{ topic }}", qos: 1 }
    delivery: at-least-once
    queue: { max_messages: 2 }
"#;
    let (mut running, url) = hooks(routes, ", confirm_timeout: 1s").await;
    running.broker_mut("mq").stop();
    running
        .ferry
        .wait_for_line("connection down", secs(10))
        .await;
    let auth = bearer();
    let mut statuses = Vec::new();
    let mut retry_after = false;
    for i in 0..6 {
        let answer = curl_post(&format!("{url}/m{i}"), &["-H", &auth], b"x").await;
        retry_after |= answer.status == 503 && answer.headers.contains("retry-after: 1");
        statuses.push(answer.status);
    }
    assert!(statuses.contains(&504), "{statuses:?}");
    assert!(statuses.contains(&503) && retry_after, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [503, 504].contains(s)),
        "{statuses:?}"
    );
}

/// examples/webhook-to-mqtt.yaml, run as written (the broker and the port filled in, the
/// token from the environment): the curl of its comment is answered 202 and lands on
/// `hooks/github` with its header.
#[tokio::test]
async fn example_webhook_to_mqtt() {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let port = free_port();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/webhook-to-mqtt.yaml"
    ))
    .unwrap();
    let config = fill(
        &example,
        &[
            ("${MQTT_URL:-mqtt://127.0.0.1:1883}", mosquitto.url()),
            ("127.0.0.1:9090", format!("127.0.0.1:{port}")),
        ],
    );
    let mut ferry = Ferry::start_with_env(&config, &[("WEBHOOK_TOKEN", TOKEN)]);
    ferry.wait_ready().await;
    let mut subscriber = MqttPeer::subscribed(&mosquitto.url(), "hooks/#", 1).await;
    let answer = curl_post(
        &format!("http://127.0.0.1:{port}/hooks/github"),
        &[
            "-H",
            &bearer(),
            "-H",
            "Content-Type: application/json",
            "-H",
            "X-GitHub-Event: push",
        ],
        br#"{"ref":"main"}"#,
    )
    .await;
    assert_eq!(answer.status, 202, "{}", answer.headers);
    let m = subscriber.inbox.recv(secs(10)).await.expect("published");
    assert_eq!(
        (m.topic.as_str(), m.text().as_str()),
        ("hooks/github", r#"{"ref":"main"}"#)
    );
    assert!(
        m.headers
            .contains(&("x-github-event".into(), "push".into()))
    );
}
