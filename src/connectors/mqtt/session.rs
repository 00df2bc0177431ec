//! How a restarted ferry takes over the persistent session the broker kept for its client id.
//!
//! The client crates resume a kept session only as far as their local state allows, and a new
//! process has none. rumqttc-next (MQTT 5) then resumes "broker-only": not knowing which
//! packet ids the broker still holds, it refuses everything that needs a new one for as long as
//! the broker keeps the session (QoS 1/2 publishes through a connection that is also a source;
//! SUBSCRIBE, so neither a changed config nor the probe's resubscription could take effect).
//! (rumqttc-v4-next, MQTT 3.1.1, has no such mode: it goes ahead as below.)
//!
//! So the MQTT 5 client is handed, once, at its first connection, a session of our own making with
//! nothing in flight, and from then on its state and the broker's agree. What the dead process
//! had in flight needs nothing from the client: its unacknowledged incoming messages are
//! delivered again by the broker, its unconfirmed publishes again by their own sources (they
//! were never acknowledged there). The one thing the broker may still hold is the packet id of
//! an outgoing QoS 2 publish it acknowledged with PUBREC and never saw released; a new QoS 2
//! publish reusing that id is a duplicate to a broker that follows [MQTT-4.3.3-10] and is
//! dropped (mosquitto instead replaces the held message with the new one, which loses nothing:
//! the held one was never confirmed to its route). A PUBREL for every id the dead process could
//! have used would release them, but which ids those are depends on the receive maximum the
//! broker announces in the CONNACK, after the session is loaded; replaying an id above it fails
//! the connection. So: a known limit for QoS 2 sinks after a crash, on brokers other than
//! mosquitto.
//!
//! The alternative, a session file the client rewrites at every change of its state
//! (`<state_dir>/mqtt/<connection>.session`), was measured (debug build, this machine, 20,000
//! QoS 1 messages MQTT -> NATS, 5,000 MQTT -> same connection, 5,000 NATS -> MQTT): the client
//! offered 75,000 checkpoints (2.5 per relayed message: one per request, one per batch read)
//! and 30,000 differed and were written (one per publish through an MQTT sink), each
//! checkpoint a copy of every in-flight publish's payload. MQTT -> NATS fell from 5,100 to
//! 2,100 msg/s, MQTT -> the same connection from 1,600 to 116, NATS -> MQTT QoS 1 from 2,400
//! to 205. What it would add, replaying the dead process's in-flight publishes, at-least-once
//! already does.

use std::sync::Mutex;

/// Hands the client the session to adopt, once; saves nothing. The event loop removes it from
/// the client's options after the first connection, so the client does not build a checkpoint
/// on every request for nobody.
#[derive(Debug)]
pub struct Adopt<S>(Mutex<Option<S>>);

impl<S> Adopt<S> {
    fn take(&self) -> Option<S> {
        self.0.lock().expect("session lock").take()
    }
}

/// The MQTT 5 session to adopt, made from the client's options.
pub fn adopt_v5(options: &mqtt5::MqttOptions) -> Adopt<mqtt5::PersistedSession> {
    let inflight = options.get_outgoing_inflight_upper_limit();
    let session = mqtt5::PersistedSession {
        format_version: 1,
        client_id: options.client_id(),
        clean_start: options.clean_start(),
        session_expiry_interval: options.session_expiry_interval(),
        outgoing_inflight_upper_limit: inflight,
        ack_mode: mqtt5::PersistedAckMode::Manual,
        last_pkid: 0,
        last_puback: 0,
        replay: Vec::new(),
        incoming_qos2: Vec::new(),
    };
    Adopt(Mutex::new(Some(session)))
}

/// In a macro for the crate's long future types.
macro_rules! adopt_store {
    ($krate:ident) => {
        impl $krate::SessionStore for Adopt<$krate::PersistedSession> {
            fn load<'a>(
                &'a self,
                _key: &'a $krate::SessionStoreKey,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<
                            Output = Result<
                                Option<$krate::PersistedSession>,
                                $krate::SessionStoreError,
                            >,
                        > + Send
                        + 'a,
                >,
            > {
                let session = self.take();
                Box::pin(async move { Ok(session) })
            }

            fn save<'a>(
                &'a self,
                _key: &'a $krate::SessionStoreKey,
                _session: &'a $krate::PersistedSession,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<Output = Result<(), $krate::SessionStoreError>>
                        + Send
                        + 'a,
                >,
            > {
                Box::pin(async { Ok(()) })
            }

            fn clear<'a>(
                &'a self,
                _key: &'a $krate::SessionStoreKey,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<Output = Result<(), $krate::SessionStoreError>>
                        + Send
                        + 'a,
                >,
            > {
                Box::pin(async { Ok(()) })
            }
        }
    };
}

adopt_store!(mqtt5);
