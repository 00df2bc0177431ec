//! MQTT 3.1.1 written by hand over a tokio TcpStream, framed with mqttbytes-core-next (the
//! fixed header rumqttc-next parses with): CONNECT, SUBSCRIBE, read PUBLISH, PUBACK; and a QoS 0
//! PUBLISH for the sink. What any MQTT client must do at the least: no keep-alive (0 asks the
//! broker for none), no reconnect, no session.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use mqttbytes_core::primitives::{Error as FrameError, check, write_remaining_length};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::{Ack, Acker, Args, Msg, RawWriter, Result, Source, address, rewrite};

const PUBLISH: u8 = 3;

fn packet(buf: &mut BytesMut, byte1: u8, body: &[u8]) {
    buf.put_u8(byte1);
    write_remaining_length(buf, body.len()).expect("a body MQTT can frame");
    buf.put_slice(body);
}

fn string(body: &mut Vec<u8>, s: &[u8]) {
    body.extend_from_slice(&(s.len() as u16).to_be_bytes());
    body.extend_from_slice(s);
}

/// Appends one QoS 0 PUBLISH to what the sink will write.
pub fn encode_publish(buf: &mut BytesMut, topic: &str, payload: &[u8]) {
    buf.put_u8(0x30);
    write_remaining_length(buf, 2 + topic.len() + payload.len()).expect("a packet MQTT can frame");
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic.as_bytes());
    buf.put_slice(payload);
}

pub fn encode_puback(buf: &mut BytesMut, pkid: u16) {
    buf.put_slice(&[0x40, 0x02]);
    buf.put_u16(pkid);
}

/// The next whole packet in `buf`, reading more as needed: its first byte and its body.
async fn next_packet<R: AsyncReadExt + Unpin>(
    socket: &mut R,
    buf: &mut BytesMut,
) -> Result<(u8, Bytes)> {
    loop {
        match check(buf.iter()) {
            Ok(header) => {
                let mut frame = buf.split_to(header.frame_length()).freeze();
                frame.advance(1 + header.remaining_len_len);
                return Ok((header.byte1, frame));
            }
            Err(FrameError::InsufficientBytes(_)) => {
                if socket.read_buf(buf).await? == 0 {
                    return Err("the MQTT broker closed the connection".into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// CONNECT (3.1.1, clean session, no keep-alive) and its CONNACK.
async fn connect(url: &str, id: &str, buf: &mut BytesMut) -> Result<TcpStream> {
    let mut socket = TcpStream::connect(address(url)?).await?;
    socket.set_nodelay(true)?;
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 0]);
    string(&mut body, id.as_bytes());
    let mut out = BytesMut::new();
    packet(&mut out, 0x10, &body);
    socket.write_all(&out).await?;
    let (byte1, body) = next_packet(&mut socket, buf).await?;
    if byte1 >> 4 != 2 || body.get(1) != Some(&0) {
        return Err(format!("the broker refused the connection: {byte1:#x} {body:?}").into());
    }
    Ok(socket)
}

pub async fn sink(args: &Args) -> Result<RawWriter> {
    let mut buf = BytesMut::new();
    let socket = connect(
        &args.to,
        &format!("spike-raw-out-{}", std::process::id()),
        &mut buf,
    )
    .await?;
    Ok(RawWriter {
        socket,
        buf: BytesMut::with_capacity(64 * 1024),
    })
}

/// Subscribed once the SUBACK arrived.
pub async fn source(args: &Args) -> Result<Source> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut socket = connect(
        &args.from,
        &format!("spike-raw-in-{}", std::process::id()),
        &mut buf,
    )
    .await?;
    let mut body = vec![0, 1];
    string(&mut body, args.filter.as_bytes());
    body.push(args.qos);
    let mut out = BytesMut::new();
    packet(&mut out, 0x82, &body);
    socket.write_all(&out).await?;
    loop {
        let (byte1, body) = next_packet(&mut socket, &mut buf).await?;
        if byte1 >> 4 == 9 {
            if body.last() == Some(&0x80) {
                return Err("the broker refused the subscription".into());
            }
            break;
        }
    }
    let (reader, writer) = socket.into_split();
    let state = (reader, buf, args.prefix.clone());
    let messages =
        futures_util::stream::unfold(state, |(mut reader, mut buf, prefix)| async move {
            let next = next_publish(&mut reader, &mut buf, &prefix).await;
            Some((next, (reader, buf, prefix)))
        });
    Ok(Source {
        messages: Box::pin(messages),
        acker: Acker::Raw(writer),
        _client: None,
    })
}

async fn next_publish(reader: &mut OwnedReadHalf, buf: &mut BytesMut, prefix: &str) -> Result<Msg> {
    loop {
        let (byte1, mut body) = next_packet(reader, buf).await?;
        if byte1 >> 4 != PUBLISH {
            continue;
        }
        if body.len() < 2 {
            return Err("a PUBLISH too short for its topic".into());
        }
        let topic_len = body.get_u16() as usize;
        let qos = (byte1 >> 1) & 3;
        if body.len() < topic_len + if qos > 0 { 2 } else { 0 } {
            return Err("a PUBLISH too short for its topic".into());
        }
        let out = rewrite(prefix, &body[..topic_len]);
        body.advance(topic_len);
        let ack = if qos > 0 {
            Some(Ack::Raw(body.get_u16()))
        } else {
            None
        };
        return Ok(Msg {
            out,
            payload: body,
            ack,
        });
    }
}
