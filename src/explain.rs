//! `ferry check`'s account of a configuration: every route as source → mapping → sinks, with
//! no secret in it.

use std::fmt::Write;

use crate::config::loops;
use crate::config::{
    Config, Delivery, PayloadFormat, Protocol, Target, TraceMode, WhenFull, delivery, security,
};
use crate::connectors::protocol::{Described, Subscribes, Surroundings};
use crate::mapping::{Failure, Mapping, Outcome, Step, answer, marker};
use crate::message::Message;

/// What a request route promises its requesters.
fn explain_request(route: &crate::config::Route, request: &crate::config::Request) -> String {
    let timeout = crate::config::values::duration::text(request.timeout);
    let (replied, timed_out) = match route.from.spec.protocol() {
        Protocol::HttpServer => ("the HTTP response (200)", "504".to_string()),
        Protocol::Mqtt => (
            "its response topic, with its correlation data",
            format!(
                "an empty message with user property {} 504",
                answer::ERROR_CODE
            ),
        ),
        _ => (
            "its reply inbox",
            format!("an empty reply with header {} 504", answer::ERROR_CODE),
        ),
    };
    format!(
        "request: each message is a request to the sink, its reply goes back to {replied}; \
         up to {} at once; no reply within {timeout}: the requester gets {timed_out}; a reply \
         after that is dropped (counted)",
        request.max_in_flight
    )
}

/// A human-readable description of every route.
pub fn explain(config: &Config) -> String {
    let mut out = String::new();
    let state_dir = config.state_dir();
    let around = Surroundings {
        state_dir: &state_dir,
        admin: config.admin.as_ref().map(|a| a.listen),
    };
    for (name, c) in &config.connections {
        let _ = writeln!(
            out,
            "connection {name}: {}",
            c.kind
                .protocol()
                .descriptor()
                .explain_connection(&c.kind, &around)
        );
    }
    // What the network can see: said here too because `ferry check` runs before `ferry run`
    // (ExecStartPre), where an operator reads it.
    for (name, c) in &config.connections {
        if security::verification_off(c) {
            let _ = writeln!(
                out,
                "warning: connection {name}: TLS certificate verification is OFF \
                 (insecure_skip_verify: true): anyone on the path can impersonate the server"
            );
        }
        if let Some(warning) = security::plaintext_credentials(c) {
            let _ = writeln!(out, "warning: connection {name}: {warning}");
        }
    }
    let analysis = loops::analyse(config);
    for (index, route) in config.routes.iter().enumerate() {
        let source = route
            .from
            .spec
            .protocol()
            .descriptor()
            .explain_source(&route.from.connection, &route.from.spec);
        let mut mapping = Vec::new();
        if route.from.envelope {
            mapping.push("unwrap envelope".to_string());
        }
        if route.from.format != PayloadFormat::Json {
            mapping.push(format!("read as {}", format_name(route.from.format)));
        }
        if let Some(m) = &route.from.pattern {
            mapping.push(format!("match `{m}`"));
        }
        if let Some(f) = &route.filter {
            mapping.push(format!("filter `{f}`"));
        }
        if let Some(t) = &route.transform {
            mapping.push(format!("transform `{t}`"));
        }
        let h = &route.headers;
        if !h.forward {
            mapping.push("headers dropped".into());
        }
        if !h.remove.is_empty() {
            mapping.push(format!("headers without {}", h.remove.join(", ")));
        }
        // Names only: a value may hold a secret from `${...}`.
        for (name, _) in &h.set {
            mapping.push(format!("header {name} set"));
        }
        if mapping.is_empty() {
            mapping.push("as is".into());
        }
        let sink = |s: &crate::config::Sink| {
            let target = match s.spec.target() {
                Target::Auto => "auto".to_string(),
                Target::Template(t) => t.clone(),
            };
            let mut text =
                s.spec
                    .protocol()
                    .descriptor()
                    .explain_sink(&s.connection, &target, &s.spec);
            if s.format != PayloadFormat::Json {
                text.push_str(&format!(", written as {}", format_name(s.format)));
            }
            if s.envelope {
                text.push_str(", in an envelope");
            }
            text
        };
        let sinks: Vec<String> = route.to.iter().map(sink).collect();
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
        if let Some(d) = &route.dead_letter {
            let _ = writeln!(out, "  dead letters: {}", sink(d));
        }
        // The default (continue a trace that arrives) goes unsaid, as defaults do here.
        match route.headers.trace {
            TraceMode::Propagate => {}
            TraceMode::Start => {
                let _ = writeln!(
                    out,
                    "  trace: continues a message's W3C trace as a new span, and starts one for a message without"
                );
            }
            TraceMode::Off => {
                let _ = writeln!(
                    out,
                    "  trace: off; traceparent and tracestate pass as any other header"
                );
            }
        }
        if let Some(request) = &route.request {
            let _ = writeln!(out, "  {}", explain_request(route, request));
        }
        if let Some(dir) = config.spool_dir(route) {
            let max = route.spool.as_ref().map_or(0, |s| s.max_bytes);
            let _ = writeln!(out, "  spool: {} (up to {max} bytes)", dir.display());
        }
        let guarantee = delivery::guarantee(route, &config.connections);
        let why = match (route.delivery, guarantee.limits.first()) {
            (Some(Delivery::AtMostOnce), _) => " (as configured)".to_string(),
            (_, Some(limit)) => format!(": {}; {}", limit.what, limit.fix),
            (_, None) => String::new(),
        };
        let _ = writeln!(out, "  delivery: {}{why}", guarantee.delivery.name());
        for note in &guarantee.notes {
            let _ = writeln!(out, "    {note}");
        }
        if analysis.no_local.contains(&index) {
            let _ = writeln!(
                out,
                "  no_local: {} does not send back what ferry itself publishes there",
                route.from.connection
            );
        }
    }
    for cycle in &analysis.cycles {
        match echo_warning(config, cycle) {
            Some(warning) => {
                let _ = writeln!(out, "warning: {warning}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "loop: {}
  guarded: ferry's marker stops each message before it returns to a connection it has been on",
                    cycle.describe(config)
                );
            }
        }
    }
    if analysis.truncated {
        out.push_str("warning: the routes form more loops than ferry checks one by one; some may not be listed
");
    }
    out
}

/// For a loop the guard stops only after one echo (one hop over MQTT 3.1.1), what a user must
/// know; `None` for every other loop.
pub fn echo_warning(config: &Config, cycle: &loops::Cycle) -> Option<String> {
    let loops::Verdict::EchoOnce { connection, topics } = &cycle.verdict else {
        return None;
    };
    let topics: Vec<String> = topics.iter().map(|t| format!("`{t}`")).collect();
    Some(format!(
        "loop {}
  MQTT 3.1.1 connection {connection} cannot carry ferry's loop marker: a message that entered elsewhere comes back once (an echo) on {}; use `version: 5` on {connection} to stop it",
        cycle.describe(config),
        topics.join(", ")
    ))
}

fn format_name(format: PayloadFormat) -> &'static str {
    match format {
        PayloadFormat::Json => "json",
        PayloadFormat::Text => "text",
        PayloadFormat::Bytes => "bytes",
    }
}

/// `ferry map`'s account of what route `route` would make of `message`: each publish (sink,
/// subject, headers, payload), or why nothing is published. Connects to nothing. The flag is
/// false when the message (or one of its outputs) would fail and be dead-lettered.
pub fn map(config: &Config, route: &str, message: &Message) -> Result<(String, bool), String> {
    let Some(index) = config.routes.iter().position(|r| r.name == route) else {
        let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        return Err(format!(
            "no route is called `{route}`; the routes are: {}",
            names.join(", ")
        ));
    };
    let r = &config.routes[index];
    let protocol = |connection: &str| config.connections[connection].kind.protocol();
    if let Some(rule) = protocol(&r.from.connection).descriptor().name_rule()
        && let Err((what, hint)) = rule(&message.subject)
    {
        return Err(format!("{what} ({hint})"));
    }
    // From an SSE stream, the name is the event type, which templates also see as `event`.
    let sse_message;
    let message = if protocol(&r.from.connection)
        .descriptor()
        .names_are_event_types()
        && message.event.is_none()
    {
        sse_message = Message {
            event: Some(message.subject.clone()),
            ..message.clone()
        };
        &sse_message
    } else {
        message
    };
    if !loops::receives(r, &message.subject) {
        let filters: Vec<String> = r
            .from
            .spec
            .names()
            .iter()
            .map(|f| format!("`{f}`"))
            .collect();
        return Err(format!(
            "route `{route}` never receives `{}`: its source subscribes to {}",
            message.subject,
            filters.join(", ")
        ));
    }
    let analysis = loops::analyse(config);
    let instance = crate::pipeline::instance_name(config);
    let mapping = Mapping::new(&analysis.resolve(config, index)?, &instance)?;
    let mut out = format!(
        "route {route}: {} {} `{}`\n",
        protocol(&r.from.connection),
        r.from.connection,
        message.subject
    );
    let mut ok = true;
    let mut failed = |out: &mut String, failure: &Failure| {
        ok = false;
        let _ = writeln!(out, "  ✗ fails at {failure}");
        match mapping.dead_letter(message, failure) {
            None => out.push_str("    no dead_letter sink: counted and logged\n"),
            Some(Err(e)) => {
                let _ = writeln!(out, "    the dead-letter sink cannot name it: {e}");
            }
            Some(Ok(letter)) => {
                let connection = mapping.dead_letter_connection().unwrap_or("?");
                describe(out, connection, protocol(connection), &letter);
            }
        }
    };
    match mapping.apply(message) {
        Outcome::Filtered => {
            out.push_str("  left out by `match:`, the filter or a transform that yields nothing: nothing is published\n");
        }
        Outcome::TooManyHops(hops) => {
            let _ = writeln!(
                out,
                "  dropped: it has made {hops} ferry hops (loop_guard.max_hops)"
            );
        }
        Outcome::Failed(failure) => failed(&mut out, &failure),
        Outcome::Mapped { steps, echoes, .. } => {
            for step in steps {
                match step {
                    Step::Publish { sink, message } => {
                        let connection = mapping.sink_connection(sink);
                        describe(&mut out, connection, protocol(connection), &message);
                    }
                    Step::Fail(failure) => failed(&mut out, &failure),
                }
            }
            if echoes > 0 {
                let _ = writeln!(
                    out,
                    "  {echoes} publish(es) left out by the loop guard: the message has been on that connection"
                );
            }
        }
    }
    Ok((out, ok))
}

/// One publish: `→ connection (protocol) `subject``, its headers (ferry's loop marker left out)
/// and its payload.
fn describe(out: &mut String, connection: &str, protocol: Protocol, message: &Message) {
    let _ = writeln!(out, "  → {connection} ({protocol}) `{}`", message.subject);
    let headers: Vec<String> = message
        .headers
        .iter()
        .filter(|(k, _)| k != marker::VIA)
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if !headers.is_empty() {
        let _ = writeln!(out, "    headers: {}", headers.join(", "));
    }
    let _ = writeln!(
        out,
        "    payload: {}",
        String::from_utf8_lossy(&message.payload)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Lookup, parse};

    /// From an SSE stream, the name `ferry map` is given is the event type, as the stream's
    /// connector would deliver it: templates see it as `event` too.
    #[test]
    fn map_from_an_sse_stream_sees_the_name_as_the_event() {
        let yaml = r#"
connections:
  feed: { sse: { url: "http://127.0.0.1:8080/s" } }
  core: { nats: { url: "nats://127.0.0.1:4222" } }
routes:
  - name: r
    from: { connection: feed }
    to: { connection: core, subject: "feed.{{ event }}" }
"#;
        let config = parse(yaml, "bridges.yaml", &Lookup::system()).unwrap();
        let (out, ok) = map(&config, "r", &Message::new("test".into(), "update", "{}")).unwrap();
        assert!(ok, "{out}");
        assert!(out.contains("feed.update"), "{out}");
    }
}
