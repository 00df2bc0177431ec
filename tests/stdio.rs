//! Standard input and output as a connection (`ferry relay -`), driven through its reader and
//! writer on in-memory streams: the same functions the connection runs on the process's
//! standard input and output, with a real route queue between them. (Running them on this
//! test process's own stdin/stdout is impractical; the relay command's tests run ferry as a
//! process with pipes.)

use std::io::{Cursor, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::config::{LineFormat, Protocol, Queue};
use ferry::connectors::stdio::{LineSink, LineWriter, feed, spawn_reader};
use ferry::contracts::Sink;
use ferry::contracts::queue::bounded;
use tokio_util::sync::CancellationToken;

const JSON: LineFormat = LineFormat::Json {
    base64: false,
    names: Protocol::Mqtt,
};

/// An output the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Relays `input` through a route queue to an in-memory output, as `ferry relay - -` would,
/// and returns the output, how many messages were read and how long it took.
async fn relay(input: Vec<u8>, from: LineFormat, to: LineFormat) -> (Vec<u8>, u64, Duration) {
    let started = Instant::now();
    let (route_in, route_out) = bounded("relay", Queue::default());
    let lines = spawn_reader(Cursor::new(input), from, "stdin".into());
    let captured = Captured::default();
    let sink = LineSink::new(LineWriter::spawn(captured.clone(), || {}), to);
    let stop = CancellationToken::new();
    let reading = tokio::spawn(async move { feed(lines, &route_in, &stop).await });
    let mut sent = 0u64;
    // Ends because the reader finishes the route at the end of input.
    while let Some(incoming) = route_out.pop().await {
        sink.send(&incoming.message).await.expect("written");
        sent += 1;
    }
    let summary = reading.await.unwrap();
    assert!(summary.ended, "{summary:?}");
    assert_eq!(summary.messages, sent);
    let out = captured.0.lock().unwrap().clone();
    (out, sent, started.elapsed())
}

/// 100,000 captured lines (text, binary, repeated headers) replayed and captured again are
/// the same bytes; and the whole trip is quick enough for a shell pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_replay_capture_is_byte_for_byte_for_100k_lines() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut capture = Vec::new();
        for i in 0..100_000u32 {
            let line = match i % 4 {
                0 => format!(
                    r#"{{"subject":"sensors/{i}/temp","protocol":"mqtt","payload":"{{\"v\":{i}}}","headers":{{}},"time":"2026-01-02T03:04:05.{:06}Z"}}"#,
                    i % 1_000_000
                ),
                1 => format!(
                    r#"{{"subject":"bin.{i}","protocol":"mqtt","payload":"AP8B","payload_base64":true,"headers":{{"a":["1","2"],"b":"x"}},"time":"2026-01-02T03:04:05.000000Z"}}"#
                ),
                2 => format!(
                    r#"{{"subject":"ünï {i}","protocol":"mqtt","payload":"line\nbreak\r\ttab \u0001","headers":{{"k":"v"}},"time":"2026-01-02T03:04:05.000001Z"}}"#
                ),
                _ => r#"{"subject":"","protocol":"mqtt","payload":"","headers":{},"time":"2026-01-02T03:04:05.999999Z"}"#
                    .to_string(),
            };
            capture.extend_from_slice(line.as_bytes());
            capture.push(b'\n');
        }
        let (out, sent, took) = relay(capture.clone(), JSON, JSON).await;
        assert_eq!(sent, 100_000);
        if out != capture {
            let first = out
                .split(|&b| b == b'\n')
                .zip(capture.split(|&b| b == b'\n'))
                .find(|(a, b)| a != b)
                .map(|(a, b)| (String::from_utf8_lossy(a).into_owned(), String::from_utf8_lossy(b).into_owned()));
            panic!("the replayed capture differs; first difference (got, sent): {first:?}");
        }
        eprintln!("100k lines read, queued and written in {took:?}");
    })
    .await
    .expect("the relay finishes within 60 s");
}

/// Bad lines are skipped, counted, and never end the input; CRLF lines and a last line without
/// a line break are read; blank lines are skipped quietly.
#[tokio::test]
async fn bad_lines_are_skipped_and_the_rest_relayed() {
    let input = b"{\"subject\":\"a\",\"payload\":\"1\"}\r\nnot json\n\n{\"payload\":\"no subject\"}\n{\"subject\":\"b\",\"payload\":\"2\",\"tool\":\"x\"}".to_vec();
    let before = ferry::connectors::stdio::skipped_lines();
    let (out, sent, _) =
        tokio::time::timeout(Duration::from_secs(10), relay(input, JSON, LineFormat::Raw))
            .await
            .expect("the relay finishes");
    assert_eq!(sent, 2);
    assert_eq!(out, b"1\n2\n");
    assert!(ferry::connectors::stdio::skipped_lines() >= before + 2);
}

/// Raw lines in, JSON lines out: each line is a payload with an empty subject; a binary line
/// comes out in base64.
#[tokio::test]
async fn raw_lines_become_payloads() {
    let (out, sent, _) = tokio::time::timeout(
        Duration::from_secs(10),
        relay(b"hello\r\n\xff\xfe\n\n".to_vec(), LineFormat::Raw, JSON),
    )
    .await
    .expect("the relay finishes");
    assert_eq!(sent, 3);
    let lines: Vec<serde_json::Value> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines[0]["payload"], "hello");
    assert_eq!(lines[0]["subject"], "");
    assert_eq!(lines[1]["payload"], "//4=");
    assert_eq!(lines[1]["payload_base64"], true);
    assert_eq!(lines[2]["payload"], "");
}

/// Stopping the sources stops reading even while the input has not ended (a terminal).
#[tokio::test]
async fn stopping_the_sources_stops_reading_an_open_input() {
    // A reader that never ends: a pipe whose writer stays open.
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(b"{\"subject\":\"a\"}\n").unwrap();
    let (route_in, route_out) = bounded("r", Queue::default());
    let lines = spawn_reader(reader, JSON, "stdin".into());
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    let reading = tokio::spawn(async move { feed(lines, &route_in, &stopping).await });
    let first = tokio::time::timeout(Duration::from_secs(10), route_out.pop())
        .await
        .expect("the first line arrives at once, without waiting for more input");
    assert_eq!(first.unwrap().message.subject, "a");
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("feed ends once stopped")
        .unwrap();
    assert!(!summary.ended);
    assert_eq!(summary.messages, 1);
    drop(writer);
}

/// A closed output (EPIPE) calls the closed handler once, at the first write, and sends fail
/// from then on rather than retrying in a loop.
#[tokio::test]
async fn a_closed_output_ends_once() {
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let writer = LineWriter::spawn(Closed, move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let sink = LineSink::new(writer, JSON);
    let message = ferry::message::Message::new("o".into(), "s", "p");
    for _ in 0..3 {
        assert!(sink.send(&message).await.is_err());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
