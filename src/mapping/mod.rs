//! The mapping stage: pure functions over a [`crate::message::Message`].

pub mod codec;
pub mod jq;
pub mod template;
