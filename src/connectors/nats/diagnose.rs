//! What an operator needs to read when a NATS connection fails or comes up.
//!
//! async-nats reports a failed connection attempt by its kind only (`nats: IO error`, `nats:
//! DNS error`, `nats: timed out`): the cause and the address are lost on the way to the event
//! callback. So when the client says it could not connect, ferry tries the same addresses
//! itself, a plain TCP connect to each configured server, and reports what that finds:
//! "connection refused at 127.0.0.1:4222", "cannot resolve nats.example: …", "no answer from
//! 10.0.0.7:4222 within 5s". When TCP connects fine the failure is past it (TLS, WebSocket
//! upgrade, the NATS handshake), and the client's own words stay.

use std::time::Duration;

use async_nats::ServerAddr;

/// The longest ferry waits for its own diagnostic connect to one address.
const PROBE_LIMIT: Duration = Duration::from_secs(3);

/// `scheme://host:port` of a server, without the credentials a URL may carry.
pub(super) fn display(server: &ServerAddr) -> String {
    let host = server.host();
    if host.contains(':') {
        format!("{}://[{host}]:{}", server.scheme(), server.port())
    } else {
        format!("{}://{host}:{}", server.scheme(), server.port())
    }
}

/// Why the client could not connect, in words naming each server and what stopped it.
/// `client_error` is the client's own text, kept when ferry's connect finds nothing wrong.
/// `tls_required`: the connection insists on TLS, so past TCP the likely failure is a server
/// (or something in between) that does not speak it, and the reason says so.
pub(super) async fn connect_failure(
    servers: &[ServerAddr],
    client_error: &str,
    connect_timeout: Duration,
    tls_required: bool,
) -> String {
    let limit = connect_timeout.min(PROBE_LIMIT);
    let mut reasons = Vec::with_capacity(servers.len());
    for server in servers {
        reasons.push(match tcp_problem(server, limit).await {
            Some(problem) => problem,
            None if tls_required => format!(
                "{}: {client_error} (TCP connects: the failure is in the TLS handshake, which this \
                 connection requires (a server offering plaintext is refused; check also its \
                 certificate against `tls.ca`), or in the NATS handshake)",
                display(server)
            ),
            None => format!(
                "{}: {client_error} (TCP connects: the failure is in TLS, the WebSocket upgrade \
                 or the NATS handshake)",
                display(server)
            ),
        });
    }
    if reasons.is_empty() {
        client_error.to_string()
    } else {
        reasons.join("; ")
    }
}

/// What stops a TCP connection to `server`, or `None` when one opens.
async fn tcp_problem(server: &ServerAddr, limit: Duration) -> Option<String> {
    let host = server.host();
    let port = server.port();
    let addresses = match tokio::time::timeout(limit, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addresses)) => addresses.collect::<Vec<_>>(),
        Ok(Err(e)) => return Some(format!("cannot resolve {host}: {e}")),
        Err(_) => return Some(format!("cannot resolve {host} within {limit:?}")),
    };
    if addresses.is_empty() {
        return Some(format!("cannot resolve {host}: no addresses"));
    }
    let mut problems = Vec::new();
    for address in addresses {
        match tokio::time::timeout(limit, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => return None,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                problems.push(format!("connection refused at {address}"));
            }
            Ok(Err(e)) => problems.push(format!("cannot connect to {address}: {e}")),
            Err(_) => problems.push(format!("no answer from {address} within {limit:?}")),
        }
    }
    Some(problems.join(", "))
}

/// The server a connection that just came up uses, as the log and `/readyz` name it: the
/// configured URL (a WebSocket connection's is not the client port the server's INFO names),
/// found among several by the pool's per-server state, or the INFO's address when that is
/// ambiguous.
pub(super) async fn connected_to(client: &async_nats::Client, servers: &[ServerAddr]) -> String {
    let info = client.server_info();
    let named = |address: String| {
        if info.server_name.is_empty() {
            address
        } else {
            format!("{address} ({})", info.server_name)
        }
    };
    if let [only] = servers {
        return named(display(only));
    }
    let pool = tokio::time::timeout(Duration::from_secs(1), client.server_pool()).await;
    if let Ok(Ok(pool)) = pool {
        let mut up = pool
            .iter()
            .filter(|s| s.did_connect && s.failed_attempts == 0 && s.last_error.is_none());
        if let (Some(server), None) = (up.next(), up.next()) {
            return named(display(&server.addr));
        }
    }
    named(format!("{}:{}", info.host, info.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connect_names_the_address() {
        // A port nothing listens on: bind one, note it, close it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let server: ServerAddr = format!("nats://127.0.0.1:{port}").parse().unwrap();
        let text =
            connect_failure(&[server], "nats: IO error", Duration::from_secs(1), false).await;
        assert_eq!(text, format!("connection refused at 127.0.0.1:{port}"));
    }

    #[tokio::test]
    async fn a_listening_server_keeps_the_clients_words() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server: ServerAddr = format!("ws://u:secret@127.0.0.1:{port}").parse().unwrap();
        let text =
            connect_failure(&[server], "nats: IO error", Duration::from_secs(1), false).await;
        assert!(
            text.starts_with(&format!("ws://127.0.0.1:{port}: nats: IO error")),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn display_drops_credentials() {
        let server: ServerAddr = "nats://user:pw@[::1]:4222".parse().unwrap();
        assert_eq!(display(&server), "nats://[::1]:4222");
        let server: ServerAddr = "wss://example.org/nats".parse().unwrap();
        assert_eq!(display(&server), "wss://example.org:443");
    }
}
