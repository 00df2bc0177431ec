//! The mapping stage: pure functions over a [`Message`]. A route's [`Mapping`] filters and
//! transforms a message into zero or more messages; each sink's [`SinkTarget`] names the
//! subject or topic it is published to.

pub mod codec;
pub mod jq;
pub mod loops;
pub mod names;
pub mod template;

use bytes::Bytes;

use crate::config::{self, Target};
use crate::message::Message;

/// Why a message could not be mapped. It is counted, logged and (later) dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("filter: {0}")]
    Filter(jq::RunError),
    #[error("transform: {0}")]
    Transform(jq::RunError),
}

/// A route's filter and transform, compiled.
#[derive(Debug, Default)]
pub struct Mapping {
    filter: Option<jq::Program>,
    transform: Option<jq::Program>,
}

impl Mapping {
    /// Compiles a route's programs (already validated with the configuration).
    pub fn new(route: &config::Route) -> Result<Mapping, String> {
        Ok(Mapping {
            filter: route
                .filter
                .as_deref()
                .map(jq::Program::compile)
                .transpose()?,
            transform: route
                .transform
                .as_deref()
                .map(jq::Program::compile)
                .transpose()?,
        })
    }

    /// The payloads `message` becomes: none when the filter drops it (or the transform yields
    /// nothing), several when the transform yields several values, its own payload (shared,
    /// not copied) when there is no transform.
    pub fn apply(&self, message: &Message) -> Result<Vec<Bytes>, MapError> {
        if let Some(filter) = &self.filter
            && !filter.matches(&message.payload).map_err(MapError::Filter)?
        {
            return Ok(Vec::new());
        }
        let Some(transform) = &self.transform else {
            return Ok(vec![message.payload.clone()]);
        };
        let outputs = transform
            .run(&message.payload)
            .map_err(MapError::Transform)?;
        Ok(outputs.into_iter().map(Bytes::from).collect())
    }
}

/// How a sink names what it publishes.
#[derive(Debug)]
pub enum SinkTarget {
    /// The source subject, converted for the sink's protocol (or left alone).
    Auto(Conversion),
    Template(Box<template::Template>),
}

/// The `auto` conversion between a source's and a sink's protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    Unchanged,
    MqttToNats,
    NatsToMqtt,
}

impl Conversion {
    /// The conversion from a `from` protocol to a `to` protocol ("mqtt" or "nats").
    pub fn between(from: &str, to: &str) -> Conversion {
        match (from, to) {
            ("mqtt", "nats") => Conversion::MqttToNats,
            ("nats", "mqtt") => Conversion::NatsToMqtt,
            _ => Conversion::Unchanged,
        }
    }
}

impl SinkTarget {
    /// `target` for a sink fed by a source of protocol `from`, publishing over protocol `to`.
    pub fn new(target: &Target, from: &str, to: &str) -> Result<SinkTarget, String> {
        Ok(match target {
            Target::Auto => SinkTarget::Auto(Conversion::between(from, to)),
            Target::Template(t) => SinkTarget::Template(Box::new(template::Template::compile(t)?)),
        })
    }

    /// The subject or topic `message` is published to.
    pub fn render(&self, message: &Message, route: &str) -> Result<String, String> {
        match self {
            SinkTarget::Auto(Conversion::Unchanged) => Ok(message.subject.clone()),
            SinkTarget::Auto(Conversion::MqttToNats) => {
                Ok(codec::topic_to_subject(&message.subject))
            }
            SinkTarget::Auto(Conversion::NatsToMqtt) => {
                Ok(codec::subject_to_topic(&message.subject))
            }
            SinkTarget::Template(t) => t.render(message, route),
        }
    }
}
