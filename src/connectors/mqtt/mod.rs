//! MQTT connector: one client (one client id) per `connections:` entry, shared by every route
//! that reads from it or publishes through it. MQTT 3.1.1 and 5 both work.
//!
//! - [`client`] puts the two client crates (MQTT 5 and 3.1.1) behind one surface and sets the
//!   options that matter for throughput and memory; [`publish`] is its publishing side.
//! - [`event_loop`] is the supervised task: connect, subscribe, hand messages to the routes,
//!   back off and reconnect, disconnect cleanly on close.
//! - [`subscribe`] splits the connection's filters into SUBSCRIBE packets and queues them as
//!   the client has room, so any number of routes can subscribe.
//! - [`dispatch`] finds the routes that take each message and pushes it into their queues, on
//!   the event loop's task.
//! - [`liveness`] notices a silent subscription (the probe) or a stalled connection.
//! - [`close`] closes a connection cleanly: the last acks, DISCONNECT, the socket last.
//! - [`acks`] keeps incoming QoS 1/2 messages unacknowledged until every route that took them
//!   confirmed, and releases their acks in arrival order.
//! - [`topic`] holds the pure topic and filter rules, [`topic_tree`] the filters as a tree.
//! - [`socket`] opens the client's socket and, at a clean stop, closes it only once the broker
//!   closed its side, so the acks sent last are read.
//!
//! Delivery: an incoming QoS 1/2 message is acknowledged (PUBACK / PUBREC) only once every
//! route that took it confirmed it, so a message ferry did not deliver stays with the broker,
//! which delivers it again. A sink's QoS 1/2 publish is confirmed by its own PUBACK / PUBCOMP;
//! QoS 0 once queued on the client.

mod acks;
mod client;
mod close;
pub mod config;
mod dispatch;
mod event_loop;
mod liveness;
pub mod names;
pub mod protocol;
mod publish;
mod read;
mod replies;
mod session;
mod socket;
mod subscribe;
mod topic;
mod topic_tree;
pub mod url_form;
mod wake;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure};

use self::client::{Client, EventLoop, Subscription};
use self::dispatch::RouteSource;
use self::event_loop::EventLoopTask;
use self::liveness::Liveness;
use self::publish::{PublishError, Queued, Refused, TryPublishError};
use self::socket::SocketHandle;
use super::{Connection, Sinks};
use crate::config::{MqttVersion, Retain, SinkSpec, SourceSpec};
use crate::contracts::queue::RouteInput;
use crate::contracts::status::{Backoff, ConnectionStatus};
use crate::contracts::{BoxFuture, Confirmation, ConnectionContext, Sink, SinkError};
use crate::message::Message;

/// How long a sink waits for its connection to come up before it reports it unavailable (its
/// route then retries with backoff).
const CONNECTION_WAIT: Duration = Duration::from_secs(5);
/// How long a queued publish may wait for the broker's PUBACK/PUBCOMP before the sink reports
/// the connection unavailable and its route tries again (a second copy: the client still holds
/// the first and sends it after a reconnect).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// One MQTT connection, collecting the routes that use it until [`Connection::start`].
pub struct MqttConnection {
    name: Arc<str>,
    config: crate::config::MqttConnection,
    reconnect: crate::config::Reconnect,
    status: ConnectionStatus,
    /// Built in `new`, so sinks can hold the client before the connection starts; or why it
    /// could not be built (reported by `add_source` and the sinks, which can fail).
    built: Result<(Client, EventLoop), String>,
    /// Ferry's own handle on the client's socket (see [`socket`]).
    socket: SocketHandle,
    link: Arc<Link>,
    routes: Vec<RouteSource>,
    /// Its request routes' answers, and the task that publishes them once started.
    replier: Option<(replies::Replies, replies::Replier)>,
    /// The requests this connection's sinks made, waiting for replies on its reply topic.
    asked: Option<Arc<replies::Asked>>,
    /// What this connection subscribes to, one entry per distinct filter.
    subscriptions: Vec<Subscription>,
    /// Each filter's index in `subscriptions`: thousands of routes are added without comparing
    /// each filter with every one before it.
    subscription_index: HashMap<String, usize>,
}

/// Makes the sinks of one MQTT connection: each a handle on its client.
struct MqttSinks {
    name: Arc<str>,
    /// `max_outgoing_packet_size`: the limit while the broker announced none.
    max_outgoing_packet_size: usize,
    /// Or why the client could not be built.
    client: Result<Client, String>,
    link: Arc<Link>,
    asked: Option<Arc<replies::Asked>>,
}

impl Sinks for MqttSinks {
    fn add_sink(&self, sink: &SinkSpec) -> anyhow::Result<Arc<dyn Sink>> {
        let SinkSpec::Mqtt(sink) = sink else {
            bail!("connection {} is MQTT, but the sink is not", self.name);
        };
        ensure!(
            sink.qos <= 2,
            "connection {}: qos must be 0, 1 or 2",
            self.name
        );
        Ok(Arc::new(MqttSink {
            connection: self.name.clone(),
            client: self.client.clone().map_err(|e| anyhow!(e))?,
            qos: sink.qos,
            retain: sink.retain,
            link: self.link.clone(),
            max_outgoing_packet_size: self.max_outgoing_packet_size,
            asked: self.asked.clone(),
        }))
    }
}

/// What the event loop and the sinks of one connection share.
#[derive(Debug)]
struct Link {
    /// What the broker told us about itself (MQTT 5 CONNACK), for sinks to check before
    /// queuing a publish the broker would refuse: a refused packet costs the whole connection.
    /// The largest packet the broker accepts; 0 when it did not say.
    max_packet_size: AtomicU32,
    retain_unavailable: AtomicBool,
    /// See `client::ConnAck::broker_only_resume`.
    broker_only_resume: AtomicBool,
    /// Whether the connection is up: sinks queue publishes only then, so a long outage does not
    /// pile up a copy of the same message per retry.
    connected: tokio::sync::watch::Sender<bool>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            max_packet_size: AtomicU32::new(0),
            retain_unavailable: AtomicBool::new(false),
            broker_only_resume: AtomicBool::new(false),
            connected: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl MqttConnection {
    pub fn new(
        name: &str,
        config: crate::config::MqttConnection,
        reconnect: crate::config::Reconnect,
        status: ConnectionStatus,
    ) -> Self {
        let socket = SocketHandle::default();
        let built = client::build(name, &config, &reconnect, &socket).map_err(|e| format!("{e:#}"));
        let mut connection = MqttConnection {
            name: name.into(),
            config,
            reconnect,
            status,
            built,
            socket,
            link: Arc::default(),
            routes: Vec::new(),
            replier: None,
            asked: None,
            subscriptions: Vec::new(),
            subscription_index: HashMap::new(),
        };
        if connection.config.asks && connection.config.version == MqttVersion::V5 {
            connection.ask_through();
        }
        connection
    }

    /// Subscribes to the reply topic, whose messages go to the requests waiting for them.
    fn ask_through(&mut self) {
        let topic = self.config.reply_topic.clone();
        let asked = Arc::new(replies::Asked::new(topic.clone()));
        let id = self.subscribe(Subscription {
            filter: topic.clone(),
            qos: 1,
            no_local: false,
        });
        let (input, _) = crate::contracts::queue::bounded(&self.name, Default::default());
        self.routes.push(RouteSource {
            input,
            filters: vec![(id, topic)],
            replies: None,
            asked: Some(asked.clone()),
        });
        self.asked = Some(asked);
    }

    fn client(&self) -> anyhow::Result<&Client> {
        match &self.built {
            Ok((client, _)) => Ok(client),
            Err(error) => Err(anyhow!("connection {}: {error}", self.name)),
        }
    }

    /// Subscribes to the liveness probe's topic, for a connection with sources (only one that
    /// reads needs to know its subscriptions still deliver). Returns the probe's topic,
    /// interval and timeout.
    fn add_probe(&mut self) -> Option<(String, Duration, Duration)> {
        let probe = self
            .config
            .probe
            .clone()
            .filter(|_| !self.routes.is_empty())?;
        let topic = probe
            .topic
            .unwrap_or_else(|| format!("{}{}", liveness::PROBE_PREFIX, self.config.client_id));
        self.subscribe(Subscription {
            filter: topic.clone(),
            qos: 0,
            no_local: false,
        });
        Some((topic, probe.interval, probe.timeout))
    }

    /// Adds `subscription`, or merges it into the one with the same filter: one MQTT
    /// subscription per filter, at the highest QoS any route asked for, no_local only if every
    /// route asked for it. Returns its subscription identifier (index + 1).
    fn subscribe(&mut self, subscription: Subscription) -> usize {
        let index = match self.subscription_index.get(&subscription.filter) {
            Some(&index) => {
                let existing = &mut self.subscriptions[index];
                existing.qos = existing.qos.max(subscription.qos);
                existing.no_local &= subscription.no_local;
                index
            }
            None => {
                let index = self.subscriptions.len();
                self.subscription_index
                    .insert(subscription.filter.clone(), index);
                self.subscriptions.push(subscription);
                index
            }
        };
        index + 1
    }
}

impl Connection for MqttConnection {
    fn add_source(
        &mut self,
        route: &str,
        source: &SourceSpec,
        input: RouteInput,
    ) -> anyhow::Result<()> {
        let SourceSpec::Mqtt(source) = source else {
            bail!(
                "route {route}: connection {} is MQTT, but the source is not",
                self.name
            );
        };
        self.client()?;
        ensure!(source.qos <= 2, "route {route}: qos must be 0, 1 or 2");
        // MQTT 5 forbids no_local on a shared subscription [MQTT-3.8.3-4].
        let no_local = source.no_local && source.share.is_none();
        if source.no_local && source.share.is_some() {
            tracing::warn!(
                route,
                "no_local does not apply to shared subscriptions; ignored"
            );
        }
        if let Some(why) = source.share.as_deref().and_then(topic::share_group_error) {
            bail!(
                "route {route}: share group {:?} is not valid: {why}",
                source.share
            );
        }
        let mut filters = Vec::new();
        for subscribed in source.subscriptions() {
            let filter = topic::strip_share(&subscribed);
            if let Some(why) = topic::filter_error(filter) {
                bail!("route {route}: topic filter {filter:?} is not valid: {why}");
            }
            let filter = filter.to_string();
            let id = self.subscribe(Subscription {
                filter: subscribed,
                qos: source.qos,
                no_local,
            });
            filters.push((id, filter));
        }
        let replies = match source.replies {
            true => Some(self.replier.get_or_insert_with(replies::channel).0.clone()),
            false => None,
        };
        self.routes.push(RouteSource {
            input,
            filters,
            replies,
            asked: None,
        });
        Ok(())
    }

    fn sinks(&mut self) -> Arc<dyn Sinks> {
        Arc::new(MqttSinks {
            name: self.name.clone(),
            max_outgoing_packet_size: self.config.max_outgoing_packet_size as usize,
            client: self.client().cloned().map_err(|e| format!("{e:#}")),
            link: self.link.clone(),
            asked: self.asked.clone(),
        })
    }

    fn start(self: Box<Self>, runtime: &ConnectionContext) {
        let mut this = *self;
        let probe = this.add_probe();
        let (client, eventloop) = match this.built {
            Ok(built) => built,
            Err(error) => {
                // add_source and the sinks already failed with this, so no route uses us.
                tracing::error!(connection = %this.name, "not started: {error}");
                return;
            }
        };
        if let Some((_, replier)) = this.replier {
            replier.spawn(client.clone(), runtime);
        }
        let task = EventLoopTask {
            name: this.name,
            url: this.config.url,
            client,
            status: this.status,
            backoff: Backoff::new(&this.reconnect),
            subscriptions: this.subscriptions,
            link: this.link,
            trust_subscription_ids: true,
            liveness: Liveness::new(probe, this.config.keep_alive),
            socket: this.socket,
        };
        task.spawn(eventloop, this.routes, runtime);
    }
}

/// Publishes a route's messages through its connection's client.
struct MqttSink {
    connection: Arc<str>,
    client: Client,
    qos: u8,
    retain: Retain,
    link: Arc<Link>,
    max_outgoing_packet_size: usize,
    /// Where its requests wait for their replies (a request route's sink).
    asked: Option<Arc<replies::Asked>>,
}

impl Sink for MqttSink {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { self.queue_publish(message).await?.wait().await })
    }

    fn queue<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<Confirmation, SinkError>> {
        // The publish that may wait (`queue_publish`) is a future of a kilobyte or more: it is
        // boxed on its own, only when the quick way did not do (see `publish`).
        Box::pin(async move {
            match self.try_queue_publish(message) {
                Some(queued) => queued,
                None => Box::pin(self.queue_publish(message)).await,
            }
        })
    }

    fn request<'a>(
        &'a self,
        message: &'a Message,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, SinkError>> {
        Box::pin(async move {
            let Some(asked) = &self.asked else {
                return Err(SinkError::Rejected(format!(
                    "connection {} takes no replies (MQTT 3.1.1)",
                    self.connection
                )));
            };
            self.check(message, false)?;
            self.connected().await?;
            asked
                .ask(&self.client, &self.connection, message, self.qos)
                .await
        })
    }
}

impl MqttSink {
    /// Queues the PUBLISH with the client; the confirmation is its PUBACK/PUBCOMP (nothing to
    /// wait for at QoS 0), within `PUBLISH_TIMEOUT` of the call.
    async fn queue_publish(&self, message: &Message) -> Result<Confirmation, SinkError> {
        let retain = self.retain_of(message);
        self.check(message, retain)?;
        self.connected().await?;
        let deadline = tokio::time::Instant::now() + PUBLISH_TIMEOUT;
        let publish = self.client.publish(
            message.subject.clone(),
            message.payload.clone(),
            self.qos,
            retain,
            &message.headers,
            None,
        );
        match tokio::time::timeout_at(deadline, publish).await {
            Ok(queued) => self.confirmation(message, queued, deadline),
            Err(_) => Err(unconfirmed(&self.connection)),
        }
    }

    /// The retain flag `message` is published with.
    fn retain_of(&self, message: &Message) -> bool {
        match self.retain {
            Retain::Fixed(retain) => retain,
            Retain::FromSource => message.retain,
        }
    }

    /// `queue_publish` without waiting: `None` when it would wait, for the connection or for
    /// room in the client's request queue, and nothing was queued then.
    fn try_queue_publish(&self, message: &Message) -> Option<Result<Confirmation, SinkError>> {
        if !*self.link.connected.borrow() {
            return None;
        }
        let retain = self.retain_of(message);
        if let Err(refused) = self.check(message, retain) {
            return Some(Err(refused));
        }
        let deadline = tokio::time::Instant::now() + PUBLISH_TIMEOUT;
        let queued = self.client.try_publish(
            message.subject.clone(),
            message.payload.clone(),
            self.qos,
            retain,
            &message.headers,
        );
        match queued {
            Ok(queued) => Some(self.confirmation(message, Ok(queued), deadline)),
            Err(TryPublishError::Full) => None,
            Err(TryPublishError::Failed(error)) => {
                Some(self.confirmation(message, Err(error), deadline))
            }
        }
    }

    /// What confirms a publish the client took (or why it did not take it): its PUBACK/PUBCOMP
    /// by `deadline` (nothing to wait for at QoS 0).
    fn confirmation(
        &self,
        message: &Message,
        queued: Result<Queued, PublishError>,
        deadline: tokio::time::Instant,
    ) -> Result<Confirmation, SinkError> {
        let queued = match queued {
            Ok(Queued::Qos0) => return Ok(Confirmation::Done),
            Ok(queued) => queued,
            Err(PublishError::Invalid) => {
                return Err(SinkError::Rejected(format!(
                    "connection {}: the MQTT client refused to publish to {:?}",
                    self.connection, message.subject
                )));
            }
            Err(PublishError::Closed) => return Err(self.closed()),
        };
        let connection = self.connection.clone();
        Ok(Confirmation::Pending(Box::pin(async move {
            match tokio::time::timeout_at(deadline, queued.confirmed()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(Refused::Retry(why))) => Err(SinkError::Unavailable(format!(
                    "connection {connection}: publish not confirmed: {why}"
                ))),
                Ok(Err(Refused::Rejected(why))) => Err(SinkError::Rejected(format!(
                    "connection {connection}: publish refused: {why}"
                ))),
                Err(_) => Err(unconfirmed(&connection)),
            }
        })))
    }

    /// Waits for the connection to be up, `CONNECTION_WAIT` at most.
    async fn connected(&self) -> Result<(), SinkError> {
        if !*self.link.connected.borrow() {
            let mut connected = self.link.connected.subscribe();
            tokio::time::timeout(CONNECTION_WAIT, connected.wait_for(|up| *up))
                .await
                .map_err(|_| {
                    SinkError::Unavailable(format!("connection {} is down", self.connection))
                })?
                .map_err(|_| self.closed())?;
        }
        Ok(())
    }

    fn closed(&self) -> SinkError {
        SinkError::Unavailable(format!("connection {} is closed", self.connection))
    }

    /// Refuses, before queuing it, what the broker or the client would refuse: a broker drops
    /// the connection over a packet larger than it takes (and the client would send it again
    /// after the reconnect, for ever), so a message whose PUBLISH packet is larger than the
    /// broker's announced Maximum Packet Size (MQTT 5 CONNACK), or else than
    /// `max_outgoing_packet_size`, is refused here and the route goes on with the next.
    fn check(&self, message: &Message, retain: bool) -> Result<(), SinkError> {
        // The topic follows MQTT's rules (`names::topic`): the route's mapping checked it for
        // every publish and dead letter, and the spool's forwarder checks what it kept from an
        // earlier run, so it is not checked again here.
        let topic = &message.subject;
        let size =
            self.client
                .publish_size(topic, message.payload.len(), self.qos, &message.headers);
        let (limit, whose) = match self.link.max_packet_size.load(Ordering::Relaxed) {
            0 => (self.max_outgoing_packet_size, "max_outgoing_packet_size is"),
            announced => (announced as usize, "the broker accepts at most"),
        };
        let remaining = size - 2; // at least 1 type byte + 1 length byte
        if remaining > Client::MAX_REMAINING_LENGTH || size > limit {
            return Err(SinkError::Rejected(format!(
                "connection {}: message to {topic:?} is {size} bytes as an MQTT packet; {whose} \
                 {limit}",
                self.connection
            )));
        }
        if retain && self.link.retain_unavailable.load(Ordering::Relaxed) {
            return Err(SinkError::Rejected(format!(
                "connection {}: the broker does not accept retained messages (retain: true)",
                self.connection
            )));
        }
        if self.qos > 0
            && self.client.version() == MqttVersion::V5
            && self.link.broker_only_resume.load(Ordering::Relaxed)
        {
            return Err(SinkError::Unavailable(format!(
                "connection {}: QoS {} publishes are refused while the connection continues a \
                 broker session this process has no state for (see the warning at connect)",
                self.connection, self.qos
            )));
        }
        Ok(())
    }
}

/// A publish the broker did not confirm within `PUBLISH_TIMEOUT`.
fn unconfirmed(connection: &str) -> SinkError {
    SinkError::Unavailable(format!(
        "connection {connection}: the broker did not confirm a publish within \
         {PUBLISH_TIMEOUT:?} (connection down or broker too slow)"
    ))
}
