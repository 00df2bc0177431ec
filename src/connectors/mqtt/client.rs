//! The two MQTT client crates behind one small surface.
//!
//! rumqttc-next (`mqtt5`, MQTT 5) and rumqttc-v4-next (`mqtt4`, MQTT 3.1.1) have nearly the same
//! API but distinct types. Every call the connector makes goes through the enums here, one match
//! arm per version. The MQTT 5-only parts (session expiry, no_local, retain-as-published, user
//! properties <-> headers, the broker's limits in CONNACK) live in the `V5` arms. Nothing else in
//! the connector names either crate.
//!
//! The settings below fix crate defaults that lose messages or bloat memory, as measured on a
//! spike relay: 65,536 preallocated outgoing inflight slots (37 MB), a 10 KiB incoming packet
//! limit, a request channel of 10 with one request per event-loop turn (QoS 1 lost 8 % to
//! mosquitto's queue limit), and TCP_NODELAY off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use mqtt5::QoS;
use tokio::time::Instant;

use super::replies::Response;
use super::socket::SocketHandle;
use crate::config::{self, MqttTransport, MqttVersion};
use crate::message::Headers;

/// Requests (publishes, subscribes, acks) the client queues before `publish` waits. The crates'
/// default of 10 made mosquitto drop QoS 1 messages for a slow client (8 % lost).
pub const REQUEST_CHANNEL_CAPACITY: usize = 4096;
/// Requests the event loop takes per turn (the default is one).
const MAX_REQUEST_BATCH: usize = 256;
/// Outgoing QoS 1/2 publishes awaiting their ack. rumqttc-next otherwise preallocates 65,536
/// slots (37 MB per connection).
const OUTGOING_INFLIGHT: u16 = 100;
/// MQTT 5: incoming QoS 1/2 messages the broker may send before ferry acknowledged them (the
/// broker's flow control, [MQTT-3.3.4-9]). Acks wait for the sinks, so this bounds what one
/// connection holds in memory: at most this many unacknowledged messages.
pub const RECEIVE_MAXIMUM: u16 = 1000;
/// The largest remaining length MQTT can encode (a four-byte variable integer).
pub(super) const MQTT_MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The header that stands for the MQTT 5 content type property.
pub(super) const CONTENT_TYPE: &str = "Content-Type";

/// One subscription as sent to the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The filter as subscribed, `$share/GROUP/` included.
    pub filter: String,
    pub qos: u8,
    /// MQTT 5: do not send back what this connection published. Ignored by MQTT 3.1.1.
    pub no_local: bool,
}

/// A PUBLISH that arrived from the broker.
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 user properties.
    pub headers: Headers,
    /// MQTT 5: the identifiers of the subscriptions this copy was delivered for (see
    /// [`Client::subscribe`]); empty on MQTT 3.1.1.
    pub subscription_ids: Vec<usize>,
    /// The PUBACK (QoS 1) or PUBREC (QoS 2) to send once the message is delivered; `None` at
    /// QoS 0. The client runs in manual ack mode: nothing is acknowledged unless sent.
    pub ack: Option<AckToken>,
    /// MQTT 5: its Response Topic and Correlation Data (a request's, or a reply's).
    pub response: Option<Box<Response>>,
}

/// The acknowledgement of one incoming QoS 1/2 message, valid on the network connection it
/// arrived on only (see `acks`).
#[derive(Clone, Debug)]
pub enum AckToken {
    V5(mqtt5::ManualAck),
    V311(mqtt4::ManualAck),
}

/// Why an ack was not queued.
pub enum AckError {
    /// The client's request queue is full: try again after the event loop ran.
    Full,
    /// The event loop is gone.
    Closed,
}

/// What the CONNACK told us.
pub struct ConnAck {
    /// The broker kept our session, subscriptions included.
    pub session_present: bool,
    /// MQTT 5: the largest packet the broker accepts.
    pub max_packet_size: Option<u32>,
    /// MQTT 5: the broker refuses retained messages.
    pub retain_available: bool,
    /// MQTT 5: the broker resumed a session this process has no local state for (a restart with
    /// `clean_start: false`). rumqttc-next then refuses anything that needs a new packet id
    /// (QoS 1/2 publishes, SUBSCRIBE) until the broker starts a fresh session.
    pub broker_only_resume: bool,
    /// MQTT 5: the broker supports subscription identifiers.
    pub subscription_ids_available: bool,
}

/// Shared by the event loop task and its `poll` in flight: whether `poll` may go on past
/// `Event::Other` (the task has nothing to do between two `poll`s then), and when it last did.
pub struct Quiet {
    /// Set by the event loop task before each wait, from `Turn::quiet`.
    set: AtomicBool,
    /// When `poll` last went on past an event, as nanoseconds after `start`, plus one; 0 once
    /// taken.
    passed: AtomicU64,
    start: Instant,
}

impl Quiet {
    pub fn new() -> Self {
        Quiet {
            set: AtomicBool::new(false),
            passed: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    pub fn set(&self, quiet: bool) {
        self.set.store(quiet, Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::Relaxed)
    }

    fn note(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.passed.store(nanos + 1, Ordering::Relaxed);
    }

    /// When `poll` last went on past an event, if it did since the last call.
    pub fn passed(&self) -> Option<Instant> {
        match self.passed.swap(0, Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.start + Duration::from_nanos(nanos - 1)),
        }
    }
}

/// What one turn of the event loop produced, as far as the connector cares.
pub enum Event {
    ConnAck(ConnAck),
    Publish(Received),
    /// Our DISCONNECT went out (after a requested disconnect).
    Disconnected,
    Other,
}

/// A cheap, cloneable handle that queues requests on the connection's event loop.
#[derive(Clone)]
pub enum Client {
    V5(mqtt5::AsyncClient),
    V311(mqtt4::AsyncClient),
}

/// The connection's event loop: polling it drives the network, and after an error polling it
/// again reconnects.
pub enum EventLoop {
    V5(Box<mqtt5::EventLoop>),
    V311(Box<mqtt4::EventLoop>),
}

/// Builds the client and event loop `cfg` describes (no I/O yet).
pub fn build(
    name: &str,
    cfg: &config::MqttConnection,
    reconnect: &config::Reconnect,
    socket: &SocketHandle,
) -> anyhow::Result<(Client, EventLoop)> {
    match cfg.version {
        MqttVersion::V5 => build_v5(name, cfg, reconnect, socket),
        MqttVersion::V311 => build_v311(name, cfg, reconnect, socket),
    }
}

/// `MqttOptions` for the connection's transport (tcp, tls, ws, wss). A macro because the two
/// crates have the same API under different types.
macro_rules! options_for_transport {
    ($krate:ident, $name:expr, $cfg:expr) => {{
        use $krate::{Broker, MqttOptions, TlsConfiguration, Transport};
        let cfg = $cfg;
        let id = cfg.client_id.clone();
        match cfg.transport {
            MqttTransport::Tcp => MqttOptions::new(id, Broker::tcp(&cfg.host, cfg.port)),
            MqttTransport::Tls => {
                let mut options = MqttOptions::new(id, Broker::tcp(&cfg.host, cfg.port));
                let tls =
                    TlsConfiguration::Rustls(super::super::tls::client_config(&cfg.tls, $name)?);
                options.set_transport(Transport::tls_with_config(tls));
                options
            }
            MqttTransport::Ws => MqttOptions::new(
                id,
                Broker::websocket(ws_url(cfg)?).map_err(|e| anyhow!("{e}"))?,
            ),
            MqttTransport::Wss => {
                let tls =
                    TlsConfiguration::Rustls(super::super::tls::client_config(&cfg.tls, $name)?);
                MqttOptions::websocket_with_tls_config(id, ws_url(cfg)?, tls)
                    .map_err(|e| anyhow!("{e}"))?
            }
        }
    }};
}

fn build_v5(
    name: &str,
    cfg: &config::MqttConnection,
    reconnect: &config::Reconnect,
    socket: &SocketHandle,
) -> anyhow::Result<(Client, EventLoop)> {
    let mut options = options_for_transport!(mqtt5, name, cfg);
    options
        .set_keep_alive(keep_alive_secs(cfg.keep_alive))
        .set_clean_start(cfg.clean_start)
        // `Strict` loops forever on SessionStateMismatch after a restart with a kept session.
        .set_broker_session_resume_policy(mqtt5::BrokerSessionResumePolicy::AllowBrokerOnly)
        .set_request_channel_capacity(REQUEST_CHANNEL_CAPACITY)
        .set_max_request_batch(MAX_REQUEST_BATCH)
        .set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT)
        .set_ack_mode(mqtt5::AckMode::Manual)
        .set_connect_timeout(reconnect.connect_timeout);
    // Session expiry and receive maximum first: they create the CONNECT properties, and
    // creating them resets the incoming size limit that `set_max_packet_size` sets (default
    // 10 KiB).
    options.set_session_expiry_interval(cfg.session_expiry.map(saturating_secs));
    options.set_receive_maximum(Some(RECEIVE_MAXIMUM));
    options.set_max_packet_size(Some(cfg.max_packet_size));
    match (&cfg.username, &cfg.password) {
        (Some(user), Some(password)) => {
            options.set_credentials(user.clone(), Bytes::from(password.expose().to_owned()))
        }
        (Some(user), None) => options.set_username(user.clone()),
        (None, Some(password)) => options.set_password(Bytes::from(password.expose().to_owned())),
        (None, None) => &mut options,
    };
    if let Some(will) = &cfg.last_will {
        options.set_last_will(mqtt5::LastWill::new(
            &will.topic,
            will.payload.as_bytes(),
            qos(will.qos),
            will.retain,
            None,
        ));
    }
    let mut network = mqtt5::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    // Ferry opens the socket, so that a clean stop can close it after the broker (`socket`).
    options.set_socket_connector(socket.connector(mqtt5::default_socket_connect));
    if !cfg.clean_start {
        // Set last: the session to adopt is made from the options (see `session`).
        let adopt = super::session::adopt_v5(&options);
        options.set_session_store(adopt);
    }

    let (client, eventloop) = mqtt5::AsyncClient::builder(options).try_build()?;
    Ok((Client::V5(client), EventLoop::V5(Box::new(eventloop))))
}

fn build_v311(
    name: &str,
    cfg: &config::MqttConnection,
    reconnect: &config::Reconnect,
    socket: &SocketHandle,
) -> anyhow::Result<(Client, EventLoop)> {
    let mut options = options_for_transport!(mqtt4, name, cfg);
    options
        .try_set_clean_session(cfg.clean_start)
        .map_err(|e| anyhow!("{e}"))
        .context("clean_start: false needs a client_id")?;
    options
        .set_keep_alive(keep_alive_secs(cfg.keep_alive))
        .set_request_channel_capacity(REQUEST_CHANNEL_CAPACITY)
        .set_max_request_batch(MAX_REQUEST_BATCH)
        .set_inflight(OUTGOING_INFLIGHT)
        .set_ack_mode(mqtt4::AckMode::Manual)
        // Both default to 10 KiB. MQTT 3.1.1 has no way to learn the broker's limit, so outgoing
        // is only bounded by what MQTT can encode.
        .set_max_packet_size(cfg.max_packet_size as usize, MQTT_MAX_REMAINING_LENGTH);
    // As for MQTT 5: see `socket`.
    options.set_socket_connector(socket.connector(mqtt4::default_socket_connect));
    match (&cfg.username, &cfg.password) {
        (Some(user), Some(password)) => {
            options.set_credentials(user.clone(), Bytes::from(password.expose().to_owned()))
        }
        (Some(user), None) => options.set_username(user.clone()),
        (None, Some(_)) => bail!("MQTT 3.1.1 cannot send a password without a username"),
        (None, None) => &mut options,
    };
    if let Some(will) = &cfg.last_will {
        options.set_last_will(mqtt4::LastWill::new(
            &will.topic,
            will.payload.as_bytes(),
            qos(will.qos),
            will.retain,
        ));
    }

    let (client, mut eventloop) = mqtt4::AsyncClient::builder(options).try_build()?;
    // MQTT 3.1.1 keeps these on the event loop; the connect timeout is in whole seconds.
    let mut network = mqtt4::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(reconnect.connect_timeout.as_secs_f64().ceil().max(1.0) as u64);
    eventloop.set_network_options(network);
    Ok((Client::V311(client), EventLoop::V311(Box::new(eventloop))))
}

fn ws_url(cfg: &config::MqttConnection) -> anyhow::Result<String> {
    cfg.ws_url
        .as_ref()
        .map(|u| u.expose().to_string())
        .with_context(|| format!("{}: a WebSocket connection needs its ws:// URL", cfg.url))
}

/// Whole seconds, rounded up so a sub-second keep-alive does not turn keep-alive off (0).
fn keep_alive_secs(keep_alive: Duration) -> u16 {
    if keep_alive.is_zero() {
        return 0;
    }
    u16::try_from(keep_alive.as_secs_f64().ceil() as u64).unwrap_or(u16::MAX)
}

fn saturating_secs(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

/// Both crates share mqttbytes-core's `QoS`. The config only allows 0, 1 and 2.
pub(super) fn qos(qos: u8) -> QoS {
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Client {
    pub fn version(&self) -> MqttVersion {
        match self {
            Client::V5(_) => MqttVersion::V5,
            Client::V311(_) => MqttVersion::V311,
        }
    }

    /// Queues a QoS 0 liveness probe without waiting (the caller polls the event loop). `false`
    /// when the request queue had no room.
    pub fn try_publish_probe(&self, topic: &str, payload: Bytes) -> bool {
        match self {
            Client::V5(client) => client
                .try_publish(topic, payload, mqtt5::PublishOptions::new(QoS::AtMostOnce))
                .is_ok(),
            Client::V311(client) => client
                .try_publish(topic, payload, mqtt4::PublishOptions::new(QoS::AtMostOnce))
                .is_ok(),
        }
    }

    /// Queues the acknowledgement of an incoming message without waiting (the caller is the
    /// task that polls the event loop). On `Full`, nothing was queued.
    pub fn try_ack(&self, token: &AckToken) -> Result<(), AckError> {
        let full = match (self, token) {
            (Client::V5(client), AckToken::V5(ack)) => match client.try_manual_ack(ack.clone()) {
                Ok(()) => return Ok(()),
                Err(e) => matches!(e, mqtt5::ClientError::RequestChannelFull(_)),
            },
            (Client::V311(client), AckToken::V311(ack)) => {
                match client.try_manual_ack(ack.clone()) {
                    Ok(()) => return Ok(()),
                    Err(e) => matches!(e, mqtt4::ClientError::RequestChannelFull(_)),
                }
            }
            _ => unreachable!("an ack token comes from its own connection's client"),
        };
        Err(if full {
            AckError::Full
        } else {
            AckError::Closed
        })
    }

    /// Queues one SUBSCRIBE for `subscriptions` without waiting (the caller is the task that
    /// polls the event loop: waiting on the request channel could block it for good), with the
    /// MQTT 5 subscription identifier `id` (MQTT 3.1.1 has none). The notice resolves once the
    /// broker answered. How the connection's filters are split into packets is `subscribe`'s.
    pub fn try_subscribe(
        &self,
        subscriptions: &[Subscription],
        id: Option<usize>,
    ) -> Result<SubscribeNotice, SubscribeError> {
        match self {
            Client::V5(client) => {
                let filters = subscriptions.iter().map(|s| {
                    mqtt5::SubscribeFilterInput::new(s.filter.clone(), qos(s.qos))
                        .no_local(s.no_local)
                        // Keep the publisher's retain flag, so `retain: from_source` copies it
                        // for live messages too (as mosquitto bridges do).
                        .preserve_retain(true)
                });
                let queued = match id {
                    Some(id) => {
                        let properties = mqtt5::SubscribeProperties {
                            id: Some(id),
                            user_properties: Vec::new(),
                        };
                        client.try_subscribe_many_with_properties_tracked(filters, properties)
                    }
                    None => client.try_subscribe_many_tracked(filters),
                };
                queued.map(SubscribeNotice::V5).map_err(|e| match e {
                    mqtt5::ClientError::RequestChannelFull(_) => SubscribeError::Full,
                    e => SubscribeError::Failed(e.into()),
                })
            }
            Client::V311(client) => {
                let filters = subscriptions
                    .iter()
                    .map(|s| mqtt4::SubscribeFilterInput::new(s.filter.clone(), qos(s.qos)));
                client
                    .try_subscribe_many_tracked(filters)
                    .map(SubscribeNotice::V311)
                    .map_err(|e| match e {
                        mqtt4::ClientError::RequestChannelFull(_) => SubscribeError::Full,
                        e => SubscribeError::Failed(e.into()),
                    })
            }
        }
    }

    /// Queues a DISCONNECT that first waits up to `drain` for in-flight QoS 1/2 publishes.
    /// `false` when it could not be queued.
    pub fn disconnect(&self, drain: Duration) -> bool {
        match self {
            Client::V5(client) => client.try_disconnect_with_timeout(drain).is_ok(),
            Client::V311(client) => client.try_disconnect_with_timeout(drain).is_ok(),
        }
    }
}

/// Why a SUBSCRIBE was not queued.
pub enum SubscribeError {
    /// The client's request queue is full: try again after the event loop ran.
    Full,
    /// The client refused it (an invalid filter) or the event loop is gone.
    Failed(anyhow::Error),
}

/// Resolves when the broker answered one SUBSCRIBE.
pub enum SubscribeNotice {
    V5(mqtt5::SubscribeNotice),
    V311(mqtt4::SubscribeNotice),
}

impl SubscribeNotice {
    /// Per filter of the SUBSCRIBE, in order: `None` when granted, or the broker's reason for
    /// refusing it. `Err` when it never got an answer (the connection dropped first).
    pub async fn wait(self) -> Result<Vec<Option<String>>, String> {
        match self {
            SubscribeNotice::V5(notice) => {
                let suback = notice.wait_async().await.map_err(|e| e.to_string())?;
                Ok(suback
                    .return_codes
                    .into_iter()
                    .map(|code| match code {
                        mqtt5::SubscribeReasonCode::Success(_) => None,
                        refused => Some(format!("{refused:?}")),
                    })
                    .collect())
            }
            SubscribeNotice::V311(notice) => {
                let suback = notice.wait_async().await.map_err(|e| e.to_string())?;
                Ok(suback
                    .return_codes
                    .into_iter()
                    .map(|code| match code {
                        mqtt4::SubscribeReasonCode::Success(_) => None,
                        mqtt4::SubscribeReasonCode::Failure => Some("Failure".to_string()),
                    })
                    .collect())
            }
        }
    }
}

impl EventLoop {
    /// Requests still on their way to the broker: queued on the client, waiting for a
    /// retransmission, or published at QoS 1/2 and not yet acknowledged. Scans the client's
    /// state: for shutdown, not for the hot path.
    pub fn unsent(&self) -> usize {
        match self {
            EventLoop::V5(eventloop) => {
                let d = eventloop.diagnostics();
                d.queues.requests_rx_len + d.queues.pending_len + usize::from(d.outbound.inflight)
            }
            EventLoop::V311(eventloop) => {
                let d = eventloop.diagnostics();
                d.queues.requests_rx_len + d.queues.pending_len + usize::from(d.outbound.inflight)
            }
        }
    }

    /// Whether requests the event loop has not written yet wait in the client (acks among
    /// them, possibly). Before tearing a connection down on purpose, the acks queued for it
    /// must be on the wire: `drop_connection` throws the unsent ones away.
    pub fn requests_queued(&self) -> bool {
        let queued = |q: usize, c: usize, p: usize| q + c + p > 0;
        match self {
            EventLoop::V5(eventloop) => {
                let d = eventloop.diagnostics().queues;
                queued(d.requests_rx_len, d.control_requests_rx_len, d.pending_len)
            }
            EventLoop::V311(eventloop) => {
                let d = eventloop.diagnostics().queues;
                queued(d.requests_rx_len, d.control_requests_rx_len, d.pending_len)
            }
        }
    }

    /// Drops the network connection without a goodbye (it is stalled or silent); the next
    /// `poll` connects again. Unacknowledged publishes are kept for the new connection; queued
    /// acks are dropped (they belong to this one).
    pub fn drop_connection(&mut self) {
        match self {
            EventLoop::V5(eventloop) => eventloop.clean(),
            EventLoop::V311(eventloop) => eventloop.clean(),
        }
    }

    /// At a CONNACK: on a kept MQTT 5 session, before anything is published, swaps the session
    /// the client adopted for one that releases the QoS 2 packet ids a dead process left with
    /// the broker, and drops the connection for the next `poll` to connect with it (see
    /// `session`). Returns whether it did; then the connection is not up.
    pub fn release_held_ids(&mut self, ack: &ConnAck) -> bool {
        match self {
            EventLoop::V5(eventloop) => {
                super::session::release_held_ids_v5(eventloop, ack.session_present)
            }
            EventLoop::V311(_) => false,
        }
    }

    /// After the first connection: the MQTT 5 client has taken the session it adopts (see
    /// `session`), and must not build a checkpoint of its state on every request for a store
    /// that keeps nothing.
    pub fn forget_session_store(&mut self) {
        match self {
            EventLoop::V5(eventloop) => {
                eventloop.options.clear_session_store();
            }
            EventLoop::V311(_) => {}
        }
    }

    /// Runs the event loop until it has something to report. After an error, the next call
    /// reconnects.
    ///
    /// While `quiet` is set, it goes on past the events the event loop task does nothing for
    /// (`Event::Other`: the PUBLISHes and PUBACKs it writes, the PUBACKs it reads, pings),
    /// noting when it saw the last one for the stall watchdog: returning each would cost the
    /// task a whole turn, and a QoS 1 message makes up to three of them.
    pub async fn poll(&mut self, quiet: Option<&Quiet>) -> anyhow::Result<Event> {
        loop {
            match self.poll_once().await? {
                Event::Other if let Some(quiet) = quiet.filter(|q| q.is_set()) => quiet.note(),
                event => return Ok(event),
            }
        }
    }

    async fn poll_once(&mut self) -> anyhow::Result<Event> {
        match self {
            EventLoop::V5(eventloop) => Ok(match eventloop.poll().await? {
                mqtt5::Event::Incoming(mqtt5::Packet::Publish(publish)) => {
                    let (headers, subscription_ids, response) = match publish.properties {
                        Some(p) => {
                            let mut headers = p.user_properties;
                            if let Some(content_type) = p.content_type {
                                headers.push((CONTENT_TYPE.to_string(), content_type));
                            }
                            let response = Response::of(p.response_topic, p.correlation_data);
                            (headers, p.subscription_identifiers, response)
                        }
                        None => Default::default(),
                    };
                    let ack = match publish.qos {
                        QoS::AtMostOnce => None,
                        QoS::AtLeastOnce => Some(AckToken::V5(mqtt5::ManualAck::PubAck(
                            mqtt5::PubAck::new(publish.pkid, None),
                        ))),
                        QoS::ExactlyOnce => Some(AckToken::V5(mqtt5::ManualAck::PubRec(
                            mqtt5::PubRec::new(publish.pkid, None),
                        ))),
                    };
                    Event::Publish(Received {
                        topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                        payload: publish.payload,
                        qos: publish.qos as u8,
                        retain: publish.retain,
                        headers,
                        subscription_ids,
                        ack,
                        response,
                    })
                }
                mqtt5::Event::Incoming(mqtt5::Packet::ConnAck(connack)) => {
                    let properties = connack.properties.as_ref();
                    let diagnostics = eventloop.diagnostics();
                    Event::ConnAck(ConnAck {
                        session_present: connack.session_present,
                        max_packet_size: properties.and_then(|p| p.max_packet_size),
                        retain_available: properties.and_then(|p| p.retain_available) != Some(0),
                        broker_only_resume: diagnostics.session.broker_only_session_resume,
                        subscription_ids_available: properties
                            .and_then(|p| p.subscription_identifiers_available)
                            != Some(0),
                    })
                }
                mqtt5::Event::Outgoing(mqtt5::Outgoing::Disconnect) => Event::Disconnected,
                _ => Event::Other,
            }),
            EventLoop::V311(eventloop) => Ok(match eventloop.poll().await? {
                mqtt4::Event::Incoming(mqtt4::Packet::Publish(publish)) => {
                    let ack = match publish.qos {
                        QoS::AtMostOnce => None,
                        QoS::AtLeastOnce => Some(AckToken::V311(mqtt4::ManualAck::PubAck(
                            mqtt4::PubAck::new(publish.pkid),
                        ))),
                        QoS::ExactlyOnce => Some(AckToken::V311(mqtt4::ManualAck::PubRec(
                            mqtt4::PubRec::new(publish.pkid),
                        ))),
                    };
                    Event::Publish(Received {
                        topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                        payload: publish.payload,
                        qos: publish.qos as u8,
                        retain: publish.retain,
                        headers: Headers::new(),
                        subscription_ids: Vec::new(),
                        ack,
                        response: None,
                    })
                }
                mqtt4::Event::Incoming(mqtt4::Packet::ConnAck(connack)) => {
                    Event::ConnAck(ConnAck {
                        session_present: connack.session_present,
                        max_packet_size: None,
                        retain_available: true,
                        broker_only_resume: false,
                        subscription_ids_available: false,
                    })
                }
                mqtt4::Event::Outgoing(mqtt4::Outgoing::Disconnect) => Event::Disconnected,
                _ => Event::Other,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LastWill, Secret, Tls};

    fn config(version: MqttVersion) -> config::MqttConnection {
        config::MqttConnection {
            url: "mqtt://127.0.0.1:1".into(),
            transport: MqttTransport::Tcp,
            host: "127.0.0.1".into(),
            port: 1,
            ws_url: None,
            version,
            client_id: "ferry-test".into(),
            clean_start: false,
            session_expiry: Some(Duration::from_secs(3600)),
            keep_alive: Duration::from_millis(1500),
            username: Some("user".into()),
            password: Some(Secret::new("pw")),
            tls: Tls::default(),
            max_packet_size: 2 * 1024 * 1024,
            max_outgoing_packet_size: 1024 * 1024,
            last_will: Some(LastWill {
                topic: "ferry/status".into(),
                payload: "offline".into(),
                qos: 1,
                retain: true,
            }),
            probe: None,
            reply_topic: "ferry/replies/ferry-test".into(),
            asks: false,
        }
    }

    #[test]
    fn v5_options_fix_the_crate_defaults() {
        let (_, eventloop) = build(
            "t",
            &config(MqttVersion::V5),
            &config::Reconnect::default(),
            &SocketHandle::default(),
        )
        .unwrap();
        let EventLoop::V5(eventloop) = eventloop else {
            panic!("v5")
        };
        let options = &eventloop.options;
        assert_eq!(
            options.incoming_packet_size_limit(),
            mqtt5::IncomingPacketSizeLimit::Bytes(2 * 1024 * 1024)
        );
        assert_eq!(options.max_packet_size(), Some(2 * 1024 * 1024));
        assert_eq!(options.session_expiry_interval(), Some(3600));
        assert_eq!(
            options.get_outgoing_inflight_upper_limit(),
            Some(OUTGOING_INFLIGHT)
        );
        assert_eq!(options.request_channel_capacity(), REQUEST_CHANNEL_CAPACITY);
        assert_eq!(options.max_request_batch(), MAX_REQUEST_BATCH);
        assert_eq!(options.ack_mode(), mqtt5::AckMode::Manual);
        assert_eq!(options.receive_maximum(), Some(RECEIVE_MAXIMUM));
        assert_eq!(
            options.broker_session_resume_policy(),
            mqtt5::BrokerSessionResumePolicy::AllowBrokerOnly
        );
        assert_eq!(options.keep_alive(), Duration::from_secs(2));
        assert!(!options.clean_start());
        assert_eq!(
            options.connect_timeout(),
            config::Reconnect::default().connect_timeout
        );
        assert!(options.last_will().is_some());
        assert!(format!("{:?}", options.network_options()).contains("tcp_nodelay: true"));
        assert!(options.has_socket_connector());
    }

    #[test]
    fn v311_options_fix_the_crate_defaults() {
        let (_, eventloop) = build(
            "t",
            &config(MqttVersion::V311),
            &config::Reconnect::default(),
            &SocketHandle::default(),
        )
        .unwrap();
        let EventLoop::V311(eventloop) = eventloop else {
            panic!("v3.1.1")
        };
        assert_eq!(eventloop.mqtt_options.max_packet_size(), 2 * 1024 * 1024);
        assert_eq!(eventloop.mqtt_options.inflight(), OUTGOING_INFLIGHT);
        assert_eq!(
            eventloop.mqtt_options.request_channel_capacity(),
            REQUEST_CHANNEL_CAPACITY
        );
        assert_eq!(
            eventloop.mqtt_options.max_request_batch(),
            MAX_REQUEST_BATCH
        );
        assert!(!eventloop.mqtt_options.clean_session());
        assert_eq!(eventloop.mqtt_options.ack_mode(), mqtt4::AckMode::Manual);
        assert_eq!(eventloop.network_options().connection_timeout(), 10);
        assert!(format!("{:?}", eventloop.network_options()).contains("tcp_nodelay: true"));
        assert!(eventloop.mqtt_options.has_socket_connector());
    }

    #[test]
    fn publish_size_counts_headers_only_on_v5() {
        let (v5, _) = build(
            "t",
            &config(MqttVersion::V5),
            &config::Reconnect::default(),
            &SocketHandle::default(),
        )
        .unwrap();
        let (v4, _) = build(
            "t",
            &config(MqttVersion::V311),
            &config::Reconnect::default(),
            &SocketHandle::default(),
        )
        .unwrap();
        let headers = vec![("k".to_string(), "vv".to_string())];
        // 1 type + 1 length + (2 + 3 topic) + 2 packet id + 10 payload
        assert_eq!(v4.publish_size("a/b", 10, 1, &headers), 19);
        // + 1 properties length + (1 + 2 + 1 + 2 + 2) user property
        assert_eq!(v5.publish_size("a/b", 10, 1, &headers), 28);
        assert_eq!(v5.publish_size("a/b", 10, 0, &Vec::new()), 18);
        assert_eq!(v4.publish_size("t", 200, 0, &headers), 1 + 2 + 3 + 200);
    }

    #[test]
    fn keep_alive_rounds_up() {
        assert_eq!(keep_alive_secs(Duration::ZERO), 0);
        assert_eq!(keep_alive_secs(Duration::from_millis(200)), 1);
        assert_eq!(keep_alive_secs(Duration::from_secs(60)), 60);
        assert_eq!(keep_alive_secs(Duration::from_secs(1 << 20)), u16::MAX);
    }
}
