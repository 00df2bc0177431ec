//! A TCP proxy in the test process, between ferry and a broker, that can stop forwarding
//! without closing anything: the "up but silent" connection (a NAT box that forgot the flow, a
//! peer frozen mid-write) that only keep-alives and timeouts can detect.
//!
//! While [`TcpProxy::stall`]ed, no byte moves in either direction on any connection, open or
//! new: open sockets stay open (the kernel still ACKs, so neither end sees an error), and new
//! connections are accepted and held without reaching the broker. [`TcpProxy::resume`] lets
//! everything flow again; [`TcpProxy::sever`] closes every connection it holds, as a middlebox
//! that finally gives up on a flow would.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// State shared by the proxy's tasks.
struct Shared {
    /// True while stalled.
    stalled: watch::Sender<bool>,
    /// Connections accepted so far.
    accepted: AtomicUsize,
    /// Connections currently open (accepted and not yet closed by either side or by `sever`).
    open: AtomicUsize,
    /// Every connection task, so `sever` can close them.
    connections: Mutex<Vec<AbortHandle>>,
}

/// A TCP proxy on a free loopback port forwarding to `127.0.0.1:upstream`. Dropping it stops
/// accepting and closes every connection.
pub struct TcpProxy {
    /// The port clients connect to instead of the broker's.
    pub port: u16,
    upstream: u16,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts listening at once (needs a tokio runtime: call it from an async test).
    pub async fn start(upstream: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy's port");
        let port = listener.local_addr().unwrap().port();
        let (stalled, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            stalled,
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::SeqCst);
                s.open.fetch_add(1, Ordering::SeqCst);
                let task = tokio::spawn(serve(client, upstream, s.clone()));
                let mut connections = s.connections.lock().unwrap();
                connections.retain(|c| !c.is_finished());
                connections.push(task.abort_handle());
            }
        });
        eprintln!("[harness] TCP proxy 127.0.0.1:{port} -> 127.0.0.1:{upstream}");
        TcpProxy {
            port,
            upstream,
            shared,
            acceptor,
        }
    }

    /// `mqtt://127.0.0.1:PORT`
    pub fn mqtt_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `nats://127.0.0.1:PORT`
    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops forwarding in both directions on every connection, open or new, without closing
    /// any socket.
    pub fn stall(&self) {
        eprintln!(
            "[harness] TCP proxy :{} -> :{} stalled",
            self.port, self.upstream
        );
        self.shared.stalled.send_replace(true);
    }

    /// Forwards again: what was held moves on, and held new connections reach the broker.
    pub fn resume(&self) {
        eprintln!(
            "[harness] TCP proxy :{} -> :{} resumed",
            self.port, self.upstream
        );
        self.shared.stalled.send_replace(false);
    }

    /// Closes every connection the proxy holds now (both sockets of each); new ones are
    /// accepted as before.
    pub fn sever(&self) {
        let connections = std::mem::take(&mut *self.shared.connections.lock().unwrap());
        eprintln!(
            "[harness] TCP proxy :{} -> :{} closes {} connection(s)",
            self.port,
            self.upstream,
            connections.len()
        );
        for connection in connections {
            connection.abort();
        }
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        for connection in self.shared.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// Counts a connection as closed when its task ends, however it ends (aborted included).
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One proxied connection: held while stalled, then connected upstream, then two pumps until
/// either side closes.
async fn serve(client: TcpStream, upstream: u16, shared: Arc<Shared>) {
    let _open = OpenGuard(shared.clone());
    let mut stalled = shared.stalled.subscribe();
    wait_unstalled(&mut stalled).await;
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return; // the broker is down: close the client's socket, as a refused connect would
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, shared.stalled.subscribe());
    let down = pump(server_read, client_write, shared.stalled.subscribe());
    // Either direction ending (EOF or error) ends the connection: a half-closed proxy would
    // keep a socket the broker or ferry already gave up on.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Copies bytes from `from` to `to`, holding each chunk while the proxy is stalled.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut stalled: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        wait_unstalled(&mut stalled).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Read before the stall began: hold it, as a link that stopped mid-flight would.
        wait_unstalled(&mut stalled).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn wait_unstalled(stalled: &mut watch::Receiver<bool>) {
    // The sender lives as long as the proxy; if it is gone, nothing is held any more.
    let _ = stalled.wait_for(|s| !*s).await;
}
