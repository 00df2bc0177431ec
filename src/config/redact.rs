//! Credentials masked out of URLs before they are shown: in `ferry check`, logs, errors,
//! `/readyz` and Debug output.
//!
//! Text-based rather than through `url::Url`, so that what is not a valid URL (a template, a
//! relative handshake URL, a client error quoting half a URL) is masked too, and what is shown
//! is what the user wrote, minus the secrets.

/// Query parameters whose value is a credential, compared case-insensitively with `-` read as
/// `_`. A key ending in `_token`, `_secret`, `_key` or `_password` counts too (`client_secret`,
/// `x_api_key`).
const SECRET_QUERY_KEYS: &[&str] = &[
    "token",
    "key",
    "apikey",
    "api_key",
    "access_token",
    "password",
    "passwd",
    "pass",
    "pwd",
    "secret",
    "sig",
    "signature",
    "auth",
    "authorization",
];

/// What replaces a masked value.
pub const MASK: &str = "***";

/// Whether a query parameter named `key` carries a credential.
pub fn is_secret_query_key(key: &str) -> bool {
    let key: String = percent_encoding::percent_decode_str(key)
        .decode_utf8_lossy()
        .trim()
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    SECRET_QUERY_KEYS.contains(&key.as_str())
        || ["_token", "_secret", "_key", "_password"]
            .iter()
            .any(|suffix| key.ends_with(suffix))
}

/// `url` as it may be shown: a password in its userinfo, a user alone (`nats://TOKEN@host`
/// carries a token there) and the value of every secret-looking query parameter replaced by
/// `***`. A user with a password stays, so the operator sees who connects.
pub fn redact_url(url: &str) -> String {
    let (head, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let (before_query, query) = match head.find('?') {
        Some(i) => (&head[..i], Some(&head[i + 1..])),
        None => (head, None),
    };
    let mut out = String::with_capacity(url.len());
    match before_query.find("://") {
        Some(at) => {
            let rest = &before_query[at + 3..];
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            out.push_str(&before_query[..at + 3]);
            match authority.rfind('@') {
                Some(i) => {
                    if let Some((user, _)) = authority[..i].split_once(':') {
                        out.push_str(user);
                        out.push(':');
                    }
                    out.push_str(MASK);
                    out.push_str(&authority[i..]);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if is_secret_query_key(key) => {
                    out.push_str(key);
                    out.push('=');
                    out.push_str(MASK);
                }
                _ => out.push_str(pair),
            }
        }
    }
    out.push_str(fragment);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn masks_passwords_tokens_and_secret_query_values() {
        for (url, shown) in [
            ("nats://u:hunter2@h:4222", "nats://u:***@h:4222"),
            ("nats://s3cr3t@h:4222", "nats://***@h:4222"),
            (
                "https://h/p?a=1&apiKey=k3y&b=2",
                "https://h/p?a=1&apiKey=***&b=2",
            ),
            (
                "https://h/?ACCESS_TOKEN=t#frag",
                "https://h/?ACCESS_TOKEN=***#frag",
            ),
            (
                "https://h/?client-secret=x&sig=y",
                "https://h/?client-secret=***&sig=***",
            ),
            (
                "/api/realtime?token={{ payload }}",
                "/api/realtime?token=***",
            ),
            ("https://a:b@h/x?keep=1", "https://a:***@h/x?keep=1"),
            ("mqtt://broker:1883", "mqtt://broker:1883"),
            ("not a url", "not a url"),
            ("https://h/p@q?monkey=1", "https://h/p@q?monkey=1"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    proptest! {
        /// Whatever the text, redaction does not panic, and a secret placed as a password, a
        /// lone user or a secret query value never survives it.
        #[test]
        fn never_panics_and_never_shows_a_placed_secret(
            prefix in "\\PC{0,20}",
            secret in "[a-zA-Z0-9]{12,24}",
            suffix in "\\PC{0,20}",
            form in 0..3usize,
        ) {
            let _ = redact_url(&format!("{prefix}{secret}{suffix}"));
            let url = match form {
                0 => format!("nats://user:{secret}@host:4222"),
                1 => format!("nats://{secret}@host:4222"),
                _ => format!("https://host/p?x=1&api_key={secret}&y=2"),
            };
            prop_assert!(!redact_url(&url).contains(&secret));
        }

        /// Arbitrary Unicode anywhere: no panic, and no text outside the credentials is lost.
        #[test]
        fn arbitrary_unicode(text in "\\PC{0,64}") {
            let shown = redact_url(&text);
            if !text.contains(['@', '?']) {
                prop_assert_eq!(shown, text);
            }
        }
    }
}
