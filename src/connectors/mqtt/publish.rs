//! Publishing through the client: queuing a PUBLISH (waiting for room in the client's request
//! queue, or not), what confirms it, and the size it has on the wire.
//!
//! A sink queues its publishes with [`Client::try_publish`] first: no future, so the route's
//! boxed `Sink::queue` future stays a few words instead of the kilobyte or more the crates'
//! publish futures hold (each such box was a large allocation per message, which also made
//! glibc consolidate the small blocks freed meanwhile). Only when the request queue is full
//! does it fall back to [`Client::publish`], which waits for room.

use bytes::Bytes;

use super::client::{CONTENT_TYPE, Client, MQTT_MAX_REMAINING_LENGTH, qos};
use super::replies::Response;
use crate::config::MqttVersion;
use crate::message::Headers;

/// Why a publish was not queued.
pub enum PublishError {
    /// The client refused the request itself (bad topic or properties).
    Invalid,
    /// The event loop is gone.
    Closed,
}

/// Why [`Client::try_publish`] did not queue a publish.
pub enum TryPublishError {
    /// The client's request queue is full: [`Client::publish`] waits for room.
    Full,
    Failed(PublishError),
}

/// What became of a queued QoS 1/2 publish, as far as the broker said.
pub enum Refused {
    /// Not now: the session was reset, the connection resumed without local state, the broker
    /// is over its quota. The same message may succeed later.
    Retry(String),
    /// The broker refused this message (not authorized, invalid topic or payload).
    Rejected(String),
}

/// A queued publish: QoS 0 is done once queued; QoS 1/2 wait for the broker's PUBACK/PUBCOMP.
pub enum Queued {
    Qos0,
    V5(mqtt5::PublishNotice),
    V311(mqtt4::PublishNotice),
}

impl Queued {
    /// Resolves once the broker confirmed the publish (QoS 1: PUBACK, QoS 2: PUBCOMP). The
    /// client replays an unconfirmed publish after a reconnect, so this may take that long.
    pub async fn confirmed(self) -> Result<(), Refused> {
        match self {
            Queued::Qos0 => Ok(()),
            Queued::V5(notice) => match notice.wait_async().await {
                Ok(mqtt5::PublishResult::Qos1(ack)) if (ack.reason as u8) >= 0x80 => Err(
                    refused_v5(&format!("PUBACK {:?}", ack.reason), ack.reason as u8),
                ),
                Ok(mqtt5::PublishResult::Qos2PubRecRejected(rec)) => Err(refused_v5(
                    &format!("PUBREC {:?}", rec.reason),
                    rec.reason as u8,
                )),
                Ok(mqtt5::PublishResult::Qos2Completed(comp)) if (comp.reason as u8) >= 0x80 => {
                    Err(Refused::Retry(format!("PUBCOMP {:?}", comp.reason)))
                }
                Ok(_) => Ok(()),
                Err(error) => Err(Refused::Retry(error.to_string())),
            },
            Queued::V311(notice) => match notice.wait_async().await {
                Ok(_) => Ok(()),
                Err(error) => Err(Refused::Retry(error.to_string())),
            },
        }
    }
}

/// A publish's MQTT 5 options: `headers` as user properties and content type, `response` as
/// its Response Topic and Correlation Data; no properties at all when there are neither.
fn v5_options(
    qos_level: u8,
    retain: bool,
    headers: &Headers,
    response: Option<Response>,
) -> mqtt5::PublishOptions {
    let options = mqtt5::PublishOptions::new(qos(qos_level)).retain(retain);
    if headers.is_empty() && response.is_none() {
        return options;
    }
    let mut properties = publish_properties(headers);
    if let Some(response) = response {
        properties.response_topic = response.topic;
        properties.correlation_data = response.correlation;
    }
    options.properties(properties)
}

/// A refusal by reason code: over quota or a packet id clash pass, the rest are about the
/// message itself.
fn refused_v5(what: &str, code: u8) -> Refused {
    // 0x91 Packet Identifier in use, 0x97 Quota exceeded, 0x80 Unspecified error.
    match code {
        0x80 | 0x91 | 0x97 => Refused::Retry(format!("the broker answered {what}")),
        _ => Refused::Rejected(format!("the broker answered {what}")),
    }
}

impl Client {
    /// Queues a PUBLISH; waits only while the request channel is full. `headers` become MQTT 5
    /// user properties and content type (MQTT 3.1.1 has nowhere to put them), `response` its
    /// Response Topic and Correlation Data (`Invalid` on MQTT 3.1.1). A QoS 1/2 publish comes
    /// back with the notice its PUBACK/PUBCOMP resolves ([`Queued::confirmed`]).
    pub async fn publish(
        &self,
        topic: String,
        payload: Bytes,
        qos_level: u8,
        retain: bool,
        headers: &Headers,
        response: Option<Response>,
    ) -> Result<Queued, PublishError> {
        match self {
            Client::V5(client) => {
                let options = v5_options(qos_level, retain, headers, response);
                let queued = if qos_level == 0 {
                    client
                        .publish(topic, payload, options)
                        .await
                        .map(|()| Queued::Qos0)
                } else {
                    client
                        .publish_tracked(topic, payload, options)
                        .await
                        .map(Queued::V5)
                };
                queued.map_err(|e| match e {
                    mqtt5::ClientError::InvalidRequest(_) => PublishError::Invalid,
                    _ => PublishError::Closed,
                })
            }
            Client::V311(_) if response.is_some() => Err(PublishError::Invalid),
            Client::V311(client) => {
                let options = mqtt4::PublishOptions::new(qos(qos_level)).retain(retain);
                let queued = if qos_level == 0 {
                    client
                        .publish(topic, payload, options)
                        .await
                        .map(|()| Queued::Qos0)
                } else {
                    client
                        .publish_tracked(topic, payload, options)
                        .await
                        .map(Queued::V311)
                };
                queued.map_err(|e| match e {
                    mqtt4::ClientError::InvalidRequest(_) => PublishError::Invalid,
                    _ => PublishError::Closed,
                })
            }
        }
    }

    /// Queues a PUBLISH, as [`Client::publish`] does, if the client's request queue has room
    /// now: `Full` when it has not, and then nothing was queued.
    pub fn try_publish(
        &self,
        topic: String,
        payload: Bytes,
        qos_level: u8,
        retain: bool,
        headers: &Headers,
    ) -> Result<Queued, TryPublishError> {
        match self {
            Client::V5(client) => {
                let options = v5_options(qos_level, retain, headers, None);
                let queued = if qos_level == 0 {
                    client
                        .try_publish(topic, payload, options)
                        .map(|()| Queued::Qos0)
                } else {
                    client
                        .try_publish_tracked(topic, payload, options)
                        .map(Queued::V5)
                };
                queued.map_err(|e| match e {
                    mqtt5::ClientError::RequestChannelFull(_) => TryPublishError::Full,
                    mqtt5::ClientError::InvalidRequest(_) => {
                        TryPublishError::Failed(PublishError::Invalid)
                    }
                    _ => TryPublishError::Failed(PublishError::Closed),
                })
            }
            Client::V311(client) => {
                let options = mqtt4::PublishOptions::new(qos(qos_level)).retain(retain);
                let queued = if qos_level == 0 {
                    client
                        .try_publish(topic, payload, options)
                        .map(|()| Queued::Qos0)
                } else {
                    client
                        .try_publish_tracked(topic, payload, options)
                        .map(Queued::V311)
                };
                queued.map_err(|e| match e {
                    mqtt4::ClientError::RequestChannelFull(_) => TryPublishError::Full,
                    mqtt4::ClientError::InvalidRequest(_) => {
                        TryPublishError::Failed(PublishError::Invalid)
                    }
                    _ => TryPublishError::Failed(PublishError::Closed),
                })
            }
        }
    }

    /// Size of the PUBLISH packet `publish` would send, fixed header included.
    pub fn publish_size(&self, topic: &str, payload: usize, qos: u8, headers: &Headers) -> usize {
        packet_size(self.version(), topic, payload, qos, headers)
    }

    /// The largest remaining length MQTT can encode; larger packets are refused locally.
    pub const MAX_REMAINING_LENGTH: usize = MQTT_MAX_REMAINING_LENGTH;
}

/// The MQTT 5 properties of a PUBLISH carrying `headers`, in their order: a `Content-Type`
/// header is MQTT 5's own content type property (the first one; as over HTTP or NATS), every
/// other header a user property.
fn publish_properties(headers: &Headers) -> mqtt5::PublishProperties {
    let (content_type, user_properties): (Vec<_>, Vec<_>) = headers
        .iter()
        .cloned()
        .partition(|(name, _)| name.eq_ignore_ascii_case(CONTENT_TYPE));
    mqtt5::PublishProperties {
        user_properties,
        content_type: content_type.into_iter().next().map(|(_, v)| v),
        ..Default::default()
    }
}

/// Size of the PUBLISH packet `Client::publish` sends, fixed header included: what a broker's
/// Maximum Packet Size is compared with.
fn packet_size(
    version: MqttVersion,
    topic: &str,
    payload: usize,
    qos: u8,
    headers: &Headers,
) -> usize {
    let properties = match version {
        MqttVersion::V5 => {
            // As `publish_properties` makes them: the content type property (id, length,
            // value) once, each user property as id and two length-prefixed strings.
            let mut content_type = false;
            let len: usize = headers
                .iter()
                .map(|(k, v)| {
                    if !k.eq_ignore_ascii_case(CONTENT_TYPE) {
                        1 + 2 + k.len() + 2 + v.len()
                    } else if !std::mem::replace(&mut content_type, true) {
                        1 + 2 + v.len()
                    } else {
                        0
                    }
                })
                .sum();
            varint_len(len) + len
        }
        MqttVersion::V311 => 0,
    };
    let packet_id = if qos > 0 { 2 } else { 0 };
    let remaining = 2 + topic.len() + packet_id + properties + payload;
    1 + varint_len(remaining) + remaining
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod sizes {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("Content-Type".to_string()),
                Just("content-type".to_string()),
                "[a-zé€]{0,8}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 2000,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn packet_size_is_what_the_client_encodes(
                topic in "[a-z/é😀]{1,20}",
                payload in 0usize..70_000,
                qos_level in 0u8..=2,
                headers in prop::collection::vec((text(), text()), 0..6),
            ) {
                let pkid = u16::from(qos_level > 0);
                let mut v5 = mqtt5::Publish::new(
                    topic.clone(),
                    qos(qos_level),
                    vec![0u8; payload],
                    (!headers.is_empty()).then(|| publish_properties(&headers)),
                );
                v5.pkid = pkid;
                prop_assert_eq!(
                    packet_size(MqttVersion::V5, &topic, payload, qos_level, &headers),
                    v5.size()
                );
                let mut v311 = mqtt4::Publish::new(topic.clone(), qos(qos_level), vec![0u8; payload]);
                v311.pkid = pkid;
                prop_assert_eq!(
                    packet_size(MqttVersion::V311, &topic, payload, qos_level, &headers),
                    v311.size()
                );
            }
        }
    }
}
