//! The client crates ferry uses, with ferry's settings: rumqttc-next (MQTT 5) and async-nats.

use std::time::Duration;

use futures_util::StreamExt;
use rumqttc::{
    AckMode, AsyncClient, Broker, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS,
};

use crate::{Ack, Acker, Args, Msg, Result, Sink, Source, address, rewrite};

fn qos(level: u8) -> QoS {
    if level == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// A client with the settings ferry gives rumqttc-next (src/connectors/mqtt/client.rs), on a
/// clean session.
fn rumqttc_client(url: &str, id: &str) -> Result<(AsyncClient, EventLoop)> {
    let address = address(url)?;
    let (host, port) = address.rsplit_once(':').ok_or("mqtt://HOST:PORT")?;
    let mut options = MqttOptions::new(id, Broker::tcp(host, port.parse()?));
    options
        .set_keep_alive(60)
        .set_clean_start(true)
        .set_request_channel_capacity(4096)
        .set_max_request_batch(256)
        .set_outgoing_inflight_upper_limit(100)
        .set_ack_mode(AckMode::Manual);
    options.set_receive_maximum(Some(1000));
    options.set_max_packet_size(Some(1024 * 1024));
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    Ok(AsyncClient::builder(options).try_build()?)
}

/// Polls until `wanted` arrives (the CONNACK, the SUBACK).
async fn poll_until(eventloop: &mut EventLoop, wanted: fn(&Packet) -> bool) -> Result<()> {
    let wait = async {
        loop {
            if let Event::Incoming(packet) = eventloop.poll().await?
                && wanted(&packet)
            {
                return Ok::<_, crate::Error>(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await?
}

pub async fn rumqttc_source(args: &Args) -> Result<Source> {
    let (client, mut eventloop) =
        rumqttc_client(&args.from, &format!("spike-in-{}", std::process::id()))?;
    client.subscribe(args.filter.clone(), qos(args.qos)).await?;
    poll_until(&mut eventloop, |p| matches!(p, Packet::SubAck(_))).await?;
    // The event loop's poll lives inside the stream between messages, never dropped half-way.
    let state = (eventloop, args.prefix.clone());
    let messages = futures_util::stream::unfold(state, |(mut eventloop, prefix)| async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let ack = (publish.qos != QoS::AtMostOnce).then(|| {
                        Ack::Rumqttc(rumqttc::ManualAck::PubAck(rumqttc::PubAck::new(
                            publish.pkid,
                            None,
                        )))
                    });
                    let msg = Msg {
                        out: rewrite(&prefix, &publish.topic),
                        payload: publish.payload,
                        ack,
                    };
                    return Some((Ok(msg), (eventloop, prefix)));
                }
                Ok(_) => {}
                Err(e) => return Some((Err(e.into()), (eventloop, prefix))),
            }
        }
    });
    Ok(Source {
        messages: Box::pin(messages),
        acker: Acker::Rumqttc(client),
        _client: None,
    })
}

/// The sink's event loop runs in a task of its own: rumqttc-next needs its poll driven, and a
/// second connection's poll in the source's task would need a select over both.
pub async fn rumqttc_sink(args: &Args) -> Result<Sink> {
    let (client, mut eventloop) =
        rumqttc_client(&args.to, &format!("spike-out-{}", std::process::id()))?;
    poll_until(&mut eventloop, |p| matches!(p, Packet::ConnAck(_))).await?;
    tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                eprintln!("spike-relay: the MQTT sink's connection: {e}");
                std::process::exit(1);
            }
        }
    });
    Ok(Sink::Mqtt {
        client,
        qos: qos(args.qos),
        pending: Vec::new(),
    })
}

/// A client with ferry's capacities unless the flags change them.
pub async fn nats_client(args: &Args, url: &str) -> Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .client_capacity(args.nats_client_capacity)
        .subscription_capacity(args.nats_subscription_capacity);
    if let Some(size) = args.nats_read_buffer {
        options = options.read_buffer_capacity(size);
    }
    Ok(options.connect(address(url)?).await?)
}

/// Subscribed once a probe published to the filter came back: the server has the subscription.
pub async fn nats_source(args: &Args) -> Result<(Source, async_nats::Client)> {
    let client = nats_client(args, &args.from).await?;
    let mut subscriber = client.subscribe(args.filter.clone()).await?;
    let probe = args.filter.replace(['>', '*'], "probe");
    client.publish(probe, "probe".into()).await?;
    client.flush().await?;
    tokio::time::timeout(Duration::from_secs(10), subscriber.next())
        .await?
        .ok_or("subscription closed")?;
    let prefix = args.prefix.clone();
    let messages = subscriber.map(move |m| {
        Ok(Msg {
            out: rewrite(&prefix, m.subject.as_bytes()),
            payload: m.payload,
            ack: None,
        })
    });
    let source = Source {
        messages: Box::pin(messages),
        acker: Acker::None,
        _client: Some(client.clone()),
    };
    Ok((source, client))
}
