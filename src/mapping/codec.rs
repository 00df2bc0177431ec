//! MQTT topics ⇄ NATS subjects, by nats-server's own rules, so a topic that crosses ferry and
//! one that crosses nats-server's MQTT gateway get the same name.
//!
//! MQTT → NATS (nats-server 2.11+):
//! - the level separator `/` becomes the token separator `.`;
//! - an empty level (leading, trailing or between two `/`) becomes the token `/`;
//!   `/a` → `/.a`, `a/` → `a./`, `a//b` → `a./.b`;
//! - a `.` inside a level becomes `//`: `a/b.c` → `a.b//c`;
//! - in filters, `+` becomes `*` and `#` becomes `>`.
//!
//! NATS → MQTT is the exact inverse, so every topic survives MQTT → NATS → MQTT byte for byte.

/// Converts an MQTT topic (or, with wildcards, a filter) to a NATS subject.
pub fn topic_to_subject(topic: &str) -> String {
    let bytes = topic.as_bytes();
    let mut out = String::with_capacity(topic.len() + 4);
    for (i, c) in topic.char_indices() {
        match c {
            '/' => {
                if i == 0 || out.ends_with('.') {
                    // This level is empty: it becomes the token `/`.
                    out.push_str("/.");
                } else if i == bytes.len() - 1 || bytes[i + 1] == b'/' {
                    // The next level is empty.
                    out.push_str("./");
                } else {
                    out.push('.');
                }
            }
            '.' => out.push_str("//"),
            '+' => out.push('*'),
            '#' => out.push('>'),
            c => out.push(c),
        }
    }
    if out.ends_with('.') {
        // `/` alone, or a topic ending in an empty level reached through `/.`.
        out.push('/');
    }
    out
}

/// Converts a NATS subject back to the MQTT topic (or filter) it stands for.
pub fn subject_to_topic(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    let mut chars = subject.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' => match chars.peek() {
                // `/.` opens an empty level; `//` is a `.` inside a level.
                Some('.') => {
                    chars.next();
                    out.push('/');
                }
                Some('/') => {
                    chars.next();
                    out.push('.');
                }
                // A lone `/` token is an empty level, already opened by its separator.
                _ => {}
            },
            '.' => out.push('/'),
            '*' => out.push('+'),
            '>' => out.push('#'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_nats_server() {
        let cases = [
            ("a/b/c", "a.b.c"),
            ("a/b.c/d", "a.b//c.d"),
            ("a//b", "a./.b"),
            ("/a", "/.a"),
            ("a/", "a./"),
            ("a/b/", "a.b./"),
            ("//a", "/./.a"),
            ("a//", "a././"),
            ("/", "/./"),
            ("x/$cost", "x.$cost"),
            ("sensors/+/temp", "sensors.*.temp"),
            ("sensors/#", "sensors.>"),
            ("v1.2", "v1//2"),
        ];
        for (topic, subject) in cases {
            assert_eq!(topic_to_subject(topic), subject, "topic {topic:?}");
            assert_eq!(subject_to_topic(subject), topic, "subject {subject:?}");
        }
    }

    #[test]
    fn round_trips_every_small_topic() {
        // Every topic of up to 5 characters over an alphabet that exercises each rule.
        let alphabet = ['a', '/', '.', '$', 'é'];
        let mut topics = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = topics
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            for topic in &longer {
                let subject = topic_to_subject(topic);
                assert_eq!(&subject_to_topic(&subject), topic, "via {subject:?}");
                assert!(
                    !subject.starts_with('.') && !subject.ends_with('.'),
                    "{subject:?}"
                );
                assert!(
                    !subject.contains(".."),
                    "{topic:?} -> {subject:?} has an empty token"
                );
            }
            topics = longer;
        }
    }
}
