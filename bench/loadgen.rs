//! The benchmark suite's load generator and counter (`bench/run`).
//!
//! `loadgen pub` publishes N messages of S bytes to an MQTT topic or a NATS subject, as fast as
//! the broker takes them or at a fixed rate. Each payload carries its sequence number and its
//! send time: `--format binary` (the default) starts it with 16 bytes, little endian (`u64`
//! sequence, `u64` nanoseconds since the Unix epoch), then padding; `--format json` makes it a
//! JSON object `{"seq":N,"sent_us":T,"room":"kitchen","value":21.5,"pad":"xx..."}` padded to S
//! bytes (microseconds, so the number stays exact through jq's doubles), for routes that
//! transform it with jq: the subscriber reads `seq` and `sent_us` back from whatever JSON object
//! arrives.
//!
//! `loadgen pub --url sse-serve://127.0.0.1:PORT` serves one `text/event-stream` instead: it
//! prints `listening`, waits for one client, prints `connected`, then writes the N events (JSON
//! data as above, with `id:`), and closes the stream. `loadgen sub --url sse://HOST:PORT/PATH`
//! reads such a stream itself (the direct path of the SSE scenario).
//!
//! `loadgen sub` subscribes, prints `subscribed` once the broker confirmed the subscription, then
//! counts until N messages arrived or the time runs out, and prints one JSON line: received, lost,
//! duplicates, reordered, throughput and latency (send time to arrival; publisher and subscriber
//! run on the same machine, so they share the clock).
//!
//! Both run on one thread (a current-thread Tokio runtime): one core is enough to outrun the
//! brokers, and the JSON line carries the process's own CPU time per message so `bench/run` can
//! show that the load generator is not the bottleneck.

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::{BufMut as _, Bytes, BytesMut};
use clap::{Parser, Subcommand};
use futures_util::StreamExt as _;
use serde_json::json;

/// Bytes at the start of every payload: sequence number and send time.
const HEADER_LEN: usize = 16;
/// Requests rumqttc takes per event-loop turn (its default, 10, starves a fast publisher, as
/// measured on a spike relay).
const MQTT_MAX_REQUEST_BATCH: usize = 500;
/// Requests the subscriber may queue (its acknowledgements at QoS 1).
const MQTT_SUB_REQUEST_CHANNEL: usize = 10_000;
/// Publishes queued in the publisher ahead of the socket. Kept small: the send time is stamped
/// when a payload is made, so a deep queue here would count as latency.
const MQTT_PUB_REQUEST_CHANNEL: usize = 1_000;
/// Largest packet accepted or sent (the crate's default is 10 KiB).
const MQTT_MAX_PACKET: usize = 16 * 1024 * 1024;

#[derive(Parser)]
#[command(about = "ferry's benchmark load generator: publish numbered messages, count them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish N numbered, timestamped messages of S bytes.
    Pub(PubArgs),
    /// Subscribe, count what arrives, print one JSON line of figures.
    Sub(SubArgs),
}

#[derive(clap::Args)]
struct PubArgs {
    /// mqtt://HOST:PORT or nats://HOST:PORT
    #[arg(long)]
    url: String,
    /// MQTT topic or NATS subject to publish to
    #[arg(long)]
    topic: String,
    /// Messages to publish
    #[arg(long)]
    count: u64,
    /// Payload size in bytes (at least 16: sequence number and send time)
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// MQTT QoS (0 or 1); ignored for NATS
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Messages per second; without it, as fast as the broker takes them
    #[arg(long)]
    rate: Option<f64>,
    /// Payload format: binary (16-byte header and padding) or json (an object with `seq` and
    /// `sent_us`); an SSE stream is always json
    #[arg(long, value_enum, default_value_t = Format::Binary)]
    format: Format,
    /// sse-serve:// only: once a client connected, wait for a line on standard input before
    /// writing the events (so a script can start its measurement first)
    #[arg(long)]
    start_on_stdin: bool,
    /// MQTT QoS 1: publishes sent and not yet acknowledged (PUBACK). A small window costs
    /// throughput and CPU (here 100: 27k msg/s at 15 µs/msg; 1000: 49k at 5 µs/msg).
    #[arg(long, default_value_t = 1000)]
    inflight: u16,
}

#[derive(clap::Args)]
struct SubArgs {
    /// mqtt://HOST:PORT or nats://HOST:PORT
    #[arg(long)]
    url: String,
    /// MQTT topic filter or NATS subject to subscribe to
    #[arg(long)]
    topic: String,
    /// Messages expected (sequence numbers 0..N)
    #[arg(long)]
    count: u64,
    /// Give up this long after subscribing (e.g. 60s)
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Give up when nothing arrived for this long after the first message
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// MQTT QoS of the subscription (0 or 1); ignored for NATS
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Payload format to read sequence number and send time from (see `pub --format`); an SSE
    /// stream is always json
    #[arg(long, value_enum, default_value_t = Format::Binary)]
    format: Format,
}

/// How a payload carries its sequence number and send time.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// 16 bytes (`u64` sequence, `u64` send time in ns, little endian), then padding
    Binary,
    /// A JSON object with `seq` and `sent_us` (send time in µs since the Unix epoch)
    Json,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // reqwest (the SSE subscriber) is built without a default TLS provider, as in ferry.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Pub(args) => runtime.block_on(publish(args)),
        Command::Sub(args) => runtime.block_on(subscribe(args)),
    }
}

/// Where `--url` points.
enum Endpoint {
    Mqtt {
        host: String,
        port: u16,
    },
    Nats(String),
    /// `sse-serve://HOST:PORT`: the publisher serves the stream.
    SseServe {
        host: String,
        port: u16,
    },
    /// `sse://HOST:PORT/PATH`: the subscriber reads the stream (as `http://`).
    Sse(String),
}

fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    let parsed = url::Url::parse(url).with_context(|| format!("--url {url}"))?;
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_string();
    match parsed.scheme() {
        "mqtt" | "tcp" => Ok(Endpoint::Mqtt {
            host,
            port: parsed.port().unwrap_or(1883),
        }),
        "nats" => Ok(Endpoint::Nats(url.to_string())),
        "sse-serve" => Ok(Endpoint::SseServe {
            host,
            port: parsed
                .port()
                .context("--url sse-serve://HOST:PORT needs a port")?,
        }),
        "sse" => Ok(Endpoint::Sse(format!("http{}", &url[3..]))),
        other => bail!(
            "--url: unsupported scheme {other}: (mqtt://, nats://, sse-serve:// for pub, sse:// for sub)"
        ),
    }
}

fn mqtt_qos(qos: u8) -> anyhow::Result<mqtt4::QoS> {
    match qos {
        0 => Ok(mqtt4::QoS::AtMostOnce),
        1 => Ok(mqtt4::QoS::AtLeastOnce),
        _ => bail!("--qos {qos}: 0 or 1"),
    }
}

fn mqtt_client(
    role: &str,
    host: &str,
    port: u16,
    inflight: u16,
    requests: usize,
) -> (mqtt4::AsyncClient, mqtt4::EventLoop) {
    let id = format!("loadgen-{role}-{}", std::process::id());
    let mut options = mqtt4::MqttOptions::new(id, mqtt4::Broker::tcp(host, port));
    options
        .set_keep_alive(30)
        .set_clean_session(true)
        .set_request_channel_capacity(requests)
        .set_max_request_batch(MQTT_MAX_REQUEST_BATCH)
        .set_inflight(inflight)
        .set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET);
    let (client, mut eventloop) = mqtt4::AsyncClient::builder(options).build();
    // mosquitto does not set TCP_NODELAY; without it on our side a QoS 1 window crawls.
    let mut network = mqtt4::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    (client, eventloop)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The payload of message `seq` in `format`, `size` bytes (a JSON payload at least as long as
/// its fields).
fn payload(buf: &mut BytesMut, seq: u64, size: usize, format: Format) -> Bytes {
    buf.reserve(size);
    match format {
        Format::Binary => {
            buf.put_u64_le(seq);
            buf.put_u64_le(now_ns());
            buf.put_bytes(b'x', size - HEADER_LEN);
        }
        Format::Json => {
            let head = format!(
                r#"{{"seq":{seq},"sent_us":{},"room":"kitchen","value":21.5,"pad":""#,
                now_ns() / 1000
            );
            buf.put_slice(head.as_bytes());
            buf.put_bytes(b'x', size.saturating_sub(head.len() + 2));
            buf.put_slice(b"\"}");
        }
    }
    buf.split().freeze()
}

/// The JSON fields a subscriber reads back (other fields are ignored).
#[derive(serde::Deserialize)]
struct JsonStamp {
    seq: u64,
    sent_us: u64,
}

/// Sequence number and send time (ns since the Unix epoch) of a payload in `format`.
fn stamp(payload: &[u8], format: Format) -> Option<(u64, u64)> {
    match format {
        Format::Binary => Some((
            u64::from_le_bytes(payload.get(..8)?.try_into().ok()?),
            u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?),
        )),
        Format::Json => {
            let s: JsonStamp = serde_json::from_slice(payload).ok()?;
            Some((s.seq, s.sent_us * 1000))
        }
    }
}

/// Paces a publisher at `rate` msg/s (none: no pacing). Sleeps only when ahead of schedule, so
/// a late wake-up is caught up by sending the backlog without sleeping.
struct Pacer {
    start: Instant,
    interval: Option<f64>,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Self {
        Self {
            start: Instant::now(),
            interval: rate.filter(|r| *r > 0.0).map(|r| 1.0 / r),
        }
    }

    async fn wait(&self, seq: u64) {
        if let Some(interval) = self.interval {
            let due = self.start + Duration::from_secs_f64(interval * seq as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
    }
}

async fn publish(args: PubArgs) -> anyhow::Result<()> {
    if args.size < HEADER_LEN {
        bail!("--size {}: at least {HEADER_LEN} bytes", args.size);
    }
    let cpu_before = own_cpu_ticks();
    let (started, finished) = match endpoint(&args.url)? {
        Endpoint::Mqtt { host, port } => publish_mqtt(&args, &host, port).await?,
        Endpoint::Nats(url) => publish_nats(&args, &url).await?,
        Endpoint::SseServe { host, port } => serve_sse(&args, &host, port).await?,
        Endpoint::Sse(_) => bail!("--url sse://: a subscriber's URL; pub serves sse-serve://"),
    };
    let cpu = own_cpu_ticks().saturating_sub(cpu_before);
    let elapsed = finished.duration_since(started).as_secs_f64();
    let line = json!({
        "role": "pub",
        "sent": args.count,
        "size": args.size,
        "qos": args.qos,
        "seconds": round(elapsed, 4),
        "rate_msg_s": round(args.count as f64 / elapsed.max(1e-9), 0),
        "cpu_us_per_msg": round(ticks_to_us(cpu) / args.count.max(1) as f64, 2),
    });
    println!("{line}");
    Ok(())
}

/// Publishes over MQTT; returns when the last message left (QoS 0) or was acknowledged (QoS 1).
async fn publish_mqtt(args: &PubArgs, host: &str, port: u16) -> anyhow::Result<(Instant, Instant)> {
    let qos = mqtt_qos(args.qos)?;
    let (client, mut eventloop) = mqtt_client(
        "pub",
        host,
        port,
        args.inflight.max(1),
        MQTT_PUB_REQUEST_CHANNEL,
    );
    loop {
        match eventloop
            .poll()
            .await
            .context("connecting to the MQTT broker")?
        {
            mqtt4::Event::Incoming(mqtt4::Packet::ConnAck(_)) => break,
            _ => continue,
        }
    }
    let started = Instant::now();
    let (count, size, rate, topic) = (args.count, args.size, args.rate, args.topic.clone());
    let format = args.format;
    // The request channel is bounded; the event loop below drains it and keeps the QoS 1 window
    // full as acknowledgements return (rumqttc holds back new publishes while `inflight` are
    // unacknowledged).
    let producer = tokio::spawn(async move {
        let pacer = Pacer::new(rate);
        let mut buf = BytesMut::with_capacity(size * 1024);
        let options = mqtt4::PublishOptions::new(qos);
        for seq in 0..count {
            pacer.wait(seq).await;
            let body = payload(&mut buf, seq, size, format);
            if client.publish(topic.as_str(), body, options).await.is_err() {
                break;
            }
        }
        client
    });
    let (mut sent, mut acked) = (0u64, 0u64);
    loop {
        match eventloop
            .poll()
            .await
            .context("publishing to the MQTT broker")?
        {
            mqtt4::Event::Outgoing(mqtt4::Outgoing::Publish(_)) => sent += 1,
            mqtt4::Event::Incoming(mqtt4::Packet::PubAck(_)) => acked += 1,
            _ => {}
        }
        let done = if args.qos == 0 { sent } else { acked };
        if done >= args.count {
            break;
        }
    }
    let finished = Instant::now();
    let client = producer.await?;
    // QoS 0: what was handed to the socket may still sit in our buffer; a clean disconnect
    // flushes it before the connection closes.
    let _ = client.disconnect().await;
    let drain = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(event) = eventloop.poll().await {
            if let mqtt4::Event::Outgoing(mqtt4::Outgoing::Disconnect) = event {
                break;
            }
        }
    });
    let _ = drain.await;
    Ok((started, finished))
}

async fn publish_nats(args: &PubArgs, url: &str) -> anyhow::Result<(Instant, Instant)> {
    let client = async_nats::ConnectOptions::new()
        .name("loadgen-pub")
        .connect(url)
        .await
        .context("connecting to the NATS server")?;
    let started = Instant::now();
    let pacer = Pacer::new(args.rate);
    let mut buf = BytesMut::with_capacity(args.size * 1024);
    let subject = async_nats::Subject::from(args.topic.as_str());
    for seq in 0..args.count {
        pacer.wait(seq).await;
        let body = payload(&mut buf, seq, args.size, args.format);
        client.publish(subject.clone(), body).await?;
    }
    // A round trip to the server: everything before it was read by the server.
    client.flush().await?;
    let finished = Instant::now();
    Ok((started, finished))
}

/// Bytes of events gathered before a write at full speed (at a fixed rate every event is
/// written at once, so its send time is when it left).
const SSE_WRITE_BATCH: usize = 16 * 1024;

/// Serves one `text/event-stream` to the first client and writes the events to it.
async fn serve_sse(args: &PubArgs, host: &str, port: u16) -> anyhow::Result<(Instant, Instant)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("listening on {host}:{port}"))?;
    announce("listening")?;
    let (mut socket, _) = listener
        .accept()
        .await
        .context("accepting the SSE client")?;
    socket.set_nodelay(true)?;
    // The request head: read up to the blank line; its content does not matter.
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            bail!("the SSE client closed before its request was complete");
        }
        head.extend_from_slice(&chunk[..n]);
    }
    // No length and no chunking: the body ends when the connection closes.
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
        )
        .await?;
    announce("connected")?;
    if args.start_on_stdin {
        // Blocking is fine: nothing else runs on this thread until the events go out.
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    let started = Instant::now();
    let pacer = Pacer::new(args.rate);
    let mut buf = BytesMut::with_capacity(args.size * 1024);
    let mut out = BytesMut::with_capacity(SSE_WRITE_BATCH * 2);
    for seq in 0..args.count {
        pacer.wait(seq).await;
        let body = payload(&mut buf, seq, args.size, Format::Json);
        out.put_slice(format!("id: {seq}\ndata: ").as_bytes());
        out.put_slice(&body);
        out.put_slice(b"\n\n");
        if args.rate.is_some() || out.len() >= SSE_WRITE_BATCH {
            socket.write_all(&out).await?;
            out.clear();
        }
    }
    socket.write_all(&out).await?;
    socket.flush().await?;
    let finished = Instant::now();
    // Close after the client read everything (or gave up): a close with unread data in our
    // receive buffer would reset the connection and could cut the stream's tail.
    let _ = socket.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while matches!(socket.read(&mut chunk).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok((started, finished))
}

/// What the subscriber has seen so far.
struct Tally {
    expected: u64,
    format: Format,
    seen: Vec<bool>,
    received: u64,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    out_of_range: u64,
    highest: Option<u64>,
    latencies_ns: Vec<u64>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Wall-clock time of the last arrival, nanoseconds since the Unix epoch.
    last_unix_ns: u64,
}

impl Tally {
    fn new(expected: u64, format: Format) -> Self {
        Self {
            expected,
            format,
            seen: vec![false; expected as usize],
            received: 0,
            unique: 0,
            duplicates: 0,
            reordered: 0,
            out_of_range: 0,
            highest: None,
            latencies_ns: Vec::with_capacity(expected as usize),
            first: None,
            last: None,
            last_unix_ns: 0,
        }
    }

    /// Counts one arrival; `true` once every expected message arrived.
    fn record(&mut self, payload: &[u8]) -> bool {
        let arrived = Instant::now();
        let arrived_ns = now_ns();
        self.first.get_or_insert(arrived);
        self.last = Some(arrived);
        self.last_unix_ns = arrived_ns;
        self.received += 1;
        let Some((seq, sent_ns)) = stamp(payload, self.format) else {
            self.out_of_range += 1;
            return false;
        };
        let Some(slot) = self.seen.get_mut(seq as usize) else {
            self.out_of_range += 1;
            return false;
        };
        if *slot {
            self.duplicates += 1;
            return false;
        }
        *slot = true;
        self.unique += 1;
        match self.highest {
            Some(high) if seq < high => self.reordered += 1,
            _ => self.highest = Some(seq),
        }
        self.latencies_ns.push(arrived_ns.saturating_sub(sent_ns));
        self.unique >= self.expected
    }

    fn report(mut self, cpu_ticks: u64, timed_out: bool) -> serde_json::Value {
        self.latencies_ns.sort_unstable();
        let pct = |p: f64| -> Option<f64> {
            let n = self.latencies_ns.len();
            (n > 0).then(|| {
                let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
                round(self.latencies_ns[i] as f64 / 1000.0, 1)
            })
        };
        let span = match (self.first, self.last) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
            _ => 0.0,
        };
        // Throughput over the arrivals' span: the first message opens it, so it counts n-1
        // intervals.
        let throughput = if span > 0.0 {
            (self.received.saturating_sub(1)) as f64 / span
        } else {
            0.0
        };
        json!({
            "role": "sub",
            "expected": self.expected,
            "received": self.received,
            "lost": self.expected - self.unique,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "malformed": self.out_of_range,
            "timed_out": timed_out,
            "span_s": round(span, 4),
            // So a script can end its measurement window at the last arrival rather than when
            // the subscriber gave up waiting.
            "last_arrival_unix_s": round(self.last_unix_ns as f64 / 1e9, 6),
            "throughput_msg_s": round(throughput, 0),
            "latency_us": {
                "p50": pct(0.50),
                "p99": pct(0.99),
                "max": self.latencies_ns.last().map(|ns| round(*ns as f64 / 1000.0, 1)),
            },
            "cpu_us_per_msg": round(ticks_to_us(cpu_ticks) / self.received.max(1) as f64, 2),
        })
    }
}

async fn subscribe(args: SubArgs) -> anyhow::Result<()> {
    let endpoint = endpoint(&args.url)?;
    let format = match endpoint {
        Endpoint::Sse(_) => Format::Json,
        _ => args.format,
    };
    let mut tally = Tally::new(args.count, format);
    let cpu_before = own_cpu_ticks();
    let timed_out = match endpoint {
        Endpoint::Mqtt { host, port } => subscribe_mqtt(&args, &host, port, &mut tally).await?,
        Endpoint::Nats(url) => subscribe_nats(&args, &url, &mut tally).await?,
        Endpoint::Sse(url) => subscribe_sse(&args, &url, &mut tally).await?,
        Endpoint::SseServe { .. } => {
            bail!("--url sse-serve://: a publisher's URL; sub reads sse://")
        }
    };
    let cpu = own_cpu_ticks().saturating_sub(cpu_before);
    println!("{}", tally.report(cpu, timed_out));
    Ok(())
}

fn announce_subscribed() -> anyhow::Result<()> {
    announce("subscribed")
}

/// Prints one line a script synchronises on, at once.
fn announce(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// How long to wait for the next message: the overall deadline, or the idle limit once
/// messages started arriving.
fn next_deadline(args: &SubArgs, deadline: Instant, tally: &Tally) -> Instant {
    match tally.last {
        Some(last) => deadline.min(last + args.idle),
        None => deadline,
    }
}

/// Counts MQTT arrivals; `true` when it gave up before every message arrived.
async fn subscribe_mqtt(
    args: &SubArgs,
    host: &str,
    port: u16,
    tally: &mut Tally,
) -> anyhow::Result<bool> {
    let qos = mqtt_qos(args.qos)?;
    let (client, mut eventloop) = mqtt_client("sub", host, port, 100, MQTT_SUB_REQUEST_CHANNEL);
    client
        .subscribe(args.topic.as_str(), qos)
        .await
        .context("queueing the subscription")?;
    let deadline = Instant::now() + args.timeout;
    loop {
        let wait = next_deadline(args, deadline, tally);
        let Ok(event) = tokio::time::timeout_at(wait.into(), eventloop.poll()).await else {
            return Ok(true);
        };
        match event.context("subscribing on the MQTT broker")? {
            mqtt4::Event::Incoming(mqtt4::Packet::SubAck(ack)) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, mqtt4::SubscribeReasonCode::Failure))
                {
                    bail!("the broker refused the subscription to {}", args.topic);
                }
                announce_subscribed()?;
            }
            mqtt4::Event::Incoming(mqtt4::Packet::Publish(publish)) => {
                let complete = tally.record(&publish.payload);
                if complete {
                    return Ok(false);
                }
            }
            _ => {}
        }
    }
}

/// Counts NATS arrivals; `true` when it gave up before every message arrived.
async fn subscribe_nats(args: &SubArgs, url: &str, tally: &mut Tally) -> anyhow::Result<bool> {
    let client = async_nats::ConnectOptions::new()
        .name("loadgen-sub")
        // The default (65,536) drops messages on a burst if this task falls behind.
        .subscription_capacity(1 << 20)
        .connect(url)
        .await
        .context("connecting to the NATS server")?;
    let mut subscription = client.subscribe(args.topic.clone()).await?;
    // A round trip: the server has the subscription once the flush returns.
    client.flush().await?;
    announce_subscribed()?;
    let deadline = Instant::now() + args.timeout;
    loop {
        let wait = next_deadline(args, deadline, tally);
        match tokio::time::timeout_at(wait.into(), subscription.next()).await {
            Err(_) => return Ok(true),
            Ok(None) => bail!("the NATS subscription ended"),
            Ok(Some(message)) => {
                if tally.record(&message.payload) {
                    return Ok(false);
                }
            }
        }
    }
}

/// Reads an SSE stream and counts its events; `true` when it gave up before every message
/// arrived. `subscribed` once the server answered with its headers.
async fn subscribe_sse(args: &SubArgs, url: &str, tally: &mut Tally) -> anyhow::Result<bool> {
    let client = reqwest::Client::builder()
        .build()
        .context("building the HTTP client")?;
    let response = client
        .get(url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .with_context(|| format!("requesting {url}"))?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    announce_subscribed()?;
    let mut body = response.bytes_stream();
    let deadline = Instant::now() + args.timeout;
    // A line may span chunks: what is left after the last newline waits for the next chunk.
    let mut pending = BytesMut::new();
    let mut data = Vec::new();
    loop {
        let wait = next_deadline(args, deadline, tally);
        let chunk = match tokio::time::timeout_at(wait.into(), body.next()).await {
            Err(_) => return Ok(true),
            Ok(None) => return Ok(tally.unique < tally.expected),
            Ok(Some(chunk)) => chunk.context("reading the SSE stream")?,
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line = pending.split_to(end + 1);
            let line = line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]);
            if line.is_empty() {
                // A blank line dispatches the event (one without data is none).
                if !data.is_empty() && tally.record(&data) {
                    return Ok(false);
                }
                data.clear();
            } else if let Some(value) = line.strip_prefix(b"data:") {
                if !data.is_empty() {
                    data.push(b'\n');
                }
                data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            }
        }
    }
}

/// This process's CPU time (user + system) in clock ticks, from /proc/self/stat.
fn own_cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// /proc reports CPU time in USER_HZ ticks, 100 per second on Linux.
fn ticks_to_us(ticks: u64) -> f64 {
    ticks as f64 * 10_000.0
}

fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}
