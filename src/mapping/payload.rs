//! Payloads between a route's source and its sinks: read per the source's `payload_format` when
//! jq or a template needs a value, written per each sink's format, and wrapped in or unwrapped
//! from ferry's JSON envelope.
//!
//! The envelope is one JSON object, so a message and what travelled with it fit in one payload
//! (a JSON line on stdout, an MQTT 3.1.1 message that cannot carry headers):
//!
//! ```json
//! {"topic": "sensors/kitchen/temp", "payload": {"value": 21.5},
//!  "headers": {"site": "plant-1"}, "time": "2026-11-22T10:00:00.000Z"}
//! ```
//!
//! `payload` is the JSON value itself (`payload_format: json`), a string (`text`) or base64
//! (`bytes`). The name the message had at its source is `topic` when it is an MQTT topic and
//! `subject` when it is a NATS subject, so a route of the other protocol can convert it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use jaq_json::{Num, Val};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::PayloadFormat;
use crate::message::Headers;

/// A payload on its way to the sinks.
#[derive(Clone, Debug)]
pub enum Payload {
    /// The bytes as they arrived: nothing needed to read them.
    Raw(Bytes),
    /// A value a jq transform produced.
    Value(Val),
}

/// Reads raw bytes as the value jq sees, per `format`.
pub fn read(bytes: &Bytes, format: PayloadFormat) -> Result<Val, String> {
    match format {
        PayloadFormat::Json => {
            jaq_json::read::parse_single(bytes).map_err(|e| format!("payload is not JSON: {e}"))
        }
        PayloadFormat::Text => match std::str::from_utf8(bytes) {
            Ok(_) => Ok(Val::utf8_str(bytes.clone())),
            Err(e) => Err(format!("payload is not UTF-8 text: {e}")),
        },
        PayloadFormat::Bytes => Ok(Val::byte_str(bytes.clone())),
    }
}

impl Payload {
    /// The bytes to publish, per the sink's `format`: raw payloads go out as they came;
    /// jq values as compact JSON, except that `text` and `bytes` write strings as they are.
    pub fn write(&self, format: PayloadFormat) -> Bytes {
        match self {
            Payload::Raw(bytes) => bytes.clone(),
            Payload::Value(Val::TStr(s) | Val::BStr(s)) if format != PayloadFormat::Json => {
                Bytes::copy_from_slice(s)
            }
            Payload::Value(v) => Bytes::from(v.to_string()),
        }
    }

    /// The payload as a template sees it (`payload.room`), reading raw bytes per `format`.
    pub fn template_value(&self, format: PayloadFormat) -> Result<minijinja::Value, String> {
        match self {
            Payload::Raw(bytes) => read(bytes, format)
                .map(|v| to_template(&v))
                .map_err(|e| format!("the template uses `payload`, but {e}")),
            Payload::Value(v) => Ok(to_template(v)),
        }
    }

    /// The payload as the JSON text of an envelope's `payload` field.
    fn envelope_field(&self, format: PayloadFormat) -> Result<String, String> {
        match (self, format) {
            (Payload::Raw(bytes), PayloadFormat::Json) => {
                serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(|e| {
                    format!("payload is not JSON ({e}); set `payload_format: text` or `bytes` to wrap it")
                })?;
                Ok(String::from_utf8_lossy(bytes).trim().to_string())
            }
            (Payload::Raw(bytes), PayloadFormat::Text) => match std::str::from_utf8(bytes) {
                Ok(text) => Ok(json_string(text)),
                Err(e) => Err(format!(
                    "payload is not UTF-8 text ({e}); set `payload_format: bytes` to wrap it"
                )),
            },
            (Payload::Raw(bytes), PayloadFormat::Bytes) => Ok(json_string(&BASE64.encode(bytes))),
            (Payload::Value(Val::TStr(s) | Val::BStr(s)), PayloadFormat::Bytes) => {
                Ok(json_string(&BASE64.encode(&s[..])))
            }
            (Payload::Value(v), _) => Ok(v.to_string()),
        }
    }
}

/// The source name an envelope carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Name {
    /// An MQTT topic (`"topic"`).
    Topic(String),
    /// A NATS subject, or any other protocol's name (`"subject"`).
    Subject(String),
}

/// Wraps a payload in an envelope with its source `name`, `headers` and `time`.
pub fn wrap(
    name: &Name,
    payload: &Payload,
    format: PayloadFormat,
    headers: &Headers,
    time: SystemTime,
) -> Result<Bytes, String> {
    // Names repeat rarely; in an object the last one wins, as it does for templates.
    let headers: BTreeMap<&str, &str> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (key, name) = match name {
        Name::Topic(t) => ("topic", t),
        Name::Subject(s) => ("subject", s),
    };
    let text = format!(
        r#"{{"{key}":{},"payload":{},"headers":{},"time":"{}"}}"#,
        json_string(name),
        payload.envelope_field(format)?,
        serde_json::to_string(&headers).expect("strings serialise"),
        humantime::format_rfc3339_millis(time),
    );
    Ok(Bytes::from(text))
}

/// What an envelope held.
#[derive(Debug, PartialEq)]
pub struct Unwrapped {
    pub name: Option<Name>,
    pub payload: Bytes,
    pub headers: Option<Headers>,
    pub time: Option<SystemTime>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    topic: Option<String>,
    subject: Option<String>,
    #[serde(borrow)]
    payload: &'a RawValue,
    headers: Option<BTreeMap<String, serde_json::Value>>,
    time: Option<String>,
}

/// Unwraps an envelope; its `payload` is read per `format` (a JSON value is kept byte for
/// byte, a string is taken as text, or decoded from base64).
pub fn unwrap(bytes: &[u8], format: PayloadFormat) -> Result<Unwrapped, String> {
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| format!("not a ferry envelope: {e}"))?;
    let raw = envelope.payload.get();
    let payload = match format {
        PayloadFormat::Json => Bytes::copy_from_slice(raw.as_bytes()),
        PayloadFormat::Text | PayloadFormat::Bytes => {
            let text: String = serde_json::from_str(raw).map_err(|_| {
                "the envelope's payload is not a string; use `payload_format: json` to unwrap a JSON value".to_string()
            })?;
            if format == PayloadFormat::Text {
                Bytes::from(text)
            } else {
                Bytes::from(
                    BASE64
                        .decode(text.as_bytes())
                        .map_err(|e| format!("the envelope's payload is not base64: {e}"))?,
                )
            }
        }
    };
    let headers = envelope.headers.map(|h| {
        h.into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect()
    });
    let time = match envelope.time {
        Some(t) => Some(humantime::parse_rfc3339_weak(&t).map_err(|e| {
            // From the payload: quoted as a prefix only.
            let t = super::excerpt::excerpt(&t);
            format!("the envelope's time `{t}` is not RFC 3339: {e}")
        })?),
        None => None,
    };
    let name = match (envelope.topic, envelope.subject) {
        (Some(topic), None) => Some(Name::Topic(topic)),
        (None, Some(subject)) => Some(Name::Subject(subject)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err("the envelope has both `topic` and `subject`; keep one".into());
        }
    };
    Ok(Unwrapped {
        name,
        payload,
        headers,
        time,
    })
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// A jq value as a template value.
fn to_template(v: &Val) -> minijinja::Value {
    use minijinja::Value;
    match v {
        // A JSON null counts as missing: naming a subject after it is an error (or `default`),
        // never the word "none".
        Val::Null => Value::UNDEFINED,
        Val::Bool(b) => Value::from(*b),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(Num::Float(f)) => Value::from(*f),
        // Big integers and decimals as written: a template prints them, it does no sums.
        Val::Num(n) => {
            let text = n.to_string();
            text.parse::<i64>()
                .map(Value::from)
                .or_else(|_| text.parse::<f64>().map(Value::from))
                .unwrap_or_else(|_| Value::from(text))
        }
        Val::TStr(s) => Value::from(String::from_utf8_lossy(s).into_owned()),
        Val::BStr(s) => Value::from_bytes(s.to_vec()),
        Val::Arr(items) => items.iter().map(to_template).collect(),
        Val::Obj(map) => Value::from(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(s).into_owned(),
                        other => other.to_string(),
                    };
                    (key, to_template(v))
                })
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn raw(s: &[u8]) -> Payload {
        Payload::Raw(Bytes::copy_from_slice(s))
    }

    #[test]
    fn reads_each_format() {
        let b = Bytes::from_static(br#"{"a":1}"#);
        assert_eq!(
            read(&b, PayloadFormat::Json).unwrap().to_string(),
            r#"{"a":1}"#
        );
        assert_eq!(
            read(&b, PayloadFormat::Text).unwrap().to_string(),
            r#""{\"a\":1}""#
        );
        assert!(read(&Bytes::from_static(b"nope"), PayloadFormat::Json).is_err());
        assert!(read(&Bytes::from_static(b"\xff"), PayloadFormat::Text).is_err());
        assert!(matches!(
            read(&Bytes::from_static(b"\xff"), PayloadFormat::Bytes),
            Ok(Val::BStr(_))
        ));
    }

    #[test]
    fn writes_each_format() {
        let s = Payload::Value(Val::utf8_str(Bytes::from_static(b"hi")));
        assert_eq!(s.write(PayloadFormat::Json), Bytes::from_static(b"\"hi\""));
        assert_eq!(s.write(PayloadFormat::Text), Bytes::from_static(b"hi"));
        assert_eq!(s.write(PayloadFormat::Bytes), Bytes::from_static(b"hi"));
        let n = Payload::Value(Val::from(3usize));
        assert_eq!(n.write(PayloadFormat::Text), Bytes::from_static(b"3"));
        assert_eq!(
            raw(b"as is").write(PayloadFormat::Json),
            Bytes::from_static(b"as is")
        );
    }

    #[test]
    fn envelopes_round_trip_in_every_format() {
        let time = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let headers = vec![("site".to_string(), "p1".to_string())];
        for (format, payload) in [
            (PayloadFormat::Json, &br#"{"v": [1, 2.50]}"#[..]),
            (PayloadFormat::Text, &b"hello \"world\"\n"[..]),
            (PayloadFormat::Bytes, &b"\x00\xff\x10"[..]),
        ] {
            let name = Name::Topic("a/b c".into());
            let wrapped = wrap(&name, &raw(payload), format, &headers, time).unwrap();
            let json: serde_json::Value = serde_json::from_slice(&wrapped).unwrap();
            assert_eq!(json["topic"], "a/b c");
            assert_eq!(json["headers"]["site"], "p1");
            assert!(json["time"].as_str().unwrap().ends_with(".123Z"), "{json}");
            let back = unwrap(&wrapped, format).unwrap();
            assert_eq!(back.payload, Bytes::copy_from_slice(payload), "{format:?}");
            assert_eq!(back.name, Some(name));
            assert_eq!(back.headers, Some(headers.clone()));
            assert_eq!(back.time, Some(time));
        }
    }

    #[test]
    fn refuses_what_it_cannot_wrap_or_unwrap() {
        let now = SystemTime::now();
        let name = Name::Subject("a".into());
        let e = wrap(&name, &raw(b"not json"), PayloadFormat::Json, &vec![], now).unwrap_err();
        assert!(e.contains("payload_format"), "{e}");
        assert!(unwrap(b"{}", PayloadFormat::Json).is_err());
        assert!(unwrap(b"not json", PayloadFormat::Json).is_err());
        assert!(unwrap(br#"{"payload": 1}"#, PayloadFormat::Text).is_err());
        assert!(unwrap(br#"{"payload": "!!"}"#, PayloadFormat::Bytes).is_err());
        let minimal = unwrap(br#"{"payload": [1]}"#, PayloadFormat::Json).unwrap();
        assert_eq!(minimal.payload, Bytes::from_static(b"[1]"));
        assert_eq!(minimal.name, None);
        assert!(
            unwrap(
                br#"{"topic": "a", "subject": "a", "payload": 1}"#,
                PayloadFormat::Json
            )
            .is_err()
        );
    }
}
