//! The rules for NATS subjects and headers. Each check returns what is wrong and what would be
//! right, for configuration errors and dead-letter reasons alike.

use crate::connectors::protocol::Problem;

/// A NATS subject to subscribe to (may contain `*` and `>`).
pub fn subscription(subject: &str) -> Result<(), Problem> {
    check(subject, true)
}

/// A NATS subject to publish to (no wildcards).
pub fn subject(subject: &str) -> Result<(), Problem> {
    check(subject, false)
}

fn check(subject: &str, wildcards: bool) -> Result<(), Problem> {
    if subject.is_empty() {
        return Err((
            "a NATS subject cannot be empty".into(),
            "give it a name, e.g. `iot.>`".into(),
        ));
    }
    // Bytes first: this runs for every message published to NATS.
    let whitespace = match subject.is_ascii() {
        true => subject.bytes().any(|b| matches!(b, b' ' | b'\t'..=b'\r')),
        false => subject.chars().any(char::is_whitespace),
    };
    if whitespace {
        return Err((
            format!("NATS subject `{subject}` contains whitespace"),
            "NATS subjects cannot hold spaces or tabs; use `_` or `-`, or split into tokens with `.`".into(),
        ));
    }
    // One pass over the bytes (`.`, `*` and `>` are ASCII), not a search per token.
    let mut tokens = subject.as_bytes().split(|&b| b == b'.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err((
                format!("NATS subject `{subject}` has an empty token"),
                "remove the leading, trailing or doubled `.`".into(),
            ));
        }
        let wild = token.iter().any(|&b| b == b'*' || b == b'>');
        if wild && !wildcards {
            return Err((
                format!("a NATS subject to publish to cannot contain `*` or `>`: `{subject}`"),
                "wildcards belong in sources, not in sinks".into(),
            ));
        }
        if wild && (token.len() > 1 || (token == b">" && tokens.peek().is_some())) {
            return Err((
                format!("NATS wildcard misplaced in `{subject}`"),
                "`*` must be a whole token, and `>` the whole last token, e.g. `iot.*.temp`, `iot.>`".into(),
            ));
        }
    }
    Ok(())
}

/// A KV key to put to: a subject NATS can publish to, made of letters, digits and `-/_=.`
/// only (as nats-server and the NATS clients take keys).
pub fn kv_key(key: &str) -> Result<(), Problem> {
    subject(key)?;
    kv_tokens(key, "key")
}

/// The keys a KV source watches: a subscription whose tokens are wildcards or KV key text.
pub fn kv_keys(pattern: &str) -> Result<(), Problem> {
    subscription(pattern)?;
    kv_tokens(pattern, "key pattern")
}

fn kv_tokens(key: &str, what: &str) -> Result<(), Problem> {
    let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=');
    let wild = |token: &str| token == "*" || token == ">";
    if key
        .split('.')
        .all(|token| wild(token) || token.bytes().all(valid))
    {
        return Ok(());
    }
    Err((
        format!("`{key}` is not a KV {what}"),
        "KV keys hold letters, digits, `-`, `/`, `_`, `=` and `.` only".into(),
    ))
}

/// A KV bucket's name.
pub fn kv_bucket(name: &str) -> Result<(), Problem> {
    let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
    if !name.is_empty() && name.bytes().all(valid) {
        return Ok(());
    }
    Err((
        format!("`{name}` is not a valid KV bucket name"),
        "use letters, digits, `-` and `_`".into(),
    ))
}

/// A header that can travel over NATS (and HTTP): the name printable ASCII without `:`, the
/// value on one line.
pub fn header(name: &str, value: &str) -> Result<(), Problem> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err((
            format!("header name `{name}` cannot travel over NATS"),
            "header names are printable ASCII without spaces or `:`, e.g. `x-site`".into(),
        ));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err((
            format!("the value of header `{name}` has a line break, which NATS cannot carry"),
            "keep header values on one line".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_rules() {
        for ok in ["a", "a.b", "a.*.c", "a.>", ">", "a.b//c", "/./"] {
            subscription(ok).unwrap();
        }
        for bad in ["", "a b", "a..b", ".a", "a.", "a.>.b", "a.b*"] {
            assert!(subscription(bad).is_err(), "{bad}");
        }
        assert!(subject("a.*").is_err());
        assert!(subject("a\tb").unwrap_err().0.contains("whitespace"));
        kv_key("devices.a-1.state/x=2").unwrap();
        kv_keys("devices.*.>").unwrap();
        for bad in ["a b", "a..b", "a.*", "é", "a:b", "a#b", ".a"] {
            assert!(kv_key(bad).is_err(), "{bad}");
        }
        assert!(kv_keys("a.b*").is_err());
        assert!(
            kv_keys("a.b@c.>")
                .unwrap_err()
                .0
                .contains("not a KV key pattern")
        );
        kv_bucket("device_state-1").unwrap();
        assert!(kv_bucket("a.b").is_err() && kv_bucket("").is_err());
        header("x-site", "plant 1").unwrap();
        for (name, value) in [
            ("a b", "v"),
            ("é", "v"),
            ("a:b", "v"),
            ("", "v"),
            ("k", "a\nb"),
        ] {
            assert!(header(name, value).is_err(), "{name:?}: {value:?}");
        }
    }
}
