//! `GET /routes` (every route and connection as JSON) and `GET /routes/{route}/tap` (what a
//! route sees, live, as newline-delimited JSON; `ferry tap` reads it).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use super::Shared;
use crate::config::WhenFull;
use crate::pipeline::observe::View;
use crate::pipeline::tap::{TapEvent, Tapped};

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{value:#}\n"),
    )
        .into_response()
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// `GET /routes`: the field names are the README's ("Health, metrics and tap").
pub(super) async fn list(State(shared): State<Shared>) -> Response {
    json_response(StatusCode::OK, &describe(&shared.observed.view()))
}

/// Every route and connection of `view`, as `/routes` shows them.
fn describe(view: &View) -> Value {
    let routes: Vec<Value> = view
        .routes
        .iter()
        .map(|r| {
            let c = &r.counters;
            let n = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
            let queue = r.queue.config();
            let sent_by_sink: serde_json::Map<String, Value> = c
                .sink_latency
                .sinks()
                .into_iter()
                .map(|(sink, timing)| (sink, timing.sent.load(Ordering::Relaxed).into()))
                .collect();
            json!({
                "name": r.name,
                "from": r.from,
                "to": r.to,
                "dead_letter": r.dead_letter,
                "delivery": if r.at_least_once { "at-least-once" } else { "at-most-once" },
                "counters": {
                    "received": n(&c.received),
                    "sent": n(&c.sent),
                    "sent_by_sink": sent_by_sink,
                    "filtered": n(&c.filtered),
                    "failed": n(&c.failed),
                    "dead_lettered": n(&c.dead_lettered),
                    "dropped": r.queue.dropped(),
                    "echoes": n(&c.echoes),
                    "looped": n(&c.looped),
                    "spooled": n(&c.spooled),
                    "forwarded": n(&c.forwarded),
                    "pending_acks": r.queue.len() as u64 + n(&c.unconfirmed),
                },
                "queue": {
                    "messages": r.queue.len(),
                    "bytes": r.queue.bytes(),
                    "max_messages": queue.max_messages,
                    "max_bytes": queue.max_bytes,
                    "when_full": match queue.when_full {
                        WhenFull::Block => "block",
                        WhenFull::DropOldest => "drop_oldest",
                        WhenFull::DropNewest => "drop_newest",
                    },
                },
                "spool_bytes": n(&c.spool_bytes),
            })
        })
        .collect();
    let connections: Vec<Value> = view
        .connections
        .iter()
        .map(|c| {
            let s = c.snapshot();
            json!({
                "name": c.name(),
                "protocol": c.protocol(),
                "state": s.state.as_str(),
                "since": rfc3339(s.since),
                "reconnects": s.reconnects,
                "last_error": s.last_error,
            })
        })
        .collect();
    json!({ "routes": routes, "connections": connections })
}

/// `GET /routes/{route}/tap`: one JSON object per line for each event of the route from now
/// on, `{"skipped": N}` when this reader was too slow for N of them; 404 with the known routes
/// for a route that does not exist.
pub(super) async fn tap(State(shared): State<Shared>, Path(route): Path<String>) -> Response {
    let view = shared.observed.view();
    let Some(found) = view.routes.iter().find(|r| r.name == route) else {
        let names: Vec<&str> = view.routes.iter().map(|r| r.name.as_str()).collect();
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("no route `{route}`"), "routes": names }),
        );
    };
    let tapper = found.tap.subscribe();
    drop(view);
    let closing = shared.closing.clone();
    let lines = futures_util::stream::unfold((tapper, closing), |(mut tapper, closing)| async {
        let next = tokio::select! {
            next = tapper.next() => next,
            _ = closing.cancelled() => return None,
        };
        let line = match next {
            Tapped::Event(event) => event_json(&event),
            Tapped::Skipped(n) => json!({ "skipped": n }),
            Tapped::Closed => return None,
        };
        let mut text = line.to_string();
        text.push('\n');
        Some((Ok::<_, Infallible>(Bytes::from(text)), (tapper, closing)))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}

/// One tap event as JSON: `payload` is the text, or base64 with `"payload_base64": true`
/// when it is not UTF-8.
fn event_json(event: &TapEvent) -> Value {
    let m = &event.message;
    let mut line = serde_json::Map::new();
    line.insert("stage".into(), event.stage.as_str().into());
    if let Some(sink) = &event.sink {
        line.insert("sink".into(), sink.clone().into());
    }
    line.insert("subject".into(), m.subject.clone().into());
    let headers: Vec<Value> = m.headers.iter().map(|(k, v)| json!([k, v])).collect();
    line.insert("headers".into(), headers.into());
    match std::str::from_utf8(&m.payload) {
        Ok(text) => {
            line.insert("payload".into(), text.into());
        }
        Err(_) => {
            line.insert(
                "payload".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(&m.payload)
                    .into(),
            );
            line.insert("payload_base64".into(), true.into());
        }
    }
    if let Some(id) = &m.id {
        line.insert("id".into(), id.clone().into());
    }
    if let Some(reason) = &event.reason {
        line.insert("reason".into(), reason.clone().into());
    }
    line.insert("time".into(), rfc3339(event.time).into());
    Value::Object(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::pipeline::tap::Stage;

    #[test]
    fn tap_events_carry_text_or_base64_payloads() {
        let mut message = Message::new("mq".into(), "sensors/kitchen", "{\"t\":21.5}");
        message.headers.push(("unit".into(), "C".into()));
        message.id = Some("42".into());
        let event = TapEvent {
            stage: Stage::After,
            sink: Some("nats".into()),
            reason: None,
            message: message.clone(),
            time: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(
            event_json(&event),
            json!({
                "stage": "after", "sink": "nats", "subject": "sensors/kitchen",
                "headers": [["unit", "C"]], "payload": "{\"t\":21.5}", "id": "42",
                "time": "1970-01-01T00:00:00.000Z",
            })
        );
        message.payload = Bytes::from_static(&[0xff, 0x00]);
        let binary = event_json(&TapEvent {
            stage: Stage::Before,
            sink: None,
            reason: None,
            message,
            time: SystemTime::UNIX_EPOCH,
        });
        assert_eq!(binary["payload"], "/wA=");
        assert_eq!(binary["payload_base64"], true);
    }
}
