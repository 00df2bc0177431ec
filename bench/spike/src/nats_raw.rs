//! Core NATS written by hand: `PUB subject len` and `MSG subject sid len` over a tokio
//! TcpStream, what any NATS client must do at the least. No reconnect, no headers. The sink
//! never reads its socket, so it does not answer the server's PINGs (every 2 minutes): enough
//! for a benchmark run, not for a service.

use std::fmt::Write as _;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Acker, Args, Msg, RawWriter, Result, Source, address, rewrite};

/// Appends one `PUB` to what the sink will write.
pub fn encode_pub(buf: &mut BytesMut, subject: &str, payload: &[u8]) {
    buf.reserve(subject.len() + payload.len() + 24);
    buf.put_slice(b"PUB ");
    buf.put_slice(subject.as_bytes());
    let _ = write!(buf, " {}\r\n", payload.len());
    buf.put_slice(payload);
    buf.put_slice(b"\r\n");
}

/// The next `\r\n`-terminated line in `buf`, without its terminator, reading more as needed.
async fn line(socket: &mut TcpStream, buf: &mut BytesMut) -> Result<BytesMut> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf.split_to(end);
            buf.advance(2);
            return Ok(line);
        }
        if socket.read_buf(buf).await? == 0 {
            return Err("the NATS server closed the connection".into());
        }
    }
}

/// INFO, CONNECT, then a PING answered by PONG: connected.
async fn connect(url: &str, buf: &mut BytesMut) -> Result<TcpStream> {
    let mut socket = TcpStream::connect(address(url)?).await?;
    socket.set_nodelay(true)?;
    let info = line(&mut socket, buf).await?;
    if !info.starts_with(b"INFO ") {
        return Err("the NATS server did not start with INFO".into());
    }
    socket
        .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"spike\",\"version\":\"0\",\"protocol\":1}\r\nPING\r\n")
        .await?;
    until_pong(&mut socket, buf).await?;
    Ok(socket)
}

async fn until_pong(socket: &mut TcpStream, buf: &mut BytesMut) -> Result<()> {
    loop {
        let line = line(socket, buf).await?;
        if &line[..] == b"PONG" {
            return Ok(());
        }
        if line.starts_with(b"-ERR") {
            return Err(format!("NATS: {}", String::from_utf8_lossy(&line)).into());
        }
    }
}

pub async fn sink(args: &Args) -> Result<RawWriter> {
    let mut buf = BytesMut::new();
    let socket = connect(&args.to, &mut buf).await?;
    Ok(RawWriter {
        socket,
        buf: BytesMut::with_capacity(64 * 1024),
    })
}

/// Subscribed once the PING after the SUB is answered (the server handles a connection's
/// commands in order).
pub async fn source(args: &Args) -> Result<Source> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut socket = connect(&args.from, &mut buf).await?;
    socket
        .write_all(format!("SUB {} 1\r\nPING\r\n", args.filter).as_bytes())
        .await?;
    until_pong(&mut socket, &mut buf).await?;
    let state = (socket, buf, args.prefix.clone());
    let messages =
        futures_util::stream::unfold(state, |(mut socket, mut buf, prefix)| async move {
            let next = next_msg(&mut socket, &mut buf, &prefix).await;
            Some((next, (socket, buf, prefix)))
        });
    Ok(Source {
        messages: Box::pin(messages),
        acker: Acker::None,
        _client: None,
    })
}

/// The next `MSG subject sid [reply] len\r\npayload\r\n`, answering PINGs on the way.
async fn next_msg(socket: &mut TcpStream, buf: &mut BytesMut, prefix: &str) -> Result<Msg> {
    loop {
        let line = line(socket, buf).await?;
        if line.starts_with(b"MSG ") {
            let words: Vec<&[u8]> = line[4..]
                .split(|&b| b == b' ')
                .filter(|w| !w.is_empty())
                .collect();
            let (Some(subject), Some(len)) = (words.first(), words.last()) else {
                return Err("a MSG line without a subject or length".into());
            };
            let len: usize = std::str::from_utf8(len)?.parse()?;
            let out = rewrite(prefix, subject);
            while buf.len() < len + 2 {
                if socket.read_buf(buf).await? == 0 {
                    return Err("the NATS server closed the connection".into());
                }
            }
            let payload = buf.split_to(len).freeze();
            buf.advance(2);
            return Ok(Msg {
                out,
                payload,
                ack: None,
            });
        } else if &line[..] == b"PING" {
            socket.write_all(b"PONG\r\n").await?;
        } else if line.starts_with(b"-ERR") {
            return Err(format!("NATS: {}", String::from_utf8_lossy(&line)).into());
        }
    }
}
