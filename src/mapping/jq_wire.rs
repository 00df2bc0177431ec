//! jq values as bytes, for the hand-off between a route and its jq worker process (see
//! `pipeline::jq_worker`). Not JSON: jq values include byte strings and numbers (big integers,
//! decimals as written) that JSON text would not bring back as they were.
//!
//! The decoder reads bytes from another process, so it is total: any input gives a value or an
//! error, never a panic, and nesting is bounded by [`MAX_DEPTH`] (both to keep the reader's
//! stack, and because the writers of payloads and templates recurse too).

use bytes::Bytes;
use jaq_json::{Map, Num, Val};

/// The deepest a value may nest (arrays and objects) to cross between processes. A transform
/// that builds deeper values (`reduce range(1e6) as $i (null; [.])`) fails with a reason
/// instead of overflowing a stack on the way out.
pub const MAX_DEPTH: usize = 256;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
/// A big integer or a decimal, as its digits.
const NUMBER_TEXT: u8 = 5;
const BYTE_STRING: u8 = 6;
const TEXT_STRING: u8 = 7;
const ARRAY: u8 = 8;
const OBJECT: u8 = 9;

/// Appends `value` to `out`; `Err` when it nests deeper than [`MAX_DEPTH`].
pub fn encode(value: &Val, out: &mut Vec<u8>) -> Result<(), String> {
    encode_at(value, out, 0)
}

fn encode_at(value: &Val, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("a value nests deeper than {MAX_DEPTH} levels"));
    }
    let len = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u64).to_le_bytes());
    match value {
        Val::Null => out.push(NULL),
        Val::Bool(false) => out.push(FALSE),
        Val::Bool(true) => out.push(TRUE),
        Val::Num(Num::Int(i)) => {
            out.push(INT);
            out.extend_from_slice(&(*i as i64).to_le_bytes());
        }
        Val::Num(Num::Float(f)) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Val::Num(n) => {
            let text = n.to_string();
            out.push(NUMBER_TEXT);
            len(out, text.len());
            out.extend_from_slice(text.as_bytes());
        }
        Val::BStr(b) | Val::TStr(b) => {
            out.push(if matches!(value, Val::BStr(_)) {
                BYTE_STRING
            } else {
                TEXT_STRING
            });
            len(out, b.len());
            out.extend_from_slice(b);
        }
        Val::Arr(items) => {
            out.push(ARRAY);
            len(out, items.len());
            for item in items.iter() {
                encode_at(item, out, depth + 1)?;
            }
        }
        Val::Obj(pairs) => {
            out.push(OBJECT);
            len(out, pairs.len());
            for (k, v) in pairs.iter() {
                encode_at(k, out, depth + 1)?;
                encode_at(v, out, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Reads values written by [`encode`] one after the other.
pub struct Decoder<'a> {
    input: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Decoder { input }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// What is left after the values read so far.
    pub fn rest(&self) -> &'a [u8] {
        self.input
    }

    /// The next value; `Err` on bytes [`encode`] would not have written.
    pub fn value(&mut self) -> Result<Val, String> {
        self.value_at(0)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.input.len() {
            return Err("a value is cut short".into());
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| "short")?))
    }

    /// A length, checked against what is left: every element takes at least one byte, so a
    /// length past that is a lie and must not size an allocation.
    fn len(&mut self) -> Result<usize, String> {
        let n = self.u64()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.input.len() => Ok(n),
            _ => Err("a length runs past the end".into()),
        }
    }

    fn value_at(&mut self, depth: usize) -> Result<Val, String> {
        if depth > MAX_DEPTH {
            return Err(format!("a value nests deeper than {MAX_DEPTH} levels"));
        }
        let tag = self.take(1)?[0];
        Ok(match tag {
            NULL => Val::Null,
            FALSE => Val::Bool(false),
            TRUE => Val::Bool(true),
            INT => Val::Num(Num::from_integral(self.u64()? as i64)),
            FLOAT => Val::Num(Num::Float(f64::from_bits(self.u64()?))),
            NUMBER_TEXT => {
                let n = self.len()?;
                let text =
                    std::str::from_utf8(self.take(n)?).map_err(|_| "a number is not text")?;
                match jaq_json::read::parse_single_num(text.as_bytes()) {
                    Some(num) => Val::Num(num),
                    None => return Err(format!("`{}` is not a number", text.escape_debug())),
                }
            }
            BYTE_STRING | TEXT_STRING => {
                let n = self.len()?;
                let bytes = Box::new(Bytes::copy_from_slice(self.take(n)?));
                match tag {
                    BYTE_STRING => Val::BStr(bytes),
                    _ => Val::TStr(bytes),
                }
            }
            ARRAY => {
                let n = self.len()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value_at(depth + 1)?);
                }
                Val::Arr(items.into())
            }
            OBJECT => {
                let n = self.len()?;
                let mut pairs = Map::default();
                pairs.reserve(n / 2);
                for _ in 0..n {
                    let k = self.value_at(depth + 1)?;
                    let v = self.value_at(depth + 1)?;
                    pairs.insert(k, v);
                }
                Val::obj(pairs)
            }
            other => return Err(format!("unknown value tag {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(text: &str) -> Val {
        jaq_json::read::parse_single(text.as_bytes()).unwrap()
    }

    fn round_trip(v: &Val) -> Val {
        let mut out = Vec::new();
        encode(v, &mut out).unwrap();
        let mut d = Decoder::new(&out);
        let back = d.value().unwrap();
        assert!(d.is_empty());
        back
    }

    #[test]
    fn values_come_back_as_they_were() {
        for text in [
            "null",
            "true",
            "[1,-2.5,1e400,123456789012345678901234567890,\"é\",{\"a\":[{}]}]",
            "{\"k\":{\"nested\":[null,false]}}",
        ] {
            let v = json(text);
            assert_eq!(round_trip(&v).to_string(), v.to_string(), "{text}");
        }
        let bytes = Val::BStr(Box::new(Bytes::from_static(b"\xff\x00")));
        assert!(matches!(round_trip(&bytes), Val::BStr(b) if &b[..] == b"\xff\x00"));
    }

    #[test]
    fn depth_is_bounded_both_ways() {
        let mut deep = Val::Null;
        for _ in 0..=MAX_DEPTH + 1 {
            deep = Val::Arr(vec![deep].into());
        }
        let e = encode(&deep, &mut Vec::new()).unwrap_err();
        assert!(e.contains("deeper than"), "{e}");
        // A hand-made frame just as deep is refused by the reader too.
        let mut frame = Vec::new();
        for _ in 0..=MAX_DEPTH + 1 {
            frame.push(ARRAY);
            frame.extend_from_slice(&1u64.to_le_bytes());
        }
        frame.push(NULL);
        assert!(Decoder::new(&frame).value().is_err());
    }

    #[test]
    fn a_lying_length_allocates_nothing() {
        let mut frame = vec![ARRAY];
        frame.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(Decoder::new(&frame).value().is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut d = Decoder::new(&bytes);
            while !d.is_empty() {
                if d.value().is_err() {
                    break;
                }
            }
        }

        #[test]
        fn arbitrary_text_round_trips(s in any::<String>(), n in any::<i64>(), f in any::<f64>()) {
            let v = Val::Arr(vec![Val::from(s.clone()), Val::Num(Num::from_integral(n)), Val::from(f)].into());
            let back = round_trip(&v);
            prop_assert_eq!(back.to_string(), v.to_string());
        }
    }
}
