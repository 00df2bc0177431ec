//! `GET /metrics`: ferry's counters in the Prometheus exposition formats.
//!
//! A [`Collector`] reads the pipeline's own atomics (route counters, queues, connection
//! states) at scrape time, so nothing is counted twice and a reload, which replaces the
//! pipeline's view, shows at the next scrape. The registry is the listener's own (no global
//! recorder), so several pipelines in one process never share or clash.
//!
//! prometheus-client writes OpenMetrics text, which Prometheus asks for first; a scraper that
//! does not ask for it gets the same samples in the classic text format 0.0.4
//! ([`to_prometheus_text`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::Shared;
use crate::config::WhenFull;
use crate::contracts::status::State as ConnectionState;
use crate::pipeline::observe::{Observed, RouteView, View};
use crate::pipeline::route::RouteCounters;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The listener's registry, holding one collector over the running pipeline.
pub(super) struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Metrics of the pipeline `observed` shows; `started` is the process's start time.
    pub(super) fn new(observed: Observed, started: SystemTime) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(PipelineCollector { observed, started }));
        Metrics { registry }
    }

    /// The whole exposition in OpenMetrics text.
    fn openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// `GET /metrics`: OpenMetrics when the scraper accepts it, else text format 0.0.4.
pub(super) async fn serve(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let openmetrics = match shared.metrics.openmetrics() {
        Ok(text) => text,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], openmetrics).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&openmetrics),
        )
            .into_response()
    }
}

/// Reads the running pipeline at each scrape.
struct PipelineCollector {
    observed: Observed,
    started: SystemTime,
}

impl std::fmt::Debug for PipelineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipelineCollector")
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Writes one metric family: its descriptor, then one sample per `(labels, metric)`.
fn family<'a, M: EncodeMetric, const N: usize>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = ([(&'a str, &'a str); N], M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, sample) in samples {
        sample.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One counter sample per route.
fn per_route<'a>(
    view: &'a View,
    value: impl Fn(&RouteView) -> u64 + 'a,
) -> impl Iterator<Item = ([(&'a str, &'a str); 1], ConstCounter<u64>)> + 'a {
    view.routes
        .iter()
        .map(move |r| ([("route", r.name())], ConstCounter::new(value(r))))
}

/// One gauge sample per route.
fn per_route_gauge<'a>(
    view: &'a View,
    value: impl Fn(&RouteView) -> u64 + 'a,
) -> impl Iterator<Item = ([(&'a str, &'a str); 1], ConstGauge<i64>)> + 'a {
    view.routes.iter().map(move |r| {
        let v = i64::try_from(value(r)).unwrap_or(i64::MAX);
        ([("route", r.name())], ConstGauge::new(v))
    })
}

impl Collector for PipelineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let view = self.observed.view();
        let view = &*view;
        let e = &mut encoder;
        let started = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let build = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        build.encode(e.encode_descriptor(
            "ferry_build",
            "The ferry build serving these metrics (label version)",
            None,
            build.metric_type(),
        )?)?;
        ConstGauge::new(started).encode(e.encode_descriptor(
            "ferry_start_time_seconds",
            "When this ferry process started, in seconds since the Unix epoch",
            None,
            Gauge,
        )?)?;

        family(
            e,
            "ferry_messages_received",
            "Messages the route took from its queue",
            Counter,
            per_route(view, |r| load(&r.counters.received)),
        )?;
        let mut sent = Vec::new();
        let latencies: Vec<_> = view
            .routes
            .iter()
            .map(|r| (r, r.counters.sink_latency.sinks()))
            .collect();
        for (route, sinks) in &latencies {
            for (sink, timing) in sinks {
                sent.push((
                    [("route", route.name()), ("sink", sink.as_str())],
                    ConstCounter::new(load(&timing.sent)),
                ));
            }
        }
        family(
            e,
            "ferry_messages_sent",
            "Messages the sink on connection `sink` confirmed (spooled ones once forwarded)",
            Counter,
            sent,
        )?;
        family(
            e,
            "ferry_messages_filtered",
            "Messages left out by the route's match, filter, or a transform that yielded nothing",
            Counter,
            per_route(view, |r| load(&r.counters.filtered)),
        )?;
        let mut dropped = Vec::new();
        for r in &view.routes {
            let route = r.name();
            let full = match r.queue.config().when_full {
                WhenFull::DropNewest => "queue_full_drop_newest",
                // With `block` nothing is dropped; the zero shows under the other name.
                WhenFull::DropOldest | WhenFull::Block => "queue_full_drop_oldest",
            };
            for (reason, n) in [
                (full, r.queue.dropped()),
                ("loop_max_hops", load(&r.counters.looped)),
                ("echo", load(&r.counters.echoes)),
            ] {
                dropped.push(([("route", route), ("reason", reason)], ConstCounter::new(n)));
            }
        }
        family(
            e,
            "ferry_messages_dropped",
            "Messages (or, for reason echo, publishes) dropped on purpose: queue full under when_full drop_oldest or drop_newest, more ferry hops than loop_guard.max_hops, or an echo of ferry's own publish",
            Counter,
            dropped,
        )?;
        family(
            e,
            "ferry_messages_failed",
            "Messages that could not be mapped or delivered (not JSON, a jq error, a bad subject, rejected by a sink)",
            Counter,
            per_route(view, |r| load(&r.counters.failed)),
        )?;
        family(
            e,
            "ferry_publishes_retried",
            "Publishes tried again after their sink failed to take or confirm them (unavailable, no confirmation in time, busy); what failed may still have reached the far side, as a duplicate",
            Counter,
            per_route(view, |r| load(&r.counters.retried)),
        )?;
        family(
            e,
            "ferry_traces_replaced",
            "Messages whose traceparent was malformed, sent on with a new trace instead (W3C Trace Context)",
            Counter,
            per_route(view, |r| load(&r.counters.traces_replaced)),
        )?;
        family(
            e,
            "ferry_messages_dead_lettered",
            "Failed messages the route's dead-letter sink took",
            Counter,
            per_route(view, |r| load(&r.counters.dead_lettered)),
        )?;
        // Request routes only: a route that makes no requests has nothing to show here.
        let requests = |value: fn(&RouteCounters) -> &AtomicU64| {
            (view.routes.iter())
                .filter(|r| r.route.request.is_some())
                .map(move |r| {
                    (
                        [("route", r.name())],
                        ConstCounter::new(load(value(&r.counters))),
                    )
                })
        };
        family(
            e,
            "ferry_requests",
            "Requests the request route made on its sink",
            Counter,
            requests(|c| &c.requests),
        )?;
        family(
            e,
            "ferry_replies",
            "Replies the request route handed back to their requesters",
            Counter,
            requests(|c| &c.replies),
        )?;
        family(
            e,
            "ferry_request_timeouts",
            "Requests that got no reply within the route's request timeout (the requester was told)",
            Counter,
            requests(|c| &c.timeouts),
        )?;
        family(
            e,
            "ferry_late_replies",
            "Replies that came after their request timed out (dropped)",
            Counter,
            requests(|c| &c.late_replies),
        )?;
        family(
            e,
            "ferry_queue_messages",
            "Messages waiting in the route's queue",
            Gauge,
            per_route_gauge(view, |r| r.queue.len() as u64),
        )?;
        family(
            e,
            "ferry_queue_bytes",
            "Payload bytes waiting in the route's queue",
            Gauge,
            per_route_gauge(view, |r| r.queue.bytes() as u64),
        )?;
        family(
            e,
            "ferry_queue_max_messages",
            "The route's queue bound in messages (queue max_messages)",
            Gauge,
            per_route_gauge(view, |r| r.queue.config().max_messages as u64),
        )?;
        family(
            e,
            "ferry_queue_max_bytes",
            "The route's queue bound in payload bytes (queue max_bytes)",
            Gauge,
            per_route_gauge(view, |r| r.queue.config().max_bytes as u64),
        )?;
        family(
            e,
            "ferry_pending_acks",
            "Messages whose source is not acknowledged yet: queued, being delivered, or waiting for the spool's fsync",
            Gauge,
            per_route_gauge(view, |r| {
                r.queue.len() as u64 + load(&r.counters.unconfirmed)
            }),
        )?;
        family(
            e,
            "ferry_spool_bytes",
            "Bytes the route's spools hold on disk now",
            Gauge,
            per_route_gauge(view, |r| load(&r.counters.spool_bytes)),
        )?;
        family(
            e,
            "ferry_spooled",
            "Publishes that went to a sink's spool (the sink was unreachable, or its spool not empty)",
            Counter,
            per_route(view, |r| load(&r.counters.spooled)),
        )?;
        family(
            e,
            "ferry_spool_damaged_records",
            "Damaged spool records found, set aside to .damaged files and skipped (a torn tail included)",
            Counter,
            per_route(view, |r| load(&r.counters.spool_damaged)),
        )?;
        family(
            e,
            "ferry_spool_forwarded",
            "Spooled messages forwarded to their sink since",
            Counter,
            per_route(view, |r| load(&r.counters.forwarded)),
        )?;
        let mut histograms = encoder.encode_descriptor(
            "ferry_sink_latency_seconds",
            "How long a sink took to confirm one publish (one try that succeeded), by route and sink connection",
            None,
            MetricType::Histogram,
        )?;
        for (route, sinks) in &latencies {
            for (sink, timing) in sinks {
                let labels = [("route", route.name()), ("sink", sink.as_str())];
                timing.seconds.encode(histograms.encode_family(&labels)?)?;
            }
        }

        let e = &mut encoder;
        let connections: Vec<_> = view.connections.iter().map(|c| (c, c.snapshot())).collect();
        family(
            e,
            "ferry_connection_up",
            "1 when the connection is up (connected and subscribed), else 0",
            Gauge,
            connections.iter().map(|(c, s)| {
                (
                    [("connection", c.name()), ("protocol", c.protocol())],
                    ConstGauge::new(i64::from(s.state == ConnectionState::Up)),
                )
            }),
        )?;
        family(
            e,
            "ferry_connection_state",
            "1 for the connection's current state (connecting, up, down), 0 for the others",
            Gauge,
            connections.iter().flat_map(|(c, s)| {
                [
                    ConnectionState::Connecting,
                    ConnectionState::Up,
                    ConnectionState::Down,
                ]
                .map(|state| {
                    (
                        [("connection", c.name()), ("state", state.as_str())],
                        ConstGauge::new(i64::from(s.state == state)),
                    )
                })
            }),
        )?;
        family(
            e,
            "ferry_connection_state_since_seconds",
            "When the connection's state last changed, in seconds since the Unix epoch",
            Gauge,
            connections.iter().map(|(c, s)| {
                let since = s
                    .since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                ([("connection", c.name())], ConstGauge::new(since))
            }),
        )?;
        family(
            e,
            "ferry_connection_reconnects",
            "Times the connection came back up after it was lost",
            Counter,
            connections
                .iter()
                .map(|(c, s)| ([("connection", c.name())], ConstCounter::new(s.reconnects))),
        )?;
        family(
            e,
            "ferry_connection_input_over_limit",
            "Times what the server sent exceeded one of ferry's size limits and was dropped (an SSE line or event past max_line_size or max_event_size: the stream was reopened from the last event ID)",
            Counter,
            connections.iter().map(|(c, _)| {
                (
                    [("connection", c.name())],
                    ConstCounter::new(c.over_limit_count()),
                )
            }),
        )?;
        let restarts = view.supervisor.restarts();
        family(
            e,
            "ferry_task_restarts",
            "Times a task of a connection, a route or ferry itself panicked or ended unasked and was restarted (by kind, owner name and task)",
            Counter,
            restarts.iter().map(|(owner, task, n)| {
                (
                    [
                        ("kind", owner.kind()),
                        ("owner", owner.name()),
                        ("task", *task),
                    ],
                    ConstCounter::new(*n),
                )
            }),
        )?;
        let down = view.supervisor.down();
        family(
            e,
            "ferry_task_down",
            "1 while a connection, route or ferry task that failed waits for its restart (by kind, owner name and the task that failed)",
            Gauge,
            down.iter().map(|(owner, down)| {
                (
                    [
                        ("kind", owner.kind()),
                        ("owner", owner.name()),
                        ("task", down.task),
                    ],
                    ConstGauge::new(1i64),
                )
            }),
        )?;
        Ok(())
    }
}

/// OpenMetrics text as the classic Prometheus text format 0.0.4: counters and info metrics
/// are named with their sample suffix (`_total`, `_info`; an info becomes a gauge), and the
/// `# EOF` and `# UNIT` lines go. The samples are the same.
pub(super) fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A HELP line waits for its TYPE line, which says what the family is called in 0.0.4.
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.rsplit_once(' ')
        {
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                kind => (name.to_string(), kind),
            };
            if let Some(help) = help.take() {
                let text = help.split_once(' ').map_or("", |(_, text)| text);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if let Some(help) = help.take() {
            out.push_str(&format!("# HELP {help}\n"));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_text_format_0_0_4() {
        let open = "# HELP ferry_build The build.\n# TYPE ferry_build info\nferry_build_info{version=\"1\"} 1\n# HELP ferry_messages_received Taken.\n# TYPE ferry_messages_received counter\nferry_messages_received_total{route=\"a\"} 3\n# HELP ferry_queue_messages Waiting.\n# TYPE ferry_queue_messages gauge\nferry_queue_messages{route=\"a\"} 0\n# EOF\n";
        assert_eq!(
            to_prometheus_text(open),
            "# HELP ferry_build_info The build.\n# TYPE ferry_build_info gauge\nferry_build_info{version=\"1\"} 1\n# HELP ferry_messages_received_total Taken.\n# TYPE ferry_messages_received_total counter\nferry_messages_received_total{route=\"a\"} 3\n# HELP ferry_queue_messages Waiting.\n# TYPE ferry_queue_messages gauge\nferry_queue_messages{route=\"a\"} 0\n"
        );
    }

    #[test]
    fn an_empty_pipeline_still_has_build_info_and_start_time() {
        let metrics = Metrics::new(Observed::default(), SystemTime::UNIX_EPOCH);
        let text = metrics.openmetrics().unwrap();
        assert!(text.contains(&format!(
            "ferry_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("ferry_start_time_seconds 0.0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
