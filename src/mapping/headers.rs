//! Which headers (NATS headers, MQTT 5 user properties, HTTP headers) a route's sinks get for
//! one output: the source's (unless `forward: false`), without `remove`d ones and ferry's own,
//! with the trace context continued as ferry's hop (see [`super::trace`]), plus `set`.

use crate::config::{HeaderRules, TraceMode};
use crate::message::Headers;

use super::template::{Scope, Template};
use super::trace::{self, Hop};
use super::{Failure, Stage, fail, marker};

/// A route's header rules, compiled.
#[derive(Debug)]
pub(super) struct HeaderMapping {
    forward: bool,
    remove: Vec<String>,
    pub(super) set: Vec<(String, Template)>,
    trace: TraceMode,
}

impl HeaderMapping {
    pub(super) fn new(rules: &HeaderRules) -> Result<HeaderMapping, String> {
        Ok(HeaderMapping {
            forward: rules.forward,
            remove: rules.remove.clone(),
            set: (rules.set.iter())
                .map(|(name, t)| Ok((name.clone(), Template::compile(t)?)))
                .collect::<Result<_, String>>()?,
            trace: rules.trace,
        })
    }

    /// What the trace context of `headers` (a message as it arrived) becomes on this route.
    pub(super) fn trace_hop(&self, headers: &Headers) -> Hop {
        Hop::of(headers, self.trace)
    }

    /// The headers every sink gets for one output of a message whose trace goes on as `hop`.
    pub(super) fn headers(&self, scope: &Scope, hop: &Hop) -> Result<Headers, Failure> {
        // Unless the route leaves them alone, the trace headers are ferry's to write.
        let ours = |k: &str| self.trace != TraceMode::Off && trace::is_trace_header(k);
        let mut headers: Headers = if self.forward {
            (scope.message.headers.iter())
                .filter(|(k, _)| {
                    !marker::is_ferry_header(k)
                        && !ours(k)
                        && !self.remove.iter().any(|r| r.eq_ignore_ascii_case(k))
                })
                .cloned()
                .collect()
        } else {
            Headers::new()
        };
        hop.write(&mut headers);
        for (name, template) in &self.set {
            let value = match template.render(scope) {
                Ok(v) => v,
                Err(e) => return fail(Stage::Template, format!("header `{name}`: {e}")),
            };
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            headers.push((name.clone(), value));
        }
        Ok(headers)
    }
}
