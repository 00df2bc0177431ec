//! W3C Trace Context (`traceparent`, `tracestate`) across a route: ferry takes part in a trace
//! as one hop. A message that arrives with a valid `traceparent` leaves with the same trace id
//! and a new parent id (ferry's span), its flags and its `tracestate` unchanged; one whose
//! `traceparent` is malformed is given a new trace (the specification's rule: a participant
//! that cannot parse it restarts the trace and ignores `tracestate`); one without gets a new
//! trace only on a route that starts traces (`headers: { trace: start }`).
//!
//! The header names are lower case on the way out, as the specification writes them; on the
//! way in any case matches, since MQTT 5 user properties and NATS headers keep the case a
//! client chose.

use crate::config::TraceMode;
use crate::message::Headers;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The length of a version-00 `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
const LENGTH: usize = 55;

/// A parsed `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value per the specification: version `ff` is invalid; version
    /// `00` is exactly 55 characters; a later version is read by its first 55 characters
    /// (followed by `-` and more, or nothing). Hex is lower case; an all-zero trace id or
    /// parent id is invalid. Surrounding spaces and tabs (header whitespace) are allowed.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let v = value.trim_matches([' ', '\t']).as_bytes();
        if v.len() < LENGTH || (v.len() > LENGTH && v[LENGTH] != b'-') {
            return None;
        }
        let version = hex(&v[0..2])? as u8;
        if version == 0xff || (version == 0 && v.len() != LENGTH) {
            return None;
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let trace_id = hex(&v[3..35])?;
        let parent_id = hex(&v[36..52])? as u64;
        let flags = hex(&v[53..55])? as u8;
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        // A later version's flags may mean more; only the ones version 00 defines go on.
        let flags = if version == 0 { flags } else { flags & 0x01 };
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new trace: a random trace id and parent id, sampled (ferry starts it because the
    /// route asked for traces, so the rest of the path should record them).
    pub fn start() -> TraceParent {
        TraceParent {
            trace_id: fastrand::u128(1..),
            parent_id: fastrand::u64(1..),
            flags: 0x01,
        }
    }

    /// ferry's hop: the same trace and flags, a new parent id.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            parent_id: fastrand::u64(1..),
            ..*self
        }
    }

    /// The header value, version 00. Written digit by digit: `format!` with widths took
    /// twice as long, on every traced message.
    pub fn header(&self) -> String {
        let mut out = [0u8; LENGTH];
        out[..3].copy_from_slice(b"00-");
        write_hex(&mut out[3..35], self.trace_id);
        out[35] = b'-';
        write_hex(&mut out[36..52], u128::from(self.parent_id));
        out[52] = b'-';
        write_hex(&mut out[53..55], u128::from(self.flags));
        // Only ASCII hex digits and `-` were written.
        String::from_utf8(out.to_vec()).expect("ASCII")
    }
}

/// `n` as lower-case hex filling `out`, zero-padded.
fn write_hex(out: &mut [u8], mut n: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for d in out.iter_mut().rev() {
        *d = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// Lower-case hex only (the specification's rule), up to 32 digits.
fn hex(digits: &[u8]) -> Option<u128> {
    let mut n: u128 = 0;
    for &d in digits {
        let value = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(value);
    }
    Some(n)
}

/// Whether `name` is one of the trace context headers, which a route that takes part in
/// traces writes itself rather than forwarding as they came.
pub fn is_trace_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(TRACEPARENT) || name.eq_ignore_ascii_case(TRACESTATE)
}

/// What the trace context headers of a message become on its way through a route.
#[derive(Debug, PartialEq)]
pub enum Hop {
    /// Nothing to write: no `traceparent`, and the route does not start traces.
    Untraced,
    /// The trace goes on: ferry's child span, and the `tracestate` that came with it.
    Continued {
        traceparent: String,
        tracestate: Option<String>,
    },
    /// A new trace: the message had none (`trace: start`), or had a malformed one
    /// (`malformed`, which is counted).
    Started {
        traceparent: String,
        malformed: bool,
    },
}

impl Hop {
    /// The trace context a message carries on, given the headers it arrived with.
    pub fn of(headers: &Headers, mode: TraceMode) -> Hop {
        if mode == TraceMode::Off {
            return Hop::Untraced;
        }
        let mut parents = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT));
        let Some((_, first)) = parents.next() else {
            return match mode {
                TraceMode::Start => Hop::Started {
                    traceparent: TraceParent::start().header(),
                    malformed: false,
                },
                _ => Hop::Untraced,
            };
        };
        // Two `traceparent`s say two different things: neither can be trusted.
        let parsed = match parents.next() {
            None => TraceParent::parse(first),
            Some(_) => None,
        };
        match parsed {
            Some(parent) => Hop::Continued {
                traceparent: parent.child().header(),
                tracestate: tracestate(headers),
            },
            None => Hop::Started {
                traceparent: TraceParent::start().header(),
                malformed: true,
            },
        }
    }

    /// Appends the hop's headers.
    pub fn write(&self, headers: &mut Headers) {
        match self {
            Hop::Untraced => {}
            Hop::Continued {
                traceparent,
                tracestate,
            } => {
                headers.push((TRACEPARENT.to_string(), traceparent.clone()));
                if let Some(state) = tracestate {
                    headers.push((TRACESTATE.to_string(), state.clone()));
                }
            }
            Hop::Started { traceparent, .. } => {
                headers.push((TRACEPARENT.to_string(), traceparent.clone()));
            }
        }
    }
}

/// The `tracestate` headers as one list (several headers combine, as HTTP combines repeated
/// fields); `None` when there is none or it is empty.
fn tracestate(headers: &Headers) -> Option<String> {
    let mut joined = String::new();
    for (_, value) in headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(TRACESTATE))
    {
        let value = value.trim_matches([' ', '\t']);
        if value.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
    }
    (!joined.is_empty()).then_some(joined)
}

/// The trace id of a message with one valid `traceparent`, as 32 hex digits: what ferry's logs
/// and taps show so that an operator can follow one message across hops.
pub fn trace_id(headers: &Headers) -> Option<String> {
    let mut parents = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT));
    let (_, value) = parents.next()?;
    if parents.next().is_some() {
        return None;
    }
    TraceParent::parse(value).map(|p| {
        let mut out = [0u8; 32];
        write_hex(&mut out, p.trace_id);
        String::from_utf8(out.to_vec()).expect("ASCII")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_specifications_example_parses_and_round_trips() {
        let p = TraceParent::parse(VALID).unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.parent_id, 0x00f067aa0ba902b7);
        assert_eq!(p.flags, 1);
        assert_eq!(p.header(), VALID);
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00",
            // Upper-case hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // All-zero trace id, parent id.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff; version 00 with more after it.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            // Wrong separators, short fields.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            // A later version must be followed by `-` if longer.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // Not ASCII: é takes two bytes where a digit should be.
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_version_00_part() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-the-future-adds";
        let p = TraceParent::parse(later).unwrap();
        assert_eq!(p.flags, 1, "only the sampled flag is understood");
        assert_eq!(
            p.header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn a_hop_keeps_the_trace_and_its_state_with_a_new_parent() {
        let headers = with(&[("TraceParent", VALID), ("tracestate", "congo=t61rcWkgMzE")]);
        let Hop::Continued {
            traceparent,
            tracestate,
        } = Hop::of(&headers, TraceMode::Propagate)
        else {
            panic!("continued")
        };
        let child = TraceParent::parse(&traceparent).unwrap();
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(
            (child.trace_id, child.flags),
            (parent.trace_id, parent.flags)
        );
        assert_ne!(child.parent_id, parent.parent_id);
        assert_eq!(tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    }

    #[test]
    fn only_a_route_that_starts_traces_gives_one_to_an_untraced_message() {
        assert_eq!(
            Hop::of(&Headers::new(), TraceMode::Propagate),
            Hop::Untraced
        );
        assert_eq!(
            Hop::of(&with(&[("traceparent", VALID)]), TraceMode::Off),
            Hop::Untraced
        );
        let Hop::Started {
            traceparent,
            malformed: false,
        } = Hop::of(&Headers::new(), TraceMode::Start)
        else {
            panic!("started")
        };
        assert!(TraceParent::parse(&traceparent).is_some());
    }

    #[test]
    fn a_malformed_or_doubled_traceparent_is_replaced_and_its_state_dropped() {
        for headers in [
            with(&[("traceparent", "garbage"), ("tracestate", "a=b")]),
            with(&[("traceparent", VALID), ("traceparent", VALID)]),
        ] {
            let hop = Hop::of(&headers, TraceMode::Propagate);
            let Hop::Started {
                ref traceparent,
                malformed: true,
            } = hop
            else {
                panic!("replaced: {hop:?}")
            };
            assert!(TraceParent::parse(traceparent).is_some());
            let mut out = Headers::new();
            hop.write(&mut out);
            assert_eq!(out.len(), 1, "no tracestate after a restart: {out:?}");
        }
    }

    #[test]
    fn repeated_tracestate_headers_combine() {
        let headers = with(&[
            ("traceparent", VALID),
            ("tracestate", "a=1"),
            ("Tracestate", " b=2 "),
        ]);
        let mut out = Headers::new();
        Hop::of(&headers, TraceMode::Propagate).write(&mut out);
        assert_eq!(out[1], ("tracestate".to_string(), "a=1,b=2".to_string()));
    }

    #[test]
    fn logs_name_the_trace_id() {
        let headers = with(&[("traceparent", VALID)]);
        assert_eq!(
            trace_id(&headers).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id(&with(&[("traceparent", "x")])), None);
    }

    proptest! {
        /// Remote text: any string is either refused or parsed to something that writes back
        /// as a valid version-00 value, and nothing panics.
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(value in any::<String>()) {
            if let Some(p) = TraceParent::parse(&value) {
                let written = p.header();
                prop_assert_eq!(written.len(), LENGTH);
                prop_assert_eq!(TraceParent::parse(&written), Some(p));
            }
            let headers = vec![("traceparent".to_string(), value.clone()), ("tracestate".to_string(), value)];
            let mut out = Headers::new();
            Hop::of(&headers, TraceMode::Propagate).write(&mut out);
            prop_assert!(TraceParent::parse(&out[0].1).is_some());
        }

        #[test]
        fn every_valid_value_round_trips(trace in 1u128.., parent in 1u64.., flags in any::<u8>()) {
            let p = TraceParent { trace_id: trace, parent_id: parent, flags };
            prop_assert_eq!(TraceParent::parse(&p.header()), Some(p));
            let child = p.child();
            prop_assert_eq!((child.trace_id, child.flags), (trace, flags));
            prop_assert!(child.parent_id != 0);
        }
    }
}
