//! The mapping stage: pure functions over a [`crate::message::Message`].
