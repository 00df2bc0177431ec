//! MQTT topic names and topic filters: the pure rules (MQTT 3.1.1 §4.7, MQTT 5 §4.7-4.8).

/// The longest string MQTT can encode: its length prefix is two bytes.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why `filter` (without any `$share/GROUP/` prefix) cannot be subscribed to, or `None`.
pub fn filter_error(filter: &str) -> Option<&'static str> {
    if filter.is_empty() {
        return Some("the filter is empty");
    }
    if filter.len() > MAX_TOPIC_LEN {
        return Some("the filter is longer than 65,535 bytes");
    }
    if filter.contains('\0') {
        return Some("the filter contains a NUL character");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Some("`#` must be a whole level and the last one (as in `a/b/#`)");
        }
        if level.contains('+') && level != "+" {
            return Some("`+` must be a whole level (as in `a/+/c`)");
        }
    }
    None
}

/// Why `group` cannot name a shared subscription group (`$share/GROUP/...`), or `None`.
pub fn share_group_error(group: &str) -> Option<&'static str> {
    if group.is_empty() {
        Some("the share group is empty")
    } else if group.contains(['/', '+', '#']) {
        Some("the share group contains `/`, `+` or `#`")
    } else {
        None
    }
}

/// The filter a subscription applies to topic names: `$share/GROUP/a/+` applies `a/+`.
/// Incoming messages carry the real topic, so routes match them against this.
pub fn strip_share(subscription: &str) -> &str {
    subscription
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(subscription, |(_group, filter)| filter)
}

/// Whether `topic` matches `filter` (`+` one level, `#` this level and everything below).
///
/// A topic starting with `$` (such as `$SYS/...`) does not match a filter whose first level
/// is a wildcard [MQTT-4.7.2-1]: `#` does not match `$SYS/uptime`, `$SYS/#` does.
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            // Also matches the parent level: `a/#` matches `a`.
            return true;
        }
        match topic_levels.next() {
            Some(level) if f == "+" || f == level => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_single_level_wildcards() {
        assert!(matches("a/b/c", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("a/b/c", "a/+/c"));
        assert!(matches("a/b/c", "+/+/+"));
        assert!(!matches("a/b/c", "+/+"));
        assert!(!matches("a/b/c/d", "a/+/c"));
        // `+` matches an empty level.
        assert!(matches("a//c", "a/+/c"));
        assert!(matches("a/", "a/+"));
        assert!(matches("/a", "+/a"));
        assert!(!matches("/a", "+"));
        // Levels are case-sensitive.
        assert!(!matches("A/b", "a/b"));
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_children() {
        assert!(matches("a", "a/#"));
        assert!(matches("a/b", "a/#"));
        assert!(matches("a/b/c/d", "a/#"));
        assert!(matches("a/b/c", "a/+/#"));
        assert!(matches("a/b", "a/+/#"));
        assert!(!matches("b/c", "a/#"));
        assert!(!matches("ab", "a/#"));
        assert!(matches("anything/at/all", "#"));
        assert!(matches("/", "#"));
    }

    #[test]
    fn dollar_topics_need_an_explicit_first_level() {
        assert!(!matches("$SYS/broker/uptime", "#"));
        assert!(!matches("$SYS/broker/uptime", "+/broker/uptime"));
        assert!(!matches("$SYS/broker", "+/#"));
        assert!(matches("$SYS/broker/uptime", "$SYS/#"));
        assert!(matches("$SYS/broker/uptime", "$SYS/+/uptime"));
        assert!(matches("$share-like/x", "$share-like/x"));
    }

    #[test]
    fn shared_subscription_prefix_is_stripped() {
        assert_eq!(
            strip_share("$share/workers/sensors/+/temp"),
            "sensors/+/temp"
        );
        assert_eq!(strip_share("$share/g/#"), "#");
        assert_eq!(strip_share("sensors/#"), "sensors/#");
        // Not a shared subscription: left alone.
        assert_eq!(strip_share("$SYS/#"), "$SYS/#");
        assert_eq!(strip_share("$share/only-group"), "$share/only-group");
        assert_eq!(strip_share("a/$share/g/b"), "a/$share/g/b");
        // The topic is matched against the stripped filter.
        assert!(matches(
            "sensors/kitchen/temp",
            strip_share("$share/g/sensors/+/temp")
        ));
    }

    #[test]
    fn share_groups_are_validated() {
        assert!(share_group_error("workers").is_none());
        assert!(share_group_error("").is_some());
        assert!(share_group_error("a/b").is_some());
        assert!(share_group_error("a+b").is_some());
        assert!(share_group_error("#").is_some());
    }

    #[test]
    fn filters_are_validated() {
        for ok in ["a/b", "#", "+", "a/#", "a/+/c", "+/+/#", "/", "$SYS/#"] {
            assert!(filter_error(ok).is_none(), "{ok}");
        }
        for bad in ["", "a/#/c", "a#", "a/b#", "a+/b", "a/+b", "##", "a/\0"] {
            assert!(filter_error(bad).is_some(), "{bad}");
        }
    }
}
