//! Who may ask the admin listener what: the `Host` allow-list (every request) and the bearer
//! token (`/metrics`, `/routes` and the taps).
//!
//! The allow-list is what keeps a web page in the operator's browser out: by DNS rebinding
//! such a page can make its own host name resolve to 127.0.0.1 and reach a loopback listener,
//! but its requests still carry that name in `Host`, which is not on the list.

use std::sync::Arc;

use crate::config::Secret;
use crate::contracts::admin_listener::{host_name, same_secret};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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
}
