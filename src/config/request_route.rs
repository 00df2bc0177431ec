//! A request route (`request:`): its source must be able to carry a reply back to whoever
//! asked, and its one sink must be able to ask. Checked when the file is read, so a route that
//! could not answer never starts.

use std::collections::BTreeMap;

use std::sync::Arc;

use super::model::{Connection, ConnectionKind, MqttVersion, Route, SinkSpec, SourceSpec};

/// Where in the route a problem is reported.
pub(super) enum At {
    From,
    To,
    Spool,
}

/// What keeps `route` (a request route) from making its requests and answering them: where,
/// what, and the hint.
pub(super) fn problems(
    route: &Route,
    connections: &BTreeMap<String, Connection>,
) -> Vec<(At, String, String)> {
    let mut found = Vec::new();
    let version_5 = |connection: &str| {
        format!(
            "set `version: 5` on connection `{connection}`: MQTT 3.1.1 has no response topic or correlation data"
        )
    };
    let mqtt_3 = |connection: &str| {
        matches!(
            connections.get(connection).map(|c| &c.kind),
            Some(ConnectionKind::Mqtt(m)) if m.version != MqttVersion::V5
        )
    };
    let from = &route.from;
    match &from.spec {
        SourceSpec::Nats(nats) if nats.kv.is_some() => found.push((
            At::From,
            "a KV source cannot answer a request: a bucket's entries have no reply inbox".into(),
            "read the service's subject with a core NATS subscription (no `kv:`)".into(),
        )),
        SourceSpec::Nats(nats) if nats.jetstream.is_some() => found.push((
            At::From,
            "a JetStream source cannot answer a request: a stream's messages have no reply inbox"
                .into(),
            "read the service's subject with a core NATS subscription (no `jetstream:`)".into(),
        )),
        SourceSpec::Mqtt(_) if mqtt_3(&from.connection) => found.push((
            At::From,
            "an MQTT 3.1.1 source cannot answer a request".into(),
            version_5(&from.connection),
        )),
        SourceSpec::Nats(_) | SourceSpec::Mqtt(_) | SourceSpec::HttpServer(_) => {}
        other => found.push((
            At::From,
            format!(
                "a {} source cannot answer a request",
                other.protocol().name()
            ),
            "a request route reads core NATS, MQTT 5 or http_server".into(),
        )),
    }
    if route.to.len() != 1 {
        found.push((
            At::To,
            "a request route has exactly one sink: the one it asks".into(),
            "make one request route per service".into(),
        ));
    }
    for sink in route.to.iter().take(1) {
        match &sink.spec {
            SinkSpec::Nats(nats) if nats.kv.is_some() => found.push((
                At::To,
                "a KV sink cannot make a request: the bucket answers with its ack, not a reply"
                    .into(),
                "remove `kv:` to ask a NATS service".into(),
            )),
            SinkSpec::Nats(nats) if nats.jetstream => found.push((
                At::To,
                "a JetStream sink cannot make a request: the stream answers with its ack, not a reply"
                    .into(),
                "remove `jetstream: true` to ask a NATS service".into(),
            )),
            SinkSpec::Mqtt(_) if mqtt_3(&sink.connection) => found.push((
                At::To,
                "an MQTT 3.1.1 sink cannot make a request".into(),
                version_5(&sink.connection),
            )),
            SinkSpec::Nats(_) | SinkSpec::Mqtt(_) => {}
            other => found.push((
                At::To,
                format!("a {} sink cannot make a request", other.protocol().name()),
                "a request route's sink is core NATS or MQTT 5".into(),
            )),
        }
    }
    if route.spool.is_some() {
        found.push((
            At::Spool,
            "a request route keeps no spool: its requester waits for the reply, not for a disk"
                .into(),
            "remove `spool:`".into(),
        ));
    }
    found
}

/// Marks the MQTT connections request routes ask through, so each subscribes to its reply
/// topic (and only those do).
pub(super) fn mark_asking(routes: &[Arc<Route>], connections: &mut BTreeMap<String, Connection>) {
    let asking = routes
        .iter()
        .filter(|r| r.request.is_some())
        .flat_map(|r| &r.to);
    for sink in asking {
        if let (SinkSpec::Mqtt(_), Some(connection)) =
            (&sink.spec, connections.get_mut(&sink.connection))
            && let ConnectionKind::Mqtt(mqtt) = &mut connection.kind
        {
            mqtt.asks = true;
        }
    }
}
