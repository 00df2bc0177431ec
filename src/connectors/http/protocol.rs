//! HTTP as ferry describes it: a sink only (each message one request), confirmed by a 2xx
//! answer; a sink's name is the URL it renders.

use crate::config::{ConnectionKind, Protocol, SinkSpec, Target, Tls};
use crate::connectors::protocol::{
    Credentials, Descriptor, Directions, HeaderRule, Keeps, Problem, Surroundings,
    carries_credentials, without_query,
};

pub struct Http;

impl Descriptor for Http {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }

    fn directions(&self) -> Directions {
        Directions {
            source: false,
            sink: true,
        }
    }

    fn with_article(&self) -> Option<&'static str> {
        Some("an HTTP")
    }

    fn noun(&self) -> &'static str {
        "URL"
    }

    fn header_rule(&self) -> Option<HeaderRule> {
        Some(header)
    }

    fn sink_delivery(
        &self,
        role: &str,
        to: &str,
        sink: &SinkSpec,
        _connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        matches!(sink, SinkSpec::Http(_)).then(|| {
            Keeps::AtLeastOnce(format!(
                "{role}: HTTP via `{to}`, confirmed by a 2xx answer"
            ))
        })
    }

    fn tls<'a>(&self, connection: &'a ConnectionKind) -> Option<&'a Tls> {
        match connection {
            ConnectionKind::Http(h) => Some(&h.tls),
            _ => None,
        }
    }

    fn credentials<'a>(&self, connection: &'a ConnectionKind) -> Option<Credentials<'a>> {
        match connection {
            ConnectionKind::Http(h) if carries_credentials(h.url.expose(), &h.headers) => {
                Some(Credentials {
                    what: "credentials",
                    urls: vec![h.url.expose()],
                })
            }
            _ => None,
        }
    }

    fn explain_connection(&self, connection: &ConnectionKind, _around: &Surroundings) -> String {
        let ConnectionKind::Http(h) = connection else {
            return String::new();
        };
        format!(
            "HTTP to {}, {} request(s) at once, timeout {:?}",
            without_query(h.url.expose()),
            h.max_concurrent,
            h.timeout
        )
    }

    fn explain_sink(&self, connection: &str, _target: &str, sink: &SinkSpec) -> String {
        let SinkSpec::Http(h) = sink else {
            return String::new();
        };
        format!(
            "http {connection} {} {}",
            h.method.as_str(),
            match &h.url {
                Target::Auto => "(the connection's URL)".to_string(),
                Target::Template(t) => t.clone(),
            }
        )
    }
}

/// An HTTP header name is a token (RFC 9110: letters, digits and ``!#$%&'*+-.^_`|~``); its
/// value has no line breaks and no NUL.
pub fn header(name: &str, value: &str) -> Result<(), Problem> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err((
            format!("`{name}` is not a valid HTTP header name"),
            "header names are letters, digits and `-`, e.g. `x-api-key`".into(),
        ));
    }
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        return Err((
            format!("the value of header `{name}` has a line break, which HTTP cannot carry"),
            "keep header values on one line".into(),
        ));
    }
    Ok(())
}
