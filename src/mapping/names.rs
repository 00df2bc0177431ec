//! The rules for MQTT topics and filters and NATS subjects. Each check returns what is wrong
//! and what would be right, for configuration errors and dead-letter reasons alike.

/// A problem with a name: (what is wrong, hint).
pub type Problem = (String, String);

/// An MQTT topic filter (may contain `+` and `#`).
pub fn mqtt_filter(filter: &str) -> Result<(), Problem> {
    if filter.is_empty() {
        return Err((
            "an MQTT topic filter cannot be empty".into(),
            "use `#` for every topic".into(),
        ));
    }
    common_mqtt(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err((
                format!("`#` must be the last level of an MQTT topic filter, alone: `{filter}`"),
                "write it as the whole last level, e.g. `sensors/#`".into(),
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err((
                format!("`+` must stand alone in its level of an MQTT topic filter: `{filter}`"),
                "write it as a whole level, e.g. `sensors/+/temp`".into(),
            ));
        }
    }
    Ok(())
}

/// An MQTT topic to publish to (no wildcards).
pub fn mqtt_topic(topic: &str) -> Result<(), Problem> {
    if topic.is_empty() {
        return Err((
            "an MQTT topic cannot be empty".into(),
            "give the topic a name".into(),
        ));
    }
    common_mqtt(topic)?;
    if topic.contains(['+', '#']) {
        return Err((
            format!("an MQTT topic to publish to cannot contain `+` or `#`: `{topic}`"),
            "wildcards belong in filters (sources), not in topics (sinks)".into(),
        ));
    }
    Ok(())
}

fn common_mqtt(name: &str) -> Result<(), Problem> {
    if name.len() > 65_535 {
        return Err((
            "an MQTT topic is longer than 65535 bytes".into(),
            "shorten it".into(),
        ));
    }
    if name.contains('\0') {
        return Err((
            "an MQTT topic cannot contain a NUL character".into(),
            "remove it".into(),
        ));
    }
    Ok(())
}

/// A NATS subject to subscribe to (may contain `*` and `>`).
pub fn nats_subscription(subject: &str) -> Result<(), Problem> {
    nats(subject, true)
}

/// A NATS subject to publish to (no wildcards).
pub fn nats_subject(subject: &str) -> Result<(), Problem> {
    nats(subject, false)
}

fn nats(subject: &str, wildcards: bool) -> Result<(), Problem> {
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
    let last = subject.split('.').count() - 1;
    for (i, token) in subject.split('.').enumerate() {
        if token.is_empty() {
            return Err((
                format!("NATS subject `{subject}` has an empty token"),
                "remove the leading, trailing or doubled `.`".into(),
            ));
        }
        let wild = token.bytes().any(|b| b == b'*' || b == b'>');
        if wild && !wildcards {
            return Err((
                format!("a NATS subject to publish to cannot contain `*` or `>`: `{subject}`"),
                "wildcards belong in sources, not in sinks".into(),
            ));
        }
        if wild && (token.len() > 1 || (token == ">" && i != last)) {
            return Err((
                format!("NATS wildcard misplaced in `{subject}`"),
                "`*` must be a whole token, and `>` the whole last token, e.g. `iot.*.temp`, `iot.>`".into(),
            ));
        }
    }
    Ok(())
}

/// A header that can travel over NATS (and HTTP): the name printable ASCII without `:`, the
/// value on one line.
pub fn nats_header(name: &str, value: &str) -> Result<(), Problem> {
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

/// A rule a header (name, value) must follow on some protocol.
pub type HeaderRule = fn(&str, &str) -> Result<(), Problem>;

/// An HTTP header name is a token (RFC 9110: letters, digits and ``!#$%&'*+-.^_`|~``); its
/// value has no line breaks and no NUL.
pub fn http_header(name: &str, value: &str) -> Result<(), Problem> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err((
            format!("`{name}` is not a valid HTTP header name"),
            "header names are letters, digits and `-`, e.g. `x-api-key`".into(),
        ));
    }
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        return Err((
            format!("the value of header `{name}` has a line break, which HTTP cannot carry"),
            "keep header values on one line".into(),
        ));
    }
    Ok(())
}

/// An SSE event type is one line of text.
pub fn sse_event(name: &str) -> Result<(), Problem> {
    if name.is_empty() || name.contains(['\r', '\n']) {
        return Err((
            format!("`{name}` cannot be an SSE event type"),
            "an event type is one non-empty line of text".into(),
        ));
    }
    Ok(())
}

/// A MigratoryData subject: `/` then one or more non-empty segments separated by `/`
/// (`/server/status`), no whitespace or control characters.
pub fn migratorydata_subject(subject: &str) -> Result<(), Problem> {
    let hint =
        || "a MigratoryData subject starts with `/`, e.g. `/sensors/kitchen/temp`".to_string();
    let Some(rest) = subject.strip_prefix('/') else {
        return Err((
            format!("`{subject}` is not a MigratoryData subject: it must start with `/`"),
            hint(),
        ));
    };
    if rest.split('/').any(str::is_empty) {
        return Err((
            format!("`{subject}` is not a MigratoryData subject: it has an empty segment"),
            "no `//` and no `/` at the end, e.g. `/sensors/kitchen`".into(),
        ));
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err((
            format!("`{subject}` is not a MigratoryData subject: it contains whitespace"),
            hint(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migratorydata_rules() {
        for ok in ["/a", "/server/status", "/a/b.c/d-e"] {
            migratorydata_subject(ok).unwrap();
        }
        for bad in ["", "/", "a/b", "/a//b", "/a/", "/a b", "/a\nb"] {
            assert!(migratorydata_subject(bad).is_err(), "{bad}");
        }
        assert!(
            migratorydata_subject("a/b")
                .unwrap_err()
                .0
                .contains("start with `/`")
        );
    }

    #[test]
    fn mqtt_rules() {
        for ok in ["#", "a/#", "+", "a/+/b", "$SYS/#", "a//b", "/a", "a.b/$x"] {
            mqtt_filter(ok).unwrap();
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "#/a"] {
            assert!(mqtt_filter(bad).is_err(), "{bad}");
        }
        assert!(mqtt_topic("a/+").is_err());
        mqtt_topic("a/b.c").unwrap();
    }

    #[test]
    fn nats_rules() {
        for ok in ["a", "a.b", "a.*.c", "a.>", ">", "a.b//c", "/./"] {
            nats_subscription(ok).unwrap();
        }
        for bad in ["", "a b", "a..b", ".a", "a.", "a.>.b", "a.b*"] {
            assert!(nats_subscription(bad).is_err(), "{bad}");
        }
        assert!(nats_subject("a.*").is_err());
        assert!(nats_subject("a\tb").unwrap_err().0.contains("whitespace"));
        nats_header("x-site", "plant 1").unwrap();
        for (name, value) in [
            ("a b", "v"),
            ("é", "v"),
            ("a:b", "v"),
            ("", "v"),
            ("k", "a\nb"),
        ] {
            assert!(nats_header(name, value).is_err(), "{name:?}: {value:?}");
        }
    }
}
