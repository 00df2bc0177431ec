//! ferry relays messages between MQTT, NATS (core and JetStream), SSE streams, HTTP endpoints
//! and MigratoryData, from declarative routes.
//!
//! The message flow: a [`connectors::Connection`] (supervised) receives a message and pushes it
//! into its route's bounded queue ([`contracts::queue`]); the route's worker filters and
//! transforms it ([`mapping`]), renders each sink's subject, and hands it to every
//! [`contracts::Sink`]; once every sink took it, the source's [`message::Ack`] is confirmed.
//!
//! The modules form layers, bottom to top: a file imports only from its own layer or below
//! (the list, and the test that keeps it, are in `layers.rs`).

pub mod admin;
pub mod config;
pub mod connectors;
pub mod contracts;
pub mod daemon;
pub mod explain;
pub mod mapping;
pub mod message;
pub mod pipeline;
pub mod relay;
pub mod systemd;

#[cfg(test)]
mod layers;
