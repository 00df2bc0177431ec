//! How `bridges.yaml` writes its scalar values where the file's form differs from Rust's:
//! durations (`30s`), sizes (`16MiB`), flags, whole numbers in a range, free text. Each is a
//! schema (what `ferry schema` shows, and what [`super::validate`] checks a value against,
//! by the schema's name) and, for durations and sizes, a serde form (`#[serde(with = ...)]`)
//! that reads the file's text and writes a default back in the same form.
//!
//! Every scalar may be a `${...}` interpolation, numbers may be written as strings and text
//! may be a number: the schema says so, so that an editor does not flag what `ferry check`
//! accepts.

use std::borrow::Cow;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::ranges::{check_duration, check_size, duration_of_seconds};

/// A `${ENV}`, `${ENV:-default}` or `${file:PATH}` interpolation, which can stand for any
/// scalar: the value is interpolated before it is read.
pub const INTERPOLATION: &str = r"\$\{[^}]+\}";

fn interpolation() -> Value {
    serde_json::json!({ "type": "string", "pattern": INTERPOLATION })
}

/// `T`, or a string with a `${...}` interpolation in it.
pub struct Interpolated<T>(PhantomData<T>);

impl<T: JsonSchema> JsonSchema for Interpolated<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("Interpolated_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let inner = generator.subschema_for::<T>();
        // One flat list of alternatives reads better in an editor than nested ones.
        let mut alternatives = match inner.as_object() {
            Some(obj) if obj.len() == 1 && obj.contains_key("anyOf") => match &obj["anyOf"] {
                Value::Array(items) => items.clone(),
                _ => vec![inner.to_value()],
            },
            _ => vec![inner.to_value()],
        };
        alternatives.push(interpolation());
        json_schema!({ "anyOf": alternatives })
    }
}

/// Text: a string, or a number or boolean taken as its text (`client_id: 42`).
pub struct Text;

impl JsonSchema for Text {
    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// A duration: `250ms`, `30s`, `5m`, `1h`, `2d`, or a number of seconds.
pub struct Duration;

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "number", "minimum": 0 },
                {
                    "type": "string",
                    "pattern": r"^\s*([0-9]+\.?[0-9]*|\.[0-9]+)\s*(ms|s|m|min|h|d)?\s*$"
                },
                interpolation()
            ]
        })
    }
}

/// A size: bytes, or a number with `KiB`, `MiB`, `GiB` (also `KB`/`MB`/`GB`, `K`/`M`/`G`).
pub struct Size;

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": r"^\s*[0-9]+\s*([kKmMgG]([iI]?[bB])?|[bB])?\s*$" },
                interpolation()
            ]
        })
    }
}

/// A whole number from `MIN` to `MAX` (also written as a string of digits).
pub struct Whole<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> JsonSchema for Whole<MIN, MAX> {
    fn schema_name() -> Cow<'static, str> {
        format!("Whole_{MIN}_{MAX}").into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": MIN, "maximum": MAX },
                { "type": "string", "pattern": r"^\s*[0-9]+\s*$" },
                interpolation()
            ]
        })
    }
}

/// `true` or `false` (also as a string).
pub struct Flag;

impl JsonSchema for Flag {
    fn schema_name() -> Cow<'static, str> {
        "Flag".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [{ "type": "boolean" }, { "enum": ["true", "false"] }, interpolation()]
        })
    }
}

/// One `T`, or a list of them.
#[derive(Clone, Debug, PartialEq)]
pub struct OneOrList<T>(pub Vec<T>);

impl<T: JsonSchema> JsonSchema for OneOrList<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("OneOrList_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = generator.subschema_for::<T>();
        json_schema!({
            "anyOf": [one.clone(), { "type": "array", "items": one, "minItems": 1 }]
        })
    }
}

/// Texts as leniently as any text is read: a number or boolean, alone or in the list, is its
/// text.
impl<'de> Deserialize<'de> for OneOrList<String> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Texts;
        impl<'de> Visitor<'de> for Texts {
            type Value = OneOrList<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a text or a list of texts")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OneOrList(vec![v.to_string()]))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(text) = seq.next_element()? {
                    all.push(text);
                }
                Ok(OneOrList(all))
            }
        }
        deserializer.deserialize_any(Texts)
    }
}

/// One text or a list of them, for a `Vec<String>` field (`#[serde(deserialize_with)]`).
pub fn one_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    OneOrList::deserialize(deserializer).map(|list| list.0)
}

/// A [`TextMap`], for a `Vec<(String, String)>` field (`#[serde(deserialize_with)]`).
pub fn text_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<(String, String)>, D::Error> {
    TextMap::deserialize(deserializer).map(|map| map.0)
}

/// Names of the user's choosing, each with a text (headers, query parameters), in the order
/// written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TextMap(pub Vec<(String, String)>);

impl JsonSchema for TextMap {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "TextMap".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let text = generator.subschema_for::<Text>();
        json_schema!({ "type": "object", "additionalProperties": text })
    }
}

impl<'de> Deserialize<'de> for TextMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = TextMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextMap, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(TextMap(pairs))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

/// The machine's host name: the default `loop_guard.instance`, and what tells the instances of
/// a shared `ferry relay` apart.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferry".to_string())
}

/// `auto`: a sink's name is its source's, converted to the sink's protocol.
pub fn auto() -> String {
    "auto".into()
}

/// What kind of scalar a schema definition is, by its name: how [`super::validate`] checks a
/// value written for it, and says what is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    Text,
    Flag,
    Whole { min: u64, max: u64 },
    Duration,
    Size,
}

impl Scalar {
    /// The scalar a definition called `name` (with schema `definition`) describes, if any.
    pub fn of(name: &str, definition: &Value) -> Option<Scalar> {
        Some(match name {
            "Text" => Scalar::Text,
            "Flag" => Scalar::Flag,
            "Duration" => Scalar::Duration,
            "Size" => Scalar::Size,
            _ if name.starts_with("Whole_") => {
                let whole = definition["anyOf"][0].as_object()?;
                Scalar::Whole {
                    min: whole.get("minimum")?.as_u64()?,
                    max: whole.get("maximum")?.as_u64()?,
                }
            }
            _ => return None,
        })
    }
}

/// A duration as a number of seconds or `30s`-style text, for `#[serde(with = ...)]` on a
/// `std::time::Duration` field.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    use super::{check_duration, duration_of_seconds};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    /// The largest unit that writes `d` exactly: a default reads as the user would write it.
    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&text(*d))
    }

    pub fn text(d: Duration) -> String {
        let ms = d.as_millis();
        if !ms.is_multiple_of(1000) {
            return format!("{ms}ms");
        }
        let s = ms / 1000;
        match s {
            0 => "0s".into(),
            _ if s.is_multiple_of(86400) => format!("{}d", s / 86400),
            _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
            _ if s.is_multiple_of(60) => format!("{}m", s / 60),
            _ => format!("{s}s"),
        }
    }

    /// For an `Option<Duration>` field (with `#[serde(default)]`: absent is `None`).
    pub mod optional {
        use std::time::Duration;

        use serde::de::Deserializer;
        use serde::ser::Serializer;

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            super::deserialize(deserializer).map(Some)
        }

        pub fn serialize<S: Serializer>(
            d: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, serializer),
                None => serializer.serialize_none(),
            }
        }
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            duration_of_seconds(v as f64).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            duration_of_seconds(v as f64).map_err(E::custom)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            duration_of_seconds(v).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            check_duration(v).map_err(E::custom)
        }
    }
}

/// A size as a number of bytes or `16MiB`-style text, for `#[serde(with = ...)]` on a `u64`
/// field.
pub mod size {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    use super::check_size;
    use crate::config::ranges::NumberProblem;

    /// A size, for a `u64` or `usize` field.
    pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        let bytes = deserializer.deserialize_any(SizeVisitor)?;
        T::try_from(bytes).map_err(|_| de::Error::custom(NumberProblem::TooLarge))
    }

    /// In the largest binary unit that writes `bytes` exactly.
    pub fn serialize<S: Serializer, T: Copy + TryInto<u64>>(
        bytes: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let bytes: u64 = (*bytes).try_into().unwrap_or(u64::MAX);
        for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if bytes > 0 && bytes.is_multiple_of(factor) {
                return serializer.serialize_str(&format!("{}{unit}", bytes / factor));
            }
        }
        serializer.serialize_u64(bytes)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a size")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(NumberProblem::Negative)),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            check_size(&v.to_string()).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            check_size(v).map_err(E::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn defaults_are_written_as_a_user_would() {
        let text = super::duration::text;
        assert_eq!(text(Duration::from_millis(100)), "100ms");
        assert_eq!(text(Duration::from_secs(10)), "10s");
        assert_eq!(text(Duration::from_secs(60)), "1m");
        assert_eq!(text(Duration::from_secs(86400)), "1d");
        assert_eq!(text(Duration::ZERO), "0s");
        let size = |n: u64| super::size::serialize(&n, serde_json::value::Serializer).unwrap();
        assert_eq!(size(16 << 20), "16MiB");
        assert_eq!(size(1 << 30), "1GiB");
        assert_eq!(size(1000), 1000);
    }
}
