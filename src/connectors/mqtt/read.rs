//! An `mqtt:` connection, source and sink read from the file and checked beyond their shape:
//! the URL gives the transport, host and port; the version, session and sizes must agree with
//! each other; topics and filters follow MQTT's rules.

use std::time::Duration;

use super::config::{
    DEFAULT_MAX_OUTGOING_PACKET_SIZE, MqttConnection, MqttSection, MqttSink, MqttSinkKeys,
    MqttSource, MqttSourceKeys, MqttTransport, MqttVersion,
};
use super::names;
use crate::config::diagnostics::Report;
use crate::config::reader::{Reader, item_positions};
use crate::config::yaml::{Node, Pos};
use crate::config::{Secret, SecretUrl, redact_url};

/// MQTT 5 session expiry when the connection keeps its session and says nothing: long enough
/// to ride out a maintenance window, short enough that a retired ferry's session goes away.
const DEFAULT_SESSION_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

impl Reader<'_> {
    /// The MQTT connection called `name`, written at `node`.
    pub fn mqtt_connection(&mut self, name: &str, node: &Node) -> Option<MqttConnection> {
        let mqtt: MqttSection = self.section(node)?;
        let at = |key: &str| node.get(key).map_or(node.pos, |n| n.pos);
        let version = match mqtt.version.as_str() {
            "5" | "5.0" => MqttVersion::V5,
            "3.1.1" | "3" | "4" | "311" => MqttVersion::V311,
            other => {
                self.errors.report(
                    at("version"),
                    format!("MQTT version `{other}` is not supported"),
                    "write `version: 5` or `version: \"3.1.1\"`",
                );
                MqttVersion::V5
            }
        };
        let tls = self.tls(mqtt.tls, node);
        if !(1024 * 1024..=268_435_455).contains(&mqtt.max_packet_size) {
            self.errors.report(
                node.pos,
                "`max_packet_size` must be between 1MiB and 256MiB",
                "ferry needs room for real payloads; MQTT caps packets at 256MiB",
            );
        }
        if !(1024..=DEFAULT_MAX_OUTGOING_PACKET_SIZE).contains(&mqtt.max_outgoing_packet_size) {
            self.errors.report(
                node.pos,
                "`max_outgoing_packet_size` must be between 1KiB and 256MiB",
                "set it to the broker's limit (mosquitto's `max_packet_size`); MQTT caps \
                 packets at 256MiB",
            );
        }
        let last_will = mqtt.last_will.and_then(|will| {
            let topic_at = node.get("last_will").and_then(|n| n.get("topic"));
            let pos = topic_at.map_or(node.pos, |n| n.pos);
            self.errors
                .rule(pos, names::topic(&will.topic))
                .then_some(will)
        });
        let probe = mqtt
            .probe
            .check(node.get("probe"), names::topic, self.errors);

        let url = &mqtt.url;
        let url_pos = at("url");
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => {
                self.errors.report(
                    url_pos,
                    format!("invalid MQTT url `{}`: {e}", redact_url(url)),
                    "write e.g. `mqtt://broker:1883`, `mqtts://broker:8883` or `ws://broker:9001/mqtt`",
                );
                return None;
            }
        };
        let Some(transport) = MqttTransport::from_scheme(parsed.scheme()) else {
            self.errors.report(
                url_pos,
                format!("`{}://` is not an MQTT url scheme", parsed.scheme()),
                "use mqtt://, mqtts://, ws:// or wss://",
            );
            return None;
        };
        let host = parsed.host_str().unwrap_or("").to_string();
        if host.is_empty() {
            self.errors.report(
                url_pos,
                "the MQTT url has no host",
                "write e.g. `mqtt://broker:1883`",
            );
            return None;
        }
        let port = parsed.port().unwrap_or(transport.default_port());
        // Credentials may also come in the URL; the fields win.
        let username = mqtt
            .username
            .or_else(|| (!parsed.username().is_empty()).then(|| parsed.username().to_string()));
        let password = mqtt
            .password
            .or_else(|| parsed.password().map(|p| Secret::new(p.to_string())));
        let ws_url = matches!(transport, MqttTransport::Ws | MqttTransport::Wss).then(|| {
            let mut u = parsed.clone();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            SecretUrl::new(u.to_string())
        });
        // A `tls:` block on a plaintext URL would be ignored: the credentials would travel in
        // clear while the config says TLS.
        if !transport.is_tls() && tls.required {
            self.errors.report(
                url_pos,
                "`tls` is set but the url is not a TLS one",
                "use mqtts:// or wss:// to connect with TLS",
            );
        }
        // A persistent session by default: the broker keeps what arrives while ferry is away,
        // and redelivers what ferry had not acknowledged.
        let session_expiry = match (version, node.get("session_expiry")) {
            (MqttVersion::V5, None) if !mqtt.clean_start => Some(DEFAULT_SESSION_EXPIRY),
            _ => mqtt.session_expiry,
        };
        if version == MqttVersion::V311 && session_expiry.is_some() {
            self.errors.report(
                url_pos,
                "`session_expiry` needs MQTT 5",
                "with MQTT 3.1.1, `clean_start: false` alone keeps the session",
            );
        }
        let client_id = mqtt.client_id.unwrap_or_else(|| format!("ferry-{name}"));
        Some(MqttConnection {
            url: redact_url(url),
            transport,
            host,
            port,
            ws_url,
            version,
            reply_topic: (mqtt.reply_topic).unwrap_or_else(|| format!("ferry/replies/{client_id}")),
            asks: false,
            client_id,
            clean_start: mqtt.clean_start,
            session_expiry,
            keep_alive: mqtt.keep_alive,
            username,
            password,
            tls,
            max_packet_size: mqtt.max_packet_size.min(u32::MAX as u64) as u32,
            max_outgoing_packet_size: mqtt
                .max_outgoing_packet_size
                .min(DEFAULT_MAX_OUTGOING_PACKET_SIZE) as u32,
            last_will,
            probe,
        })
    }

    /// The MQTT source at `node`, on connection `connection` (`mqtt`).
    pub fn mqtt_source(
        &mut self,
        keys: MqttSourceKeys,
        node: &Node,
        connection: &str,
        mqtt: &MqttConnection,
    ) -> MqttSource {
        let mut topics = Vec::new();
        let mut filter = |reader: &mut Self, topic: String, pos: Pos| {
            if reader.errors.rule(pos, names::filter(&topic)) {
                topics.push(topic);
            }
        };
        match (keys.topic, keys.topics) {
            (Some(topic), None) => {
                filter(self, topic, node.get("topic").map_or(node.pos, |n| n.pos))
            }
            (None, Some(list)) => {
                let positions = item_positions(node.get("topics"));
                for (i, topic) in list.0.into_iter().enumerate() {
                    filter(self, topic, positions.get(i).copied().unwrap_or(node.pos));
                }
            }
            (Some(_), Some(_)) => self.errors.report(
                node.pos,
                "an MQTT source takes `topic` or `topics`, not both",
                "put every filter in `topics: [...]`",
            ),
            (None, None) => self.errors.report(
                node.pos,
                "an MQTT source needs `topic`",
                "add e.g. `topic: \"sensors/#\"`",
            ),
        }
        if let Some(group) = &keys.share
            && (group.is_empty() || group.contains(['/', '+', '#']))
        {
            self.errors.report(
                node.get("share").map_or(node.pos, |n| n.pos),
                format!("`{group}` is not a valid shared-subscription group"),
                "a group name is one level: no `/`, `+` or `#`",
            );
        }
        if keys.no_local && mqtt.version != MqttVersion::V5 {
            self.errors.report(
                node.pos,
                "`no_local` needs MQTT 5",
                format!("set `version: 5` on connection `{connection}`"),
            );
        }
        MqttSource {
            topics,
            qos: keys.qos,
            share: keys.share,
            no_local: keys.no_local,
            replies: false,
        }
    }

    /// The MQTT sink at `node`; its topic may use `captures`.
    pub fn mqtt_sink(&mut self, keys: MqttSinkKeys, node: &Node, captures: &[String]) -> MqttSink {
        MqttSink {
            topic: self.target(node, "topic", keys.topic, names::topic, captures),
            qos: keys.qos,
            retain: keys.retain,
        }
    }
}
