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

/// What a request route got for a request: what its requester is told.
#[derive(Debug)]
pub enum Answer {
    /// The sink's reply, as the service sent it.
    Reply(Message),
    /// No reply came within the route's `request.timeout`.
    TimedOut(std::time::Duration),
    /// The request could not be made or answered (no responders, the sink down, ferry
    /// stopping), and why.
    Failed(String),
}

/// The way back to whoever sent a request, made by a request route's source: the route hands
/// it the [`Answer`] once. Dropped unanswered, it answers [`Answer::Failed`] (ferry stopped),
/// so a requester is never left waiting for nothing.
pub struct Reply(Way);

enum Way {
    Back(Box<dyn FnOnce(Answer) + Send>),
    /// The request came without a way back (a NATS message without a reply inbox, an MQTT 5
    /// publish without a response topic): why, for the route to say when it dead-letters it.
    Nowhere(&'static str),
    Answered,
}

impl Reply {
    /// A reply that hands its answer to `back`.
    pub fn new(back: impl FnOnce(Answer) + Send + 'static) -> Self {
        Reply(Way::Back(Box::new(back)))
    }

    /// A request that cannot be answered, and why.
    pub fn nowhere(why: &'static str) -> Self {
        Reply(Way::Nowhere(why))
    }

    /// Why the request cannot be answered, if it cannot.
    pub fn unanswerable(&self) -> Option<&'static str> {
        match self.0 {
            Way::Nowhere(why) => Some(why),
            _ => None,
        }
    }

    /// Tells the requester.
    pub fn answer(mut self, answer: Answer) {
        if let Way::Back(back) = std::mem::replace(&mut self.0, Way::Answered) {
            back(answer);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Way::Back(back) = std::mem::replace(&mut self.0, Way::Answered) {
            back(Answer::Failed("ferry stopped".into()));
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Way::Back(_) => "Reply(pending)",
            Way::Nowhere(_) => "Reply(nowhere)",
            Way::Answered => "Reply(answered)",
        })
    }
}

/// What a source hands to a route: the message and its ack, and on a request route the way
/// back to the requester.
#[derive(Debug)]
pub struct Incoming {
    pub message: Message,
    pub ack: Ack,
    pub reply: Option<Reply>,
}

impl Incoming {
    /// A message whose delivery nobody needs to hear about.
    pub fn unacked(message: Message) -> Self {
        Incoming {
            message,
            ack: Ack::none(),
            reply: None,
        }
    }
}
