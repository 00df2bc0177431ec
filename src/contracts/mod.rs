//! What the connectors and the pipeline agree on, so that neither imports the other's
//! internals: the [`Sink`](sink::Sink) a route publishes through, the queue a source pushes
//! into ([`queue::RouteInput`]), a connection's status and backoff, the supervised task groups
//! every task runs in, and what a started connection gets ([`ConnectionContext`]).
//!
//! Protocol-neutral: no protocol crate and nothing of the configuration beyond the value types
//! these carry (the reconnect policy, the queue bounds).

pub mod admin_listener;
pub mod connection_context;
pub mod private_files;
pub mod queue;
pub mod sink;
pub mod status;
pub mod supervisor;

pub use connection_context::ConnectionContext;
pub use sink::{BoxFuture, Confirmation, Sink, SinkError};
