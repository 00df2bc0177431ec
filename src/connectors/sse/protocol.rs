//! A server-sent-events stream as ferry describes it: a source only, whose messages are named
//! by their event type; at-least-once when it resumes with `Last-Event-ID`.

use crate::config::{ConnectionKind, Protocol, SourceSpec, Tls};
use crate::connectors::protocol::{
    Credentials, Descriptor, Directions, End, Keeps, Limit, NameRule, Problem, Surroundings,
    carries_credentials, without_query,
};

pub struct Sse;

impl Descriptor for Sse {
    fn protocol(&self) -> Protocol {
        Protocol::Sse
    }

    fn directions(&self) -> Directions {
        Directions {
            source: true,
            sink: false,
        }
    }

    fn with_article(&self) -> Option<&'static str> {
        Some("an SSE")
    }

    fn refusal(&self, connection: &str, end: End) -> Option<Problem> {
        (end == End::Sink).then(|| {
            (
                format!("connection `{connection}` is an SSE stream ferry reads: it cannot be a sink"),
                "to serve SSE to browsers use an `sse_server` connection; to POST events use `http`".into(),
            )
        })
    }

    fn names_are_event_types(&self) -> bool {
        true
    }

    fn name_rule(&self) -> Option<NameRule> {
        Some(event_type)
    }

    fn noun(&self) -> &'static str {
        "event type"
    }

    fn source_names(&self, source: &SourceSpec) -> Vec<String> {
        match source {
            SourceSpec::Sse(s) => s.events.clone(),
            _ => Vec::new(),
        }
    }

    fn takes(&self, source: &SourceSpec, name: &str) -> bool {
        matches!(source, SourceSpec::Sse(s) if s.takes(name))
    }

    fn source_delivery(
        &self,
        from: &str,
        source: &SourceSpec,
        connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        let (SourceSpec::Sse(_), Some(ConnectionKind::Sse(sse))) = (source, connection) else {
            return None;
        };
        Some(if sse.resume {
            Keeps::AtLeastOnce(format!(
                "source: SSE stream `{from}`, resumed with Last-Event-ID after the last event every sink confirmed (the server must replay from it)"
            ))
        } else {
            Keeps::AtMostOnce(Limit::new(
                format!(
                    "`{from}` does not resume (`resume: false`), so events sent while ferry is away are skipped"
                ),
                "remove `resume: false` from the connection",
            ))
        })
    }

    fn tls<'a>(&self, connection: &'a ConnectionKind) -> Option<&'a Tls> {
        match connection {
            ConnectionKind::Sse(s) => Some(&s.tls),
            _ => None,
        }
    }

    /// The stream's URL stands for the handshake's too: a relative handshake URL goes to the
    /// same server.
    fn credentials<'a>(&self, connection: &'a ConnectionKind) -> Option<Credentials<'a>> {
        let ConnectionKind::Sse(s) = connection else {
            return None;
        };
        let handshake = s.handshake.as_ref();
        (carries_credentials(s.url.expose(), &s.headers)
            || handshake.is_some_and(|h| carries_credentials(h.url.expose(), &h.headers)))
        .then(|| Credentials {
            what: "credentials",
            urls: vec![s.url.expose()],
        })
    }

    fn explain_connection(&self, connection: &ConnectionKind, around: &Surroundings) -> String {
        let ConnectionKind::Sse(e) = connection else {
            return String::new();
        };
        // Header names only: their values are usually API keys.
        let mut extras = Vec::new();
        if !e.headers.is_empty() {
            let names: Vec<&str> = e.headers.iter().map(|(k, _)| k.as_str()).collect();
            extras.push(format!("headers {}", names.join(", ")));
        }
        if let Some(h) = &e.handshake {
            extras.push(format!(
                "handshake {} {} on `{}`",
                h.method.as_str(),
                h.url,
                h.on
            ));
        }
        extras.push(if e.resume {
            format!(
                "resumes with Last-Event-ID (cursor in {})",
                around.state_dir.display()
            )
        } else {
            "no resume".into()
        });
        extras.push(format!("idle timeout {:?}", e.idle_timeout));
        format!(
            "SSE stream {} {}; {}",
            e.method.as_str(),
            without_query(e.url.expose()),
            extras.join(", ")
        )
    }

    fn explain_source(&self, connection: &str, source: &SourceSpec) -> String {
        match source {
            SourceSpec::Sse(s) if s.events.is_empty() => format!("sse {connection} [every event]"),
            SourceSpec::Sse(s) => format!("sse {connection} [{}]", s.events.join(", ")),
            _ => String::new(),
        }
    }
}

/// An SSE event type is one line of text.
pub fn event_type(name: &str) -> Result<(), Problem> {
    if name.is_empty() || name.contains(['\r', '\n']) {
        return Err((
            format!("`{name}` cannot be an SSE event type"),
            "an event type is one non-empty line of text".into(),
        ));
    }
    Ok(())
}
