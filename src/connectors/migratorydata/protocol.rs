//! MigratoryData (through its REST API) as ferry describes it: both ends of a route, subjects
//! like `/a/b`, no headers; a source's epoch/seq cursor makes it at-least-once.

use crate::config::{ConnectionKind, Protocol, Retain, SinkSpec, SourceSpec, Tls};
use crate::connectors::protocol::{
    Credentials, Descriptor, Directions, Keeps, NameRule, Problem, Surroundings,
};

pub struct MigratoryData;

impl Descriptor for MigratoryData {
    fn protocol(&self) -> Protocol {
        Protocol::MigratoryData
    }

    fn directions(&self) -> Directions {
        Directions {
            source: true,
            sink: true,
        }
    }

    fn with_article(&self) -> Option<&'static str> {
        Some("a MigratoryData")
    }

    fn name_rule(&self) -> Option<NameRule> {
        Some(subject)
    }

    fn source_names(&self, source: &SourceSpec) -> Vec<String> {
        match source {
            SourceSpec::MigratoryData(s) => vec![s.subject.clone()],
            _ => Vec::new(),
        }
    }

    fn source_delivery(
        &self,
        from: &str,
        source: &SourceSpec,
        _connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        let SourceSpec::MigratoryData(md) = source else {
            return None;
        };
        Some(Keeps::AtLeastOnce(format!(
            "source: MigratoryData subject `{}` on `{from}`, polled; its epoch/seq cursor is saved after every sink confirmed, so a restart resumes after the last delivered message (as far back as the server's history goes)",
            md.subject
        )))
    }

    fn sink_delivery(
        &self,
        role: &str,
        to: &str,
        sink: &SinkSpec,
        _connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        let SinkSpec::MigratoryData(md) = sink else {
            return None;
        };
        Some(Keeps::AtLeastOnce(format!(
            "{role}: MigratoryData via `{to}` (qos {}), confirmed by the answer `OK`; `FAILED` is retried, `DENY` and `MESSAGE_SIZE_LIMIT_EXCEEDED` go to the dead-letter sink",
            md.qos.as_str()
        )))
    }

    fn tls<'a>(&self, connection: &'a ConnectionKind) -> Option<&'a Tls> {
        match connection {
            ConnectionKind::MigratoryData(m) => Some(&m.tls),
            _ => None,
        }
    }

    /// Every request carries the token.
    fn credentials<'a>(&self, connection: &'a ConnectionKind) -> Option<Credentials<'a>> {
        match connection {
            ConnectionKind::MigratoryData(m) => Some(Credentials {
                what: "its token",
                urls: m.servers.iter().map(String::as_str).collect(),
            }),
            _ => None,
        }
    }

    fn explain_connection(&self, connection: &ConnectionKind, _around: &Surroundings) -> String {
        let ConnectionKind::MigratoryData(m) = connection else {
            return String::new();
        };
        // Never the token.
        format!(
            "MigratoryData REST API at {} (in this order, failing over), polled every {:?}, timeout {:?}",
            m.servers
                .iter()
                .map(|u| crate::config::redact_url(u))
                .collect::<Vec<_>>()
                .join(", "),
            m.poll_interval,
            m.timeout
        )
    }

    fn explain_source(&self, connection: &str, source: &SourceSpec) -> String {
        let SourceSpec::MigratoryData(s) = source else {
            return String::new();
        };
        format!(
            "migratorydata {connection} [{}]{}",
            s.subject,
            match s.history {
                Some(n) => format!(" history {n}"),
                None => String::new(),
            }
        )
    }

    fn explain_sink(&self, connection: &str, target: &str, sink: &SinkSpec) -> String {
        let SinkSpec::MigratoryData(m) = sink else {
            return String::new();
        };
        format!(
            "migratorydata {connection} subject {target} qos {}{}",
            m.qos.as_str(),
            match m.retained {
                Retain::Fixed(true) => " retained",
                Retain::Fixed(false) => "",
                Retain::FromSource => " retained as source",
            }
        )
    }
}

/// A MigratoryData subject: `/` then one or more non-empty segments separated by `/`
/// (`/server/status`), no whitespace or control characters.
pub fn subject(subject: &str) -> Result<(), Problem> {
    let hint =
        || "a MigratoryData subject starts with `/`, e.g. `/sensors/kitchen/temp`".to_string();
    let Some(rest) = subject.strip_prefix('/') else {
        return Err((
            format!("`{subject}` is not a MigratoryData subject: it must start with `/`"),
            hint(),
        ));
    };
    if rest.split('/').any(str::is_empty) {
        return Err((
            format!("`{subject}` is not a MigratoryData subject: it has an empty segment"),
            "no `//` and no `/` at the end, e.g. `/sensors/kitchen`".into(),
        ));
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err((
            format!("`{subject}` is not a MigratoryData subject: it contains whitespace"),
            hint(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migratorydata_rules() {
        for ok in ["/a", "/server/status", "/a/b.c/d-e"] {
            subject(ok).unwrap();
        }
        for bad in ["", "/", "a/b", "/a//b", "/a/", "/a b", "/a\nb"] {
            assert!(subject(bad).is_err(), "{bad}");
        }
        assert!(subject("a/b").unwrap_err().0.contains("start with `/`"));
    }
}
