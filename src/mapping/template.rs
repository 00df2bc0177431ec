//! Subject and topic templates (minijinja) over the source message.
//!
//! Variables: `topic` and `subject` both render as the source's subject; indexed, `topic[1]` is
//! its second `/` level and `subject[-1]` its last `.` token. `payload` is the JSON payload
//! (parsed only when a template uses it), `headers` a map, `route` the route's name.
//! Filters: `nats` (MQTT topic → NATS subject) and `mqtt` (the inverse), besides minijinja's own.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use minijinja::{Environment, UndefinedBehavior};

use super::codec;
use crate::message::Message;

/// A compiled subject/topic template.
pub struct Template {
    env: Environment<'static>,
    /// The variables the template names; only those are built for each message.
    uses: Uses,
}

#[derive(Default)]
struct Uses {
    topic: bool,
    subject: bool,
    payload: bool,
    headers: bool,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Template")
    }
}

const NAME: &str = "target";

impl Template {
    /// Compiles `source`; the error is minijinja's message.
    pub fn compile(source: &str) -> Result<Template, String> {
        let mut env = Environment::new();
        // A missing variable or payload field is an error (the message is dead-lettered), not
        // an empty string that would silently publish to the wrong subject.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("nats", |v: Value| codec::topic_to_subject(&v.to_string()));
        env.add_filter("mqtt", |v: Value| codec::subject_to_topic(&v.to_string()));
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| describe(&e))?;
        let names = env
            .get_template(NAME)
            .map_err(|e| describe(&e))?
            .undeclared_variables(false);
        let uses = Uses {
            topic: names.contains("topic"),
            subject: names.contains("subject"),
            payload: names.contains("payload"),
            headers: names.contains("headers"),
        };
        Ok(Template { env, uses })
    }

    /// Renders the template for `message` on route `route`.
    pub fn render(&self, message: &Message, route: &str) -> Result<String, String> {
        let uses = &self.uses;
        let payload = if uses.payload {
            match serde_json::from_slice::<serde_json::Value>(&message.payload) {
                Ok(json) => Value::from(minijinja::value::Serde(json)),
                Err(e) => {
                    return Err(format!(
                        "the template uses `payload`, which is not JSON: {e}"
                    ));
                }
            }
        } else {
            Value::UNDEFINED
        };
        let segments = |used: bool, separator| {
            if used {
                Value::from_object(Segments::new(&message.subject, separator))
            } else {
                Value::UNDEFINED
            }
        };
        let headers = if uses.headers {
            let map: BTreeMap<String, String> = message.headers.iter().cloned().collect();
            Value::from(map)
        } else {
            Value::UNDEFINED
        };
        let ctx = minijinja::context! {
            topic => segments(uses.topic, '/'),
            subject => segments(uses.subject, '.'),
            payload => payload,
            headers => headers,
            route => route,
        };
        let template = self.env.get_template(NAME).map_err(|e| describe(&e))?;
        template.render(ctx).map_err(|e| describe(&e))
    }
}

/// minijinja's message without its template-name decoration.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    if let Some(line) = e.line() {
        s = format!("{s} (template line {line})");
    }
    s
}

/// A subject that renders whole and indexes by level (negative indexes count from the end).
#[derive(Debug)]
struct Segments {
    whole: String,
    parts: Vec<String>,
}

impl Segments {
    fn new(subject: &str, separator: char) -> Segments {
        Segments {
            whole: subject.to_string(),
            parts: subject.split(separator).map(str::to_string).collect(),
        }
    }
}

impl Object for Segments {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let index = i64::try_from(key.clone()).ok()?;
        let len = self.parts.len() as i64;
        let index = if index < 0 { len + index } else { index };
        self.parts
            .get(usize::try_from(index).ok()?)
            .map(|s| Value::from(s.as_str()))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.parts.len())
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str, payload: &str) -> Message {
        Message::new("test".into(), subject, payload.as_bytes().to_vec())
    }

    #[test]
    fn segments_payload_and_filters() {
        let m = message("sensors/kitchen/temp", r#"{"room":"Kitchen"}"#);
        let t = Template::compile("iot.{{ topic[1] }}.temperature").unwrap();
        assert_eq!(t.render(&m, "r").unwrap(), "iot.kitchen.temperature");
        let t = Template::compile("{{ topic[-1] }}.{{ payload.room | lower }}").unwrap();
        assert_eq!(t.render(&m, "r").unwrap(), "temp.kitchen");
        let t = Template::compile("fwd.{{ topic | nats }}").unwrap();
        assert_eq!(t.render(&m, "r").unwrap(), "fwd.sensors.kitchen.temp");
        let m = message("cmd.a//b.c", "x");
        let t = Template::compile("out/{{ subject | mqtt }}/{{ subject[1] }}").unwrap();
        assert_eq!(t.render(&m, "r").unwrap(), "out/cmd/a.b/c/a//b");
        let mut m = message("a.b", "x");
        m.headers.push(("site".into(), "plant-1".into()));
        let t = Template::compile("{{ route }}.{{ headers.site }}.{{ subject[-1] }}").unwrap();
        assert_eq!(t.render(&m, "r").unwrap(), "r.plant-1.b");
    }

    #[test]
    fn missing_values_are_errors() {
        let m = message("a/b", r#"{"x":1}"#);
        let t = Template::compile("{{ payload.room }}").unwrap();
        assert!(t.render(&m, "r").is_err());
        let t = Template::compile("{{ topic[5] }}").unwrap();
        assert!(t.render(&m, "r").is_err());
        let m = message("a/b", "not json");
        let t = Template::compile("{{ payload.x }}").unwrap();
        assert!(t.render(&m, "r").unwrap_err().contains("not JSON"));
        assert!(Template::compile("{{ topic[1 }}").is_err());
    }
}
