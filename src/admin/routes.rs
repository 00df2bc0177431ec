//! `GET /routes` (every route and connection as JSON) and `GET /routes/{route}/tap` (what a
//! route sees, live, as newline-delimited JSON; `ferry tap` reads it).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
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

/// `GET /routes`: the field names are those docs/operations.md shows ("`/routes`").
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
                "name": r.route.name,
                "from": r.route.from.connection,
                "to": r.route.to.iter().map(|s| &s.connection).collect::<Vec<_>>(),
                "dead_letter": r.route.dead_letter.as_ref().map(|s| &s.connection),
                "delivery": if r.at_least_once { "at-least-once" } else { "at-most-once" },
                "counters": {
                    "received": n(&c.received),
                    "sent": n(&c.sent),
                    "sent_by_sink": sent_by_sink,
                    "filtered": n(&c.filtered),
                    "failed": n(&c.failed),
                    "dead_lettered": n(&c.dead_lettered),
                    "retried": n(&c.retried),
                    "dropped": r.queue.dropped(),
                    "echoes": n(&c.echoes),
                    "looped": n(&c.looped),
                    "traces_replaced": n(&c.traces_replaced),
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

/// Tap lines already encoded, shared by every tapper: each event is turned into JSON once,
/// however many tap it (50 tappers encoding every 16 KiB payload each took the one worker
/// thread from the routes). Keyed by the event's address, which cannot be reused while the
/// entry holds the event.
#[derive(Default)]
pub(super) struct TapLines(Mutex<EncodedLines>);

#[derive(Default)]
pub(super) struct EncodedLines {
    by_event: HashMap<usize, Bytes>,
    order: VecDeque<Arc<TapEvent>>,
}

/// Encoded lines kept: as many as a tap's channel holds, so that a tapper anywhere in its
/// backlog finds its line (a slower one was told it skipped events).
/// (pipeline/tap.rs: 1024 events).
const TAP_LINES_KEPT: usize = 1024;

impl TapLines {
    fn line(&self, event: &Arc<TapEvent>) -> Bytes {
        let key = Arc::as_ptr(event) as usize;
        if let Some(line) = self.0.lock().expect("tap lines lock").by_event.get(&key) {
            return line.clone();
        }
        let mut text = event_json(event).to_string();
        text.push('\n');
        let line = Bytes::from(text);
        let mut lines = self.0.lock().expect("tap lines lock");
        if lines.by_event.contains_key(&key) {
            return line;
        }
        if lines.order.len() == TAP_LINES_KEPT
            && let Some(oldest) = lines.order.pop_front()
        {
            lines.by_event.remove(&(Arc::as_ptr(&oldest) as usize));
        }
        lines.order.push_back(event.clone());
        lines.by_event.insert(key, line.clone());
        line
    }
}

/// How often a quiet tap gets an empty line, so that the listener's idle timeout (which
/// closes connections on which nothing moves) does not end it; `ferry tap` skips empty lines.
const TAP_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// `GET /routes/{route}/tap`: one JSON object per line for each event of the route from now
/// on, `{"skipped": N}` when this reader was too slow for N of them. 403 while taps are off
/// (`admin.taps`), 404 for a route that does not exist; neither names the routes there are
/// (`/routes` does, to whoever may read it).
pub(super) async fn tap(State(shared): State<Shared>, Path(route): Path<String>) -> Response {
    if !shared.taps {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({ "error": "taps are off on this ferry: `admin: {taps: true}` turns them on" }),
        );
    }
    let view = shared.observed.view();
    let Some(found) = view.routes.iter().find(|r| r.name() == route) else {
        return json_response(StatusCode::NOT_FOUND, &json!({ "error": "no such route" }));
    };
    let tapper = found.tap.subscribe();
    drop(view);
    let closing = shared.closing.clone();
    let lines = shared.tap_lines.clone();
    let body = futures_util::stream::unfold((tapper, closing), move |(mut tapper, closing)| {
        let lines = lines.clone();
        async move {
            let next = tokio::select! {
                next = tapper.next() => next,
                _ = closing.cancelled() => return None,
                () = tokio::time::sleep(TAP_HEARTBEAT) => {
                    return Some((Ok(Bytes::from_static(b"\n")), (tapper, closing)));
                }
            };
            let line = match next {
                Tapped::Event(event) => lines.line(&event),
                Tapped::Skipped(n) => Bytes::from(format!("{}\n", json!({ "skipped": n }))),
                Tapped::Closed => return None,
            };
            Some((Ok::<_, Infallible>(line), (tapper, closing)))
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
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
    if let Some(trace) = crate::mapping::trace::trace_id(&m.headers) {
        line.insert("trace_id".into(), trace.into());
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

    #[test]
    fn a_traced_message_shows_its_trace_id() {
        let mut message = Message::new("mq".into(), "s", "x");
        message.headers.push((
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ));
        let event = event_json(&TapEvent {
            stage: Stage::Before,
            sink: None,
            reason: None,
            message,
            time: SystemTime::UNIX_EPOCH,
        });
        assert_eq!(event["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
