//! A TCP proxy in the test process, between ferry and a broker, that can stop forwarding
//! without closing anything: the "up but silent" connection (a NAT box that forgot the flow, a
//! peer frozen mid-write) that only keep-alives, probes and timeouts can detect.
//!
//! While a connection is stalled, no byte moves on it in either direction, and its sockets stay
//! open (the kernel still acknowledges TCP segments, so neither end sees an error).
//! [`TcpProxy::stall`] stalls every connection, open or new: new ones are accepted and held
//! without reaching the broker. [`TcpProxy::stall_existing`] stalls only the open ones, so a
//! client that gives up on its connection gets through with a new one.
//! [`TcpProxy::resume`] lets everything flow again; [`TcpProxy::sever`] closes every
//! connection the proxy holds, as a middlebox that finally gives up on a flow would.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// One proxied connection, as the proxy controls it.
struct Connection {
    /// Closes both of its sockets (aborts its task).
    task: AbortHandle,
    /// True while it is stalled.
    stalled: watch::Sender<bool>,
}

/// State shared by the proxy's tasks.
struct Shared {
    /// New connections start stalled (held) while this is true.
    stall_new: AtomicBool,
    /// New connections are closed right after the broker's first reply reached the client.
    drop_after_reply: AtomicBool,
    /// Connections accepted so far.
    accepted: AtomicUsize,
    /// Connections currently open (accepted and not yet closed by either side or by `sever`).
    open: AtomicUsize,
    connections: Mutex<Vec<Connection>>,
}

impl Shared {
    fn set_stalled(&self, stalled: bool) {
        let mut connections = self.connections.lock().unwrap();
        connections.retain(|c| !c.task.is_finished());
        for connection in connections.iter() {
            connection.stalled.send_replace(stalled);
        }
    }
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
        TcpProxy::start_in_runtime(upstream)
    }

    /// [`Self::start`] from synchronous code that runs inside a tokio runtime, as a
    /// [`Scenario`](super::Scenario) starting its brokers does.
    pub fn start_in_runtime(upstream: u16) -> TcpProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy's port");
        listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(listener).expect("a tokio runtime");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            stall_new: AtomicBool::new(false),
            drop_after_reply: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::SeqCst);
                s.open.fetch_add(1, Ordering::SeqCst);
                let (stalled, held) = watch::channel(s.stall_new.load(Ordering::SeqCst));
                let once = s.drop_after_reply.load(Ordering::SeqCst);
                let guard = OpenGuard(s.clone());
                let task = tokio::spawn(serve(client, upstream, held, once, guard));
                let mut connections = s.connections.lock().unwrap();
                connections.retain(|c| !c.task.is_finished());
                connections.push(Connection {
                    task: task.abort_handle(),
                    stalled,
                });
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
    /// any socket: new connections are accepted and held.
    pub fn stall(&self) {
        self.log("stalled");
        self.shared.stall_new.store(true, Ordering::SeqCst);
        self.shared.set_stalled(true);
    }

    /// Stops forwarding on the connections open now, without closing them; new connections
    /// are forwarded as usual.
    pub fn stall_existing(&self) {
        self.log("stalled its open connections");
        self.shared.set_stalled(true);
    }

    /// Forwards again: what was held moves on, and held new connections reach the broker.
    pub fn resume(&self) {
        self.log("resumed");
        self.shared.stall_new.store(false, Ordering::SeqCst);
        self.shared.set_stalled(false);
    }

    /// Closes every connection the proxy holds now (both sockets of each); new ones are
    /// accepted as before.
    pub fn sever(&self) {
        let connections = std::mem::take(&mut *self.shared.connections.lock().unwrap());
        self.log(&format!("closes {} connection(s)", connections.len()));
        for connection in connections {
            connection.task.abort();
        }
    }

    /// From now on, closes each new connection as soon as the broker's first reply (an MQTT
    /// CONNACK, a NATS INFO) reached the client: a broker that accepts and drops at once.
    pub fn drop_after_first_reply(&self) {
        self.log("drops new connections after the first reply");
        self.shared.drop_after_reply.store(true, Ordering::SeqCst);
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    fn log(&self, what: &str) {
        eprintln!(
            "[harness] TCP proxy :{} -> :{} {what}",
            self.port, self.upstream
        );
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        for connection in self.shared.connections.lock().unwrap().drain(..) {
            connection.task.abort();
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
async fn serve(
    client: TcpStream,
    upstream: u16,
    mut stalled: watch::Receiver<bool>,
    drop_after_reply: bool,
    _open: OpenGuard,
) {
    wait_unstalled(&mut stalled).await;
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return; // the broker is down: close the client's socket, as a refused connect would
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, stalled.clone(), false);
    let down = pump(server_read, client_write, stalled, drop_after_reply);
    // Either direction ending (EOF or error) ends the connection: a half-closed proxy would
    // keep a socket the broker or ferry already gave up on.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Copies bytes from `from` to `to`, holding each chunk while the connection is stalled;
/// `once`: only the first chunk.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
    once: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        wait_unstalled(&mut stalled).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Read before the stall began: hold it, as a link that stopped mid-flight would.
        wait_unstalled(&mut stalled).await;
        if to.write_all(&buf[..n]).await.is_err() || once {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn wait_unstalled(stalled: &mut watch::Receiver<bool>) {
    // The sender lives as long as the connection's entry; once `sever` or the proxy's drop
    // removed it, the task is being aborted anyway.
    let _ = stalled.wait_for(|s| !*s).await;
}
