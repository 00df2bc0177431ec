//! The NATS endpoint URL of `ferry relay`: `nats://[USER[:PASS]@]HOST[:PORT]/SUBJECT[?KEY=VALUE]`
//! (`tls://` over TLS, `ws+nats://` and `wss+nats://` over WebSocket, where the path is the
//! WebSocket's and the subject is `?subject=`), as the connection and source or sink
//! bridges.yaml would say. Pure: the configuration's checks judge what it builds.

use crate::config::endpoint_url::{
    Built, EndpointOrigins, EndpointUrl, Given, Names, Naming, Problem, Query, Side, UrlForm, flag,
    map, text,
};

pub const FORM: UrlForm = UrlForm {
    naming: Naming {
        protocol: "nats",
        target: "subject",
        names: Some(Names {
            separator: '.',
            every: ">",
            wildcards: "*>",
            variable: "subject",
        }),
    },
    schemes: &["nats", "tls", "ws+nats", "wss+nats"],
    usage: &[
        "nats://[USER[:PASS]@]HOST[:PORT]/SUBJECT[?KEY=VALUE&...] NATS, port 4222; tls:// over TLS",
        "ws+nats://HOST[:PORT]/PATH?subject=SUBJECT              NATS over WebSocket; wss+nats://",
    ],
    keys: Some(
        "NATS queue=GROUP (FROM), jetstream=true (TO), stream=NAME&consumer=NAME (JetStream, FROM) with\n\
         \x20       deliver=all|new max_ack_pending=N ack_wait=DUR, priority_group=NAME with policy=pinned_client|overflow\n\
         \x20       pinned_ttl=DUR min_pending=N",
    ),
    read,
};

/// The query keys, in the order the hint lists them.
const KEYS: &[&str] = &[
    "queue",
    "stream",
    "consumer",
    "deliver",
    "max_ack_pending",
    "ack_wait",
    "priority_group",
    "policy",
    "pinned_ttl",
    "min_pending",
    "jetstream",
    "subject",
];

/// The keys of the source's `jetstream:` map a URL may set, besides `stream` and `consumer`.
const CONSUMER_KEYS: &[&str] = &["deliver", "max_ack_pending", "ack_wait"];
/// The keys of its `priority_group:` map, `priority_group=` being the group's `name`.
const GROUP_KEYS: &[&str] = &["policy", "pinned_ttl", "min_pending"];

fn read(
    url: &EndpointUrl,
    mut query: Query,
    given: &Given,
    at: &mut EndpointOrigins,
) -> Result<Built, Problem> {
    let scheme = match url.scheme.as_str() {
        "tls" => "tls",
        "ws+nats" => "ws",
        "wss+nats" => "wss",
        _ => "nats",
    };
    let ws = scheme.starts_with("ws");
    let name = url.name(&mut query, "subject", ws)?;
    let queue = query.one("queue")?;
    let stream = query.one("stream")?;
    let consumer = query.one("consumer")?;
    let mut consumer_keys = Vec::new();
    for key in CONSUMER_KEYS {
        if let Some(value) = query.one(key)? {
            consumer_keys.push((*key, value));
        }
    }
    let group = query.one("priority_group")?;
    let mut group_keys = Vec::new();
    for key in GROUP_KEYS {
        if let Some(value) = query.one(key)? {
            group_keys.push((*key, value));
        }
    }
    let jetstream = query.one("jetstream")?;
    query.finish(KEYS)?;
    let named = |keys: &[(&'static str, String)]| keys.first().map(|(key, _)| *key);
    if given.side == Side::To {
        let source_key = [
            ("queue", &queue),
            ("stream", &stream),
            ("consumer", &consumer),
        ]
        .into_iter()
        .find_map(|(key, v)| v.as_ref().map(|_| key))
        .or(named(&consumer_keys))
        .or(group.as_ref().map(|_| "priority_group"))
        .or(named(&group_keys));
        if let Some(key) = source_key {
            return Err((
                format!("`{key}` applies to FROM: it is how ferry reads"),
                "leave it out of TO (jetstream=true publishes to JetStream)".into(),
            ));
        }
    }
    if given.side == Side::From && jetstream.is_some() {
        return Err((
            "`jetstream` applies to TO; FROM reads JetStream through a consumer".into(),
            "write ?stream=NAME&consumer=NAME on FROM".into(),
        ));
    }
    if group.is_none()
        && let Some(key) = named(&group_keys)
    {
        return Err((
            format!("`{key}` is a setting of a priority group"),
            "add ?priority_group=NAME&policy=pinned_client|overflow".into(),
        ));
    }
    let whole = at.whole();
    // `?stream=&consumer=` are the two halves of the source's `jetstream:`; the other consumer
    // keys, and `priority_group=` with its own, go into it.
    let consumer = match (stream, consumer) {
        (None, None) => {
            if let Some(key) = named(&consumer_keys).or(group.as_ref().map(|_| "priority_group")) {
                return Err((
                    format!("`{key}` needs a JetStream consumer"),
                    "add ?stream=NAME&consumer=NAME".into(),
                ));
            }
            None
        }
        (Some(stream), Some(consumer)) => {
            let mut keys = vec![
                ("stream", text(whole, &stream)),
                ("consumer", text(whole, &consumer)),
            ];
            for (key, value) in &consumer_keys {
                keys.push((key, text(whole, value)));
            }
            if let Some(name) = group {
                let mut group = vec![("name", text(whole, &name))];
                for (key, value) in &group_keys {
                    group.push((key, text(whole, value)));
                }
                keys.push(("priority_group", map(whole, group)));
            }
            Some(map(whole, keys))
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err((
                "JetStream needs both `stream` and `consumer`".into(),
                "write ?stream=NAME&consumer=NAME (the durable consumer is created when absent)"
                    .into(),
            ));
        }
    };

    let address = match ws {
        true => format!("{scheme}://{}{}", url.host_port, url.path),
        false => format!("{scheme}://{}:{}", url.host, url.port.unwrap_or(4222)),
    };
    // `nats://TOKEN@host`, and a password with no user anywhere, is a token.
    let (user, password, token) = match (&given.user, &given.password) {
        (Some(user), None) if url.user.is_some() => (None, None, Some(user)),
        (None, Some(token)) => (None, None, Some(token)),
        (user, password) => (user.as_ref(), password.as_ref(), None),
    };
    let mut connection = vec![
        ("url", text(whole, &address)),
        ("name", text(whole, "ferry-relay")),
        // A one-shot relay says at once when a server is not there: no liveness probe.
        ("probe", flag(whole, false)),
    ];
    for (key, value) in [("user", user), ("password", password), ("token", token)] {
        if let Some(value) = value {
            connection.push((key, text(whole, value)));
        }
    }

    let name = name.map(|n| {
        let pos = at.part("subject");
        (n, pos)
    });
    let mut keys = Vec::new();
    match given.side {
        Side::From => {
            let subject = match &name {
                Some((subject, pos)) => text(*pos, subject),
                None => text(whole, ">"),
            };
            keys.push(("subject", subject));
            if let Some(group) = queue {
                keys.push(("queue", text(whole, &group)));
            }
            if let Some(consumer) = consumer {
                keys.push(("jetstream", consumer));
            }
        }
        Side::To => {
            if let Some(jetstream) = jetstream {
                keys.push(("jetstream", text(whole, &jetstream)));
            }
        }
    }
    Ok(Built {
        connection: map(whole, [("nats", map(whole, connection))]),
        keys,
        name,
    })
}
