//! ferry's own headers: the loop marker it puts on everything it publishes, and the headers
//! that say why a message was dead-lettered.
//!
//! The marker travels as one NATS header or MQTT 5 user property, `Ferry-Via`, whose value is
//! `<hops>;<instance>;<connections>`, e.g. `2;edge;plant,core`:
//! - `hops`: how many times any ferry has published the message;
//! - `instance`: the ferry that published it (`loop_guard.instance`, the host name by default);
//! - `connections`: the connections of that instance the message has been on, in order,
//!   starting with the one it entered by.
//!
//! One header, not three: with a header to send, every NATS publish builds the client's header
//! map (a hash and two allocations a header) and ferry's header list owns a name and a value
//! per header, which made three headers about a fifth of a relayed message's work.
//!
//! A route sink that lies on a cycle of routes never publishes a message to a connection it has
//! already been on; the one exception is a message's first hop, so a route can republish into
//! the broker it reads from. Whatever the routes, a message that has made `max_hops` hops is
//! dropped, which also stops loops between several ferry instances.

use crate::message::Headers;

/// The loop marker's header.
pub const VIA: &str = "Ferry-Via";
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
    /// Reads the marker; the connection list counts only when `instance` wrote it. A marker
    /// that does not parse counts as none: the message starts over at its first hop.
    pub fn read(headers: &Headers, instance: &str) -> Marker {
        let Some(value) = header(headers, VIA) else {
            return Marker::default();
        };
        // `instance` may hold `;` (only commas are refused), so it is whatever lies between
        // the first `;` and the last; the hop count is read whatever follows it.
        let first = value.find(';').unwrap_or(value.len());
        let last = value.rfind(';').unwrap_or(value.len());
        let hops = value[..first].trim().parse().unwrap_or(0);
        let writer = value.get(first + 1..last).unwrap_or("");
        let via = match writer == instance && last < value.len() {
            true => value[last + 1..]
                .split(',')
                .map(|c| c.trim().to_string())
                .collect(),
            false => Vec::new(),
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
        let hops = itoa::Buffer::new().format(self.hops + 1).to_owned();
        let mut value = String::with_capacity(
            hops.len() + instance.len() + origin.len() + sink.len() + 3 + self.via.len() * 8,
        );
        value.push_str(&hops);
        value.push(';');
        value.push_str(instance);
        value.push(';');
        if self.via.is_empty() {
            value.push_str(origin);
        } else {
            for (i, connection) in self.via.iter().enumerate() {
                if i > 0 {
                    value.push(',');
                }
                value.push_str(connection);
            }
        }
        value.push(',');
        value.push_str(sink);
        headers.push((VIA.to_string(), value));
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
        assert_eq!(header(&on_core, VIA), Some("1;edge;plant,core"));
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
        let h = stamped(&Marker::default(), "plant", "core");
        let m = Marker::read(&h, "other");
        assert!(m.via.is_empty());
        assert_eq!(m.hops, 1);
        let next = stamped(&Marker::read(&h, "edge"), "core", "plant");
        assert_eq!(header(&next, VIA), Some("2;edge;plant,core,plant"));
        assert!(is_ferry_header("ferry-hops") && !is_ferry_header("ferry"));
        assert!(!is_ferry_header("aéééx"), "no panic inside a character");
    }

    #[test]
    fn a_marker_that_does_not_parse_counts_as_none_but_keeps_its_hops() {
        let read = |v: &str| Marker::read(&vec![(VIA.to_string(), v.to_string())], "edge");
        assert_eq!(read(""), Marker::default());
        assert_eq!(
            read("x;edge;a"),
            Marker {
                via: vec!["a".into()],
                hops: 0
            }
        );
        assert_eq!(
            read("3"),
            Marker {
                via: vec![],
                hops: 3
            }
        );
        assert_eq!(
            read("3;edge"),
            Marker {
                via: vec![],
                hops: 3
            }
        );
        assert_eq!(
            read("3;;"),
            Marker {
                via: vec![],
                hops: 3
            }
        );
        let odd = Marker::read(&vec![(VIA.into(), "4;a;b;c,d".into())], "a;b");
        assert_eq!(
            odd,
            Marker {
                via: vec!["c".into(), "d".into()],
                hops: 4
            }
        );
    }

    proptest::proptest! {
        /// Any text in the header reads without a panic; what ferry writes reads back as written,
        /// whatever the instance's name (no commas, as the configuration requires).
        #[test]
        fn any_marker_reads_and_a_stamp_reads_back(
            text in "\\PC*",
            instance in "[^,\\r\\n]{1,12}",
            origin in "[^,;]{1,8}",
            sink in "[^,;]{1,8}",
            hops in 0u32..1000,
        ) {
            let _ = Marker::read(&vec![(VIA.to_string(), text)], &instance);
            let arrived = Marker { via: Vec::new(), hops };
            let mut h = Headers::new();
            arrived.stamp(&mut h, &instance, &origin, &sink);
            let back = Marker::read(&h, &instance);
            proptest::prop_assert_eq!(back.hops, hops + 1);
            let trimmed = |s: &str| s.trim().to_string();
            proptest::prop_assert_eq!(back.via, vec![trimmed(&origin), trimmed(&sink)]);
        }
    }
}
