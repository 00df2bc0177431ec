//! `ferry check`'s account of a configuration: every route as source → mapping → sinks, with
//! no secret in it.

use std::fmt::Write;

use crate::config::{Config, ConnectionKind, Retain, SinkSpec, SourceSpec, Target, WhenFull};

/// A human-readable description of every route.
pub fn explain(config: &Config) -> String {
    let mut out = String::new();
    for (name, c) in &config.connections {
        let _ = match &c.kind {
            ConnectionKind::Mqtt(m) => writeln!(
                out,
                "connection {name}: MQTT {} at {} as client `{}`{}",
                match m.version {
                    crate::config::MqttVersion::V5 => "5",
                    crate::config::MqttVersion::V311 => "3.1.1",
                },
                m.url,
                m.client_id,
                if m.clean_start {
                    ""
                } else {
                    " (persistent session)"
                }
            ),
            ConnectionKind::Nats(n) => {
                writeln!(out, "connection {name}: NATS at {}", n.urls.join(", "))
            }
        };
    }
    for route in &config.routes {
        let source = match &route.from.spec {
            SourceSpec::Mqtt(s) => format!(
                "mqtt {} [{}] qos {}",
                route.from.connection,
                s.subscriptions().join(", "),
                s.qos
            ),
            SourceSpec::Nats(s) => format!(
                "nats {} [{}]{}",
                route.from.connection,
                s.subject,
                s.queue_group
                    .as_ref()
                    .map(|q| format!(" queue {q}"))
                    .unwrap_or_default()
            ),
        };
        let mut mapping = Vec::new();
        if let Some(f) = &route.filter {
            mapping.push(format!("filter `{f}`"));
        }
        if let Some(t) = &route.transform {
            mapping.push(format!("transform `{t}`"));
        }
        if mapping.is_empty() {
            mapping.push("as is".into());
        }
        let sinks: Vec<String> = route
            .to
            .iter()
            .map(|s| {
                let target = match s.spec.target() {
                    Target::Auto => "auto".to_string(),
                    Target::Template(t) => t.clone(),
                };
                match &s.spec {
                    SinkSpec::Mqtt(m) => format!(
                        "mqtt {} topic {target} qos {}{}",
                        s.connection,
                        m.qos,
                        match m.retain {
                            Retain::Fixed(true) => " retained",
                            Retain::Fixed(false) => "",
                            Retain::FromSource => " retain as source",
                        }
                    ),
                    SinkSpec::Nats(_) => format!("nats {} subject {target}", s.connection),
                }
            })
            .collect();
        let when_full = match route.queue.when_full {
            WhenFull::Block => "block",
            WhenFull::DropOldest => "drop_oldest",
            WhenFull::DropNewest => "drop_newest",
        };
        let _ = writeln!(
            out,
            "route {}: {source} → {} → {}\n  queue: {} messages / {} bytes, when full: {when_full}",
            route.name,
            mapping.join(" | "),
            sinks.join(" + "),
            route.queue.max_messages,
            route.queue.max_bytes,
        );
    }
    out
}
