//! A route as `bridges.yaml` writes it. Its source, sinks, headers, queue and spool are
//! sections of their own, read once the connections they name are known; here they are only
//! described, for the schema.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::model::{Delivery, HeaderRules, Queue, Request, Spool, TransformBudget};
use super::route_ends::{SinkForm, SourceForm};
use super::values::{self, Interpolated, OneOrList, Text};

/// The sections of a route read on their own: the route's schema describes them, its check
/// leaves them be.
pub const READ_ON_THEIR_OWN: &[&str] =
    &["Source", "Sink", "HeaderRules", "Queue", "Spool", "Request"];

/// A route: one source, a mapping stage, one or more sinks.
#[derive(Deserialize, JsonSchema)]
#[schemars(rename = "Route", deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "the sections described here are read on their own"
)]
pub struct RouteSection {
    /// The route's name, unique in the file.
    #[schemars(with = "Text")]
    pub name: String,
    /// Where messages come from.
    #[schemars(with = "SourceForm")]
    pub from: IgnoredAny,
    /// Where messages go: a sink or a list of sinks.
    #[schemars(with = "OneOrList<SinkForm>")]
    pub to: IgnoredAny,
    /// A jq expression; messages for which it is false or null are dropped (JSON payloads).
    #[schemars(with = "Option<Text>")]
    pub filter: Option<String>,
    /// A jq expression that reshapes the payload, e.g. `{room: .room, celsius: .value}`.
    #[schemars(with = "Option<Text>")]
    pub transform: Option<String>,
    /// How long the filter and transform may run on one message; past it they are stopped and
    /// the message is dead-lettered.
    #[serde(default = "default_transform_timeout", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub transform_timeout: Duration,
    /// How much memory the filter and transform may use (the address space of the route's jq
    /// worker process, at least 64MiB); past it the message is dead-lettered.
    #[serde(default = "default_transform_memory", with = "values::size")]
    #[schemars(with = "values::Size")]
    pub transform_memory: u64,
    /// Which headers (NATS) or user properties (MQTT 5) go along.
    #[schemars(with = "Option<HeaderRules>")]
    pub headers: Option<IgnoredAny>,
    /// The route's bounded queue.
    #[schemars(with = "Option<Queue>")]
    pub queue: Option<IgnoredAny>,
    /// The delivery guarantee to insist on; `ferry check` refuses what cannot keep it.
    #[schemars(with = "Option<Interpolated<DeliveryChoice>>")]
    pub delivery: Option<DeliveryChoice>,
    /// Store-and-forward: while a sink is down, messages go to disk instead of waiting.
    #[schemars(with = "Option<Spool>")]
    pub spool: Option<IgnoredAny>,
    /// Where messages that fail (transform, template, a refused publish) go, with the reason
    /// in headers.
    #[schemars(with = "Option<SinkForm>")]
    pub dead_letter: Option<IgnoredAny>,
    /// Makes the route a request route: its one sink's reply goes back to the requester.
    #[schemars(with = "Option<Request>")]
    pub request: Option<IgnoredAny>,
}

fn default_transform_timeout() -> Duration {
    TransformBudget::default().timeout
}

fn default_transform_memory() -> u64 {
    TransformBudget::default().memory
}

/// A delivery guarantee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "Delivery")]
pub enum DeliveryChoice {
    /// The source is acknowledged only once every sink confirmed: nothing is lost, a message
    /// may come twice.
    AtLeastOnce,
    /// Nothing is sent twice; a message may be lost.
    AtMostOnce,
}

impl From<DeliveryChoice> for Delivery {
    fn from(choice: DeliveryChoice) -> Delivery {
        match choice {
            DeliveryChoice::AtLeastOnce => Delivery::AtLeastOnce,
            DeliveryChoice::AtMostOnce => Delivery::AtMostOnce,
        }
    }
}
