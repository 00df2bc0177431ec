//! MQTT as ferry describes it: both ends of a route, topics with `+` and `#`, QoS 1 and 2 for
//! at-least-once, and ferry's loop marker in MQTT 5 user properties (3.1.1 has none).

use super::names;
use crate::config::{
    ConnectionKind, MqttSource, MqttVersion, Protocol, Retain, SinkSpec, SourceSpec, Tls,
};
use crate::connectors::protocol::{
    Credentials, Descriptor, Directions, Keeps, Limit, NameRule, Surroundings, Wildcards,
};

pub struct Mqtt;

impl Descriptor for Mqtt {
    fn protocol(&self) -> Protocol {
        Protocol::Mqtt
    }

    fn directions(&self) -> Directions {
        Directions {
            source: true,
            sink: true,
        }
    }

    fn with_article(&self) -> Option<&'static str> {
        Some("an MQTT")
    }

    fn name_rule(&self) -> Option<NameRule> {
        Some(names::topic)
    }

    fn noun(&self) -> &'static str {
        "topic"
    }

    fn wildcards(&self) -> Option<Wildcards> {
        Some(Wildcards {
            separator: '/',
            one_level: "+",
            rest: "#",
            rest_at_least: 0,
            hides_dollar_names: true,
        })
    }

    fn servers(&self, connection: &ConnectionKind) -> Vec<(String, u16)> {
        match connection {
            ConnectionKind::Mqtt(m) => vec![(m.host.clone(), m.port)],
            _ => Vec::new(),
        }
    }

    fn carries_marker(&self, connection: &ConnectionKind) -> bool {
        matches!(connection, ConnectionKind::Mqtt(m) if m.version == MqttVersion::V5)
    }

    fn has_no_local(&self, connection: &ConnectionKind) -> bool {
        self.carries_marker(connection)
    }

    fn with_no_local(&self, source: &SourceSpec) -> SourceSpec {
        match source {
            SourceSpec::Mqtt(mqtt) => SourceSpec::Mqtt(MqttSource {
                no_local: true,
                ..mqtt.clone()
            }),
            other => other.clone(),
        }
    }

    fn source_names(&self, source: &SourceSpec) -> Vec<String> {
        match source {
            SourceSpec::Mqtt(s) => s.topics.clone(),
            _ => Vec::new(),
        }
    }

    fn source_delivery(
        &self,
        from: &str,
        source: &SourceSpec,
        connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        let (SourceSpec::Mqtt(source), Some(ConnectionKind::Mqtt(mqtt))) = (source, connection)
        else {
            return None;
        };
        Some(if source.qos == 0 {
            Keeps::AtMostOnce(Limit::new(
                format!(
                    "the source subscribes to `{from}` at QoS 0, which the broker never redelivers"
                ),
                "set `qos: 1` on the source",
            ))
        } else if mqtt.clean_start {
            Keeps::AtMostOnce(Limit::new(
                format!(
                    "connection `{from}` starts a clean session, so what arrives while ferry is down is lost"
                ),
                "remove `clean_start: true` (a persistent session is the default)",
            ))
        } else if mqtt.version == MqttVersion::V5 && mqtt.session_expiry.is_none() {
            Keeps::AtMostOnce(Limit::new(
                format!("the session on `{from}` ends with each connection"),
                "set `session_expiry` (e.g. `1d`) on the connection",
            ))
        } else {
            Keeps::AtLeastOnce(format!(
                "source: MQTT QoS {} on `{from}`, acknowledged (PUBACK) after every sink confirmed; the broker keeps the session while ferry is away",
                source.qos
            ))
        })
    }

    fn sink_delivery(
        &self,
        role: &str,
        to: &str,
        sink: &SinkSpec,
        _connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        let SinkSpec::Mqtt(mqtt) = sink else {
            return None;
        };
        Some(match mqtt.qos {
            0 => Keeps::AtMostOnce(Limit::new(
                format!("the {role} publishes to `{to}` at QoS 0, which nothing confirms"),
                "set `qos: 1` on the sink",
            )),
            qos => Keeps::AtLeastOnce(format!(
                "{role}: MQTT QoS {qos} on `{to}`, confirmed by the broker's {}",
                if qos == 1 { "PUBACK" } else { "PUBCOMP" }
            )),
        })
    }

    fn tls<'a>(&self, connection: &'a ConnectionKind) -> Option<&'a Tls> {
        match connection {
            ConnectionKind::Mqtt(m) => Some(&m.tls),
            _ => None,
        }
    }

    fn credentials<'a>(&self, connection: &'a ConnectionKind) -> Option<Credentials<'a>> {
        match connection {
            ConnectionKind::Mqtt(m) if m.password.is_some() && !m.transport.is_tls() => {
                Some(Credentials {
                    what: "a password",
                    urls: vec![m.url.as_str()],
                })
            }
            _ => None,
        }
    }

    fn explain_connection(&self, connection: &ConnectionKind, _around: &Surroundings) -> String {
        let ConnectionKind::Mqtt(m) = connection else {
            return String::new();
        };
        format!(
            "MQTT {} at {} as client `{}`{}",
            match m.version {
                MqttVersion::V5 => "5",
                MqttVersion::V311 => "3.1.1",
            },
            m.url,
            m.client_id,
            if m.clean_start {
                ""
            } else {
                " (persistent session)"
            }
        )
    }

    fn explain_source(&self, connection: &str, source: &SourceSpec) -> String {
        let SourceSpec::Mqtt(s) = source else {
            return String::new();
        };
        format!(
            "mqtt {connection} [{}] qos {}",
            s.subscriptions().join(", "),
            s.qos
        )
    }

    fn explain_sink(&self, connection: &str, target: &str, sink: &SinkSpec) -> String {
        let SinkSpec::Mqtt(m) = sink else {
            return String::new();
        };
        format!(
            "mqtt {connection} topic {target} qos {}{}",
            m.qos,
            match m.retain {
                Retain::Fixed(true) => " retained",
                Retain::Fixed(false) => "",
                Retain::FromSource => " retain as source",
            }
        )
    }
}
