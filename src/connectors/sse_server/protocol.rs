//! An SSE stream ferry serves (on the admin listener) as ferry describes it: a sink only, whose
//! names are event types; what it keeps for replay is its buffer of recent events.

use crate::config::{ConnectionKind, Protocol, SinkSpec};
use crate::connectors::protocol::{Descriptor, Directions, Keeps, NameRule, Surroundings};
use crate::connectors::sse::protocol::event_type;

pub struct SseServer;

impl Descriptor for SseServer {
    fn protocol(&self) -> Protocol {
        Protocol::SseServer
    }

    fn directions(&self) -> Directions {
        Directions {
            source: false,
            sink: true,
        }
    }

    fn with_article(&self) -> Option<&'static str> {
        Some("an sse_server")
    }

    fn serves_on_admin_listener(&self) -> bool {
        true
    }

    fn name_rule(&self) -> Option<NameRule> {
        Some(event_type)
    }

    fn noun(&self) -> &'static str {
        "event type"
    }

    fn sink_delivery(
        &self,
        role: &str,
        to: &str,
        sink: &SinkSpec,
        connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        let SinkSpec::SseServer(_) = sink else {
            return None;
        };
        let buffer = match connection {
            Some(ConnectionKind::SseServer(s)) => s.buffer,
            _ => 0,
        };
        Some(Keeps::AtLeastOnce(format!(
            "{role}: served on `{to}`, kept for replay in its last {buffer} events (clients reconnecting with Last-Event-ID within them get it)"
        )))
    }

    fn explain_connection(&self, connection: &ConnectionKind, around: &Surroundings) -> String {
        let ConnectionKind::SseServer(s) = connection else {
            return String::new();
        };
        format!(
            "SSE stream served at http://{}{} (replays the last {} events)",
            around.admin.map(|a| a.to_string()).unwrap_or_default(),
            s.path,
            s.buffer
        )
    }

    fn explain_sink(&self, connection: &str, target: &str, sink: &SinkSpec) -> String {
        match sink {
            SinkSpec::SseServer(_) => format!("sse_server {connection} event {target}"),
            _ => String::new(),
        }
    }
}
