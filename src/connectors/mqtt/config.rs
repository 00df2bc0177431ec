//! An `mqtt:` connection: its keys as `bridges.yaml` writes them (an MQTT broker, 3.1.1 or
//! 5), and the connection, source and sink the connector receives once they are checked.

use std::borrow::Cow;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;

use crate::config::probe::ProbeSetting;
use crate::config::values::{self, Flag, Interpolated, OneOrList, Size, Text, Whole};
use crate::config::{Probe, Retain, Secret, SecretUrl, Target, Tls};

/// `max_outgoing_packet_size` when unset: 256 MiB, about MQTT's own limit (a remaining length
/// of 268,435,455 bytes).
pub const DEFAULT_MAX_OUTGOING_PACKET_SIZE: u64 = 256 * 1024 * 1024;

/// An MQTT broker.
#[derive(Deserialize, JsonSchema)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MqttConnection")]
pub struct MqttSection {
    /// `mqtt://host:1883`, `mqtts://host:8883`, `ws://host/path` or `wss://host/path`; may
    /// carry `user:password@`.
    #[schemars(with = "Text")]
    pub url: String,
    /// MQTT protocol version.
    #[serde(default = "default_version")]
    #[schemars(with = "Interpolated<MqttVersionSetting>")]
    pub version: String,
    /// The client id; stable, so the broker keeps ferry's session. Default: `ferry-<name>`.
    #[schemars(with = "Option<Text>")]
    pub client_id: Option<String>,
    /// Start without the broker's kept session. By default ferry keeps a persistent session,
    /// so the broker holds what arrives while ferry is away.
    #[serde(default)]
    #[schemars(with = "Flag")]
    pub clean_start: bool,
    /// MQTT 5: how long the broker keeps the session after ferry disconnects. Default: a day
    /// with a persistent session.
    #[serde(
        default,
        with = "values::duration::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<values::Duration>")]
    pub session_expiry: Option<Duration>,
    /// The keep-alive interval.
    #[serde(default = "default_keep_alive", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub keep_alive: Duration,
    /// The user name (also possible in the URL).
    #[schemars(with = "Option<Text>")]
    pub username: Option<String>,
    /// The password: write `${ENV}` or `${file:PATH}` rather than the secret itself.
    #[schemars(with = "Option<Text>")]
    pub password: Option<Secret>,
    /// TLS settings (for mqtts:// and wss://).
    pub tls: Option<Tls>,
    /// The largest packet ferry accepts, from 1MiB to 256MiB.
    #[serde(default = "default_max_packet_size", with = "values::size")]
    #[schemars(with = "Size")]
    pub max_packet_size: u64,
    /// The largest PUBLISH packet ferry sends, from 1KiB to 256MiB, when the broker announces
    /// no limit of its own (an MQTT 5 broker may; MQTT 3.1.1 cannot): a larger message is
    /// refused before it is sent (dead-lettered), so the broker never drops the connection
    /// over it. Set it to the broker's limit.
    #[serde(default = "default_max_outgoing_packet_size", with = "values::size")]
    #[schemars(with = "Size")]
    pub max_outgoing_packet_size: u64,
    /// The message the broker publishes when ferry's connection is lost.
    pub last_will: Option<LastWill>,
    /// The liveness probe.
    #[serde(default)]
    pub probe: ProbeSetting,
    /// MQTT 5: the topic the replies to ferry's own requests come to, subscribed only when a
    /// request route asks through this connection. Default: `ferry/replies/<client_id>`.
    #[schemars(with = "Option<Text>")]
    pub reply_topic: Option<String>,
}

fn default_version() -> String {
    "5".into()
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

fn default_max_packet_size() -> u64 {
    16 * 1024 * 1024
}

fn default_max_outgoing_packet_size() -> u64 {
    DEFAULT_MAX_OUTGOING_PACKET_SIZE
}

/// MQTT protocol version: 5, or 3.1.1 (also written 3, 4 or 311).
// The spellings `version:` accepts, for the schema; the version they mean is [`MqttVersion`].
pub struct MqttVersionSetting;

impl JsonSchema for MqttVersionSetting {
    fn schema_name() -> Cow<'static, str> {
        "MqttVersion".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "enum": ["5", "5.0", "3.1.1", "3", "4", "311", 5, 3, 4, 311],
            "errorMessage": "MQTT version `{value}` is not supported",
            "x-hint": "write `version: 5` or `version: \"3.1.1\"`"
        })
    }
}

/// The last will: published by the broker when ferry's connection is lost.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LastWill {
    /// The topic.
    #[schemars(with = "Text")]
    pub topic: String,
    /// The payload.
    #[serde(default)]
    #[schemars(with = "Text")]
    pub payload: String,
    /// The QoS.
    #[serde(default)]
    #[schemars(with = "Whole<0, 2>")]
    pub qos: u8,
    /// Published retained.
    #[serde(default)]
    #[schemars(with = "Flag")]
    pub retain: bool,
}

/// An MQTT source: `topic` or `topics`.
#[derive(Deserialize, JsonSchema)]
#[schemars(extend("oneOf" = [{ "required": ["topic"] }, { "required": ["topics"] }]))]
pub struct MqttSourceKeys {
    /// The topic filter to subscribe to (`+` and `#` wildcards).
    #[schemars(with = "Option<Text>")]
    pub topic: Option<String>,
    /// Several topic filters.
    #[schemars(with = "Option<OneOrList<Text>>")]
    pub topics: Option<OneOrList<String>>,
    /// The subscription's QoS.
    #[serde(default)]
    #[schemars(with = "Whole<0, 2>")]
    pub qos: u8,
    /// A shared-subscription group: instances in the same group share the messages.
    #[schemars(with = "Option<Text>")]
    pub share: Option<String>,
    /// MQTT 5: do not receive what this connection itself publishes.
    #[serde(default)]
    #[schemars(with = "Flag")]
    pub no_local: bool,
}

/// An MQTT sink.
#[derive(Deserialize, JsonSchema)]
pub struct MqttSinkKeys {
    /// The topic: a template such as `iot/{{ topic[1] }}`, or `auto` (the source's name,
    /// converted).
    #[serde(default = "values::auto")]
    #[schemars(with = "Text")]
    pub topic: String,
    /// The QoS to publish at.
    #[serde(default)]
    #[schemars(with = "Whole<0, 2>")]
    pub qos: u8,
    /// Publish retained: `true`, `false`, or `source` (as the message arrived).
    #[serde(default)]
    #[schemars(with = "Interpolated<Retain>")]
    pub retain: Retain,
}

/// The MQTT protocol version ferry speaks to the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttVersion {
    V311,
    V5,
}

/// How the MQTT connection reaches the broker, from the URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttTransport {
    /// `mqtt://`
    Tcp,
    /// `mqtts://`
    Tls,
    /// `ws://`
    Ws,
    /// `wss://`
    Wss,
}

impl MqttTransport {
    pub fn is_tls(self) -> bool {
        matches!(self, MqttTransport::Tls | MqttTransport::Wss)
    }

    /// The transport a URL scheme names (`tcp` and `ssl` as mosquitto's tools accept them).
    pub fn from_scheme(scheme: &str) -> Option<MqttTransport> {
        Some(match scheme {
            "mqtt" | "tcp" => MqttTransport::Tcp,
            "mqtts" | "ssl" => MqttTransport::Tls,
            "ws" => MqttTransport::Ws,
            "wss" => MqttTransport::Wss,
            _ => return None,
        })
    }

    /// The scheme of its URLs.
    pub fn scheme(self) -> &'static str {
        match self {
            MqttTransport::Tcp => "mqtt",
            MqttTransport::Tls => "mqtts",
            MqttTransport::Ws => "ws",
            MqttTransport::Wss => "wss",
        }
    }

    /// The port a URL without one means.
    pub fn default_port(self) -> u16 {
        match self {
            MqttTransport::Tcp => 1883,
            MqttTransport::Tls => 8883,
            MqttTransport::Ws => 80,
            MqttTransport::Wss => 443,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MqttConnection {
    /// The URL as written (without credentials), for logs.
    pub url: String,
    pub transport: MqttTransport,
    pub host: String,
    pub port: u16,
    /// For ws:// and wss://: the full URL the WebSocket handshake goes to.
    pub ws_url: Option<SecretUrl>,
    pub version: MqttVersion,
    pub client_id: String,
    /// `false` keeps a persistent session: the broker holds messages while ferry is away.
    pub clean_start: bool,
    /// MQTT 5 session expiry interval; `None` means the session ends with the connection.
    pub session_expiry: Option<Duration>,
    pub keep_alive: Duration,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: Tls,
    /// Largest packet accepted from the broker.
    pub max_packet_size: u32,
    /// Largest PUBLISH packet ferry sends when the broker did not announce a limit (MQTT 3.1.1
    /// never does): a larger message is refused before it is sent.
    pub max_outgoing_packet_size: u32,
    pub last_will: Option<LastWill>,
    /// `None` when turned off (`probe: false`).
    pub probe: Option<Probe>,
    /// Where the replies to ferry's own requests come to.
    pub reply_topic: String,
    /// A request route asks through this connection: it subscribes to `reply_topic`.
    pub asks: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MqttSource {
    /// Topic filters, as the user wrote them (without any `$share/` prefix).
    pub topics: Vec<String>,
    pub qos: u8,
    /// Shared-subscription group: the broker spreads messages over the group's members.
    pub share: Option<String>,
    /// MQTT 5: do not receive what this same connection published.
    pub no_local: bool,
    /// The route is a request route: each message's reply goes to its response topic.
    pub replies: bool,
}

impl MqttSource {
    /// The filters as subscribed, with `$share/GROUP/` in front when a group is set.
    pub fn subscriptions(&self) -> Vec<String> {
        self.topics
            .iter()
            .map(|t| match &self.share {
                Some(group) => format!("$share/{group}/{t}"),
                None => t.clone(),
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MqttSink {
    pub topic: Target,
    pub qos: u8,
    pub retain: Retain,
}
