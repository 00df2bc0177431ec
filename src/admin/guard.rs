//! Who may ask the admin listener what: the `Host` allow-list (every request) and the bearer
//! token (`/metrics`, `/routes` and the taps).
//!
//! The allow-list is what keeps a web page in the operator's browser out: by DNS rebinding
//! such a page can make its own host name resolve to 127.0.0.1 and reach a loopback listener,
//! but its requests still carry that name in `Host`, which is not on the list.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::config::Secret;

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

/// What the admin listener checks on the way in.
pub(super) struct Guard {
    /// Lower-case host names; empty: any.
    allowed_hosts: Vec<String>,
    token: Option<Secret>,
}

impl Guard {
    pub(super) fn new(allowed_hosts: Vec<String>, token: Option<Secret>) -> Arc<Guard> {
        Arc::new(Guard {
            allowed_hosts,
            token,
        })
    }

    /// True when the request's `Host` is allowed (any is, without a list).
    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        if self.allowed_hosts.is_empty() {
            return true;
        }
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        host_name(host).is_some_and(|name| {
            self.allowed_hosts
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(name))
        })
    }

    /// True when the request carries the token as `Authorization: Bearer TOKEN` (or there is
    /// no token to ask for).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|given| same_secret(given, token.expose().as_bytes()))
    }
}

/// Compares a secret in time that depends only on the lengths, so that timing the answers
/// does not give it away a byte at a time.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

/// Every request: 421 when its `Host` is not on the allow-list. The name is not echoed.
pub(super) async fn check_host(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    if !guard.host_allowed(request.headers()) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "this ferry does not answer for that host name (admin.allowed_hosts)\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// `/metrics`, `/routes` and the taps: 401 without the right bearer token.
pub(super) async fn require_token(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    if !guard.authorized(request.headers()) {
        return (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, "Bearer"),
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            ],
            "this needs the admin token: `Authorization: Bearer TOKEN` (admin.token)\n",
        )
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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

    #[test]
    fn the_allow_list_takes_listed_names_on_any_port_only() {
        let guard = Guard::new(vec!["localhost".into(), "[::1]".into()], None);
        let with = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            guard.host_allowed(&headers)
        };
        assert!(with("localhost:7439") && with("LOCALHOST") && with("[::1]:1"));
        assert!(!with("attacker.example") && !with("localhost.attacker.example:7439"));
        assert!(!guard.host_allowed(&HeaderMap::new()), "no Host at all");
        assert!(Guard::new(Vec::new(), None).host_allowed(&HeaderMap::new()));
    }

    #[test]
    fn the_token_must_match_exactly() {
        let guard = Guard::new(Vec::new(), Some(Secret::new("s3cret")));
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            guard.authorized(&headers)
        };
        assert!(with("Bearer s3cret"));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret ",
            "bearer s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert!(!with(wrong), "{wrong}");
        }
        assert!(!guard.authorized(&HeaderMap::new()));
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
