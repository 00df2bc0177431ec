//! A connection's `probe:` as the file writes it: `false` turns it off, `true` or a mapping
//! of its timing turns it on.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use super::diagnostics::{Diagnostic, Report};
use super::model::Probe;
use super::yaml::Node;

/// A connection's liveness probe: `false` turns it off, a mapping tunes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSetting(pub Option<Probe>);

impl Default for ProbeSetting {
    fn default() -> Self {
        ProbeSetting(Some(Probe::default()))
    }
}

impl ProbeSetting {
    /// The probe, its topic checked by the protocol's `rule`; `node` is the `probe:` value.
    pub fn check(
        self,
        node: Option<&Node>,
        rule: fn(&str) -> Result<(), (String, String)>,
        errors: &mut Vec<Diagnostic>,
    ) -> Option<Probe> {
        let probe = self.0?;
        let Some(node) = node else {
            return Some(probe);
        };
        if probe.interval.is_zero() || probe.timeout.is_zero() {
            errors.report(
                node.pos,
                "a probe needs a non-zero `interval` and `timeout`",
                "write e.g. `probe: { interval: 30s, timeout: 10s }`, or `probe: false`",
            );
        }
        if let (Some(topic), Some(at)) = (&probe.topic, node.get("topic"))
            && !errors.rule(at.pos, rule(topic))
        {
            return Some(Probe {
                topic: None,
                ..probe
            });
        }
        Some(probe)
    }
}

impl JsonSchema for ProbeSetting {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "ProbeSetting".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let probe = generator.subschema_for::<Probe>();
        // The mapping first: a value that is neither is told it should be a mapping.
        json_schema!({
            "description": "ferry publishes on a private topic or subject it subscribes to and expects the probe back; a subscription that stays silent while the connection claims to be up is rebuilt. `false` turns it off.",
            "anyOf": [probe, { "type": "boolean" }],
            "default": true
        })
    }
}

impl<'de> Deserialize<'de> for ProbeSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ProbeVisitor)
    }
}

struct ProbeVisitor;

impl<'de> Visitor<'de> for ProbeVisitor {
    type Value = ProbeSetting;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("false, or a map of interval, timeout, topic")
    }
    fn visit_bool<E: de::Error>(self, on: bool) -> Result<ProbeSetting, E> {
        Ok(ProbeSetting(on.then(Probe::default)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ProbeSetting, E> {
        match v {
            "true" => self.visit_bool(true),
            "false" => self.visit_bool(false),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ProbeSetting, A::Error> {
        Probe::deserialize(MapAccessDeserializer::new(map)).map(|p| ProbeSetting(Some(p)))
    }
}
