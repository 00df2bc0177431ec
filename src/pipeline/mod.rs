//! Routes, queues, acks, supervision and shutdown.

pub mod queue;
pub mod status;
