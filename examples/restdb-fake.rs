//! Runs the restdb.io realtime **fake** of tests/support/restdb.rs by hand, e.g. to try
//! examples/restdb-to-mqtt.yaml without a restdb.io database. It is not restdb.io: it is the
//! tests' fake, written from restdb.io's realtime documentation (restdb.rs says which, and
//! what it adds).
//!
//! ```sh
//! cargo run --example restdb-fake -- [--port 8088] [--key KEY] [--ping SECONDS]
//! ```
//!
//! It serves `GET /realtime` (SSE) and `POST /realtime` (custom events) on 127.0.0.1 and reads
//! commands from stdin, one a line:
//!
//! ```text
//! post COLLECTION JSON      a record was created:  event `post`
//! put COLLECTION ID         a record was changed:  event `put`
//! delete COLLECTION ID...   records were deleted:  event `delete`
//! emit EVENT JSON           any event, with JSON as its data
//! disconnect                end every open stream (clients should reconnect and resume)
//! quit
//! ```

#[allow(dead_code)]
#[path = "../tests/support/restdb.rs"]
mod restdb;

use std::sync::Arc;
use std::time::Duration;

use restdb::{RestdbFake, RestdbOptions};

const USAGE: &str = "usage: restdb-fake [--port PORT] [--key KEY] [--ping SECONDS]\n\
    defaults: --port 8088 (0 = any free port) --key ferry-demo-key --ping 10";

#[tokio::main]
async fn main() {
    let mut options = RestdbOptions::new("ferry-demo-key");
    options.port = 8088;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| fail(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--port" => {
                options.port = value("--port")
                    .parse()
                    .unwrap_or_else(|_| fail("bad --port"))
            }
            "--key" => options.api_key = value("--key"),
            "--ping" => {
                let secs: f64 = value("--ping")
                    .parse()
                    .unwrap_or_else(|_| fail("bad --ping"));
                options.ping_interval = Duration::from_secs_f64(secs);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => fail(&format!("unknown argument `{other}`")),
        }
    }

    let fake = Arc::new(RestdbFake::start_with(options));
    println!(
        "restdb.io fake (not restdb.io) at {} (x-apikey: {})",
        fake.realtime_url(),
        fake.api_key()
    );
    println!(
        "commands: post COLL JSON | put COLL ID | delete COLL ID... | emit EVENT JSON | disconnect | quit"
    );

    // Report connections and published custom events as they happen.
    let watcher = fake.clone();
    tokio::spawn(async move {
        let mut changes = watcher.changes();
        let (mut connections, mut published, mut open) = (0, 0, 0);
        while changes.changed().await.is_ok() {
            let all = watcher.connections();
            for c in &all[connections..] {
                println!("stream opened (Last-Event-ID: {:?})", c.last_event_id);
            }
            connections = all.len();
            let now_open = watcher.open_connections();
            if now_open != open {
                println!("{now_open} stream(s) open");
                open = now_open;
            }
            let all = watcher.published();
            for p in &all[published..] {
                println!("published: {} {}", p.event, p.data);
            }
            published = all.len();
        }
    });

    // stdin is read by a thread (tokio's `io-std` is not among ferry's features).
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let mut words = line.split_whitespace();
        let (Some(command), rest) = (words.next(), words.clone().collect::<Vec<_>>()) else {
            continue;
        };
        // The JSON is everything after the first two words.
        let json_after = || serde_json::from_str::<serde_json::Value>(after_words(&line, 2));
        let id = match (command, rest.as_slice()) {
            ("post", [collection, ..]) => match json_after() {
                Ok(record) => Some(fake.emit_post(collection, record)),
                Err(e) => {
                    println!("not JSON: {e}");
                    None
                }
            },
            ("put", [collection, id]) => Some(fake.emit_put(collection, id)),
            ("delete", [collection, ids @ ..]) if !ids.is_empty() => {
                Some(fake.emit_delete(collection, ids))
            }
            ("emit", [event, ..]) => match json_after() {
                Ok(data) => Some(fake.emit(event, data)),
                Err(e) => {
                    println!("not JSON: {e}");
                    None
                }
            },
            ("disconnect", []) => {
                fake.disconnect_all();
                None
            }
            ("quit", []) => break,
            _ => {
                println!(
                    "?? post COLL JSON | put COLL ID | delete COLL ID... | emit EVENT JSON | disconnect | quit"
                );
                None
            }
        };
        if let Some(id) = id {
            println!("sent event id {id}");
        }
    }
}

/// `line` without its first `n` words.
fn after_words(line: &str, n: usize) -> &str {
    let mut rest = line.trim_start();
    for _ in 0..n {
        rest = rest
            .split_once(char::is_whitespace)
            .map_or("", |(_, r)| r.trim_start());
    }
    rest
}

fn fail(message: &str) -> ! {
    eprintln!("restdb-fake: {message}\n{USAGE}");
    std::process::exit(2);
}
