//! What a route can promise end to end: the weakest of its source, its queue and its sinks.
//!
//! `ferry check` prints it, and the parser refuses `delivery: at-least-once` where a side
//! cannot keep that promise, naming the side and the fix. Pure: it reads the typed config only.

use std::collections::BTreeMap;

use super::model::*;
pub use crate::connectors::protocol::Limit;
use crate::connectors::protocol::{Described, Keeps};

/// The guarantee a route gives, with the reasons.
#[derive(Clone, Debug, PartialEq)]
pub struct Guarantee {
    /// What the route really gives: at-least-once only when nothing in `limits` applies and the
    /// user did not ask for at-most-once.
    pub delivery: Delivery,
    /// What stands in the way of at-least-once.
    pub limits: Vec<Limit>,
    /// How each side confirms, one line each, for `ferry check`.
    pub notes: Vec<String>,
}

/// The guarantee `route` can give over `connections`: each side says what it keeps (its
/// protocol's [`Descriptor`](crate::connectors::protocol::Descriptor)), the queue keeps
/// everything unless it drops when full.
pub fn guarantee(route: &Route, connections: &BTreeMap<String, Connection>) -> Guarantee {
    let mut limits = Vec::new();
    let mut notes = Vec::new();
    let mut record = |keeps: Option<Keeps>| match keeps {
        Some(Keeps::AtLeastOnce(note)) => notes.push(note),
        Some(Keeps::AtMostOnce(limit)) => limits.push(limit),
        None => {}
    };
    let kind = |name: &str| connections.get(name).map(|c| &c.kind);
    let from = &route.from.connection;
    let source = &route.from.spec;
    record(
        source
            .protocol()
            .descriptor()
            .source_delivery(from, source, kind(from)),
    );
    if route.queue.when_full != WhenFull::Block {
        record(Some(Keeps::AtMostOnce(Limit::new(
            "the queue drops messages when it is full (`when_full`)".into(),
            "use `when_full: block` (the default), with a `spool` if the source must not wait",
        ))));
    }
    for sink in route.to.iter().chain(&route.dead_letter) {
        let role = if route.dead_letter.as_ref() == Some(sink) {
            "dead-letter sink"
        } else {
            "sink"
        };
        let to = &sink.connection;
        record(
            sink.spec
                .protocol()
                .descriptor()
                .sink_delivery(role, to, &sink.spec, kind(to)),
        );
    }
    if route.spool.is_some() {
        notes.push(
            "spool: while a sink is unreachable, its messages wait on disk and the source is acknowledged once they are there".into(),
        );
    }
    let delivery = match route.delivery {
        Some(Delivery::AtMostOnce) => Delivery::AtMostOnce,
        _ if limits.is_empty() => Delivery::AtLeastOnce,
        _ => Delivery::AtMostOnce,
    };
    Guarantee {
        delivery,
        limits,
        notes,
    }
}
