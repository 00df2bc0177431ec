//! Standard input and output (`ferry relay -`) as ferry describes them: both ends of a relay,
//! one message per line; never written in a `bridges.yaml`.

use crate::config::{ConnectionKind, LineFormat, Protocol, SinkSpec, SourceSpec};
use crate::connectors::protocol::{Descriptor, Directions, Keeps, Surroundings};

pub struct Stdio;

impl Descriptor for Stdio {
    fn protocol(&self) -> Protocol {
        Protocol::Stdio
    }

    fn directions(&self) -> Directions {
        Directions {
            source: true,
            sink: true,
        }
    }

    fn in_config_files(&self) -> bool {
        false
    }

    fn sink_delivery(
        &self,
        role: &str,
        _to: &str,
        sink: &SinkSpec,
        _connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        matches!(sink, SinkSpec::Stdio(_)).then(|| {
            Keeps::AtLeastOnce(format!(
                "{role}: standard output, confirmed once the line is written and flushed"
            ))
        })
    }

    fn explain_connection(&self, connection: &ConnectionKind, _around: &Surroundings) -> String {
        let ConnectionKind::Stdio(s) = connection else {
            return String::new();
        };
        format!(
            "standard input/output, {}",
            match s.lines {
                LineFormat::Json { base64: false, .. } => "JSON lines",
                LineFormat::Json { base64: true, .. } => "JSON lines, payloads in base64",
                LineFormat::Raw => "raw lines",
            }
        )
    }

    fn explain_source(&self, connection: &str, source: &SourceSpec) -> String {
        match source {
            SourceSpec::Stdio => format!("stdin {connection}"),
            _ => String::new(),
        }
    }

    fn explain_sink(&self, connection: &str, target: &str, sink: &SinkSpec) -> String {
        match sink {
            SinkSpec::Stdio(_) => format!("stdout {connection} subject {target}"),
            _ => String::new(),
        }
    }
}
