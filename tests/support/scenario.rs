//! A test's brokers and the ferry that routes between them, stated in a few lines, so a test
//! says only what differs: which brokers, which routes, what it publishes and checks.
//!
//! ```ignore
//! let run = Scenario::new()
//!     .mosquitto("plant")
//!     .nats("core")
//!     .routes(r#"
//!   - name: telemetry
//!     from: { connection: plant, topic: "sensors/#", qos: 1 }
//!     to: { connection: core, subject: auto }
//! "#)
//!     .start()
//!     .await;
//! let (_subscriber, mut inbox) = run.nats_subscriber("core", "sensors.>").await;
//! run.mqtt_peer("plant").await.publish("sensors/a", "21.5", 1, false).await;
//! ```
//!
//! Each broker is a connection of the same name in the generated `bridges.yaml`
//! (`plant: { mqtt: { url: ... } }`), with whatever else [`Scenario::keys`] adds to it;
//! [`Scenario::connection`] adds a second client of the same broker,
//! [`Scenario::through_proxy`] puts a [`TcpProxy`] between a connection and its broker, and
//! [`Scenario::other_connection`] names a server the test started itself. Built
//! on [`Mosquitto`], [`NatsServer`], [`Ferry`] and the peers: nothing here starts a process
//! another way.

use super::*;

/// A broker of a scenario.
pub enum Broker {
    Mosquitto(Mosquitto),
    Nats(NatsServer),
}

impl Broker {
    /// The URL ferry and the peers connect to.
    pub fn url(&self) -> String {
        match self {
            Broker::Mosquitto(m) => m.url(),
            Broker::Nats(n) => n.url(),
        }
    }

    /// The connection's protocol key in `bridges.yaml`.
    fn protocol(&self) -> &'static str {
        match self {
            Broker::Mosquitto(_) => "mqtt",
            Broker::Nats(_) => "nats",
        }
    }

    /// The URL of `proxy` in front of this broker, in its protocol's scheme.
    fn url_through(&self, proxy: &TcpProxy) -> String {
        match self {
            Broker::Mosquitto(_) => proxy.mqtt_url(),
            Broker::Nats(_) => proxy.nats_url(),
        }
    }

    /// The port of its plain listener, which a proxy forwards to.
    fn port(&self) -> u16 {
        match self {
            Broker::Mosquitto(m) => m.port,
            Broker::Nats(n) => n.port,
        }
    }
}

/// What to start: brokers (each a connection of the same name), the routes between them, and
/// any other setting of the config.
#[derive(Default)]
pub struct Scenario {
    brokers: Vec<(String, BrokerOptions)>,
    /// In the order they are written in `bridges.yaml`.
    connections: Vec<Connection>,
    /// Connections to servers that are not brokers of the scenario, YAML lines.
    other_connections: String,
    /// Top-level settings, written before `connections:`.
    settings: String,
    routes: String,
}

/// A connection of the generated `bridges.yaml`.
struct Connection {
    name: String,
    /// The broker it connects to.
    broker: String,
    /// It reaches the broker through a [`TcpProxy`].
    proxied: bool,
    /// Extra keys of its protocol map, each written after `, `.
    keys: String,
    /// Its own keys beside the protocol map (`reconnect: ...`), YAML lines.
    settings: String,
}

enum BrokerOptions {
    Mosquitto(MosquittoOptions),
    Nats(NatsOptions),
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario::default()
    }

    /// A mosquitto broker, and an `mqtt` connection `name` to it.
    pub fn mosquitto(self, name: &str) -> Scenario {
        self.mosquitto_with(name, MosquittoOptions::default())
    }

    /// Like [`Self::mosquitto`], started with `options`.
    pub fn mosquitto_with(mut self, name: &str, options: MosquittoOptions) -> Scenario {
        let broker = BrokerOptions::Mosquitto(options);
        self.brokers.push((name.into(), broker));
        self.connection(name, name)
    }

    /// A nats-server, and a `nats` connection `name` to it.
    pub fn nats(self, name: &str) -> Scenario {
        self.nats_with(name, NatsOptions::default())
    }

    /// Like [`Self::nats`], started with `options`.
    pub fn nats_with(mut self, name: &str, options: NatsOptions) -> Scenario {
        self.brokers
            .push((name.into(), BrokerOptions::Nats(options)));
        self.connection(name, name)
    }

    /// Connection `name` to the broker `broker` of the scenario: a second client of a broker
    /// has a connection of its own.
    pub fn connection(mut self, name: &str, broker: &str) -> Scenario {
        assert!(
            self.brokers.iter().any(|(n, _)| n == broker),
            "no broker {broker} in the scenario"
        );
        self.connections.push(Connection {
            name: name.into(),
            broker: broker.into(),
            proxied: false,
            keys: String::new(),
            settings: String::new(),
        });
        self
    }

    /// Connection `name` reaches its broker through a [`TcpProxy`] ([`Brokers::proxy`]), which
    /// the test can stall or sever.
    pub fn through_proxy(mut self, name: &str) -> Scenario {
        self.connection_mut(name).proxied = true;
        self
    }

    /// More keys for connection `name`'s protocol map, as YAML flow entries
    /// (`client_id: ferry-a, version: 5`).
    pub fn keys(mut self, name: &str, keys: &str) -> Scenario {
        self.connection_mut(name)
            .keys
            .push_str(&format!(", {keys}"));
        self
    }

    /// Keys of connection `name` beside its protocol map (`reconnect: { ... }`), one YAML line
    /// each.
    pub fn connection_settings(mut self, name: &str, yaml: &str) -> Scenario {
        let connection = self.connection_mut(name);
        for line in yaml.lines().filter(|l| !l.trim().is_empty()) {
            connection
                .settings
                .push_str(&format!("    {}\n", line.trim()));
        }
        self
    }

    /// Connection `name` to a server that is not a broker of the scenario (an HTTP receiver, a
    /// fake), `yaml` its value in flow style (`{ http: { url: "..." } }`).
    pub fn other_connection(mut self, name: &str, yaml: &str) -> Scenario {
        (self.other_connections).push_str(&format!("  {name}: {yaml}\n"));
        self
    }

    fn connection_mut(&mut self, name: &str) -> &mut Connection {
        (self.connections.iter_mut())
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no connection {name} in the scenario"))
    }

    /// Top-level settings (`shutdown_timeout: 2s`, `admin: ...`), YAML lines.
    pub fn settings(mut self, yaml: &str) -> Scenario {
        self.settings.push_str(yaml.trim_start_matches('\n'));
        if !self.settings.ends_with('\n') {
            self.settings.push('\n');
        }
        self
    }

    /// The list under `routes:`, YAML as a test writes it (entries indented two spaces).
    pub fn routes(mut self, yaml: &str) -> Scenario {
        self.routes.push_str(yaml);
        self
    }

    /// Starts the brokers, then ferry on the config they make, and waits until ferry is ready.
    pub async fn start(self) -> Running {
        self.start_brokers().start_ferry().await
    }

    /// Starts the brokers (and proxies) only, writing the config ferry would run on
    /// ([`Brokers::config`]), for a test that sets something up before ferry starts. Called
    /// from an async test: a proxy needs its runtime.
    pub fn start_brokers(self) -> Brokers {
        let brokers: Vec<(String, Broker)> = (self.brokers.into_iter())
            .map(|(name, options)| {
                let broker = match options {
                    BrokerOptions::Mosquitto(o) => Broker::Mosquitto(Mosquitto::start(o)),
                    BrokerOptions::Nats(o) => Broker::Nats(NatsServer::start(o)),
                };
                (name, broker)
            })
            .collect();
        let mut proxies = Vec::new();
        let mut config = self.settings;
        config.push_str("connections:\n");
        for connection in &self.connections {
            let (_, broker) = (brokers.iter())
                .find(|(n, _)| *n == connection.broker)
                .expect("a connection's broker is in the scenario");
            let url = if connection.proxied {
                let proxy = TcpProxy::start_in_runtime(broker.port());
                let url = broker.url_through(&proxy);
                proxies.push((connection.name.clone(), proxy));
                url
            } else {
                broker.url()
            };
            let Connection {
                name,
                keys,
                settings,
                ..
            } = connection;
            let protocol = broker.protocol();
            config.push_str(&format!(
                "  {name}:\n    {protocol}: {{ url: \"{url}\"{keys} }}\n{settings}"
            ));
        }
        config.push_str(&self.other_connections);
        config.push_str("routes:");
        if !self.routes.starts_with('\n') {
            config.push('\n');
        }
        config.push_str(&self.routes);
        Brokers {
            config,
            brokers,
            proxies,
        }
    }
}

/// A scenario's brokers, running, and the config ferry runs on. They stop on drop.
pub struct Brokers {
    /// The `bridges.yaml` of the scenario.
    pub config: String,
    brokers: Vec<(String, Broker)>,
    /// Per proxied connection, its proxy.
    proxies: Vec<(String, TcpProxy)>,
}

/// A started scenario: its brokers and the ferry routing between them, ready. Reads as its
/// [`Brokers`] too. On drop ferry stops first, then the brokers.
pub struct Running {
    pub ferry: Ferry,
    pub brokers: Brokers,
}

impl std::ops::Deref for Running {
    type Target = Brokers;
    fn deref(&self) -> &Brokers {
        &self.brokers
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Brokers {
        &mut self.brokers
    }
}

impl Brokers {
    /// Starts ferry on [`Self::config`] and waits until it is ready.
    pub async fn start_ferry(self) -> Running {
        let ferry = Ferry::start_ready(&self.config).await;
        Running {
            ferry,
            brokers: self,
        }
    }

    /// Broker `name`.
    pub fn broker(&self, name: &str) -> &Broker {
        (self.brokers.iter())
            .find(|(n, _)| n == name)
            .map(|(_, b)| b)
            .unwrap_or_else(|| panic!("no broker {name} in the scenario"))
    }

    /// Broker `name`, to stop, kill or restart it.
    pub fn broker_mut(&mut self, name: &str) -> &mut ServerProcess {
        let broker = (self.brokers.iter_mut())
            .find(|(n, _)| n == name)
            .map(|(_, b)| b)
            .unwrap_or_else(|| panic!("no broker {name} in the scenario"));
        match broker {
            Broker::Mosquitto(m) => m,
            Broker::Nats(n) => n,
        }
    }

    /// The proxy between connection `name` and its broker ([`Scenario::through_proxy`]).
    pub fn proxy(&self, name: &str) -> &TcpProxy {
        (self.proxies.iter())
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("connection {name} has no proxy"))
    }

    /// The mosquitto broker `name`.
    pub fn mosquitto(&self, name: &str) -> &Mosquitto {
        match self.broker(name) {
            Broker::Mosquitto(m) => m,
            Broker::Nats(_) => panic!("broker {name} is a nats-server"),
        }
    }

    /// The nats-server `name`.
    pub fn nats(&self, name: &str) -> &NatsServer {
        match self.broker(name) {
            Broker::Nats(n) => n,
            Broker::Mosquitto(_) => panic!("broker {name} is a mosquitto"),
        }
    }

    /// A test client connected to the mosquitto broker `name`.
    pub async fn mqtt_peer(&self, name: &str) -> MqttPeer {
        MqttPeer::connect(&self.mosquitto(name).url()).await
    }

    /// A test client subscribed (SUBACK received) to `filter` at `qos` on mosquitto `name`;
    /// what arrives is in its `inbox`.
    pub async fn mqtt_subscriber(&self, name: &str, filter: &str, qos: u8) -> MqttPeer {
        MqttPeer::subscribed(&self.mosquitto(name).url(), filter, qos).await
    }

    /// A test client connected to the nats-server `name`.
    pub async fn nats_peer(&self, name: &str) -> NatsPeer {
        NatsPeer::connect(&self.nats(name).url()).await
    }

    /// A test client subscribed (registered with the server) to `subject` on nats-server
    /// `name`, and the inbox of that subscription; keep the client while reading it.
    pub async fn nats_subscriber(&self, name: &str, subject: &str) -> (NatsPeer, Inbox) {
        let peer = self.nats_peer(name).await;
        let inbox = peer.subscribe(subject).await;
        (peer, inbox)
    }
}
