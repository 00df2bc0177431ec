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
//! were never acknowledged there).
//!
//! Except the packet ids of outgoing QoS 2 publishes the broker acknowledged with PUBREC and
//! never saw released. The broker holds them in the session, and they count against its receive
//! maximum [MQTT-3.3.4-7]: the new process's QoS 2 publishes, on top of them, exceed it. mosquitto
//! 2.0 answers the first publish past it with PUBREC "quota exceeded" (0x97) and closes the
//! connection (its log: "Reused message ID ... detected" for the held ids it replaces, then "Bad
//! socket read/write ... Unknown error"); the next connection gets a few ids further, and so on,
//! with hundreds of duplicates and a growing backoff. Other brokers drop a new publish that
//! reuses a held id as a duplicate [MQTT-4.3.3-10].
//!
//! So when the broker says it kept the session, the connection releases every id the dead
//! process could have held before it publishes anything: a PUBREL for each id of the inflight
//! window (the broker's receive maximum, at most ours: the dead process numbered its publishes
//! from the same range), each answered by PUBCOMP, "packet identifier not found" included. The
//! client sends a PUBREL only for an id its session holds, and sends a restored session's
//! replay before anything new, keeping those ids taken until their PUBCOMP; so the PUBRELs go in
//! a session to adopt. But the window is known only from the CONNACK, after the client loaded
//! the session, and a replayed id above the broker's receive maximum fails the connection. So
//! the first connection is dropped at its CONNACK, unused, and the next one adopts a second
//! session whose replay holds the PUBRELs (under another store scope: the client loads a
//! session again only for another key). A held message released this way reaches the
//! subscribers: a duplicate of what its source delivers again, as at-least-once allows.
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

/// The MQTT 5 session to adopt at the first connection, made from the client's options.
pub fn adopt_v5(options: &mqtt5::MqttOptions) -> Adopt<mqtt5::PersistedSession> {
    Adopt(Mutex::new(Some(session_v5(options, Vec::new()))))
}

/// The store scope of the session that releases the dead process's QoS 2 packet ids.
const RELEASE_SCOPE: &str = "release";

/// At the CONNACK of the first connection: when the broker kept the session, hands the client
/// the session that releases every QoS 2 packet id the dead process could have held (see the
/// module doc) and drops the connection, so that the next `poll` connects again with it.
/// Returns whether it did.
pub fn release_held_ids_v5(eventloop: &mut mqtt5::EventLoop, session_present: bool) -> bool {
    if !session_present
        || eventloop.options.session_store().is_none()
        || eventloop.options.session_store_scope() == RELEASE_SCOPE
    {
        return false;
    }
    // The broker's receive maximum, at most ours: the ids the client (and so the dead process)
    // numbers its publishes from.
    let window = eventloop.diagnostics().outbound.max_inflight;
    let replay = (1..=window)
        .map(|pkid| mqtt5::PersistedRequest::PubRel(mqtt5::PersistedPubRel { pkid }))
        .collect();
    let session = session_v5(&eventloop.options, replay);
    eventloop
        .options
        .set_session_store(Adopt(Mutex::new(Some(session))))
        .set_session_store_scope(RELEASE_SCOPE);
    eventloop.clean();
    true
}

fn session_v5(
    options: &mqtt5::MqttOptions,
    replay: Vec<mqtt5::PersistedRequest>,
) -> mqtt5::PersistedSession {
    let inflight = options.get_outgoing_inflight_upper_limit();
    mqtt5::PersistedSession {
        format_version: 1,
        client_id: options.client_id(),
        clean_start: options.clean_start(),
        session_expiry_interval: options.session_expiry_interval(),
        outgoing_inflight_upper_limit: inflight,
        ack_mode: mqtt5::PersistedAckMode::Manual,
        last_pkid: 0,
        last_puback: 0,
        replay,
        incoming_qos2: Vec::new(),
    }
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
