//! What the admin listener shares with the configuration checks and with the connections that
//! serve on it (`sse_server`): the paths it keeps for itself, how it reads a `Host`, and how a
//! token is compared.

use subtle::ConstantTimeEq;

/// Paths the admin listener answers itself; an `sse_server` stream cannot take them (the
/// config parser refuses them, and any path under `/routes/`, which is what keeps the admin
/// listener's router merge from meeting a clash).
pub const OWN_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics", "/routes"];

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]`, `[v6]:port`), or
/// `None` when it is not one. The port, if any, must be digits.
pub fn host_name(host: &str) -> Option<&str> {
    let is_port = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    let name = if host.starts_with('[') {
        // Every index below is of an ASCII byte, so a char boundary.
        let end = host.find(']')?;
        let (name, rest) = host.split_at(end + 1);
        if !(rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        let inner = &name[1..end];
        let v6 = |c: char| c.is_ascii_hexdigit() || c == ':' || c == '.';
        if inner.is_empty() || !inner.chars().all(v6) {
            return None;
        }
        name
    } else {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return None,
            None => host,
        };
        let dns = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
        if name.is_empty() || !name.chars().all(dns) {
            return None;
        }
        name
    };
    Some(name)
}

/// Compares a secret in time that depends only on the lengths, so that timing the answers
/// does not give it away a byte at a time.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_with_or_without_a_port() {
        for (host, name) in [
            ("localhost", Some("localhost")),
            ("localhost:7439", Some("localhost")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("[::1]", Some("[::1]")),
            ("[::1]:7439", Some("[::1]")),
            ("Ferry.Example.com", Some("Ferry.Example.com")),
            ("", None),
            (":80", None),
            ("a:b", None),
            ("[::1", None),
            ("[::1]x", None),
            ("[]", None),
            ("évil.example", None),
            ("user@host", None),
        ] {
            assert_eq!(host_name(host), name, "{host}");
        }
    }

    proptest::proptest! {
        /// A `Host` header is remote text: any string gives a name that is a prefix of it (on
        /// a char boundary), or none, without a panic.
        #[test]
        fn any_host_header_is_judged_without_a_panic(host in "\\PC{0,40}|\\[[0-9a-f:]{0,8}\\]?(:[0-9]{0,6})?") {
            if let Some(name) = host_name(&host) {
                proptest::prop_assert!(host.starts_with(name));
                proptest::prop_assert!(!name.is_empty());
            }
        }
    }
}
