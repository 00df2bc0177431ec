//! A route's `headers:` section: which headers (NATS headers, MQTT 5 user properties, HTTP
//! headers) it passes on, and what it does with W3C trace context.

use serde::Deserialize;

use super::values::{self, Flag, OneOrList, Text, TextMap};

/// Headers and user properties.
// Which headers (NATS headers, MQTT 5 user properties) a route passes on.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderRules {
    /// Pass on the headers the message arrived with.
    #[schemars(with = "Flag")]
    pub forward: bool,
    /// Header names not to pass on.
    // Compared case-insensitively.
    #[serde(
        deserialize_with = "values::one_or_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(
        with = "Option<OneOrList<Text>>",
        extend("x-name" = "header name")
    )]
    pub remove: Vec<String>,
    /// Headers to set (values are templates), e.g. `{site: plant-1}`.
    // Added or replaced: name and template, in the order written.
    #[serde(
        deserialize_with = "values::text_map",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(
        with = "Option<TextMap>",
        extend(
            "x-name" = "header value",
            "errorMessage" = "`headers.set` must be a mapping, found {found}",
            "x-hint" = "e.g. `set: { site: plant-1 }`"
        )
    )]
    pub set: Vec<(String, String)>,
    /// W3C trace context (`traceparent`, `tracestate`): `propagate` continues a trace a
    /// message arrives with as ferry's own hop (same trace id, new parent id), `start` also
    /// begins one for a message without, `off` passes them as any other header.
    pub trace: TraceMode,
}

impl Default for HeaderRules {
    fn default() -> Self {
        HeaderRules {
            forward: true,
            remove: Vec::new(),
            set: Vec::new(),
            trace: TraceMode::default(),
        }
    }
}

/// What a route does with W3C trace context.
// `forward` and `remove` leave the trace headers to this setting unless it is `off`; `set`
// still wins over it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[schemars(extend("errorMessage" = "`{value}` is not a trace setting"))]
pub enum TraceMode {
    /// A valid `traceparent` goes on as ferry's child span, with its `tracestate`; a malformed
    /// one is replaced by a new trace (and counted); a message without one gets none.
    #[default]
    Propagate,
    /// As `propagate`, and a message without a `traceparent` starts a new trace.
    Start,
    /// The trace headers are headers like any other (`forward`, `remove`).
    Off,
}
