//! Standard input and output as `ferry relay` writes them into its document (`-`): how lines
//! are messages, and the subject standard output writes.

use super::config::{LineFormat, StdioConnection, StdioSink, StdioSinkKeys};
use crate::config::reader::Reader;
use crate::config::yaml::{Node, Value};
use crate::config::{Diagnostic, Protocol};
use crate::connectors::protocol::PROTOCOLS;

impl Reader<'_> {
    /// Standard input or output, which only `ferry relay` builds (always well formed, so a
    /// value it does not know is a bug there): `lines: json` (with `base64` and `names`, the
    /// protocol whose syntax the lines' subjects follow) or `raw`.
    pub fn stdio_connection(&mut self, node: &Node) -> Option<StdioConnection> {
        let text = |key: &str| match node.get(key).map(|n| &n.value) {
            Some(Value::Str(s)) => Some(s.as_str()),
            _ => None,
        };
        let lines = match text("lines") {
            Some("raw") => LineFormat::Raw,
            _ => LineFormat::Json {
                base64: matches!(
                    node.get("base64").map(|n| &n.value),
                    Some(Value::Bool(true))
                ),
                names: match text("names") {
                    None => Protocol::Stdio,
                    Some(name) => match PROTOCOLS.iter().find(|d| d.name() == name) {
                        Some(d) => d.protocol(),
                        None => {
                            self.errors.push(Diagnostic {
                                pos: node.pos,
                                message: format!("`{name}` is not a protocol"),
                                hint: None,
                            });
                            return None;
                        }
                    },
                },
            },
        };
        Some(StdioConnection { lines })
    }

    /// Standard output as the sink at `node`; its subject may use `captures`.
    pub fn stdio_sink(
        &mut self,
        keys: StdioSinkKeys,
        node: &Node,
        captures: &[String],
    ) -> StdioSink {
        StdioSink {
            subject: self.target(node, "subject", keys.subject, |_| Ok(()), captures),
        }
    }
}
