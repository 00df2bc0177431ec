//! A route resolved against the rest of the configuration: what the stages that work on one
//! route (the mapping) need to know beyond the route itself, so they never read the whole
//! configuration. Built by the loop analysis (`Analysis::resolve` in loops.rs), which knows
//! which sinks lie on a cycle.

use super::model::{Protocol, Route};

/// One route and what the configuration around it says about it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedRoute<'c> {
    pub route: &'c Route,
    /// The protocol whose names the source's messages carry: its connection's, or for JSON
    /// lines on standard input the one the lines carry.
    pub source_names: Protocol,
    /// One per sink of `route.to`, in order.
    pub sinks: Vec<ResolvedSink>,
    /// The dead-letter sink's, when the route has one.
    pub dead_letter: Option<ResolvedSink>,
    /// A message that has crossed this many ferry hops is dropped (`loop_guard.max_hops`).
    pub max_hops: u32,
}

/// One sink of a resolved route.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedSink {
    /// Its connection's protocol.
    pub protocol: Protocol,
    /// When the sink lies on a cycle of routes: every connection to its broker, which a
    /// message must not have been on (ferry's loop guard); `None`: the sink is not guarded.
    pub guard: Option<Vec<String>>,
    /// Whether its connection can carry headers at all: an MQTT 3.1.1 connection has nowhere
    /// to put them.
    pub carries_headers: bool,
}
