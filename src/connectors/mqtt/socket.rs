//! The TCP socket under an MQTT connection: ferry opens it for the client and keeps a second
//! handle on it, so that a clean stop closes it only once the broker has read everything.
//!
//! After sending DISCONNECT, the client crates drop their socket at once. A busy broker may
//! not have read yet what came just before it: the acks of the last messages ferry delivered.
//! Meanwhile it goes on passing messages to the connection. Once ferry's side is closed, it
//! answers with a reset (at once if messages were left unread in it, or to the broker's next
//! write), and a broker that sees the reset, or a write fail, may drop the connection without
//! reading the rest of its buffer: mosquitto does ("closed its connection", or "disconnected:
//! Broken pipe"). Those acks are then lost, and the broker delivers the messages again to the
//! next session although they were delivered: duplicates across a clean stop. So after
//! DISCONNECT ferry half-closes the socket (the broker reads DISCONNECT, then the end of the
//! stream) and keeps reading, discarding what still comes, until the broker closes its side:
//! a broker closes after reading DISCONNECT, so it read everything before it.
//!
//! The second handle is a duplicate of the socket's descriptor, taken when the socket is
//! opened (the crates accept a socket connector) and dropped whenever the connection is lost
//! or torn down, so that such a connection still closes as soon as the client drops it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Between two connection attempts to the addresses a host name resolves to, as the crates'
/// own dialer: each address gets its turn this long after the previous one, and the first
/// that connects wins.
const ATTEMPT_DELAY: Duration = Duration::from_millis(100);

/// Ferry's own handle on the socket of the connection that is up (or being set up). Cheap to
/// clone: the client's socket connector holds one, the event loop another.
#[derive(Clone, Debug, Default)]
pub struct SocketHandle(Arc<Mutex<Option<OwnedFd>>>);

impl SocketHandle {
    /// The socket connector to give the client's options: opens the socket through `dial`
    /// (the crate's dialer for one address, which applies the connection's socket options)
    /// and keeps a handle on it.
    pub fn connector<N, D, Fut>(
        &self,
        dial: D,
    ) -> impl Fn(String, N) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>
    + Send
    + Sync
    + 'static
    where
        N: Clone + Send + Sync + 'static,
        D: Fn(String, N) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = io::Result<TcpStream>> + Send + 'static,
    {
        let socket = self.clone();
        move |host, options| {
            let (socket, dial) = (socket.clone(), dial.clone());
            Box::pin(async move {
                let stream = open(host, |address| dial(address, options.clone())).await?;
                *socket.lock() = Some(stream.as_fd().try_clone_to_owned()?);
                Ok(stream)
            })
        }
    }

    /// The connection is gone (failed, or torn down): its socket closes with the client's
    /// handle.
    pub fn forget(&self) {
        self.lock().take();
    }

    /// Shuts the socket of the connection that is up down both ways, from outside the client:
    /// whatever the client's `poll` waits on (a read, a write to a full socket) fails, and it
    /// cleans up as after any lost connection. `false` when ferry holds no handle on it.
    pub fn shut_down(&self) -> bool {
        let socket = self.lock();
        let Some(handle) = socket.as_ref() else {
            return false;
        };
        // Shutting down acts on the socket, not on the descriptor: a duplicate does, and
        // closing it leaves the socket open to the client.
        handle
            .try_clone()
            .map(std::net::TcpStream::from)
            .and_then(|stream| stream.shutdown(std::net::Shutdown::Both))
            .is_ok()
    }

    /// Call once the client sent DISCONNECT and let go of the socket: half-closes it, then
    /// reads (and drops) what the broker still sends until the broker closes its side, or
    /// `deadline`. `Err` when the deadline came first: the broker may not have read the last
    /// acks.
    pub async fn close_after_broker(&self, deadline: Instant) -> Result<(), String> {
        let Some(handle) = self.lock().take() else {
            return Ok(());
        };
        let stream = std::net::TcpStream::from(handle);
        let waited = tokio::time::timeout_at(deadline, async move {
            stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(stream)?;
            stream.shutdown().await?;
            let mut discard = vec![0; 16 * 1024];
            // Until the end of the stream; an error (a reset) ends it too: the broker is gone.
            while stream.read(&mut discard).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        match waited {
            Ok(_) => Ok(()),
            Err(_) => Err("the broker did not close the connection in time".to_string()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OwnedFd>> {
        self.0.lock().expect("socket handle lock")
    }
}

/// Connects to `host` (`name:port`), trying its addresses as described at
/// [`ATTEMPT_DELAY`], each through `dial`.
async fn open<F, Fut>(host: String, dial: F) -> io::Result<TcpStream>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = io::Result<TcpStream>>,
{
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(host).await?.collect();
    if addresses.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        ));
    }
    let attempts = addresses.into_iter().enumerate().map(|(turn, address)| {
        let attempt = dial(address.to_string());
        let delay = ATTEMPT_DELAY.saturating_mul(u32::try_from(turn).unwrap_or(u32::MAX));
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            attempt.await
        })
    });
    let (stream, _) = futures_util::future::select_ok(attempts).await?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const BOUND: Duration = Duration::from_secs(10);

    /// A socket opened through `socket`'s connector (ferry's end) and the listener's end (the
    /// broker's).
    async fn connected(socket: &SocketHandle) -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connect = socket.connector(|address: String, (): ()| TcpStream::connect(address));
        let (ferry, broker) = tokio::join!(connect(address, ()), listener.accept());
        (ferry.unwrap(), broker.unwrap().0)
    }

    /// The client drops its socket right after its last bytes (DISCONNECT); the broker reads
    /// them only later, and writes meanwhile. Its writes still succeed, it reads everything
    /// and then the end of the stream, and ferry's side closes once the broker closed.
    #[tokio::test]
    async fn the_socket_closes_only_after_the_broker_closed_it() {
        let socket = SocketHandle::default();
        let (mut ferry, mut broker) = connected(&socket).await;
        ferry.write_all(b"acks, DISCONNECT").await.unwrap();
        drop(ferry);
        let broker_side = async {
            for _ in 0..3 {
                broker.write_all(b"a message").await.unwrap();
                broker.flush().await.unwrap();
            }
            let mut got = Vec::new();
            broker.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"acks, DISCONNECT");
            // Still open for the broker's writes until it closes.
            broker.write_all(b"one more").await.unwrap();
            drop(broker);
        };
        let closing = socket.close_after_broker(Instant::now() + BOUND);
        let (closed, ()) =
            tokio::time::timeout(BOUND, async { tokio::join!(closing, broker_side) })
                .await
                .expect("both ends closed");
        assert_eq!(closed, Ok(()));
    }

    /// A connection that is lost or torn down closes with the client's handle: ferry keeps
    /// no socket open.
    #[tokio::test]
    async fn a_forgotten_socket_closes_with_the_client() {
        let socket = SocketHandle::default();
        let (ferry, mut broker) = connected(&socket).await;
        socket.forget();
        drop(ferry);
        let mut got = Vec::new();
        let read = tokio::time::timeout(BOUND, broker.read_to_end(&mut got)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "the broker sees the end: {read:?}"
        );
        assert_eq!(
            socket.close_after_broker(Instant::now() + BOUND).await,
            Ok(())
        );
    }

    /// A broker that never closes holds the close up only until the deadline.
    #[tokio::test]
    async fn a_broker_that_never_closes_is_given_up_at_the_deadline() {
        let socket = SocketHandle::default();
        let (ferry, _broker) = connected(&socket).await;
        drop(ferry);
        let closed = socket
            .close_after_broker(Instant::now() + Duration::from_millis(100))
            .await;
        assert!(closed.is_err());
    }
}
