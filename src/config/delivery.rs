//! What a route can promise end to end: the weakest of its source, its queue and its sinks.
//!
//! `ferry check` prints it, and the parser refuses `delivery: at-least-once` where a side
//! cannot keep that promise, naming the side and the fix. Pure: it reads the typed config only.

use std::collections::BTreeMap;

use super::model::*;

/// Why a route cannot be at-least-once, and what would fix it.
#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    pub what: String,
    pub fix: String,
}

/// The guarantee a route gives, with the reasons.
#[derive(Clone, Debug, PartialEq)]
pub struct Guarantee {
    /// What the route really gives: at-least-once only when nothing in `limits` applies and the
    /// user did not ask for at-most-once.
    pub delivery: Delivery,
    /// What stands in the way of at-least-once.
    pub limits: Vec<Limit>,
    /// How each side confirms, one line each, for `ferry check`.
    pub notes: Vec<String>,
}

/// The guarantee `route` can give over `connections`.
pub fn guarantee(route: &Route, connections: &BTreeMap<String, Connection>) -> Guarantee {
    let mut limits = Vec::new();
    let mut notes = Vec::new();
    let mut limit = |what: String, fix: &str| {
        limits.push(Limit {
            what,
            fix: fix.to_string(),
        })
    };
    let from = &route.from.connection;
    match (&route.from.spec, connections.get(from).map(|c| &c.kind)) {
        (SourceSpec::Mqtt(source), Some(ConnectionKind::Mqtt(mqtt))) => {
            if source.qos == 0 {
                limit(
                    format!("the source subscribes to `{from}` at QoS 0, which the broker never redelivers"),
                    "set `qos: 1` on the source",
                );
            } else if mqtt.clean_start {
                limit(
                    format!("connection `{from}` starts a clean session, so what arrives while ferry is down is lost"),
                    "remove `clean_start: true` (a persistent session is the default)",
                );
            } else if mqtt.version == MqttVersion::V5 && mqtt.session_expiry.is_none() {
                limit(
                    format!("the session on `{from}` ends with each connection"),
                    "set `session_expiry` (e.g. `1d`) on the connection",
                );
            } else {
                notes.push(format!(
                    "source: MQTT QoS {} on `{from}`, acknowledged (PUBACK) after every sink confirmed; the broker keeps the session while ferry is away",
                    source.qos
                ));
            }
        }
        (SourceSpec::Nats(source), _) => match &source.jetstream {
            None => limit(
                format!("core NATS subscription `{}` on `{from}` has no redelivery", source.subject),
                "read through a JetStream consumer: `jetstream: { stream: NAME, consumer: NAME }` on the source",
            ),
            Some(js) => notes.push(format!(
                "source: JetStream consumer `{}` on stream `{}`, acknowledged after every sink confirmed; unacknowledged messages come back after {}",
                js.consumer,
                js.stream,
                humantime::format_duration(js.ack_wait)
            )),
        },
        (SourceSpec::Sse(_), Some(ConnectionKind::Sse(sse))) => {
            if sse.resume {
                notes.push(format!(
                    "source: SSE stream `{from}`, resumed with Last-Event-ID after the last event every sink confirmed (the server must replay from it)"
                ));
            } else {
                limit(
                    format!("`{from}` does not resume (`resume: false`), so events sent while ferry is away are skipped"),
                    "remove `resume: false` from the connection",
                );
            }
        }
        (SourceSpec::MigratoryData(md), _) => notes.push(format!(
            "source: MigratoryData subject `{}` on `{from}`, polled; its epoch/seq cursor is saved after every sink confirmed, so a restart resumes after the last delivered message (as far back as the server's history goes)",
            md.subject
        )),
        _ => {}
    }
    if route.queue.when_full != WhenFull::Block {
        limit(
            "the queue drops messages when it is full (`when_full`)".into(),
            "use `when_full: block` (the default), with a `spool` if the source must not wait",
        );
    }
    for sink in route.to.iter().chain(&route.dead_letter) {
        let to = &sink.connection;
        let role = if route.dead_letter.as_ref() == Some(sink) {
            "dead-letter sink"
        } else {
            "sink"
        };
        match &sink.spec {
            SinkSpec::Mqtt(mqtt) if mqtt.qos == 0 => limit(
                format!("the {role} publishes to `{to}` at QoS 0, which nothing confirms"),
                "set `qos: 1` on the sink",
            ),
            SinkSpec::Mqtt(mqtt) => notes.push(format!(
                "{role}: MQTT QoS {} on `{to}`, confirmed by the broker's {}",
                mqtt.qos,
                if mqtt.qos == 1 { "PUBACK" } else { "PUBCOMP" }
            )),
            SinkSpec::Nats(nats) if nats.jetstream => notes.push(format!(
                "{role}: JetStream via `{to}`, confirmed by the stream's ack; Nats-Msg-Id lets the stream drop a re-send"
            )),
            SinkSpec::Nats(_) => notes.push(format!(
                "{role}: core NATS via `{to}`, confirmed once the server has it (flush); subscribers not connected at that moment miss it"
            )),
            SinkSpec::Http(_) => notes.push(format!(
                "{role}: HTTP via `{to}`, confirmed by a 2xx answer"
            )),
            SinkSpec::MigratoryData(md) => notes.push(format!(
                "{role}: MigratoryData via `{to}` (qos {}), confirmed by the answer `OK`; `FAILED` is retried, `DENY` and `MESSAGE_SIZE_LIMIT_EXCEEDED` go to the dead-letter sink",
                md.qos.as_str()
            )),
            SinkSpec::Stdio(_) => notes.push(format!(
                "{role}: standard output, confirmed once the line is written and flushed"
            )),
            SinkSpec::SseServer(_) => {
                let buffer = match connections.get(to).map(|c| &c.kind) {
                    Some(ConnectionKind::SseServer(s)) => s.buffer,
                    _ => 0,
                };
                notes.push(format!(
                    "{role}: served on `{to}`, kept for replay in its last {buffer} events (clients reconnecting with Last-Event-ID within them get it)"
                ))
            }
        }
    }
    if route.spool.is_some() {
        notes.push(
            "spool: while a sink is unreachable, its messages wait on disk and the source is acknowledged once they are there".into(),
        );
    }
    let delivery = match route.delivery {
        Some(Delivery::AtMostOnce) => Delivery::AtMostOnce,
        _ if limits.is_empty() => Delivery::AtLeastOnce,
        _ => Delivery::AtMostOnce,
    };
    Guarantee {
        delivery,
        limits,
        notes,
    }
}
