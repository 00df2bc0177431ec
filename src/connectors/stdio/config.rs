//! Standard input and output of `ferry relay`: the keys of a source and sink on them, and the
//! connection and sink the connector receives (how a line is a message, and the subject written
//! with each). Never written in a `bridges.yaml`: `ferry relay` builds them from `-`.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::values::{self, Text};
use crate::config::{Protocol, Target};

/// A source standard input reads (`ferry relay - ...`): never in a file.
#[derive(Deserialize, JsonSchema)]
pub struct StdioSourceKeys {}

/// A sink standard output writes (`ferry relay ... -`): never in a file.
#[derive(Deserialize, JsonSchema)]
pub struct StdioSinkKeys {
    #[serde(default = "values::auto")]
    #[schemars(with = "Text")]
    pub subject: String,
}

/// Standard input or output of `ferry relay`: how a line is a message.
#[derive(Clone, Debug, PartialEq)]
pub struct StdioConnection {
    pub lines: LineFormat,
}

impl StdioConnection {
    /// The protocol whose syntax the names of its messages follow: for JSON lines, the one
    /// they carry; raw lines are standard input's own.
    pub fn names(&self) -> Protocol {
        match self.lines {
            LineFormat::Json { names, .. } => names,
            LineFormat::Raw => Protocol::Stdio,
        }
    }
}

/// How one line of standard input or output is one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// `{"subject": ..., "payload": ..., "headers": {...}, "time": ...}`; the payload as text,
    /// or base64 (`"payload_base64": true` on the line) when it is not UTF-8 or when
    /// `base64` asks for it always.
    ///
    /// `names` is the protocol whose syntax subjects follow on this side, so that a capture
    /// replays onto either broker: on standard output, the source's, written in each line as
    /// `"protocol"`; on standard input, the sink's, to which a line's own `"protocol"` (if it
    /// has one) is converted by the MQTT⇄NATS codec.
    Json { base64: bool, names: Protocol },
    /// The line is the payload, without its newline; the subject is the relay's `--subject`
    /// (input) or dropped (output).
    Raw,
}

/// Standard output as a sink.
#[derive(Clone, Debug, PartialEq)]
pub struct StdioSink {
    /// The subject written with each message; `Auto` keeps the source's own.
    pub subject: Target,
}
