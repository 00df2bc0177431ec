//! ferry's own headers: the loop marker it puts on everything it publishes, and the headers
//! that say why a message was dead-lettered.
//!
//! The marker travels as NATS headers or MQTT 5 user properties:
//! - `Ferry-Instance`: the ferry that published it (`loop_guard.instance`, the host name by
//!   default);
//! - `Ferry-Via`: the connections of that instance the message has been on, in order, starting
//!   with the one it entered by;
//! - `Ferry-Hops`: how many times any ferry has published it.
//!
//! A route sink that lies on a cycle of routes never publishes a message to a connection it has
//! already been on; the one exception is a message's first hop, so a route can republish into
//! the broker it reads from. Whatever the routes, a message that has made `max_hops` hops is
//! dropped, which also stops loops between several ferry instances.

use crate::message::Headers;

pub const INSTANCE: &str = "Ferry-Instance";
pub const VIA: &str = "Ferry-Via";
pub const HOPS: &str = "Ferry-Hops";
/// Dead letters: the route, the stage (decode, filter, transform, template, sink) and why.
pub const ROUTE: &str = "Ferry-Route";
pub const STAGE: &str = "Ferry-Stage";
pub const ERROR: &str = "Ferry-Error";

/// Whether `name` is one of ferry's own headers, which a route never forwards as they came.
pub fn is_ferry_header(name: &str) -> bool {
    name.len() > 6 && name.as_bytes()[..6].eq_ignore_ascii_case(b"ferry-")
}

/// The first value of header `name` (names compare case-insensitively).
pub fn header<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The loop marker a message arrived with, as one instance sees it.
#[derive(Debug, Default, PartialEq)]
pub struct Marker {
    /// Connections of *this* instance the message has been on; empty on its first hop here.
    pub via: Vec<String>,
    pub hops: u32,
}

impl Marker {
    /// Reads the marker; the connection list counts only when `instance` wrote it.
    pub fn read(headers: &Headers, instance: &str) -> Marker {
        let hops = header(headers, HOPS)
            .and_then(|h| h.trim().parse().ok())
            .unwrap_or(0);
        let via = match header(headers, INSTANCE) {
            Some(i) if i == instance => header(headers, VIA)
                .map(|v| v.split(',').map(|c| c.trim().to_string()).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Marker { via, hops }
    }

    /// Whether the message arrived without a marker (or one of no instance's hops): what
    /// [`Marker::stamp`] appends is then the same for every such message of a sink.
    pub fn is_absent(&self) -> bool {
        self.hops == 0 && self.via.is_empty()
    }

    /// Whether the message has already been on one of `connections` (the names of one broker).
    /// Never on its first hop through this instance.
    pub fn has_been_on(&self, connections: &[String]) -> bool {
        self.via.iter().any(|c| connections.contains(c))
    }

    /// Appends the marker for a publish by `instance` to connection `sink` of a message that
    /// came from connection `origin`.
    pub fn stamp(&self, headers: &mut Headers, instance: &str, origin: &str, sink: &str) {
        let mut via = String::with_capacity(origin.len() + sink.len() + 1);
        if self.via.is_empty() {
            via.push_str(origin);
        } else {
            for (i, connection) in self.via.iter().enumerate() {
                if i > 0 {
                    via.push(',');
                }
                via.push_str(connection);
            }
        }
        via.push(',');
        via.push_str(sink);
        // The headers were cloned to their exact length: one growth for the three, not two.
        headers.reserve_exact(3);
        headers.push((INSTANCE.to_string(), instance.to_string()));
        headers.push((VIA.to_string(), via));
        headers.push((
            HOPS.to_string(),
            itoa::Buffer::new().format(self.hops + 1).to_string(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(marker: &Marker, origin: &str, sink: &str) -> Headers {
        let mut h = Headers::new();
        marker.stamp(&mut h, "edge", origin, sink);
        h
    }

    #[test]
    fn a_two_way_pair_stops_at_the_echo() {
        // plant → core: first hop, never blocked.
        let fresh = Marker::read(&Headers::new(), "edge");
        assert_eq!(fresh, Marker::default());
        assert!(!fresh.has_been_on(&["plant".into()]));
        let on_core = stamped(&fresh, "plant", "core");
        assert_eq!(header(&on_core, VIA), Some("plant,core"));
        // core → plant: the message came from plant.
        let back = Marker::read(&on_core, "edge");
        assert_eq!(back.hops, 1);
        assert!(back.has_been_on(&["plant".into()]));
    }

    #[test]
    fn a_route_may_republish_into_its_own_broker_once() {
        let fresh = Marker::default();
        assert!(!fresh.has_been_on(&["plant".into()]));
        let echo = Marker::read(&stamped(&fresh, "plant", "plant"), "edge");
        assert!(echo.has_been_on(&["plant".into()]));
    }

    #[test]
    fn another_instances_path_does_not_count_but_its_hops_do() {
        let mut h = stamped(&Marker::default(), "plant", "core");
        h[0].1 = "other".into();
        let m = Marker::read(&h, "edge");
        assert!(m.via.is_empty());
        assert_eq!(m.hops, 1);
        assert!(is_ferry_header("ferry-hops") && !is_ferry_header("ferry"));
        assert!(!is_ferry_header("aéééx"), "no panic inside a character");
    }
}
