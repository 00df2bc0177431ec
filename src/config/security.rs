//! What a configuration exposes on the network: credentials sent in plaintext, and TLS that
//! does not verify the server. Both are allowed (a broker on a private network, a test
//! server), but said: in the log when the connection opens, and by `ferry check`.

use super::model::*;
use crate::connectors::protocol::{Credentials, Described};

/// Why `connection` sends a password, token or key where anyone on the path can read it: over
/// plaintext (`nats://`, `mqtt://`, `http://`, `ws://`) to a host that is not this machine.
/// `None` when it does not. What it sends, and where, is its protocol's to say.
pub fn plaintext_credentials(connection: &Connection) -> Option<String> {
    let kind = &connection.kind;
    let Credentials { what, urls } = kind.protocol().descriptor().credentials(kind)?;
    let exposed: Vec<String> = urls
        .into_iter()
        .filter(|u| is_plaintext_to_another_host(u))
        .map(super::redact_url)
        .collect();
    (!exposed.is_empty()).then(|| {
        format!(
            "sends {what} unencrypted to {}: anyone on the network path can read it; use TLS \
             (tls://, mqtts://, https://, wss://, or a `tls:` block on NATS)",
            exposed.join(", ")
        )
    })
}

/// Whether `connection` has certificate verification turned off (`insecure_skip_verify`).
pub fn verification_off(connection: &Connection) -> bool {
    let kind = &connection.kind;
    kind.protocol()
        .descriptor()
        .tls(kind)
        .is_some_and(|tls| tls.insecure_skip_verify)
}

/// Whether `url` is plaintext to a host other than this machine.
fn is_plaintext_to_another_host(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    if !matches!(u.scheme(), "nats" | "mqtt" | "tcp" | "http" | "ws") {
        return false;
    }
    match u.host() {
        Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
        // A non-special scheme (nats://, mqtt://) leaves an IP address unparsed, as a name.
        Some(url::Host::Domain(d)) => match d
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            Ok(ip) => !ip.is_loopback(),
            Err(_) => {
                let d = d.to_ascii_lowercase();
                !(d == "localhost" || d.ends_with(".localhost"))
            }
        },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Lookup, parse};

    /// A whole configuration's Debug output (what a `{:?}` in a log line would print) shows
    /// none of its secrets, wherever they were written.
    #[test]
    fn debug_output_shows_no_secret() {
        let yaml = r#"
connections:
  n1: { nats: { url: ["nats://ferry:NatsPw1@n1:4222", "nats://ferry:NatsPw1@n2:4222"] } }
  n2: { nats: { url: "tls://NatsTok2@n3:4222", tls: {} } }
  m1: { mqtt: { url: "wss://u:MqttPw3@b:443/mqtt?token=WsTok4", client_id: c } }
  h1: { http: { url: "https://u:HttpPw5@h/x?api_key=HttpKey6", headers: { X-Api-Key: "${KEY}" } } }
  s1:
    sse:
      url: "https://h/s?sig=SseSig8"
      headers: { Cookie: Cookie9 }
      handshake: { on: hello, url: "/sub?access_token=HsTok10", headers: { Authorization: HsAuth11 } }
  md: { migratorydata: { servers: ["http://md:8800"], token: MdTok12 } }
routes:
  - name: r
    from: { connection: n1, subject: a }
    to:
      - { connection: n2, subject: b }
      - { connection: m1, topic: c }
      - { connection: h1 }
      - { connection: md, subject: /d }
  - name: s
    from: { connection: s1 }
    to: { connection: n1, subject: e }
"#;
        let lookup = Lookup {
            var: &|name| (name == "KEY").then(|| "EnvKey7".to_string()),
            file: &|_| Err(std::io::Error::other("no files here")),
        };
        let config = parse(yaml, "bridges.yaml", &lookup).unwrap();
        let shown = format!("{config:?}");
        for secret in [
            "NatsPw1", "NatsTok2", "MqttPw3", "WsTok4", "HttpPw5", "HttpKey6", "EnvKey7",
            "SseSig8", "Cookie9", "HsTok10", "HsAuth11", "MdTok12",
        ] {
            assert!(!shown.contains(secret), "Debug shows `{secret}`:\n{shown}");
        }
        // The credentials are still there to be sent.
        let ConnectionKind::Nats(n1) = &config.connections["n1"].kind else {
            panic!("n1 is NATS")
        };
        assert_eq!(n1.password.as_ref().map(Secret::expose), Some("NatsPw1"));
        assert_eq!(n1.urls, ["nats://n1:4222", "nats://n2:4222"]);
        let ConnectionKind::Nats(n2) = &config.connections["n2"].kind else {
            panic!("n2 is NATS")
        };
        assert_eq!(n2.token.as_ref().map(Secret::expose), Some("NatsTok2"));
    }

    #[test]
    fn nats_urls_with_different_credentials_are_refused() {
        let yaml = r#"
connections:
  n: { nats: { url: ["nats://a:PwOne77@n1:4222", "nats://a:PwTwo88@n2:4222"] } }
routes:
  - { name: r, from: { connection: n, subject: a }, to: { connection: n, subject: b } }
"#;
        let e = parse(yaml, "bridges.yaml", &Lookup::system())
            .unwrap_err()
            .to_string();
        assert!(e.contains("different credentials"), "{e}");
        assert!(!e.contains("PwOne77") && !e.contains("PwTwo88"), "{e}");
    }

    #[test]
    fn plaintext_only_off_this_machine() {
        assert!(is_plaintext_to_another_host("nats://nats.example.com:4222"));
        assert!(is_plaintext_to_another_host("http://10.0.0.7/x"));
        assert!(is_plaintext_to_another_host("ws://broker:9001/mqtt"));
        assert!(!is_plaintext_to_another_host("nats://127.0.0.1:4222"));
        assert!(!is_plaintext_to_another_host("http://localhost:8080"));
        assert!(!is_plaintext_to_another_host("http://[::1]:8080"));
        assert!(!is_plaintext_to_another_host("tls://nats.example.com:4222"));
        assert!(!is_plaintext_to_another_host("https://db.example.com"));
    }
}
