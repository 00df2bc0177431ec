//! The rules for MQTT topics and filters. Each check returns what is wrong and what would be
//! right, for configuration errors and dead-letter reasons alike.

use crate::connectors::protocol::Problem;

/// An MQTT topic filter (may contain `+` and `#`).
pub fn filter(filter: &str) -> Result<(), Problem> {
    if filter.is_empty() {
        return Err((
            "an MQTT topic filter cannot be empty".into(),
            "use `#` for every topic".into(),
        ));
    }
    common(filter)?;
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
pub fn topic(topic: &str) -> Result<(), Problem> {
    if topic.is_empty() {
        return Err((
            "an MQTT topic cannot be empty".into(),
            "give the topic a name".into(),
        ));
    }
    common(topic)?;
    if topic.contains(['+', '#']) {
        return Err((
            format!("an MQTT topic to publish to cannot contain `+` or `#`: `{topic}`"),
            "wildcards belong in filters (sources), not in topics (sinks)".into(),
        ));
    }
    Ok(())
}

fn common(name: &str) -> Result<(), Problem> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_rules() {
        for ok in ["#", "a/#", "+", "a/+/b", "$SYS/#", "a//b", "/a", "a.b/$x"] {
            filter(ok).unwrap();
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "#/a"] {
            assert!(filter(bad).is_err(), "{bad}");
        }
        for ok in ["a/b.c", "/", "$SYS/x", &"x".repeat(65_535)] {
            topic(ok).unwrap();
        }
        for bad in [
            "",
            "a/+",
            "a/+/b",
            "a/#",
            "a#b",
            "a\0b",
            &"x".repeat(65_536),
        ] {
            assert!(topic(bad).is_err(), "{bad}");
        }
    }
}
