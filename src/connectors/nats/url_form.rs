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
        "NATS queue=GROUP (FROM), stream=NAME&consumer=NAME[&deliver=all|new] (JetStream, FROM), jetstream=true (TO)",
    ),
    read,
};

/// The query keys, in the order the hint lists them.
const KEYS: &[&str] = &[
    "queue",
    "stream",
    "consumer",
    "deliver",
    "jetstream",
    "subject",
];
const WS_KEYS: &[&str] = &[
    "subject",
    "queue",
    "stream",
    "consumer",
    "deliver",
    "jetstream",
    "protocol",
];

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
    let deliver = query.one("deliver")?;
    let jetstream = query.one("jetstream")?;
    if ws {
        query.all("protocol");
    }
    query.finish(if ws { WS_KEYS } else { KEYS })?;
    if given.side == Side::To {
        let source_keys = [
            ("queue", &queue),
            ("stream", &stream),
            ("consumer", &consumer),
            ("deliver", &deliver),
        ];
        if let Some((key, _)) = source_keys.iter().find(|(_, v)| v.is_some()) {
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
    let whole = at.whole();
    // `?stream=&consumer=` are the two halves of the source's `jetstream:`.
    let consumer = match (stream, consumer) {
        (None, None) if deliver.is_some() => {
            return Err((
                "`deliver` needs a JetStream consumer".into(),
                "add ?stream=NAME&consumer=NAME".into(),
            ));
        }
        (None, None) => None,
        (Some(stream), Some(consumer)) => {
            let mut keys = vec![
                ("stream", text(whole, &stream)),
                ("consumer", text(whole, &consumer)),
            ];
            if let Some(deliver) = deliver {
                keys.push(("deliver", text(whole, &deliver)));
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
