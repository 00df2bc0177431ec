//! Messages POSTed to ferry (on the admin listener) as ferry describes them: a source only,
//! whose names are the request paths under the connection's path; at-least-once because the
//! client hears "accepted" only once every sink confirmed, and sends again otherwise.

use crate::config::{ConnectionKind, Protocol, SourceSpec};
use crate::connectors::protocol::{Descriptor, Directions, Keeps, Surroundings};

pub struct HttpServer;

impl Descriptor for HttpServer {
    fn protocol(&self) -> Protocol {
        Protocol::HttpServer
    }

    fn directions(&self) -> Directions {
        Directions {
            source: true,
            sink: false,
        }
    }

    fn with_article(&self) -> Option<&'static str> {
        Some("an http_server")
    }

    fn serves_on_admin_listener(&self) -> bool {
        true
    }

    fn noun(&self) -> &'static str {
        "path"
    }

    fn source_delivery(
        &self,
        from: &str,
        source: &SourceSpec,
        _connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        matches!(source, SourceSpec::HttpServer(_)).then(|| {
            Keeps::AtLeastOnce(format!(
                "source: POSTs to `{from}`, answered 202 only once every sink confirmed (503 or 504 otherwise: the client sends again)"
            ))
        })
    }

    fn explain_connection(&self, connection: &ConnectionKind, around: &Surroundings) -> String {
        let ConnectionKind::HttpServer(h) = connection else {
            return String::new();
        };
        let auth = if h.token.is_some() {
            "bearer token"
        } else {
            "no token"
        };
        format!(
            "POSTs taken at http://{}{} and under it ({auth}, bodies up to {} bytes)",
            around.admin.map(|a| a.to_string()).unwrap_or_default(),
            h.path,
            h.max_body
        )
    }

    fn explain_source(&self, connection: &str, source: &SourceSpec) -> String {
        match source {
            SourceSpec::HttpServer(_) => format!("http_server {connection} [every path]"),
            _ => String::new(),
        }
    }
}
