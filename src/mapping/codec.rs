//! MQTT topics ⇄ NATS subjects, by nats-server's own rules, so a topic that crosses ferry and
//! one that crosses nats-server's MQTT gateway get the same name — plus a reversible escape for
//! what nats-server refuses or cannot carry safely.
//!
//! # The rules
//!
//! A topic is cut at every `/` into levels; each level becomes one NATS token and the tokens are
//! joined with `.`. The rows marked *nats-server* are nats-server 2.15's (`server/mqtt.go`:
//! `mqttToNATSSubjectConversion` and `natsSubjectToMQTTTopic`; the empty-level rules date from
//! 2.9, `.` ⇄ `//` from 2.10); the rows marked *ferry* are ferry's escapes, all of the form `/`
//! followed by something nats-server never writes after a `/`.
//!
//! It lives in `mapping` rather than in either connector's folder because it belongs to
//! neither: it is a pure function of one message's name, applied by the route between a source
//! of one protocol and a sink of the other (and by `ferry relay`'s JSON lines, which name the
//! protocol they carry).
//!
//! | MQTT topic or filter                                 | NATS subject                         | rule        | example (MQTT ⇄ NATS)                        |
//! |------------------------------------------------------|--------------------------------------|-------------|----------------------------------------------|
//! | level separator `/`                                  | token separator `.`                  | nats-server | `a/b/c` ⇄ `a.b.c`                            |
//! | empty level (leading, trailing, between two `/`)     | the token `/`                        | nats-server | `/a` ⇄ `/.a`, `a/` ⇄ `a./`, `a//b` ⇄ `a./.b`, `/` ⇄ `/./` |
//! | `.` inside a level                                   | `//`                                 | nats-server | `v1.2/x` ⇄ `v1//2.x`                         |
//! | filter level `+` (a whole level)                     | the token `*`                        | nats-server | `a/+/b` ⇄ `a.*.b`                            |
//! | filter level `#` (a whole level)                     | the token `>`                        | nats-server | `a/#` ⇄ `a.>`                                |
//! | a first level NATS reserves: `$GNR` `$GR` `$JS` `$JSC` `$KV` `$LDS` `$MQTT` `$NRG` `$O` `$OBJ` `$SRV` `$SYS` | `/` in front of it | *ferry* | `$SYS/broker/load` ⇄ `/$SYS.broker.load` |
//! | `*` and `>` (anywhere, also a whole level)           | `/x2a`, `/x3e`                       | *ferry*     | `a/*/b` ⇄ `a./x2a.b`, `t>30` ⇄ `t/x3e30`     |
//! | space, tab, `\n`, `\r`, `\f`                         | `/x20`, `/x09`, `/x0a`, `/x0d`, `/x0c` | *ferry*   | `living room` ⇄ `living/x20room`             |
//! | NUL, DEL (U+007F)                                    | `/x00`, `/x7f`                       | *ferry*     | `a\x7fb` ⇄ `a/x7fb`                          |
//! | other Unicode whitespace up to U+00FF: `\v`, U+0085, U+00A0 | `/x0b`, `/x85`, `/xa0`        | *ferry*     | `a\u{a0}b` ⇄ `a/xa0b`                        |
//! | Unicode whitespace above U+00FF: U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F, U+3000 | `/u` + 4 lowercase hex digits | *ferry* | `a\u{3000}b` ⇄ `a/u3000b` |
//! | anything else (other `$` names, `+`/`#` inside a level, other control characters, any non-ASCII) | itself | nats-server | `$app/x` ⇄ `$app.x`, `x/$SYS` ⇄ `x.$SYS`, `é/ü` ⇄ `é.ü` |
//!
//! "Unicode whitespace" is Rust's [`char::is_whitespace`], the same set
//! [`crate::connectors::nats::names::subject`] refuses. Hex digits are lowercase; `/x` takes exactly
//! two, `/u` exactly four. The reserved names ([`RESERVED_FIRST_LEVELS`]) are the first tokens
//! nats-server gives a meaning of its own (`server/*.go`: `$SYS.`, `$JS.`, `$JSC.`, `$KV.`,
//! `$OBJ.`, `$MQTT.`, `$NRG.`, `$LDS.`, `$GNR.`, `$GR.`) plus the object store's `$O.` and the
//! service API's `$SRV.` from the NATS clients; they match case and whole level: `$SYS/x` is
//! escaped, `$sys/x`, `$SYSTEM/x` and `x/$SYS` are not.
//!
//! NATS → MQTT reads the same table right to left, and for a `/` that none of the rows explains
//! it does what nats-server does: it drops the `/` (`a/b` → `ab`, `/a` → `a`, `a/` → `a`). An
//! escape is only recognised in the exact form ferry writes it (`/x20`, not `/x41` nor `/X20`):
//! `a/x41` is not an escape and becomes `ax41`, as in nats-server. `/$` needs no rule of its own:
//! nats-server drops the `/` in front of the `$` too, so an MQTT client of nats-server receives
//! `/$SYS.broker.load` as `$SYS/broker/load`, the very topic ferry started from.
//!
//! # Why the escapes cannot collide with nats-server's names
//!
//! nats-server writes a `/` only as `//` (a `.`) or as the whole token `/` (an empty level).
//! Reading a token left to right, `//` is taken first, so the `/` that starts an escape is always
//! followed by `x`, `u` or `$`: a pair nats-server never writes. Hence:
//! - for every topic nats-server accepts that has none of the *ferry* characters, ferry writes
//!   the subject nats-server writes;
//! - for every subject nats-server writes, and every subject without a ferry escape, ferry reads
//!   back the topic nats-server reads (except whole `*`/`>` tokens, see below);
//! - distinct topics give distinct subjects: every level gives one non-empty token without `.`,
//!   and within a token `//`, `/x..`, `/u....`, `/$` and plain characters (never `/`) read back
//!   in exactly one way. So topic → subject → topic is exact for every topic.
//!
//! # Where ferry and nats-server 2.15 part
//!
//! nats-server refuses an MQTT topic or filter with a space, tab, `\n`, `\r`, `\f` or DEL
//! (`errMQTTUnsupportedCharacters`; DEL because its subject tree uses it internally) and, in a
//! topic, `+` or `#` anywhere; it closes the connection. ferry escapes those characters instead
//! (`+`/`#` inside a level, which MQTT forbids, stay as they are). nats-server *accepts* three
//! things ferry escapes:
//! - **a reserved first level**: nats-server publishes `$SYS/broker/load` to `$SYS.broker.load`,
//!   straight into the names NATS keeps for itself: `$JS/API/…` reaches the JetStream API,
//!   `$KV/b/k` is a KV put, `$MQTT/msgs/x` is captured by nats-server's own MQTT message
//!   stream, `$NRG/x` is refused as a publish violation, and `$SYS.…` sits next to the server's
//!   own events in the system account (in any other account, an ordinary client's `$SYS.x` is an
//!   ordinary subject). A relay should not speak there on behalf of whatever an MQTT broker calls
//!   `$SYS` (mosquitto's statistics); the `/` keeps it out. Other `$` topics (`$app/x`) are
//!   named as nats-server names them.
//! - **`*` and `>`**: nats-server publishes `a/*/b` to `a.*.b`, a wildcard, which NATS forbids
//!   publishing to; NATS reserves both characters for wildcards and ferry's subject check refuses
//!   them anywhere in a token. In a filter nats-server even turns the literal level `*` into
//!   the wildcard: it subscribes `a/*` as `a.*`, and `a/>` as `a.>` and `a`.
//! - **Unicode whitespace other than the five above** (`\v`, U+00A0, U+3000, …): nats-server
//!   passes them through, but async-nats, ferry's NATS client, splits the server's `HMSG` line at
//!   any Unicode whitespace, so such a subject breaks the receiving connection.
//!
//! And one the other way round: nats-server leaves a whole `*` or `>` token of a subject as it is
//! (`a.*.b` → `a/*/b`, only a wildcard publish can deliver one), ferry reads it as the filter
//! wildcard `+` or `#` (subjects of subscriptions are converted here too).
//!
//! # Filters
//!
//! [`filter_to_subjects`] gives the NATS subscriptions an MQTT filter stands for, as nats-server
//! subscribes them: `a/#` also matches `a` itself (MQTT's `#` includes the parent level), so it
//! is `a` and `a.>`; `#` alone is `>`. A filter whose first level is reserved also gets
//! nats-server's spelling of each subscription (`$SYS/#` → `/$SYS`, `/$SYS.>`, `$SYS`,
//! `$SYS.>`), so messages named by ferry and by nats-server (or any NATS client) are both
//! received; both read back as the same topic. MQTT says a filter starting with `#` or `+` does not match topics starting
//! with `$` (MQTT-4.7.2-1); nats-server drops those at delivery, and so must the user of
//! `filter_to_subjects` (`>` and `*.…` match `$…` and `/$…` subjects): drop a message whose
//! [`subject_to_topic`] starts with `$`.

/// The first levels ferry writes with a `/` in front: the `$` names nats-server and NATS's own
/// protocols (JetStream, KV, object store, services, MQTT, Raft, gateways, leaf nodes) use.
pub const RESERVED_FIRST_LEVELS: &[&str] = &[
    "$GNR", "$GR", "$JS", "$JSC", "$KV", "$LDS", "$MQTT", "$NRG", "$O", "$OBJ", "$SRV", "$SYS",
];

/// True for the characters ferry escapes as `/xHH` or `/uHHHH` (see the module doc).
fn escaped(c: char) -> bool {
    matches!(c, '\0' | '\x7f' | '*' | '>') || c.is_whitespace()
}

/// Appends the escape of `c` (one of [`escaped`]'s characters).
fn push_escape(out: &mut String, c: char) {
    use std::fmt::Write;
    let code = u32::from(c);
    if code <= 0xff {
        let _ = write!(out, "/x{code:02x}");
    } else {
        let _ = write!(out, "/u{code:04x}");
    }
}

/// Reads an escape written by [`push_escape`] at the start of `after` (what follows a `/`):
/// the character and how many bytes of `after` it took. None unless it is exactly the form
/// ferry writes.
fn unescape(after: &str) -> Option<(char, usize)> {
    let bytes = after.as_bytes();
    let digits = match bytes.first()? {
        b'x' => 2,
        b'u' => 4,
        _ => return None,
    };
    let hex = bytes.get(1..1 + digits)?;
    if !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    // All ASCII hex digits, so this is valid UTF-8 and parses.
    let code = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    let c = char::from_u32(code)?;
    let canonical = if digits == 2 {
        code <= 0xff
    } else {
        code > 0xff
    };
    (canonical && escaped(c)).then_some((c, 1 + digits))
}

/// Converts an MQTT topic (or, with wildcards, a filter) to a NATS subject, by the rules in the
/// module doc. Every topic gives a different subject, and [`subject_to_topic`] gives it back.
pub fn topic_to_subject(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len() + 8);
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        match level {
            "" => out.push('/'),
            "+" => out.push('*'),
            "#" => out.push('>'),
            _ => {
                if i == 0 && RESERVED_FIRST_LEVELS.contains(&level) {
                    out.push('/');
                }
                // Most levels have nothing to escape: copied whole, not a character at a time.
                if !level.contains(|c| c == '.' || escaped(c)) {
                    out.push_str(level);
                } else {
                    for c in level.chars() {
                        match c {
                            '.' => out.push_str("//"),
                            c if escaped(c) => push_escape(&mut out, c),
                            c => out.push(c),
                        }
                    }
                }
            }
        }
    }
    out
}

/// Converts a NATS subject back to the MQTT topic (or filter) it stands for: the inverse of
/// [`topic_to_subject`], and nats-server's reading of every subject without a ferry escape.
pub fn subject_to_topic(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for (i, token) in subject.split('.').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match token {
            "/" => {} // an empty level
            "*" => out.push('+'),
            ">" => out.push('#'),
            _ => decode_token(token, &mut out),
        }
    }
    out
}

fn decode_token(token: &str, out: &mut String) {
    let mut rest = token;
    while let Some(at) = rest.find('/') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(next) = after.strip_prefix('/') {
            out.push('.');
            rest = next;
        } else if let Some((c, len)) = unescape(after) {
            out.push(c);
            rest = &after[len..];
        } else {
            // A `/` nobody's rule explains (this covers `/$` too): nats-server drops it.
            rest = after;
        }
    }
    out.push_str(rest);
}

/// The NATS subscriptions an MQTT filter stands for (see "Filters" in the module doc):
/// `a/+/b` → `[a.*.b]`, `a/#` → `[a, a.>]`, `#` → `[>]`,
/// `$SYS/#` → `[/$SYS, /$SYS.>, $SYS, $SYS.>]`.
pub fn filter_to_subjects(filter: &str) -> Vec<String> {
    let subject = topic_to_subject(filter);
    let mut subjects = Vec::with_capacity(4);
    // nats-server: a subject of more than one token ending in `.>` is also subscribed without
    // it, since MQTT's `a/#` matches `a`.
    if let Some(parent) = subject.strip_suffix(".>") {
        subjects.push(parent.to_string());
    }
    subjects.push(subject);
    if filter
        .split('/')
        .next()
        .is_some_and(|first| RESERVED_FIRST_LEVELS.contains(&first))
    {
        // The same subscriptions as nats-server spells them: without ferry's `/` before `$`.
        let native: Vec<String> = subjects.iter().map(|s| s[1..].to_string()).collect();
        subjects.extend(native);
    }
    subjects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::{mqtt::names as mqtt_names, nats::names as nats_names};
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// (topic, subject): both directions, exactly.
    const CASES: &[(&str, &str)] = &[
        // nats-server's rules
        ("a/b/c", "a.b.c"),
        ("a/b.c/d", "a.b//c.d"),
        ("v1.2", "v1//2"),
        (".", "//"),
        ("..", "////"),
        ("a/./b", "a.//.b"),
        ("a//b", "a./.b"),
        ("a///b", "a././.b"),
        ("/a", "/.a"),
        ("a/", "a./"),
        ("a/b/", "a.b./"),
        ("//a", "/./.a"),
        ("a//", "a././"),
        ("/", "/./"),
        ("//", "/././"),
        ("x/$cost", "x.$cost"),
        ("x/a$", "x.a$"),
        ("é/ü/日本", "é.ü.日本"),
        ("a\u{1}b/\u{1f}", "a\u{1}b.\u{1f}"),
        ("a+b/c#d", "a+b.c#d"),
        ("sensors/+/temp", "sensors.*.temp"),
        ("sensors/#", "sensors.>"),
        ("+", "*"),
        ("#", ">"),
        ("+/+/#", "*.*.>"),
        // `$` names NATS does not reserve: as nats-server
        ("$app/x", "$app.x"),
        ("$", "$"),
        ("$$/x", "$$.x"),
        ("$a.b", "$a//b"),
        ("$.", "$//"),
        ("$sys/x", "$sys.x"),
        ("$SYSTEM/x", "$SYSTEM.x"),
        ("$SYS.x/y", "$SYS//x.y"),
        ("x/$SYS", "x.$SYS"),
        // ferry: a first level NATS reserves
        ("$SYS/broker/load", "/$SYS.broker.load"),
        ("$SYS", "/$SYS"),
        ("$SYS/", "/$SYS./"),
        ("$SYS/#", "/$SYS.>"),
        ("$JS/API/INFO", "/$JS.API.INFO"),
        ("$KV/bucket/key", "/$KV.bucket.key"),
        ("$MQTT/msgs/x", "/$MQTT.msgs.x"),
        ("$NRG/x", "/$NRG.x"),
        // ferry: `*` and `>`
        ("a/*/b", "a./x2a.b"),
        ("*", "/x2a"),
        (">", "/x3e"),
        ("a/>", "a./x3e"),
        ("temp>30", "temp/x3e30"),
        ("a*b*", "a/x2ab/x2a"),
        // ferry: characters NATS subjects cannot hold
        ("living room/temp", "living/x20room.temp"),
        ("a\tb", "a/x09b"),
        ("a\nb", "a/x0ab"),
        ("a\rb", "a/x0db"),
        ("a\u{c}b", "a/x0cb"),
        ("a\u{b}b", "a/x0bb"),
        ("a\u{7f}b", "a/x7fb"),
        ("a\0b", "a/x00b"),
        ("a\u{85}b", "a/x85b"),
        ("a\u{a0}b", "a/xa0b"),
        ("a\u{1680}b", "a/u1680b"),
        ("a\u{2000}\u{200a}b", "a/u2000/u200ab"),
        ("a\u{2028}\u{2029}", "a/u2028/u2029"),
        ("\u{202f}\u{205f}\u{3000}", "/u202f/u205f/u3000"),
        (" ", "/x20"),
        (" /", "/x20./"),
        // escapes next to nats-server's `//`
        (". .", "///x20//"),
        ("x20", "x20"),
        (".x20", "//x20"),
    ];

    #[test]
    fn cases_both_ways() {
        for &(topic, subject) in CASES {
            assert_eq!(topic_to_subject(topic), subject, "topic {topic:?}");
            assert_eq!(subject_to_topic(subject), topic, "subject {subject:?}");
        }
    }

    #[test]
    fn cases_are_valid_nats_subjects() {
        for &(topic, subject) in CASES {
            if topic.split('/').any(|l| l == "+" || l == "#") {
                nats_names::subscription(subject).unwrap();
            } else {
                nats_names::subject(subject)
                    .unwrap_or_else(|e| panic!("{topic:?} -> {subject:?}: {}", e.0));
            }
        }
    }

    /// Subjects ferry did not write: read as nats-server reads them.
    #[test]
    fn foreign_subjects_read_as_nats_server_does() {
        let cases = [
            ("a/b", "ab"),
            ("/a", "a"),
            ("a/", "a"),
            ("a/.b", "a/b"),
            ("a///b", "a.b"),
            ("a.///", "a/."),
            ("x/$y", "x$y"),
            ("$SYS.x", "$SYS/x"),
            ("/$SYS.x", "$SYS/x"),
            ("/$app.x", "$app/x"),
            // not ferry's exact form of an escape: the `/` is dropped
            ("a/x41", "ax41"),
            ("a/X20", "aX20"),
            ("a/x2", "ax2"),
            ("a/x2A", "ax2A"),
            ("a/u0020", "au0020"),
            ("a/x" /* at the end */, "ax"),
            ("a/u200", "au200"),
            ("a/xzz", "axzz"),
            ("a*b.c>", "a*b/c>"),
            ("", ""),
            ("/", ""),
        ];
        for (subject, topic) in cases {
            assert_eq!(subject_to_topic(subject), topic, "subject {subject:?}");
            assert_eq!(subject_to_topic(subject), nats_server_reads(subject));
        }
    }

    #[test]
    fn filters() {
        let cases: &[(&str, &[&str])] = &[
            ("a/b", &["a.b"]),
            ("a/+/b", &["a.*.b"]),
            ("+", &["*"]),
            ("#", &[">"]),
            ("a/#", &["a", "a.>"]),
            ("+/#", &["*", "*.>"]),
            ("/#", &["/", "/.>"]),
            ("a//#", &["a./", "a./.>"]),
            ("a.b/#", &["a//b", "a//b.>"]),
            ("$SYS/#", &["/$SYS", "/$SYS.>", "$SYS", "$SYS.>"]),
            ("$SYS/+/load", &["/$SYS.*.load", "$SYS.*.load"]),
            ("$SYS", &["/$SYS", "$SYS"]),
            ("$KV/b/#", &["/$KV.b", "/$KV.b.>", "$KV.b", "$KV.b.>"]),
            ("$app/#", &["$app", "$app.>"]),
            ("$SYSTEM/#", &["$SYSTEM", "$SYSTEM.>"]),
            ("a/*", &["a./x2a"]),
            ("a/>", &["a./x3e"]),
            ("a b/#", &["a/x20b", "a/x20b.>"]),
        ];
        for &(filter, subjects) in cases {
            assert_eq!(filter_to_subjects(filter), subjects, "filter {filter:?}");
            for s in subjects {
                nats_names::subscription(s).unwrap_or_else(|e| panic!("{s:?}: {}", e.0));
            }
        }
    }

    #[test]
    fn escaped_characters_all_round_trip() {
        // Every character ferry escapes, alone and amid others, in every escape form.
        let mut n = 0;
        for c in (0..=0x10ffff)
            .filter_map(char::from_u32)
            .filter(|&c| escaped(c))
        {
            n += 1;
            for topic in [c.to_string(), format!("a{c}b/{c}{c}/.{c}.")] {
                let subject = topic_to_subject(&topic);
                assert!(!subject.contains(c), "{topic:?} -> {subject:?}");
                nats_names::subject(&subject).unwrap();
                assert_eq!(subject_to_topic(&subject), topic);
            }
        }
        // NUL, DEL, `*`, `>` and the 25 Unicode whitespace characters.
        assert_eq!(n, 29);
    }

    #[test]
    fn round_trips_every_small_topic() {
        // Every topic of up to 5 characters over an alphabet that exercises each rule, and no
        // two of them share a subject.
        let alphabet = ['a', '/', '.', '$', '*', ' ', 'x', '+'];
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut topics = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = topics
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            for topic in &longer {
                let subject = topic_to_subject(topic);
                assert_eq!(&subject_to_topic(&subject), topic, "via {subject:?}");
                nats_names::subscription(&subject)
                    .unwrap_or_else(|e| panic!("{topic:?} -> {subject:?}: {}", e.0));
                if let Some(other) = seen.insert(subject.clone(), topic.clone()) {
                    panic!("{other:?} and {topic:?} both give {subject:?}");
                }
            }
            topics = longer;
        }
        // Behind every reserved first level too (up to 3 more characters).
        let short: Vec<String> = seen.values().filter(|t| t.len() <= 3).cloned().collect();
        for reserved in RESERVED_FIRST_LEVELS {
            for rest in std::iter::once("").chain(short.iter().map(String::as_str)) {
                let topic = format!("{reserved}{rest}");
                let subject = topic_to_subject(&topic);
                assert_eq!(subject_to_topic(&subject), topic, "via {subject:?}");
                if let Some(other) = seen.insert(subject.clone(), topic.clone()) {
                    assert_eq!(other, topic, "both give {subject:?}");
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // nats-server's rules, written out from the comments in server/mqtt.go, as references.

    /// MQTT → NATS as nats-server converts a topic it accepts: `/` becomes `/.` when first or
    /// when it follows a `.` just written, `./` when last or followed by `/`, `.` otherwise;
    /// `.` becomes `//`; a subject ending in `.` gets a `/`.
    fn nats_server_writes(topic: &str) -> String {
        let chars: Vec<char> = topic.chars().collect();
        let mut out = String::new();
        for (i, &c) in chars.iter().enumerate() {
            match c {
                '/' if i == 0 || out.ends_with('.') => out.push_str("/."),
                '/' if i + 1 == chars.len() || chars[i + 1] == '/' => out.push_str("./"),
                '/' => out.push('.'),
                '.' => out.push_str("//"),
                '+' => out.push('*'),
                '#' => out.push('>'),
                c => out.push(c),
            }
        }
        if out.ends_with('.') {
            out.push('/');
        }
        out
    }

    /// NATS → MQTT as nats-server converts a delivered subject: `/.` is `/`, `//` is `.`, any
    /// other `/` is dropped, `.` is `/`.
    fn nats_server_reads(subject: &str) -> String {
        let mut out = String::new();
        let mut chars = subject.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '/' => match chars.peek() {
                    Some('.') => {
                        chars.next();
                        out.push('/');
                    }
                    Some('/') => {
                        chars.next();
                        out.push('.');
                    }
                    _ => {}
                },
                '.' => out.push('/'),
                c => out.push(c),
            }
        }
        out
    }

    /// Characters that hit every rule and every escape, plus anything at all.
    fn tricky_char() -> impl Strategy<Value = char> {
        prop_oneof![
            6 => prop::sample::select(vec![
                'a', 'b', '/', '/', '/', '.', '$', '*', '>', '+', '#', 'x', 'u', '0', '2', 'f',
                ' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{7f}', '\u{1}', '\u{85}', '\u{a0}',
                '\u{2000}', '\u{3000}', 'é', '日',
            ]),
            1 => any::<char>(),
        ]
    }

    /// A topic nats-server accepts and ferry does not escape: none of ferry's characters, no
    /// `+` or `#`, no reserved first level.
    fn plain_topic() -> impl Strategy<Value = String> {
        let plain = prop_oneof![
            4 => prop::sample::select(vec![
                'a', 'b', '/', '/', '/', '.', '.', '$', 'x', 'u', '0', '2', 'f', '\u{1}', 'é', '日',
            ]),
            1 => any::<char>(),
        ];
        prop::collection::vec(plain, 1..24)
            .prop_map(|cs| {
                cs.into_iter()
                    .filter(|&c| !escaped(c) && !matches!(c, '+' | '#'))
                    .collect::<String>()
            })
            .prop_filter("a topic nats-server accepts", |t| {
                !t.is_empty() && !RESERVED_FIRST_LEVELS.contains(&t.split('/').next().unwrap())
            })
    }

    /// Any valid MQTT topic or filter text: non-empty, no NUL, any UTF-8; now and then behind
    /// a reserved `$` name.
    fn any_topic() -> impl Strategy<Value = String> {
        let prefix = prop_oneof![
            4 => Just(""),
            1 => prop::sample::select(RESERVED_FIRST_LEVELS),
        ];
        (prefix, prop::collection::vec(tricky_char(), 1..24))
            .prop_map(|(p, cs)| format!("{p}{}", cs.into_iter().collect::<String>()))
            .prop_filter("no NUL", |t| !t.contains('\0'))
    }

    /// A valid MQTT topic to publish to: no `+` or `#` at all.
    fn publish_topic() -> impl Strategy<Value = String> {
        any_topic().prop_filter("a topic name", |t| mqtt_names::topic(t).is_ok())
    }

    /// A valid MQTT filter: levels of topic text, some of them `+`, maybe a last `#`.
    fn filter() -> impl Strategy<Value = String> {
        let level = prop_oneof![
            3 => prop::collection::vec(tricky_char(), 0..6)
                .prop_map(|cs| cs.into_iter().filter(|c| !matches!(c, '/' | '+' | '#' | '\0')).collect::<String>()),
            1 => Just("+".to_string()),
        ];
        let first = prop_oneof![
            4 => Just(None),
            1 => prop::sample::select(RESERVED_FIRST_LEVELS).prop_map(Some),
        ];
        (first, prop::collection::vec(level, 1..5), any::<bool>()).prop_map(
            |(first, mut levels, hash)| {
                if let Some(first) = first {
                    levels.insert(0, first.to_string());
                }
                if hash {
                    levels.push("#".into());
                }
                levels.join("/")
            },
        )
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 3000,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn every_topic_round_trips(topic in any_topic()) {
            let subject = topic_to_subject(&topic);
            prop_assert_eq!(subject_to_topic(&subject), topic);
        }

        #[test]
        fn distinct_topics_never_collide(a in any_topic(), b in any_topic()) {
            prop_assume!(a != b);
            prop_assert_ne!(topic_to_subject(&a), topic_to_subject(&b));
        }

        #[test]
        fn distinct_near_topics_never_collide(
            base in any_topic(),
            at in any::<prop::sample::Index>(),
            c in tricky_char(),
        ) {
            // A neighbour: one character of `base` replaced or one inserted.
            let mut chars: Vec<char> = base.chars().collect();
            let i = at.index(chars.len() + 1);
            if i < chars.len() && chars[i] != c { chars[i] = c } else { chars.insert(i, c) }
            let other: String = chars.into_iter().collect();
            prop_assume!(other != base && !other.contains('\0'));
            prop_assert_ne!(topic_to_subject(&base), topic_to_subject(&other));
        }

        #[test]
        fn topics_give_valid_nats_subjects(topic in publish_topic()) {
            let subject = topic_to_subject(&topic);
            prop_assert!(nats_names::subject(&subject).is_ok(), "{:?} -> {:?}", topic, subject);
        }

        #[test]
        fn filters_give_valid_nats_subscriptions(filter in filter()) {
            prop_assume!(mqtt_names::filter(&filter).is_ok());
            for subject in filter_to_subjects(&filter) {
                prop_assert!(
                    nats_names::subscription(&subject).is_ok(),
                    "{:?} -> {:?}", filter, subject
                );
                prop_assert_eq!(subject_to_topic(&subject).replace("/#", ""), filter.replace("/#", ""));
            }
        }

        #[test]
        fn agrees_with_nats_server_where_it_accepts(topic in plain_topic()) {
            // nats-server accepts a topic without whitespace, DEL, `+` or `#`; ferry writes
            // what it writes unless one of ferry's characters is in it.
            let subject = topic_to_subject(&topic);
            prop_assert_eq!(&subject, &nats_server_writes(&topic));
            prop_assert_eq!(subject_to_topic(&subject), nats_server_reads(&subject));
        }

        #[test]
        fn any_text_converts_without_panic(text in any::<String>()) {
            // Whatever arrives (a topic, a subject, a filter from a config or a JSON line),
            // each conversion returns, and a topic comes back from its subject.
            let subject = topic_to_subject(&text);
            let _ = subject_to_topic(&text);
            let _ = filter_to_subjects(&text);
            if !text.contains('\0') {
                prop_assert_eq!(subject_to_topic(&subject), text);
            }
        }

        #[test]
        fn reads_foreign_subjects_as_nats_server_does(raw in any_topic()) {
            // Any subject without ferry's escapes or whole wildcard tokens (here `raw` is taken
            // as a subject, `.` and `/` included).
            let subject = raw;
            prop_assume!(!subject.split('.').any(|t| t == "*" || t == ">"));
            let has_escape = subject.match_indices('/').any(|(i, _)| unescape(&subject[i + 1..]).is_some());
            prop_assume!(!has_escape);
            prop_assert_eq!(subject_to_topic(&subject), nats_server_reads(&subject));
        }
    }
}
