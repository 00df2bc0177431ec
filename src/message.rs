//! The unit that flows through a route: a [`Message`] and, beside it, the [`Ack`] that tells the
//! source whether every sink took it.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

/// Headers as the origin carried them: NATS headers, MQTT 5 user properties. A list, not a map,
/// because both protocols allow a name to repeat and keep the order.
pub type Headers = Vec<(String, String)>;

/// One message, protocol-neutral. Cheap to clone: the payload is shared, never copied on the
/// hot path, which is what lets a route fan one message out to several sinks.
#[derive(Clone, Debug)]
pub struct Message {
    /// The MQTT topic, NATS subject or SSE event, as the origin named it.
    pub subject: String,
    pub payload: Bytes,
    pub headers: Headers,
    /// MQTT QoS as received (0 for protocols without one).
    pub qos: u8,
    /// The MQTT retain flag as received.
    pub retain: bool,
    /// Name of the connection the message came from.
    pub origin: Arc<str>,
    pub received: SystemTime,
    /// The SSE event type (`event:`), for messages from an SSE stream.
    pub event: Option<String>,
    /// The SSE event id (`id:`), for messages from an SSE stream.
    pub id: Option<String>,
}

impl Message {
    /// A message that just arrived on connection `origin`.
    pub fn new(origin: Arc<str>, subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Message {
            subject: subject.into(),
            payload: payload.into(),
            headers: Vec::new(),
            qos: 0,
            retain: false,
            origin,
            received: SystemTime::now(),
            event: None,
            id: None,
        }
    }
}

/// Tells a source what became of a message it handed over. Confirm it once every sink took the
/// message; dropping it unconfirmed is a nack (the source may redeliver). Sources that cannot
/// acknowledge anything (QoS 0, core NATS) hand over [`Ack::none`].
pub struct Ack(Option<Box<dyn FnOnce(bool) + Send>>);

impl Ack {
    /// An ack that nobody listens to.
    pub fn none() -> Self {
        Ack(None)
    }

    /// An ack that calls `done(true)` when confirmed and `done(false)` when dropped.
    pub fn new(done: impl FnOnce(bool) + Send + 'static) -> Self {
        Ack(Some(Box::new(done)))
    }

    /// Every sink has the message.
    pub fn confirm(mut self) {
        if let Some(done) = self.0.take() {
            done(true);
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(false);
        }
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Ack(pending)"
        } else {
            "Ack(none)"
        })
    }
}

/// What a source hands to a route: the message and its ack.
#[derive(Debug)]
pub struct Incoming {
    pub message: Message,
    pub ack: Ack,
}

impl Incoming {
    /// A message whose delivery nobody needs to hear about.
    pub fn unacked(message: Message) -> Self {
        Incoming {
            message,
            ack: Ack::none(),
        }
    }
}
