//! JetStream, the NATS server's persistence: a route's `jetstream:` source reads through a
//! durable pull consumer, and a `jetstream: true` sink publishes and waits for the stream's ack.
//!
//! The source, in the order things happen:
//! - **Binding.** ferry looks the durable consumer up on its stream. If it exists, ferry uses it
//!   as it is, once it checked that it can serve the route: a pull consumer (no deliver subject),
//!   explicit acks, the route's `subject` as its filter and the route's priority group, if any.
//!   Anything else is refused, naming what differs and how to fix it: ferry never changes nor
//!   recreates a consumer someone else made. If it does not exist, ferry creates it from the
//!   route's settings. Several ferry instances bound to one durable consumer share its
//!   messages: that is JetStream's queue group. With a `priority_group` the policy decides
//!   which instance gets them (one pinned at a time, or one that helps only past a backlog),
//!   and ferry pulls as a member of the group; a pinned one renews its pull requests well
//!   within `pinned_ttl`, so it keeps its pin while it runs.
//! - **Window.** The consumer's `max_ack_pending` caps the messages the server hands out and
//!   nobody acked yet. ferry holds at most that many (from the pull to the ack), so a slow sink
//!   stops the pulls, not ferry's memory.
//! - **Acks.** A message is acked (`+ACK`) only once the route confirmed it: every sink took it.
//!   While it waits (in the route's queue, or in a slow sink), ferry sends progress acks (`+WPI`)
//!   every third of `ack_wait`, so the server does not hand out again what ferry is still
//!   working on. A message the route gives up on (the shutdown deadline passed with it still
//!   queued or in a sink) is nacked (`-NAK`): the server hands it out again at once — to a
//!   peer ferry on the same consumer, or to this one after its restart — instead of after
//!   `ack_wait`. (A `when_full` drop policy does not nack: the route chose to lose it.)
//! - **Recovery.** When the pull stream fails or ends (a reconnect, a server restart, missed
//!   heartbeats, a consumer deleted under ferry), ferry binds again and rebuilds it, with
//!   backoff. The problem is logged once, and its end once.
//!
//! Here: binding the consumer ([`consumer`]), holding and acking what it hands out ([`acks`]),
//! the reader that pulls ([`source`]), and the publishing sink ([`sink`]).

mod acks;
mod consumer;
mod sink;
mod source;

use std::time::Duration;

use crate::config;
use crate::contracts::queue::RouteInput;

pub(super) use sink::{is_publish_control, publish};
pub(super) use source::Source;

/// How long a JetStream API request, or a publish's ack, may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A route reading a JetStream consumer, registered before the connection starts.
pub(super) struct JetStreamRoute {
    pub route: String,
    /// The consumer's filter subject: the route's `subject`.
    pub subject: String,
    pub config: config::JetStreamSource,
    pub input: RouteInput,
    /// Set when the stream is a KV bucket's: its messages are read as entries of the bucket.
    pub kv: Option<super::kv::Watch>,
}

impl JetStreamRoute {
    /// `stream/consumer`, as logs name it.
    fn name(&self) -> String {
        format!("{}/{}", self.config.stream, self.config.consumer)
    }
}
