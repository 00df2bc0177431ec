//! An MQTT connection's checks: its URL gives the transport, host and port; the version,
//! session and sizes must agree with each other.

use std::time::Duration;

use super::Reader;
use crate::config::diagnostics::Report;
use crate::config::model::{MqttConnection, MqttTransport, MqttVersion, Secret, SecretUrl};
use crate::config::redact::redact_url;
use crate::config::yaml::Node;
use crate::connectors::mqtt::config::{DEFAULT_MAX_OUTGOING_PACKET_SIZE, MqttSection};

/// MQTT 5 session expiry when the connection keeps its session and says nothing: long enough
/// to ride out a maintenance window, short enough that a retired ferry's session goes away.
const DEFAULT_SESSION_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

impl Reader<'_> {
    /// The MQTT connection called `name`, written at `node`.
    pub fn mqtt(&mut self, name: &str, node: &Node) -> Option<MqttConnection> {
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
                .rule(pos, crate::connectors::mqtt::names::topic(&will.topic))
                .then_some(will)
        });
        let probe = mqtt.probe.check(
            node.get("probe"),
            crate::connectors::mqtt::names::topic,
            self.errors,
        );

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
        Some(MqttConnection {
            url: redact_url(url),
            transport,
            host,
            port,
            ws_url,
            version,
            client_id: mqtt.client_id.unwrap_or_else(|| format!("ferry-{name}")),
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
}
