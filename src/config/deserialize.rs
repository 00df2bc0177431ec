//! serde over the positioned YAML tree: fills the file's types once [`super::validate`] has
//! found nothing wrong, so its own errors are rare; they still carry the node's position.
//!
//! Scalars are as lenient as the file is: a number or boolean may be written as a string
//! (`"5"`, `${PORT}`), text may be a number. Every string is `${...}` interpolated as it is
//! read.

use std::fmt;

use serde::de::value::{MapAccessDeserializer, StringDeserializer};
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

use super::interpolate::{Lookup, interpolate};
use super::yaml::{Key, Node, Pos, Value};

/// Why a node could not be read into its type, and where.
#[derive(Debug)]
pub struct Error {
    pub pos: Option<Pos>,
    pub message: String,
    pub hint: Option<String>,
}

impl Error {
    /// The error, placed at `pos` unless a node deeper down already placed it.
    fn at(mut self, pos: Pos) -> Self {
        self.pos.get_or_insert(pos);
        self
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error {
            pos: None,
            message: message.to_string(),
            hint: None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A node to deserialize, with where its `${...}` look up their values.
#[derive(Clone, Copy)]
pub struct NodeDeserializer<'a> {
    node: &'a Node,
    lookup: &'a Lookup<'a>,
}

impl<'a> NodeDeserializer<'a> {
    pub fn new(node: &'a Node, lookup: &'a Lookup<'a>) -> Self {
        NodeDeserializer { node, lookup }
    }

    /// The node's text, interpolated; a number or boolean as its text.
    fn text(&self) -> Result<Option<String>, Error> {
        Ok(Some(match &self.node.value {
            Value::Str(s) => interpolate(s, self.lookup).map_err(|(message, hint)| Error {
                pos: Some(self.node.pos),
                message,
                hint: Some(hint),
            })?,
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Ok(None),
        }))
    }

    fn any<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let pos = self.node.pos;
        match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(_) => visitor.visit_string(self.text()?.unwrap_or_default()),
            Value::Seq(items) => visitor.visit_seq(Items {
                items: items.iter(),
                lookup: self.lookup,
            }),
            Value::Map(entries) => visitor.visit_map(Entries {
                entries: entries.iter(),
                value: None,
                lookup: self.lookup,
            }),
        }
        .map_err(|e: Error| e.at(pos))
    }

    /// A number written as a string is read as the number it spells.
    fn number<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let Value::Str(_) = &self.node.value else {
            return self.any(visitor);
        };
        let pos = self.node.pos;
        let text = self.text()?.unwrap_or_default();
        let text = text.trim();
        if let Ok(i) = text.parse::<i64>() {
            visitor.visit_i64(i)
        } else if let Ok(u) = text.parse::<u64>() {
            visitor.visit_u64(u)
        } else if let Ok(f) = text.parse::<f64>() {
            visitor.visit_f64(f)
        } else {
            visitor.visit_str(text)
        }
        .map_err(|e: Error| e.at(pos))
    }
}

macro_rules! numbers {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.number(visitor)
        })*
    };
}

impl<'de> Deserializer<'de> for NodeDeserializer<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.any(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let Value::Str(_) = &self.node.value else {
            return self.any(visitor);
        };
        let pos = self.node.pos;
        match self.text()?.as_deref() {
            Some("true") => visitor.visit_bool(true),
            Some("false") => visitor.visit_bool(false),
            Some(other) => visitor.visit_str(other),
            None => self.any(visitor),
        }
        .map_err(|e: Error| e.at(pos))
    }

    numbers!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_u8
        deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32 deserialize_f64);

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.text()? {
            Some(text) => visitor
                .visit_string(text)
                .map_err(|e: Error| e.at(self.node.pos)),
            None => self.any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// `when_full: block` is a unit variant; `{jetstream: {...}}` a variant with its data.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let pos = self.node.pos;
        match &self.node.value {
            Value::Map(entries) => visitor.visit_enum(MapAccessDeserializer::new(Entries {
                entries: entries.iter(),
                value: None,
                lookup: self.lookup,
            })),
            _ => match self.text()? {
                Some(text) => {
                    let variant: StringDeserializer<Error> = text.into_deserializer();
                    visitor.visit_enum(variant)
                }
                None => self.any(visitor),
            },
        }
        .map_err(|e: Error| e.at(pos))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
    }
}

struct Items<'a> {
    items: std::slice::Iter<'a, Node>,
    lookup: &'a Lookup<'a>,
}

impl<'de> SeqAccess<'de> for Items<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(NodeDeserializer::new(node, self.lookup))
                .map(Some)
                .map_err(|e| e.at(node.pos)),
            None => Ok(None),
        }
    }
}

struct Entries<'a> {
    entries: std::slice::Iter<'a, (Key, Node)>,
    value: Option<&'a Node>,
    lookup: &'a Lookup<'a>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        let name: StringDeserializer<Error> = key.name.clone().into_deserializer();
        seed.deserialize(name).map(Some).map_err(|e| e.at(key.pos))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let node = self.value.take().expect("a value follows its key");
        seed.deserialize(NodeDeserializer::new(node, self.lookup))
            .map_err(|e| e.at(node.pos))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::config::yaml;

    fn lookup() -> Lookup<'static> {
        Lookup {
            var: &|name| (name == "PORT").then(|| "9000".to_string()),
            file: &|_| Err(std::io::Error::other("none")),
        }
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum WhenFull {
        Block,
        DropNew,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Sample {
        port: u16,
        on: bool,
        name: String,
        when_full: WhenFull,
        extra: Option<Vec<String>>,
        map: BTreeMap<String, String>,
    }

    #[test]
    fn scalars_are_as_lenient_as_the_file() {
        let node = yaml::parse(
            "port: ${PORT}\non: \"true\"\nname: 42\nwhen_full: drop_new\nmap: {a: 1.5}\n",
        )
        .unwrap();
        let sample = Sample::deserialize(NodeDeserializer::new(&node, &lookup())).unwrap();
        assert_eq!(
            sample,
            Sample {
                port: 9000,
                on: true,
                name: "42".into(),
                when_full: WhenFull::DropNew,
                extra: None,
                map: [("a".to_string(), "1.5".to_string())].into(),
            }
        );
    }

    #[test]
    fn errors_carry_the_position_of_their_node() {
        let node = yaml::parse("port: 9\non: true\nname: x\nwhen_full: wait\nmap: {}\n").unwrap();
        let e = Sample::deserialize(NodeDeserializer::new(&node, &lookup())).unwrap_err();
        assert_eq!(e.pos, Some(Pos { line: 4, col: 12 }), "{e}");
    }
}
