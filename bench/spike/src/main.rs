//! spike-relay: the smallest correct relay of one route, from one source to one sink, with a
//! choice of client for each side: the crates ferry uses (rumqttc-next, async-nats) or a
//! hand-written client (the floor of any client of that protocol). It measures what the client
//! crates cost without ferry around them; bench/run runs it beside ferry (bench/spike/README.md).
//!
//! One task reads the source, rewrites the topic or subject (the prefix, then the source's last
//! token, as bench/run's routes do) and hands each message to the sink. The sink is flushed
//! when the source has nothing more ready (`--flush idle`, no timer: a lone message goes out at
//! once, a burst in one write), and QoS 1 messages are acknowledged to the source only after
//! that flush, as ferry's at-least-once routes do.

mod clients;
mod mqtt_raw;
mod nats_raw;

use std::pin::Pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

const USAGE: &str = "usage: spike-relay --source rumqttc|mqtt-raw|async-nats|nats-raw --from URL --filter FILTER
                   --sink async-nats|nats-raw|rumqttc|mqtt-raw --to URL --prefix PREFIX
                   [--qos 0|1] [--flush idle|each|none] [--runtime multi1|current]
                   [--nats-client-capacity N] [--nats-subscription-capacity N] [--nats-read-buffer N]";

/// One message on its way: the rewritten topic or subject, the payload, and what confirms it to
/// the source once the sink has it.
pub struct Msg {
    pub out: String,
    pub payload: Bytes,
    pub ack: Option<Ack>,
}

pub enum Ack {
    Rumqttc(rumqttc::ManualAck),
    /// The packet id of a QoS 1 PUBLISH read by the hand-written MQTT client.
    Raw(u16),
}

pub type Messages = Pin<Box<dyn Stream<Item = Result<Msg>> + Send>>;

/// Where a source's acknowledgements go.
pub enum Acker {
    None,
    Rumqttc(rumqttc::AsyncClient),
    Raw(tokio::net::tcp::OwnedWriteHalf),
}

impl Acker {
    async fn ack(&mut self, acks: &mut Vec<Ack>) -> Result<()> {
        match self {
            Acker::None => {}
            Acker::Rumqttc(client) => {
                for ack in acks.drain(..) {
                    if let Ack::Rumqttc(ack) = ack {
                        client.manual_ack(ack).await?;
                    }
                }
            }
            Acker::Raw(socket) => {
                let mut buf = BytesMut::with_capacity(4 * acks.len());
                for ack in acks.drain(..) {
                    if let Ack::Raw(pkid) = ack {
                        mqtt_raw::encode_puback(&mut buf, pkid);
                    }
                }
                socket.write_all(&buf).await?;
            }
        }
        acks.clear();
        Ok(())
    }
}

pub struct Source {
    pub messages: Messages,
    pub acker: Acker,
    /// Kept alive for as long as the source reads (an async-nats subscription's client).
    pub _client: Option<async_nats::Client>,
}

/// A socket with what is waiting to be written to it: the hand-written clients' sink.
pub struct RawWriter {
    pub socket: tokio::net::TcpStream,
    pub buf: BytesMut,
}

pub enum Sink {
    Nats(async_nats::Client),
    NatsRaw(RawWriter),
    Mqtt {
        client: rumqttc::AsyncClient,
        qos: rumqttc::QoS,
        /// QoS 1: the PUBACKs still to come for what was published since the last flush.
        pending: Vec<rumqttc::PublishNotice>,
    },
    MqttRaw(RawWriter),
}

impl Sink {
    async fn publish(&mut self, out: String, payload: Bytes) -> Result<()> {
        match self {
            Sink::Nats(client) => client.publish(out, payload).await?,
            Sink::NatsRaw(w) => nats_raw::encode_pub(&mut w.buf, &out, &payload),
            Sink::Mqtt {
                client,
                qos,
                pending,
            } => {
                let options = rumqttc::PublishOptions::new(*qos);
                if *qos == rumqttc::QoS::AtMostOnce {
                    client.publish(out, payload, options).await?;
                } else {
                    pending.push(client.publish_tracked(out, payload, options).await?);
                }
            }
            Sink::MqttRaw(w) => mqtt_raw::encode_publish(&mut w.buf, &out, &payload),
        }
        Ok(())
    }

    /// Until everything published so far has left the process (core NATS, QoS 0) or has been
    /// acknowledged by the broker (MQTT QoS 1).
    async fn flush(&mut self) -> Result<()> {
        match self {
            Sink::Nats(client) => client.flush().await?,
            Sink::NatsRaw(w) | Sink::MqttRaw(w) => {
                w.socket.write_all(&w.buf).await?;
                w.buf.clear();
            }
            Sink::Mqtt { pending, .. } => {
                for notice in pending.drain(..) {
                    notice
                        .wait_async()
                        .await
                        .map_err(|e| format!("publish not acknowledged: {e:?}"))?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// When the source has nothing more ready.
    Idle,
    /// After every message.
    Each,
    /// Never (QoS 0 only): the client writes when it gets to it.
    None,
}

/// The route's one rewrite: PREFIX then the last token of the source's topic or subject.
pub fn rewrite(prefix: &str, topic: &[u8]) -> String {
    let last = match topic.iter().rposition(|&b| b == b'/' || b == b'.') {
        Some(i) => &topic[i + 1..],
        None => topic,
    };
    let mut out = String::with_capacity(prefix.len() + last.len());
    out.push_str(prefix);
    out.push_str(&String::from_utf8_lossy(last));
    out
}

pub struct Args {
    pub source: String,
    pub from: String,
    pub filter: String,
    pub sink: String,
    pub to: String,
    pub prefix: String,
    pub qos: u8,
    flush: Flush,
    runtime: String,
    pub nats_client_capacity: usize,
    pub nats_subscription_capacity: usize,
    pub nats_read_buffer: Option<u16>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        source: String::new(),
        from: String::new(),
        filter: String::new(),
        sink: String::new(),
        to: String::new(),
        prefix: String::new(),
        qos: 0,
        flush: Flush::Idle,
        runtime: "multi1".into(),
        // ferry's settings (src/connectors/nats/mod.rs).
        nats_client_capacity: 1024,
        nats_subscription_capacity: 16 * 1024,
        nats_read_buffer: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--source" => args.source = value,
            "--from" => args.from = value,
            "--filter" => args.filter = value,
            "--sink" => args.sink = value,
            "--to" => args.to = value,
            "--prefix" => args.prefix = value,
            "--qos" => args.qos = value.parse()?,
            "--flush" => {
                args.flush = match value.as_str() {
                    "idle" => Flush::Idle,
                    "each" => Flush::Each,
                    "none" => Flush::None,
                    _ => return Err(format!("--flush idle|each|none\n{USAGE}").into()),
                }
            }
            "--runtime" => args.runtime = value,
            "--nats-client-capacity" => args.nats_client_capacity = value.parse()?,
            "--nats-subscription-capacity" => args.nats_subscription_capacity = value.parse()?,
            "--nats-read-buffer" => args.nats_read_buffer = Some(value.parse()?),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}").into()),
        }
    }
    if args.source.is_empty() || args.from.is_empty() || args.sink.is_empty() || args.to.is_empty()
    {
        return Err(USAGE.into());
    }
    if args.qos > 1 {
        return Err("--qos 0 or 1".into());
    }
    if args.qos == 1 && args.flush == Flush::None {
        return Err("--qos 1 acknowledges after a flush: --flush idle or each".into());
    }
    Ok(args)
}

/// `scheme://host:port` → `host:port`.
pub fn address(url: &str) -> Result<String> {
    let (_, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("not a URL: {url}"))?;
    Ok(rest.trim_end_matches('/').to_owned())
}

async fn run(args: Args) -> Result<()> {
    let mut shared_nats = None;
    let mut source = match args.source.as_str() {
        "rumqttc" => clients::rumqttc_source(&args).await?,
        "async-nats" => {
            let (source, client) = clients::nats_source(&args).await?;
            shared_nats = Some(client);
            source
        }
        "mqtt-raw" => mqtt_raw::source(&args).await?,
        "nats-raw" => nats_raw::source(&args).await?,
        other => return Err(format!("unknown source {other}\n{USAGE}").into()),
    };
    let mut sink = match args.sink.as_str() {
        // One connection when both ends are on the same server, as ferry's one `nats` connection.
        "async-nats" => match shared_nats.filter(|_| args.from == args.to) {
            Some(client) => Sink::Nats(client),
            None => Sink::Nats(clients::nats_client(&args, &args.to).await?),
        },
        "rumqttc" => clients::rumqttc_sink(&args).await?,
        "nats-raw" => Sink::NatsRaw(nats_raw::sink(&args).await?),
        "mqtt-raw" => {
            if args.qos != 0 {
                return Err("the hand-written MQTT sink publishes at QoS 0 only".into());
            }
            Sink::MqttRaw(mqtt_raw::sink(&args).await?)
        }
        other => return Err(format!("unknown sink {other}\n{USAGE}").into()),
    };
    println!("ready");
    relay(&mut source, &mut sink, args.flush).await
}

async fn relay(source: &mut Source, sink: &mut Sink, flush: Flush) -> Result<()> {
    let mut acks = Vec::new();
    loop {
        let next = match futures_util::poll!(source.messages.next()) {
            Poll::Ready(next) => next,
            Poll::Pending => {
                // Every message since the last wait is written (and, at QoS 1, confirmed).
                if flush == Flush::Idle {
                    sink.flush().await?;
                    source.acker.ack(&mut acks).await?;
                }
                source.messages.next().await
            }
        };
        let Some(msg) = next else {
            return Err("the source ended".into());
        };
        let msg = msg?;
        sink.publish(msg.out, msg.payload).await?;
        acks.extend(msg.ack);
        if flush == Flush::Each {
            sink.flush().await?;
            source.acker.ack(&mut acks).await?;
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("spike-relay: {e}");
            std::process::exit(2);
        }
    };
    // ferry runs a multi-thread runtime with one worker for `threads: 1`.
    let runtime = match args.runtime.as_str() {
        "multi1" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build(),
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        other => {
            eprintln!("spike-relay: --runtime multi1|current, not {other}");
            std::process::exit(2);
        }
    };
    // The relay runs as a task, on the runtime's worker as ferry's tasks do: under `block_on`
    // in a multi-thread runtime it would run on the main thread, and every message would cross
    // from the worker (which drives the sockets) to it.
    let relay = runtime
        .expect("a tokio runtime")
        .block_on(async { tokio::spawn(run(args)).await });
    if let Err(e) = relay.map_err(Error::from).and_then(|relayed| relayed) {
        eprintln!("spike-relay: {e}");
        std::process::exit(1);
    }
}
