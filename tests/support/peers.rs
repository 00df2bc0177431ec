//! The test's own MQTT and NATS clients: they publish what ferry should relay and collect what
//! ferry delivered into an [`Inbox`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use mqtt5::{
    AsyncClient, Broker, Event, IncomingPacketSizeLimit, MqttOptions, NetworkOptions, Packet,
    PublishOptions, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{millis, secs};

/// One message as a peer received it: MQTT topic or NATS subject, payload, retain flag
/// (always false for NATS).
#[derive(Clone, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
    /// NATS headers, or MQTT 5 user properties.
    pub headers: Vec<(String, String)>,
}

impl Msg {
    /// The payload as text (lossy), for assertions on text payloads.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// Every value of the NATS header or MQTT 5 user property `name`, in order. Names are
    /// compared ignoring ASCII case, as NATS (like HTTP) treats header names.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header / user property `name` (see [`Self::header_values`]).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }

    /// ferry's loop marker (`Ferry-Via: <hops>;<instance>;<connections>`): the instance that
    /// published this copy.
    pub fn ferry_instance(&self) -> Option<&str> {
        let value = self.header("Ferry-Via")?;
        value.get(value.find(';')? + 1..value.rfind(';')?)
    }

    /// ferry's loop marker: how many ferry hops this copy has made.
    pub fn ferry_hops(&self) -> Option<u32> {
        let value = self.header("Ferry-Via")?;
        value.split(';').next()?.trim().parse().ok()
    }

    /// The payload parsed as JSON (panics with the payload if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on `{}` is not JSON ({e}): {:?}",
                self.topic,
                self.text()
            )
        })
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.text();
        if text.len() > 80 {
            text.truncate(80);
            text.push('…');
        }
        write!(
            f,
            "{:?} {:?}{}",
            self.topic,
            text,
            if self.retain { " (retained)" } else { "" }
        )
    }
}

/// Messages a peer received, in arrival order, with bounded waits.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Msg>,
    label: String,
}

impl Inbox {
    fn new(label: String) -> (mpsc::UnboundedSender<Msg>, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Inbox { rx, label })
    }

    /// The next message, or None if none arrives within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Msg> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Exactly `n` messages; panics if fewer arrive within `timeout`, saying how many did.
    pub async fn collect(&mut self, n: usize, timeout: Duration) -> Vec<Msg> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => got.push(m),
                Ok(None) | Err(_) => panic!(
                    "{}: expected {n} messages within {timeout:?}, {} arrived{}",
                    self.label,
                    got.len(),
                    describe(&got)
                ),
            }
        }
        got
    }

    /// Messages up to and including the first one matching `pred`; panics if none matches
    /// within `timeout`, saying what did arrive.
    pub async fn collect_until(
        &mut self,
        what: &str,
        pred: impl Fn(&Msg) -> bool,
        timeout: Duration,
    ) -> Vec<Msg> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    let done = pred(&m);
                    got.push(m);
                    if done {
                        return got;
                    }
                }
                Ok(None) | Err(_) => panic!(
                    "{}: {what} did not arrive within {timeout:?}; {} other messages did{}",
                    self.label,
                    got.len(),
                    describe(&got)
                ),
            }
        }
    }

    /// As many messages as `expected` holds ([`Self::collect`]), which must be those
    /// `(topic, payload)` pairs in that order ([`assert_messages`]).
    pub async fn expect_messages(&mut self, expected: &[(&str, &str)], timeout: Duration) {
        let got = self.collect(expected.len(), timeout).await;
        assert_messages(&got, expected);
    }

    /// Messages up to and including the first on `topic` (or NATS subject), as
    /// [`Self::collect_until`].
    pub async fn collect_until_topic(&mut self, topic: &str, timeout: Duration) -> Vec<Msg> {
        let what = format!("a message on `{topic}`");
        (self.collect_until(&what, |m| m.topic == topic, timeout)).await
    }

    /// Messages up to and including number `seq` of the numbered stream `stream`
    /// ([`seq_payload`]), as [`Self::collect_until`].
    pub async fn collect_until_seq(
        &mut self,
        stream: &str,
        seq: usize,
        timeout: Duration,
    ) -> Vec<Msg> {
        let last = format!("{stream}:{seq}:");
        let what = format!("message {last}");
        (self.collect_until(&what, |m| m.text().starts_with(&last), timeout)).await
    }

    /// Asserts that nothing arrives for `quiet` (an absence can only be checked over a window).
    pub async fn expect_nothing(&mut self, quiet: Duration) {
        if let Ok(Some(m)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            panic!("{}: expected no message, got {m:?}", self.label);
        }
    }

    /// Everything that arrives within `window` (a bounded quiet period: used after a final
    /// sentinel to catch what should never come, such as echoes or loop copies).
    pub async fn collect_for(&mut self, window: Duration) -> Vec<Msg> {
        let deadline = tokio::time::Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            got.push(m);
        }
        got
    }

    /// Whatever has arrived already, without waiting.
    pub fn drain(&mut self) -> Vec<Msg> {
        let mut got = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            got.push(m);
        }
        got
    }
}

/// Asserts that `got` are the `(topic, payload text)` pairs `expected`, in that order.
pub fn assert_messages(got: &[Msg], expected: &[(&str, &str)]) {
    let got: Vec<(&str, String)> = (got.iter()).map(|m| (m.topic.as_str(), m.text())).collect();
    let expected: Vec<(&str, String)> = (expected.iter())
        .map(|(topic, payload)| (*topic, payload.to_string()))
        .collect();
    assert_eq!(got, expected);
}

fn describe(got: &[Msg]) -> String {
    if got.is_empty() {
        return String::new();
    }
    let first: Vec<_> = got.iter().take(5).collect();
    let last: Vec<_> = got.iter().rev().take(3).rev().collect();
    format!("; first: {first:?}; last: {last:?}")
}

static PEER_ID: AtomicUsize = AtomicUsize::new(0);

fn unique_id(kind: &str) -> String {
    format!(
        "test-{kind}-{}-{}",
        std::process::id(),
        PEER_ID.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------
// MQTT

/// An MQTT 5 client (rumqttc-next) whose received publishes land in [`MqttPeer::inbox`].
pub struct MqttPeer {
    pub client: AsyncClient,
    pub inbox: Inbox,
    url: String,
    task: JoinHandle<()>,
}

impl MqttPeer {
    /// Connects to `mqtt://host:port` or `ws://host:port/path`; panics if no CONNACK within
    /// 10 s.
    pub async fn connect(url: &str) -> MqttPeer {
        let broker = if url.starts_with("ws://") {
            Broker::websocket(url).unwrap()
        } else {
            let (host, port) = host_port(url, "mqtt://");
            Broker::tcp(host, port)
        };
        Self::connect_with(url, MqttOptions::new(unique_id("mqtt"), broker))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Connects to `mqtts://host:port` trusting only the CA in `ca_pem`. Returns the error
    /// instead of panicking, so a test can check that a wrong CA is refused.
    pub async fn connect_tls(url: &str, ca_pem: &Path) -> Result<MqttPeer, String> {
        let (host, port) = host_port(url, "mqtts://");
        let mut options = MqttOptions::new(unique_id("mqtts"), Broker::tcp(host, port));
        let ca = std::fs::read(ca_pem).unwrap();
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth: None,
        }));
        Self::connect_with(url, options).await
    }

    async fn connect_with(url: &str, mut options: MqttOptions) -> Result<MqttPeer, String> {
        // As ferry's own client (src/connectors/mqtt/client.rs): without these settings QoS 1
        // bursts lose messages.
        options
            .set_keep_alive(60)
            .set_clean_start(true)
            .set_request_channel_capacity(10_000)
            .set_max_request_batch(256)
            .set_outgoing_inflight_upper_limit(100)
            .set_incoming_packet_size_limit(IncomingPacketSizeLimit::Bytes(64 << 20))
            .set_max_packet_size(Some(64 << 20));
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(5);
        options.set_network_options(network);

        let capacity = options.request_channel_capacity();
        let (client, mut eventloop) = AsyncClient::builder(options).capacity(capacity).build();
        let label = format!("MQTT peer on {url}");
        let (tx, inbox) = Inbox::new(label.clone());
        // Ok(true) once connected; Err(last error) while it is not.
        let (state_tx, mut state_rx) = watch::channel::<Result<bool, String>>(Ok(false));
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = state_tx.send_replace(Ok(true));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Msg {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload,
                            retain: p.retain,
                            headers: p.properties.map(|p| p.user_properties).unwrap_or_default(),
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = state_tx.send_replace(Err(e.to_string()));
                        // rumqttc reconnects on the next poll; do not spin.
                        tokio::time::sleep(millis(100)).await;
                    }
                }
            }
        });
        let connected = tokio::time::timeout(secs(10), async {
            loop {
                if let Ok(true) = &*state_rx.borrow_and_update() {
                    return Ok(());
                }
                if let Err(e) = &*state_rx.borrow() {
                    return Err(e.clone());
                }
                if state_rx.changed().await.is_err() {
                    return Err("event loop ended".to_string());
                }
            }
        })
        .await;
        match connected {
            Ok(Ok(())) => Ok(MqttPeer {
                client,
                inbox,
                url: url.to_string(),
                task,
            }),
            Ok(Err(e)) => {
                task.abort();
                Err(format!("{label}: could not connect: {e}"))
            }
            Err(_) => {
                task.abort();
                Err(format!("{label}: no CONNACK within 10s"))
            }
        }
    }

    /// A client connected to `url` ([`Self::connect`]) and subscribed to `filter` at `qos`
    /// (SUBACK received); what arrives is in its `inbox`.
    pub async fn subscribed(url: &str, filter: &str, qos: u8) -> MqttPeer {
        let peer = MqttPeer::connect(url).await;
        peer.subscribe(filter, qos).await;
        peer
    }

    /// Subscribes and returns once the broker granted the subscription (SUBACK).
    pub async fn subscribe(&self, filter: &str, qos: u8) {
        let notice = self
            .client
            .subscribe_tracked(filter, qos_of(qos))
            .await
            .unwrap_or_else(|e| panic!("subscribe to {filter:?} on {}: {e}", self.url));
        tokio::time::timeout(secs(10), notice.wait_completion_async())
            .await
            .unwrap_or_else(|_| panic!("no SUBACK for {filter:?} on {} within 10s", self.url))
            .unwrap_or_else(|e| panic!("subscription to {filter:?} on {} refused: {e}", self.url));
    }

    /// Publishes one message; with QoS 1 returns once the broker acknowledged it (PUBACK).
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>, qos: u8, retain: bool) {
        self.publish_with_options(
            topic,
            payload,
            PublishOptions::new(qos_of(qos)).retain(retain),
        )
        .await
    }

    /// Publishes at QoS 1 with MQTT 5 user properties; returns once acknowledged.
    pub async fn publish_with_user_properties(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        user_properties: &[(&str, &str)],
    ) {
        let properties = mqtt5::mqttbytes::v5::PublishProperties {
            user_properties: user_properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let options = PublishOptions::new(qos_of(1)).properties(properties);
        self.publish_with_options(topic, payload, options).await
    }

    async fn publish_with_options(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        options: PublishOptions,
    ) {
        let notice = self
            .client
            .publish_tracked(topic, payload.into(), options)
            .await
            .unwrap_or_else(|e| panic!("publish to {topic:?} on {}: {e}", self.url));
        tokio::time::timeout(secs(30), notice.wait_completion_async())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "publish to {topic:?} on {} not acknowledged within 30s",
                    self.url
                )
            })
            .unwrap_or_else(|e| panic!("publish to {topic:?} on {} failed: {e}", self.url));
    }

    /// Publishes many messages pipelined (not one round trip each) and returns once the
    /// broker acknowledged every one of them.
    pub async fn publish_all<I, P>(&self, messages: I, qos: u8)
    where
        I: IntoIterator<Item = (String, P)>,
        P: Into<Bytes>,
    {
        let mut notices = Vec::new();
        for (topic, payload) in messages {
            let notice = self
                .client
                .publish_tracked(
                    topic.as_str(),
                    payload.into(),
                    PublishOptions::new(qos_of(qos)),
                )
                .await
                .unwrap_or_else(|e| panic!("publish to {topic:?} on {}: {e}", self.url));
            notices.push((topic, notice));
        }
        let count = notices.len();
        tokio::time::timeout(secs(120), async {
            for (topic, notice) in notices {
                notice
                    .wait_completion_async()
                    .await
                    .unwrap_or_else(|e| panic!("publish to {topic:?} on {} failed: {e}", self.url));
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{count} publishes on {} not all acknowledged within 120s",
                self.url
            )
        });
    }
}

impl Drop for MqttPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn qos_of(qos: u8) -> QoS {
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => panic!("QoS {qos}?"),
    }
}

fn host_port(url: &str, scheme: &str) -> (String, u16) {
    let rest = url
        .strip_prefix(scheme)
        .unwrap_or_else(|| panic!("{url} does not start with {scheme}"));
    let rest = rest.split('/').next().unwrap();
    let (host, port) = rest
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url} has no port"));
    (host.to_string(), port.parse().unwrap())
}

// ---------------------------------------------------------------------------------------------
// NATS

/// Subjects of [`NatsPeer::sync`]'s probes; inboxes skip them. A ferry route whose source is
/// a wide subject (`>`) relays them too: tests that use such a route ignore this prefix.
pub const SYNC_PREFIX: &str = "_ferry_test_sync.";

/// A NATS client (async-nats).
pub struct NatsPeer {
    pub client: async_nats::Client,
    url: String,
}

impl NatsPeer {
    /// Connects to `nats://[user:password@]...` or `ws://...`; panics if not connected
    /// within 10 s.
    pub async fn connect(url: &str) -> NatsPeer {
        let mut options = async_nats::ConnectOptions::new()
            .name(unique_id("nats"))
            .subscription_capacity(1 << 20);
        // async-nats takes credentials from options only, not from the URL.
        if let Ok(parsed) = url::Url::parse(url)
            && let Some(password) = parsed.password()
        {
            options = options.user_and_password(parsed.username().into(), password.into());
        }
        let client = tokio::time::timeout(secs(10), options.connect(url))
            .await
            .unwrap_or_else(|_| panic!("NATS peer: no connection to {url} within 10s"))
            .unwrap_or_else(|e| panic!("NATS peer: could not connect to {url}: {e}"));
        NatsPeer {
            client,
            url: url.to_string(),
        }
    }

    /// Subscribes to `subject` and returns once the server has registered the subscription
    /// (a round trip on the same connection, see [`Self::sync`]).
    pub async fn subscribe(&self, subject: &str) -> Inbox {
        let mut subscriber = self
            .client
            .subscribe(subject.to_string())
            .await
            .unwrap_or_else(|e| panic!("NATS subscribe {subject:?} on {}: {e}", self.url));
        let (tx, inbox) = Inbox::new(format!("NATS subscriber {subject:?} on {}", self.url));
        tokio::spawn(async move {
            while let Some(m) = subscriber.next().await {
                if m.subject.as_str().starts_with(SYNC_PREFIX) {
                    continue; // our own round-trip probes (a wide subscription sees them too)
                }
                if tx
                    .send(Msg {
                        topic: m.subject.as_str().to_string(),
                        payload: m.payload,
                        retain: false,
                        headers: nats_headers(m.headers.as_ref()),
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        self.sync().await;
        inbox
    }

    /// A round trip through the server on this connection: once it returns, the server has
    /// processed everything this client sent before (subscriptions included). async-nats's
    /// `flush()` only waits for the socket write, so this publishes to a private subject and
    /// waits for the message to come back.
    pub async fn sync(&self) {
        let subject = format!("{SYNC_PREFIX}{}", unique_id("sync"));
        let mut probe = self.client.subscribe(subject.clone()).await.unwrap();
        self.client
            .publish(subject.clone(), Bytes::from_static(b"sync"))
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        tokio::time::timeout(secs(10), probe.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "NATS round trip to {} did not complete within 10s",
                    self.url
                )
            })
            .expect("NATS probe subscription ended");
        let _ = probe.unsubscribe().await;
    }

    /// Publishes one message (core NATS: no acknowledgement; call [`Self::flush`] or
    /// [`Self::sync`] to make sure it left).
    pub async fn publish(&self, subject: &str, payload: impl Into<Bytes>) {
        self.client
            .publish(subject.to_string(), payload.into())
            .await
            .unwrap_or_else(|e| panic!("NATS publish to {subject:?} on {}: {e}", self.url));
    }

    /// Publishes one message with headers.
    pub async fn publish_with_headers(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) {
        let mut map = async_nats::HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, *v);
        }
        self.client
            .publish_with_headers(subject.to_string(), map, payload.into())
            .await
            .unwrap_or_else(|e| panic!("NATS publish to {subject:?} on {}: {e}", self.url));
    }

    /// Publishes many messages, then a round trip so the server has them all.
    pub async fn publish_all<I, P>(&self, messages: I)
    where
        I: IntoIterator<Item = (String, P)>,
        P: Into<Bytes>,
    {
        for (subject, payload) in messages {
            self.client
                .publish(subject.clone(), payload.into())
                .await
                .unwrap_or_else(|e| panic!("NATS publish to {subject:?} on {}: {e}", self.url));
        }
        self.sync().await;
    }

    pub async fn flush(&self) {
        self.client.flush().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// JetStream

impl NatsPeer {
    /// JetStream on this connection.
    pub fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client.clone())
    }

    /// Creates stream `name` capturing `subjects`, stored in files (so it survives a restart
    /// of the server), with the server's default 2-minute duplicate window for `Nats-Msg-Id`.
    pub async fn create_stream(&self, name: &str, subjects: &[&str]) {
        let config = async_nats::jetstream::stream::Config {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        tokio::time::timeout(secs(10), self.jetstream().create_stream(config))
            .await
            .unwrap_or_else(|_| panic!("create stream {name} on {}: no answer in 10s", self.url))
            .unwrap_or_else(|e| panic!("create stream {name} on {}: {e}", self.url));
    }

    /// How many messages stream `name` holds now; None while the server does not answer
    /// (it is down, or the client is still reconnecting).
    pub async fn stream_len(&self, name: &str) -> Option<u64> {
        let info = async {
            let mut stream = self.jetstream().get_stream(name).await.ok()?;
            stream.info().await.ok().map(|info| info.state.messages)
        };
        tokio::time::timeout(secs(2), info).await.ok().flatten()
    }

    /// Waits until stream `name` holds at least `n` messages and returns how many it holds;
    /// panics after `timeout`, saying how many it had. Rides out a server restart.
    pub async fn wait_stream_len(&self, name: &str, n: u64, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(len) = self.stream_len(name).await {
                if len >= n {
                    return len;
                }
                last = Some(len);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream {name} on {}: expected at least {n} messages within {timeout:?}, it has {}",
                self.url,
                last.map_or("(no answer)".to_string(), |l| l.to_string())
            );
            tokio::time::sleep(millis(20)).await;
        }
    }

    /// Waits until stream `name` has not grown for `quiet` (its producers are done, or stuck)
    /// and returns its length; panics if it is still growing after `timeout`.
    pub async fn wait_stream_settled(&self, name: &str, quiet: Duration, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = (None, tokio::time::Instant::now());
        loop {
            let len = self.stream_len(name).await;
            if len != last.0 {
                last = (len, tokio::time::Instant::now());
            } else if let Some(len) = len
                && last.1.elapsed() >= quiet
            {
                return len;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream {name} on {}: still changing after {timeout:?} ({:?} messages)",
                self.url,
                last.0
            );
            tokio::time::sleep(millis(50)).await;
        }
    }

    /// Every message stream `name` holds, in stream order (read with an ordered consumer).
    pub async fn read_stream(&self, name: &str) -> Vec<Msg> {
        use async_nats::jetstream::consumer::pull::OrderedConfig;
        let n = self
            .stream_len(name)
            .await
            .unwrap_or_else(|| panic!("stream {name} on {}: no answer", self.url))
            as usize;
        let read = async {
            let stream = self.jetstream().get_stream(name).await.unwrap();
            let consumer = stream
                .create_consumer(OrderedConfig::default())
                .await
                .unwrap();
            let mut messages = consumer.messages().await.unwrap();
            let mut got = Vec::with_capacity(n);
            while got.len() < n {
                let m = messages
                    .next()
                    .await
                    .expect("ordered consumer ended")
                    .unwrap_or_else(|e| panic!("reading stream {name}: {e}"));
                got.push(Msg {
                    topic: m.subject.as_str().to_string(),
                    payload: m.payload.clone(),
                    retain: false,
                    headers: nats_headers(m.headers.as_ref()),
                });
            }
            got
        };
        tokio::time::timeout(secs(60), read)
            .await
            .unwrap_or_else(|_| panic!("stream {name}: {n} messages not read within 60s"))
    }

    /// Publishes to JetStream one by one, pipelined, and returns once the server acknowledged
    /// (stored) every one.
    pub async fn jetstream_publish_all<I, P>(&self, messages: I)
    where
        I: IntoIterator<Item = (String, P)>,
        P: Into<Bytes>,
    {
        let js = self.jetstream();
        let mut acks = futures_util::stream::FuturesOrdered::new();
        let mut count = 0;
        for (subject, payload) in messages {
            let ack = js
                .publish(subject.clone(), payload.into())
                .await
                .unwrap_or_else(|e| panic!("JetStream publish to {subject:?}: {e}"));
            acks.push_back(ack.into_future());
            count += 1;
            // A bounded window keeps the client's buffers small.
            while acks.len() >= 256 {
                expect_stored(acks.next().await);
            }
        }
        tokio::time::timeout(secs(60), async {
            while let Some(ack) = acks.next().await {
                expect_stored(Some(ack));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{count} JetStream publishes not all acknowledged in 60s"));
    }
}

fn expect_stored<T, E: fmt::Display>(ack: Option<Result<T, E>>) {
    if let Some(Err(e)) = ack {
        panic!("JetStream publish not stored: {e}");
    }
}

/// NATS headers as a list of (name, value), each value of a repeated name on its own.
fn nats_headers(headers: Option<&async_nats::HeaderMap>) -> Vec<(String, String)> {
    headers
        .iter()
        .flat_map(|h| h.iter())
        .flat_map(|(k, vs)| {
            vs.iter()
                .map(move |v| (k.to_string(), v.as_str().to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// sequence checks

/// A payload carrying a stream name and a sequence number, `STREAM:SEQ:padding`, so tests can
/// check loss, duplicates and order.
pub fn seq_payload(stream: &str, seq: usize, pad_to: usize) -> Bytes {
    let mut s = format!("{stream}:{seq}:");
    while s.len() < pad_to {
        s.push('x');
    }
    Bytes::from(s)
}

/// Parses a [`seq_payload`]: (stream, seq).
pub fn parse_seq(payload: &[u8]) -> Option<(String, usize)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, ':');
    let stream = parts.next()?.to_string();
    let seq = parts.next()?.parse().ok()?;
    Some((stream, seq))
}

/// Checks that, per stream, the sequence numbers that arrived are exactly 0..count, in order,
/// each once. Panics with the first problem found.
pub fn assert_sequences(msgs: &[Msg], streams: &[&str], count: usize) {
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for m in msgs {
        let (stream, seq) = parse_seq(&m.payload)
            .unwrap_or_else(|| panic!("unexpected message (no sequence number): {m:?}"));
        seen.entry(stream).or_default().push(seq);
    }
    for stream in streams {
        let seqs = seen.remove(*stream).unwrap_or_default();
        assert_in_order(stream, &seqs, count);
    }
    assert!(
        seen.is_empty(),
        "messages from unexpected streams: {:?}",
        seen.keys().collect::<Vec<_>>()
    );
}

/// `seqs` must be exactly 0, 1, ..., count-1.
pub fn assert_in_order(stream: &str, seqs: &[usize], count: usize) {
    for (i, &seq) in seqs.iter().enumerate() {
        let expected = i;
        if seq != expected {
            let kind = if seq < expected {
                "duplicate or reordered"
            } else {
                "gap (lost)"
            };
            panic!(
                "stream {stream}: message #{i} has seq {seq}, expected {expected} ({kind}); \
                 {} messages arrived, {count} were sent",
                seqs.len()
            );
        }
    }
    assert_eq!(
        seqs.len(),
        count,
        "stream {stream}: {} of {count} messages arrived",
        seqs.len()
    );
}

/// What a collector saw of a numbered load (sequence numbers `0..sent`): the counts a fault
/// test reports and asserts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Messages the publisher had acknowledged (numbered `0..sent`).
    pub sent: usize,
    /// Messages that arrived, duplicates included.
    pub received: usize,
    /// Arrivals of a number that had already arrived.
    pub duplicates: usize,
    /// Numbers below `sent` that never arrived.
    pub lost: usize,
    /// First arrivals of a number lower than one that arrived before it.
    pub reordered: usize,
    /// The first few lost numbers, for the failure message.
    pub first_lost: Vec<usize>,
}

impl Tally {
    /// Counts `seqs`, in arrival order, against `0..sent`. Numbers outside it count as
    /// received and neither lost nor duplicated.
    pub fn of(sent: usize, seqs: impl IntoIterator<Item = usize>) -> Tally {
        let mut seen = vec![false; sent];
        let mut tally = Tally {
            sent,
            ..Tally::default()
        };
        let mut highest = None;
        for seq in seqs {
            tally.received += 1;
            if seq < sent {
                if seen[seq] {
                    tally.duplicates += 1;
                    continue;
                }
                seen[seq] = true;
            }
            if highest.is_some_and(|h| seq < h) {
                tally.reordered += 1;
            }
            highest = highest.max(Some(seq));
        }
        for (seq, seen) in seen.iter().enumerate() {
            if !seen {
                tally.lost += 1;
                if tally.first_lost.len() < 10 {
                    tally.first_lost.push(seq);
                }
            }
        }
        tally
    }

    /// Counts the [`seq_payload`]s of `stream` among `msgs` (other messages are ignored).
    pub fn of_msgs(sent: usize, stream: &str, msgs: &[Msg]) -> Tally {
        Tally::of(
            sent,
            msgs.iter()
                .filter_map(|m| parse_seq(&m.payload))
                .filter(|(s, _)| s == stream)
                .map(|(_, seq)| seq),
        )
    }

    /// Prints `label: sent=… received=… duplicates=… lost=… reordered=…` on stdout (shown with
    /// `--nocapture`) and returns the tally.
    pub fn report(self, label: &str) -> Tally {
        println!("{label}: {self}");
        self
    }

    /// Panics unless every number arrived.
    pub fn assert_none_lost(&self, label: &str) {
        assert_eq!(
            self.lost, 0,
            "{label}: {self}: lost messages, the first ones: {:?}",
            self.first_lost
        );
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent={} received={} duplicates={} lost={} reordered={}",
            self.sent, self.received, self.duplicates, self.lost, self.reordered
        )
    }
}
