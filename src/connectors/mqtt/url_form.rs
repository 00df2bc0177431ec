//! The MQTT endpoint URL of `ferry relay`: `mqtt://[USER[:PASS]@]HOST[:PORT]/TOPIC[?KEY=VALUE]`
//! (`mqtts://` over TLS, `ws+mqtt://` and `wss+mqtt://` over WebSocket, where the path is the
//! WebSocket's and the topic is `?topic=`), as the connection and source or sink bridges.yaml
//! would say. Pure: the configuration's checks judge what it builds.

use crate::config::endpoint_url::{
    Built, EndpointOrigins, EndpointUrl, Given, Names, Naming, Problem, Query, Side, UrlForm, flag,
    map, text,
};

pub const FORM: UrlForm = UrlForm {
    naming: Naming {
        protocol: "mqtt",
        target: "topic",
        names: Some(Names {
            separator: '/',
            every: "#",
            wildcards: "+#",
            variable: "topic",
        }),
    },
    schemes: &["mqtt", "mqtts", "ws+mqtt", "wss+mqtt"],
    usage: &[
        "mqtt://[USER[:PASS]@]HOST[:PORT]/TOPIC[?KEY=VALUE&...]   MQTT, port 1883; mqtts:// over TLS, 8883",
        "ws+mqtt://HOST[:PORT]/PATH?topic=TOPIC                  MQTT over WebSocket, 80; wss+mqtt://, 443",
    ],
    keys: Some(
        "MQTT qos=0|1|2 version=5|3.1.1 client_id=ID share=GROUP (FROM) retain=true|false|source (TO)",
    ),
    read,
};

/// The query keys, in the order the hint lists them.
const KEYS: &[&str] = &["qos", "version", "client_id", "share", "retain", "topic"];

fn read(
    url: &EndpointUrl,
    mut query: Query,
    given: &Given,
    at: &mut EndpointOrigins,
) -> Result<Built, Problem> {
    let (scheme, default_port) = match url.scheme.as_str() {
        "mqtts" => ("mqtts", 8883),
        "ws+mqtt" => ("ws", 80),
        "wss+mqtt" => ("wss", 443),
        _ => ("mqtt", 1883),
    };
    let ws = scheme.starts_with("ws");
    let name = url.name(&mut query, "topic", ws)?;
    let qos = qos(&mut query)?;
    let version = query.one("version")?;
    let client_id = query.one("client_id")?;
    let share = query.one("share")?;
    let retain = query.one("retain")?;
    query.finish(KEYS)?;
    if given.side == Side::To && share.is_some() {
        return Err((
            "`share` applies to FROM: a shared subscription spreads what is read".into(),
            "leave it out of TO".into(),
        ));
    }
    if given.side == Side::From && retain.is_some() {
        return Err((
            "`retain` applies to TO: it is how ferry publishes".into(),
            "leave it out of FROM".into(),
        ));
    }

    let port = url.port.unwrap_or(default_port);
    let address = match ws {
        true => {
            let path = if url.path.is_empty() { "/" } else { &url.path };
            format!("{scheme}://{}:{port}{path}", url.host)
        }
        false => format!("{scheme}://{}:{port}", url.host),
    };
    let client_id = client_id.unwrap_or_else(|| {
        let side = given.side.connection();
        match given.at_least_once {
            true => session_client_id(side, &address, name.as_deref(), share.as_deref(), given),
            false => format!("ferry-relay-{}-{side}", given.instance),
        }
    });
    let whole = at.whole();
    let mut connection = vec![
        ("url", text(whole, &address)),
        ("client_id", text(whole, &client_id)),
        ("clean_start", flag(whole, !given.at_least_once)),
        // A one-shot relay says at once when a broker is not there: no liveness probe.
        ("probe", flag(whole, false)),
    ];
    let credentials = [("username", &given.user), ("password", &given.password)];
    for (key, value) in [("version", &version)].into_iter().chain(credentials) {
        if let Some(value) = value {
            connection.push((key, text(whole, value)));
        }
    }

    let qos = qos
        .or(given.qos)
        .unwrap_or(if given.at_least_once { 1 } else { 0 });
    let mut keys = vec![("qos", text(whole, &qos.to_string()))];
    let name = name.map(|n| {
        let pos = at.part("topic");
        (n, pos)
    });
    match given.side {
        Side::From => {
            let topic = match &name {
                Some((topic, pos)) => text(*pos, topic),
                None => text(whole, "#"),
            };
            keys.push(("topic", topic));
            if let Some(group) = share {
                keys.push(("share", text(whole, &group)));
            }
        }
        Side::To => {
            if let Some(retain) = retain {
                keys.push(("retain", text(whole, &retain)));
            }
        }
    }
    Ok(Built {
        connection: map(whole, [("mqtt", map(whole, connection))]),
        keys,
        name,
    })
}

/// `?qos=`, which an option (`--qos`) or the delivery decides when absent.
fn qos(query: &mut Query) -> Result<Option<u8>, Problem> {
    match query.one("qos")?.as_deref() {
        None => Ok(None),
        Some("0") => Ok(Some(0)),
        Some("1") => Ok(Some(1)),
        Some("2") => Ok(Some(2)),
        Some(q) => Err((
            format!("`qos={q}` is not an MQTT QoS"),
            "write qos=0, qos=1 or qos=2".into(),
        )),
    }
}

/// The client id of a relay's persistent session (at-least-once): the same from one run to the
/// next, different for FROM and TO on one broker. The members of a shared subscription each
/// need their own session: on other machines the host name keeps them apart; on one machine
/// only `client_id=` can.
fn session_client_id(
    side: &str,
    address: &str,
    name: Option<&str>,
    share: Option<&str>,
    given: &Given,
) -> String {
    let member = match share {
        Some(group) => format!("{group}|{}", given.machine),
        None => String::new(),
    };
    let key = format!("{side}|{address}|{}|{member}", name.unwrap_or(""));
    format!("ferry-relay-{:08x}", crc32fast::hash(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(machine: &str) -> Given {
        Given {
            side: Side::From,
            at_least_once: true,
            qos: None,
            user: None,
            password: None,
            instance: 1,
            machine: machine.into(),
        }
    }

    #[test]
    fn shared_relays_on_two_machines_keep_two_sessions() {
        let id = |share, given: &Given| {
            session_client_id("from", "mqtt://b:1883", Some("s/#"), share, given)
        };
        let (a, b) = (on("edge-a"), on("edge-b"));
        assert_ne!(id(Some("g"), &a), id(Some("g"), &b));
        assert_eq!(id(Some("g"), &a), id(Some("g"), &on("edge-a")));
        // Without a share, the machine does not matter: one session per URL, as before.
        assert_eq!(id(None, &a), id(None, &b));
        assert!(id(None, &a).starts_with("ferry-relay-"));
    }
}
