//! The YAML tree to the typed [`Config`], collecting every error on the way.
//!
//! serde's derive stops at the first error; operators fixing a file want them all, each with its
//! position and a hint. So the typed model is filled by hand from the positioned tree: each
//! mapping is an [`Obj`] that remembers which keys were asked for, and reports the rest as
//! unknown with a "did you mean".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::delivery;
use super::diagnostics::{ConfigErrors, Diagnostic, did_you_mean};
use super::interpolate::{Lookup, interpolate};
use super::loops;
use super::model::*;
use super::ranges::{
    DURATION_HINT, NumberProblem, SIZE_HINT, check_duration, check_size, duration_of_seconds,
};
#[cfg(test)]
use super::ranges::{parse_duration, parse_size};
use super::redact::redact_url;
use super::url_credentials::{self, UrlCredentials};
use super::yaml::{self, Key, Node, Pos, Value};
use crate::connectors::protocol::{Described, End, Problem};
use crate::connectors::{http, migratorydata, mqtt, nats, sse};
use crate::contracts::admin_listener::{OWN_PATHS, host_name};
use crate::mapping::{jq, marker, template};

/// MQTT 5 session expiry when the connection keeps its session and says nothing: long enough
/// to ride out a maintenance window, short enough that a retired ferry's session goes away.
const DEFAULT_SESSION_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);
/// A spool's size limit when `max_bytes` is not given.
const DEFAULT_SPOOL_BYTES: u64 = 1024 * 1024 * 1024;

/// Which front end a document comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    /// bridges.yaml.
    File,
    /// `ferry relay FROM TO`, which may also build what a file may not: a `stdio` connection
    /// (standard input or output) and a route's `stop_after` (`--count`).
    Relay,
}

/// Parses and validates the text of a configuration file called `file`.
pub fn parse(text: &str, file: &str, lookup: &Lookup) -> Result<Config, ConfigErrors> {
    let root = yaml::parse(text).map_err(|(pos, message)| ConfigErrors {
        file: file.to_string(),
        errors: vec![Diagnostic {
            pos,
            message: format!("invalid YAML: {message}"),
            hint: None,
        }],
    })?;
    parse_document(&root, file, lookup, Front::File)
}

/// Validates a configuration document, read from `origin` (a file's name) or built by `front`.
pub fn parse_document(
    root: &Node,
    origin: &str,
    lookup: &Lookup,
    front: Front,
) -> Result<Config, ConfigErrors> {
    let mut d = Decoder {
        lookup,
        front,
        errors: Vec::new(),
        broken: Vec::new(),
    };
    let config = d.config(root);
    match config {
        Some(config) if d.errors.is_empty() => Ok(config),
        _ => {
            d.errors.sort_by_key(|e| (e.pos.line, e.pos.col));
            Err(ConfigErrors {
                file: origin.to_string(),
                errors: d.errors,
            })
        }
    }
}

struct Decoder<'a> {
    lookup: &'a Lookup<'a>,
    front: Front,
    errors: Vec<Diagnostic>,
    /// Connections whose own errors were reported: routes naming them say nothing more.
    broken: Vec<String>,
}

#[cfg(test)]
thread_local! {
    /// Every (mapping, key) the parser asked for on this thread, so schema.rs's tests can check
    /// that the schema knows exactly the keys the parser does.
    pub(super) static ASKED: std::cell::RefCell<std::collections::BTreeSet<(&'static str, &'static str)>> =
        const { std::cell::RefCell::new(std::collections::BTreeSet::new()) };
}

/// A mapping being decoded: knows which keys were asked for.
struct Obj<'n> {
    pos: Pos,
    entries: &'n [(Key, Node)],
    known: Vec<&'static str>,
    /// What this mapping is to the user ("a NATS sink"), for messages.
    what: &'static str,
}

impl<'n> Obj<'n> {
    fn get(&mut self, key: &'static str) -> Option<&'n Node> {
        self.known.push(key);
        #[cfg(test)]
        ASKED.with(|asked| asked.borrow_mut().insert((self.what, key)));
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// At the top level, `x-...` keys are free for the user (YAML anchors to merge elsewhere),
    /// as in docker-compose files.
    fn allows_extension(&self, key: &str) -> bool {
        self.what == "the configuration" && key.starts_with("x-")
    }

    /// Reports every key nobody asked for.
    fn finish(self, d: &mut Decoder) {
        for (key, _) in self.entries {
            if self.known.contains(&key.name.as_str()) || self.allows_extension(&key.name) {
                continue;
            }
            let hint = match did_you_mean(&key.name, self.known.iter().copied()) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!("valid keys here: {}", self.known.join(", ")),
            };
            d.error(
                key.pos,
                format!("unknown key `{}` in {}", key.name, self.what),
                Some(hint),
            );
        }
    }
}

impl<'a> Decoder<'a> {
    fn error(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.errors.push(Diagnostic {
            pos,
            message: message.into(),
            hint,
        });
    }

    fn obj<'n>(&mut self, node: &'n Node, what: &'static str) -> Option<Obj<'n>> {
        match &node.value {
            Value::Map(entries) => Some(Obj {
                pos: node.pos,
                entries,
                known: Vec::new(),
                what,
            }),
            other => {
                self.error(
                    node.pos,
                    format!("expected a mapping for {what}, found {}", other.kind()),
                    Some("write `key: value` pairs, indented under it".into()),
                );
                None
            }
        }
    }

    fn required<'n>(&mut self, obj: &mut Obj<'n>, key: &'static str) -> Option<&'n Node> {
        let node = obj.get(key);
        if node.is_none() {
            self.error(
                obj.pos,
                format!("{} needs `{key}`", obj.what),
                Some(format!("add `{key}: ...`")),
            );
        }
        node
    }

    /// A string value, `${...}` interpolated. Numbers and booleans are taken as their text.
    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        let raw = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                self.error(
                    node.pos,
                    format!("expected a string for {what}, found {}", other.kind()),
                    None,
                );
                return None;
            }
        };
        match interpolate(&raw, self.lookup) {
            Ok(s) => Some(s),
            Err((message, hint)) => {
                self.error(node.pos, message, Some(hint));
                None
            }
        }
    }

    fn opt_string(&mut self, obj: &mut Obj, key: &'static str) -> Option<String> {
        let node = obj.get(key)?;
        self.string(node, key)
    }

    fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) => match self.string(node, what)?.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => {
                    self.error(
                        node.pos,
                        format!("`{what}` must be true or false, not `{s}`"),
                        None,
                    );
                    None
                }
            },
            other => {
                self.error(
                    node.pos,
                    format!("`{what}` must be true or false, not {}", other.kind()),
                    None,
                );
                None
            }
        }
    }

    fn opt_bool(&mut self, obj: &mut Obj, key: &'static str, default: bool) -> bool {
        match obj.get(key) {
            Some(node) => self.bool(node, key).unwrap_or(default),
            None => default,
        }
    }

    fn number(&mut self, node: &Node, what: &str, min: u64, max: u64) -> Option<u64> {
        let value = match &node.value {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::Str(_) => self.string(node, what)?.trim().parse::<u64>().ok(),
            _ => None,
        };
        match value {
            Some(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                self.error(
                    node.pos,
                    format!("`{what}` must be a whole number from {min} to {max}"),
                    None,
                );
                None
            }
        }
    }

    fn qos(&mut self, obj: &mut Obj, default: u8) -> u8 {
        match obj.get("qos") {
            Some(node) => self
                .number(node, "qos", 0, 2)
                .map(|q| q as u8)
                .unwrap_or(default),
            None => default,
        }
    }

    fn duration(&mut self, obj: &mut Obj, key: &'static str, default: Duration) -> Duration {
        self.opt_duration(obj, key).unwrap_or(default)
    }

    /// A duration, or `None` when the key is absent (or wrong, which is reported).
    fn opt_duration(&mut self, obj: &mut Obj, key: &'static str) -> Option<Duration> {
        let node = obj.get(key)?;
        let checked = match &node.value {
            Value::Int(i) => duration_of_seconds(*i as f64),
            Value::Float(f) => duration_of_seconds(*f),
            _ => check_duration(&self.string(node, key)?),
        };
        checked
            .map_err(|problem| {
                self.error(
                    node.pos,
                    format!("`{key}` {problem}"),
                    Some(DURATION_HINT.into()),
                );
            })
            .ok()
    }

    fn size(&mut self, obj: &mut Obj, key: &'static str, default: u64) -> u64 {
        let Some(node) = obj.get(key) else {
            return default;
        };
        let checked = match &node.value {
            Value::Int(i) if *i < 0 => Err(NumberProblem::Negative),
            Value::Int(i) => check_size(&i.to_string()),
            _ => match self.string(node, key) {
                Some(text) => check_size(&text),
                None => return default,
            },
        };
        checked
            .map_err(|problem| {
                self.error(
                    node.pos,
                    format!("`{key}` {problem}"),
                    Some(SIZE_HINT.into()),
                );
            })
            .unwrap_or(default)
    }

    fn choice(
        &mut self,
        node: &Node,
        what: &str,
        choices: &[&'static str],
    ) -> Option<&'static str> {
        let s = self.string(node, what)?;
        if let Some(c) = choices.iter().find(|c| **c == s) {
            return Some(c);
        }
        let hint = match did_you_mean(&s, choices.iter().copied()) {
            Some(close) => format!("did you mean `{close}`? one of: {}", choices.join(", ")),
            None => format!("one of: {}", choices.join(", ")),
        };
        self.error(node.pos, format!("`{s}` is not a valid {what}"), Some(hint));
        None
    }

    fn path(&mut self, obj: &mut Obj, key: &'static str) -> Option<PathBuf> {
        self.opt_string(obj, key).map(PathBuf::from)
    }

    // ---------------------------------------------------------------------------------------

    fn config(&mut self, root: &Node) -> Option<Config> {
        let mut top = self.obj(root, "the configuration")?;
        let shutdown_timeout = self.duration(&mut top, "shutdown_timeout", Duration::from_secs(10));
        let startup_timeout = self.duration(&mut top, "startup_timeout", Duration::from_secs(30));
        let threads = match top.get("threads") {
            Some(n) => self.number(n, "threads", 1, 64).unwrap_or(1) as usize,
            None => 1,
        };
        let loop_guard = match top.get("loop_guard") {
            Some(n) => self.loop_guard(n),
            None => LoopGuard::default(),
        };
        let state_dir = self.path(&mut top, "state_dir");
        let admin = top.get("admin").and_then(|n| self.admin(n));
        let mut connections = BTreeMap::new();
        match top.get("connections") {
            // Every key of `connections` is a name the user chose: none is unknown.
            Some(Node {
                value: Value::Map(entries),
                ..
            }) => {
                for (key, value) in entries {
                    match self.connection(key, value) {
                        Some(c) => {
                            connections.insert(key.name.clone(), c);
                        }
                        None => self.broken.push(key.name.clone()),
                    }
                }
                self.check_sse_servers(entries, &connections, admin.is_some());
            }
            Some(other) => self.error(
                other.pos,
                format!(
                    "`connections` must be a mapping, found {}",
                    other.value.kind()
                ),
                Some("name each connection: `plant: {mqtt: {url: ...}}`".into()),
            ),
            None => self.error(
                root.pos,
                "the configuration has no `connections:`",
                Some("name at least one MQTT or NATS endpoint under `connections:`".into()),
            ),
        }
        let mut routes = Vec::new();
        let mut route_positions = Vec::new();
        match top.get("routes") {
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => {
                for item in items {
                    if let Some(route) = self.route(item, &connections) {
                        if routes.iter().any(|r: &Route| r.name == route.name) {
                            self.error(
                                item.pos,
                                format!("two routes are called `{}`", route.name),
                                Some("give every route its own name".into()),
                            );
                        }
                        routes.push(route);
                        route_positions.push(item.pos);
                    }
                }
            }
            Some(other) => self.error(
                other.pos,
                format!("`routes` must be a list, found {}", other.value.kind()),
                Some("start each route with `- name: ...`".into()),
            ),
            None => self.error(
                root.pos,
                "the configuration has no `routes:`",
                Some("add a list of routes, each with `name`, `from` and `to`".into()),
            ),
        }
        top.finish(self);
        let config = Config {
            connections,
            routes,
            shutdown_timeout,
            startup_timeout,
            threads,
            loop_guard,
            state_dir,
            admin,
        };
        self.refuse_endless_loops(&config, &route_positions);
        Some(config)
    }

    fn admin(&mut self, node: &Node) -> Option<Admin> {
        let mut obj = self.obj(node, "`admin`")?;
        let listen = match obj.get("listen") {
            None => Some(std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT))),
            Some(n) => self.string(n, "listen").and_then(|text| {
                let parsed = match text.parse::<u16>() {
                    Ok(port) => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
                    Err(_) => text.parse::<std::net::SocketAddr>(),
                };
                match parsed {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        self.error(
                            n.pos,
                            format!("`{text}` is not an address to listen on"),
                            Some(format!(
                                "write a port (`{DEFAULT_ADMIN_PORT}`, on 127.0.0.1) or `ADDRESS:PORT`, e.g. `127.0.0.1:{DEFAULT_ADMIN_PORT}`; without `listen`, ferry listens on 127.0.0.1:{DEFAULT_ADMIN_PORT}"
                            )),
                        );
                        None
                    }
                }
            }),
        };
        let mut admin = Admin::on(listen?);
        admin.token = self.opt_string(&mut obj, "token").map(Secret::new);
        admin.taps = self.opt_bool(&mut obj, "taps", false);
        if let Some(n) = obj.get("allowed_hosts") {
            admin.allowed_hosts = self.allowed_hosts(n).unwrap_or_default();
        }
        if let Some(n) = obj.get("max_connections") {
            admin.max_connections = self
                .number(n, "max_connections", 1, 1_000_000)
                .map_or(Admin::DEFAULT_MAX_CONNECTIONS, |v| v as usize);
        }
        admin.header_read_timeout = self.duration(
            &mut obj,
            "header_read_timeout",
            Admin::DEFAULT_HEADER_READ_TIMEOUT,
        );
        admin.idle_timeout = self.duration(&mut obj, "idle_timeout", Admin::DEFAULT_IDLE_TIMEOUT);
        for (key, value) in [
            ("header_read_timeout", admin.header_read_timeout),
            ("idle_timeout", admin.idle_timeout),
        ] {
            if value.is_zero()
                && let Some(n) = obj.get(key)
            {
                self.error(
                    n.pos,
                    format!("`{key}` cannot be 0"),
                    Some("a connection needs some time: write e.g. `5s` or `1m`".into()),
                );
            }
        }
        if let Some(node) = obj.get("tls")
            && let Some(mut t) = self.obj(node, "the admin listener's `tls`")
        {
            let cert = self
                .required(&mut t, "cert")
                .and_then(|n| self.string(n, "cert"));
            let key = self
                .required(&mut t, "key")
                .and_then(|n| self.string(n, "key"));
            t.finish(self);
            if let (Some(cert), Some(key)) = (cert, key) {
                admin.tls = Some(AdminTls {
                    cert: cert.into(),
                    key: key.into(),
                });
            }
        }
        obj.finish(self);
        Some(admin)
    }

    /// `allowed_hosts`: a list of host names or addresses (`*` for any); any port goes.
    fn allowed_hosts(&mut self, node: &Node) -> Option<Vec<String>> {
        let Value::Seq(items) = &node.value else {
            self.error(
                node.pos,
                format!(
                    "`allowed_hosts` must be a list, found {}",
                    node.value.kind()
                ),
                Some("write e.g. `allowed_hosts: [ferry.example.com, 10.0.0.5]`".into()),
            );
            return None;
        };
        let mut hosts = Vec::new();
        for item in items {
            let host = self.string(item, "allowed_hosts")?.to_ascii_lowercase();
            if host == "*" {
                return Some(Vec::new());
            }
            if host_name(&host) != Some(host.as_str()) {
                self.error(
                    item.pos,
                    format!("`{host}` is not a host name"),
                    Some("write a name or address without scheme or port, such as `ferry.example.com`, `10.0.0.5` or `[::1]`; `*` allows any".into()),
                );
                return None;
            }
            hosts.push(host);
        }
        Some(hosts)
    }

    /// `sse_server` connections live on the admin listener, each on a path of its own.
    fn check_sse_servers(
        &mut self,
        entries: &[(Key, Node)],
        connections: &BTreeMap<String, Connection>,
        admin: bool,
    ) {
        let mut paths: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, _) in entries {
            let Some(Connection {
                kind: ConnectionKind::SseServer(server),
                ..
            }) = connections.get(&key.name)
            else {
                continue;
            };
            if !admin {
                self.error(
                    key.pos,
                    format!(
                        "connection `{}` serves SSE on the admin listener, which is off",
                        key.name
                    ),
                    Some("turn it on at the top level: `admin: {listen: 127.0.0.1:9090}`".into()),
                );
            }
            if let Some(other) = paths.insert(&server.path, &key.name) {
                self.error(
                    key.pos,
                    format!(
                        "connections `{other}` and `{}` both serve `{}`",
                        key.name, server.path
                    ),
                    Some("give each sse_server a path of its own".into()),
                );
            }
        }
    }

    fn loop_guard(&mut self, node: &Node) -> LoopGuard {
        let defaults = LoopGuard::default();
        let Some(mut obj) = self.obj(node, "`loop_guard`") else {
            return defaults;
        };
        let instance = obj.get("instance").and_then(|n| {
            let name = self.string(n, "instance")?;
            if name.is_empty() || name.contains([',', '\r', '\n']) {
                self.error(
                    n.pos,
                    format!("`{name}` cannot name a ferry instance"),
                    Some("use a short name without commas, e.g. the host name".into()),
                );
            }
            Some(name)
        });
        let max_hops = match obj.get("max_hops") {
            Some(n) => self
                .number(n, "max_hops", 1, 255)
                .unwrap_or(defaults.max_hops as u64) as u32,
            None => defaults.max_hops,
        };
        obj.finish(self);
        LoopGuard { instance, max_hops }
    }

    /// Routes whose cycle no loop marker can break would relay the same messages forever:
    /// refuse them before anything starts.
    fn refuse_endless_loops(&mut self, config: &Config, positions: &[Pos]) {
        let analysis = loops::analyse(config);
        for cycle in &analysis.cycles {
            if let loops::Verdict::Unguarded { connections } = &cycle.verdict {
                let first = cycle.hops[0].route;
                self.error(
                    positions.get(first).copied().unwrap_or(Pos { line: 1, col: 1 }),
                    format!(
                        "these routes form an endless loop: {}",
                        cycle.describe(config)
                    ),
                    Some(format!(
                        "ferry's loop marker cannot travel over MQTT 3.1.1 ({}); use `version: 5` there, or make the topics not overlap",
                        connections.join(", ")
                    )),
                );
            }
        }
    }

    fn connection(&mut self, key: &Key, node: &Node) -> Option<Connection> {
        let name = key.name.clone();
        let mut obj = self.obj(node, "a connection")?;
        let reconnect = match obj.get("reconnect") {
            Some(node) => self.reconnect(node),
            None => Reconnect::default(),
        };
        const PROTOCOLS: [&str; 6] = ["mqtt", "nats", "sse", "http", "sse_server", "migratorydata"];
        let mut given: Vec<(&'static str, &Node)> = PROTOCOLS
            .iter()
            .filter_map(|p| obj.get(p).map(|n| (*p, n)))
            .collect();
        if self.front == Front::Relay
            && let Some(n) = obj.get("stdio")
        {
            given.push(("stdio", n));
        }
        let kind = match given.as_slice() {
            [("stdio", n)] => self.stdio_connection(n).map(ConnectionKind::Stdio),
            [("mqtt", n)] => self.mqtt_connection(&name, n).map(ConnectionKind::Mqtt),
            [("nats", n)] => self.nats_connection(n).map(ConnectionKind::Nats),
            [("sse", n)] => self.sse_connection(n).map(ConnectionKind::Sse),
            [("http", n)] => self.http_connection(n).map(ConnectionKind::Http),
            [("migratorydata", n)] => self
                .migratorydata_connection(n)
                .map(ConnectionKind::MigratoryData),
            [(_, n)] => self.sse_server_connection(n).map(ConnectionKind::SseServer),
            [] => {
                obj.finish(self);
                self.error(
                    key.pos,
                    format!("connection `{name}` names no protocol"),
                    Some(
                        "put its settings under `mqtt:`, `nats:`, `sse:`, `http:`, `sse_server:` or `migratorydata:`"
                            .into(),
                    ),
                );
                return None;
            }
            [(a, _), (b, _), ..] => {
                self.error(
                    node.pos,
                    format!("connection `{name}` is both `{a}` and `{b}`"),
                    Some("a connection is one endpoint: split it into two connections".into()),
                );
                None
            }
        };
        obj.finish(self);
        Some(Connection {
            name,
            kind: kind?,
            reconnect,
        })
    }

    /// Standard input or output, which only `ferry relay` builds: `lines: json` (with
    /// `base64` and `names`, the protocol whose syntax the lines' subjects follow) or `raw`.
    fn stdio_connection(&mut self, node: &Node) -> Option<StdioConnection> {
        let mut obj = self.obj(node, "standard input/output")?;
        let raw = match obj.get("lines") {
            Some(n) => self.choice(n, "`lines` format", &["json", "raw"])? == "raw",
            None => false,
        };
        let base64 = self.opt_bool(&mut obj, "base64", false);
        let names = match obj.get("names") {
            Some(n) => {
                let all = [
                    Protocol::Mqtt,
                    Protocol::Nats,
                    Protocol::Sse,
                    Protocol::Http,
                    Protocol::SseServer,
                    Protocol::MigratoryData,
                    Protocol::Stdio,
                ];
                let name = self.choice(n, "protocol", &all.map(Protocol::name))?;
                all.into_iter().find(|p| p.name() == name)?
            }
            None => Protocol::Stdio,
        };
        obj.finish(self);
        let lines = match raw {
            true => LineFormat::Raw,
            false => LineFormat::Json { base64, names },
        };
        Some(StdioConnection { lines })
    }

    fn reconnect(&mut self, node: &Node) -> Reconnect {
        let defaults = Reconnect::default();
        let Some(mut obj) = self.obj(node, "`reconnect`") else {
            return defaults;
        };
        let r = Reconnect {
            initial_delay: self.duration(&mut obj, "initial_delay", defaults.initial_delay),
            max_delay: self.duration(&mut obj, "max_delay", defaults.max_delay),
            connect_timeout: self.duration(&mut obj, "connect_timeout", defaults.connect_timeout),
            stable_after: self.duration(&mut obj, "stable_after", defaults.stable_after),
        };
        if r.initial_delay > r.max_delay {
            self.error(
                node.pos,
                "`initial_delay` is longer than `max_delay`",
                Some("the delay doubles from initial_delay up to max_delay".into()),
            );
        }
        obj.finish(self);
        r
    }

    fn tls(&mut self, obj: &mut Obj) -> Tls {
        let Some(node) = obj.get("tls") else {
            return Tls::default();
        };
        let Some(mut t) = self.obj(node, "`tls`") else {
            return Tls::default();
        };
        let tls = Tls {
            ca: self.path(&mut t, "ca"),
            cert: self.path(&mut t, "cert"),
            key: self.path(&mut t, "key"),
            insecure_skip_verify: self.opt_bool(&mut t, "insecure_skip_verify", false),
            required: true,
        };
        if tls.cert.is_some() != tls.key.is_some() {
            self.error(
                node.pos,
                "a client certificate needs both `cert` and `key`",
                Some("give both PEM files, or neither".into()),
            );
        }
        t.finish(self);
        tls
    }

    fn mqtt_connection(&mut self, name: &str, node: &Node) -> Option<MqttConnection> {
        let mut obj = self.obj(node, "an MQTT connection")?;
        let url_node = self.required(&mut obj, "url");
        let url = url_node.and_then(|n| self.string(n, "url").map(|u| (n.pos, u)));
        let version = match obj.get("version") {
            Some(n) => match self.string(n, "version").as_deref() {
                Some("5" | "5.0") => MqttVersion::V5,
                Some("3.1.1" | "3" | "4" | "311") => MqttVersion::V311,
                Some(other) => {
                    self.error(
                        n.pos,
                        format!("MQTT version `{other}` is not supported"),
                        Some("write `version: 5` or `version: \"3.1.1\"`".into()),
                    );
                    MqttVersion::V5
                }
                None => MqttVersion::V5,
            },
            None => MqttVersion::V5,
        };
        let client_id = self
            .opt_string(&mut obj, "client_id")
            .unwrap_or_else(|| format!("ferry-{name}"));
        // A persistent session by default: the broker keeps what arrives while ferry is away,
        // and redelivers what ferry had not acknowledged.
        let clean_start = self.opt_bool(&mut obj, "clean_start", false);
        let session_expiry_node = obj.get("session_expiry").is_some();
        let session_expiry = self.opt_duration(&mut obj, "session_expiry");
        let keep_alive = self.duration(&mut obj, "keep_alive", Duration::from_secs(30));
        let username = self.opt_string(&mut obj, "username");
        let password = self.opt_string(&mut obj, "password").map(Secret::new);
        let tls = self.tls(&mut obj);
        let max_packet_size = self.size(&mut obj, "max_packet_size", 16 * 1024 * 1024);
        if !(1024 * 1024..=268_435_455).contains(&max_packet_size) {
            self.error(
                obj.pos,
                "`max_packet_size` must be between 1MiB and 256MiB",
                Some("ferry needs room for real payloads; MQTT caps packets at 256MiB".into()),
            );
        }
        let max_outgoing_packet_size = self.size(
            &mut obj,
            "max_outgoing_packet_size",
            DEFAULT_MAX_OUTGOING_PACKET_SIZE,
        );
        if !(1024..=DEFAULT_MAX_OUTGOING_PACKET_SIZE).contains(&max_outgoing_packet_size) {
            self.error(
                obj.pos,
                "`max_outgoing_packet_size` must be between 1KiB and 256MiB",
                Some(
                    "set it to the broker's limit (mosquitto's `max_packet_size`); MQTT caps \
                     packets at 256MiB"
                        .into(),
                ),
            );
        }
        let last_will = obj.get("last_will").and_then(|n| self.last_will(n));
        let probe = self.probe(&mut obj, mqtt::names::topic);
        obj.finish(self);

        let (url_pos, url) = url?;
        let parsed = match url::Url::parse(&url) {
            Ok(u) => u,
            Err(e) => {
                self.error(
                    url_pos,
                    format!("invalid MQTT url `{}`: {e}", redact_url(&url)),
                    Some("write e.g. `mqtt://broker:1883`, `mqtts://broker:8883` or `ws://broker:9001/mqtt`".into()),
                );
                return None;
            }
        };
        let Some(transport) = MqttTransport::from_scheme(parsed.scheme()) else {
            self.error(
                url_pos,
                format!("`{}://` is not an MQTT url scheme", parsed.scheme()),
                Some("use mqtt://, mqtts://, ws:// or wss://".into()),
            );
            return None;
        };
        let default_port = transport.default_port();
        let host = parsed.host_str().unwrap_or("").to_string();
        if host.is_empty() {
            self.error(
                url_pos,
                "the MQTT url has no host",
                Some("write e.g. `mqtt://broker:1883`".into()),
            );
            return None;
        }
        let port = parsed.port().unwrap_or(default_port);
        // Credentials may also come in the URL; the fields win.
        let username = username
            .or_else(|| (!parsed.username().is_empty()).then(|| parsed.username().to_string()));
        let password = password.or_else(|| parsed.password().map(|p| Secret::new(p.to_string())));
        let ws_url = matches!(transport, MqttTransport::Ws | MqttTransport::Wss).then(|| {
            let mut u = parsed.clone();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            SecretUrl::new(u.to_string())
        });
        // A `tls:` block on a plaintext URL would be ignored: the credentials would travel in
        // clear while the config says TLS.
        if !transport.is_tls() && tls.required {
            self.error(
                url_pos,
                "`tls` is set but the url is not a TLS one",
                Some("use mqtts:// or wss:// to connect with TLS".into()),
            );
        }
        let session_expiry = match (version, session_expiry_node) {
            (MqttVersion::V5, false) if !clean_start => Some(DEFAULT_SESSION_EXPIRY),
            _ => session_expiry,
        };
        if version == MqttVersion::V311 && session_expiry.is_some() {
            self.error(
                url_pos,
                "`session_expiry` needs MQTT 5",
                Some("with MQTT 3.1.1, `clean_start: false` alone keeps the session".into()),
            );
        }
        Some(MqttConnection {
            url: redact_url(&url),
            transport,
            host,
            port,
            ws_url,
            version,
            client_id,
            clean_start,
            session_expiry,
            keep_alive,
            username,
            password,
            tls,
            max_packet_size: max_packet_size.min(u32::MAX as u64) as u32,
            max_outgoing_packet_size: max_outgoing_packet_size.min(DEFAULT_MAX_OUTGOING_PACKET_SIZE)
                as u32,
            last_will,
            probe,
        })
    }

    fn last_will(&mut self, node: &Node) -> Option<LastWill> {
        let mut obj = self.obj(node, "`last_will`")?;
        let topic = self.required(&mut obj, "topic").and_then(|n| {
            let t = self.string(n, "topic")?;
            self.check(n.pos, mqtt::names::topic(&t)).then_some(t)
        });
        let payload = self.opt_string(&mut obj, "payload").unwrap_or_default();
        let qos = self.qos(&mut obj, 0);
        let retain = self.opt_bool(&mut obj, "retain", false);
        obj.finish(self);
        Some(LastWill {
            topic: topic?,
            payload,
            qos,
            retain,
        })
    }

    fn nats_connection(&mut self, node: &Node) -> Option<NatsConnection> {
        let mut obj = self.obj(node, "a NATS connection")?;
        let urls = match self.required(&mut obj, "url") {
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => items
                .iter()
                .filter_map(|n| self.string(n, "url").map(|u| (n.pos, u)))
                .collect(),
            Some(n) => self
                .string(n, "url")
                .map(|u| vec![(n.pos, u)])
                .unwrap_or_default(),
            None => Vec::new(),
        };
        for (pos, url) in &urls {
            let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
            if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                self.error(
                    *pos,
                    format!("`{}` is not a NATS url", redact_url(url)),
                    Some("write e.g. `nats://server:4222`, `tls://server:4222` or `ws://server:8080`".into()),
                );
            }
        }
        let (urls, in_url) = self.nats_url_credentials(urls);
        let mut user = self.opt_string(&mut obj, "user");
        let mut password = self.opt_string(&mut obj, "password").map(Secret::new);
        let mut token = self.opt_string(&mut obj, "token").map(Secret::new);
        // Credentials written in the URL, when the fields name none (the fields win, as for
        // MQTT).
        if user.is_none() && token.is_none() {
            match in_url {
                Some(UrlCredentials::UserPassword(u, p)) => (user, password) = (Some(u), Some(p)),
                Some(UrlCredentials::Token(t)) => token = Some(t),
                None => {}
            }
        }
        let nats = NatsConnection {
            urls,
            name: self.opt_string(&mut obj, "name"),
            user,
            password,
            token,
            nkey: self.opt_string(&mut obj, "nkey").map(Secret::new),
            creds: self.path(&mut obj, "creds"),
            tls: self.tls(&mut obj),
            ping_interval: self.duration(&mut obj, "ping_interval", Duration::from_secs(20)),
            probe: self.probe(&mut obj, nats::names::subject),
        };
        if nats.tls.required && nats.urls.iter().any(|u| u.starts_with("ws://")) {
            // The client never puts TLS inside a plain WebSocket: the block would be ignored.
            self.error(
                obj.pos,
                "`tls` is set but a url is ws://, which never uses TLS",
                Some("use wss:// (or tls:// / nats:// for plain TCP)".into()),
            );
        }
        let auths = [
            nats.user.is_some(),
            nats.token.is_some(),
            nats.nkey.is_some(),
            nats.creds.is_some(),
        ];
        if auths.iter().filter(|a| **a).count() > 1 {
            self.error(
                obj.pos,
                "a NATS connection takes one way to authenticate",
                Some("use either user/password, token, nkey, or creds".into()),
            );
        }
        if nats.password.is_some() && nats.user.is_none() {
            self.error(
                obj.pos,
                "`password` without `user`",
                Some("add `user: ...`".into()),
            );
        }
        obj.finish(self);
        Some(nats)
    }

    /// The NATS URLs without the credentials they carried (see [`url_credentials`]).
    fn nats_url_credentials(
        &mut self,
        urls: Vec<(Pos, String)>,
    ) -> (Vec<String>, Option<UrlCredentials>) {
        let (bare, found, conflicts) = url_credentials::split_nats_urls(urls);
        for pos in conflicts {
            self.error(
                pos,
                "the NATS urls carry different credentials",
                Some(
                    "write them once, in `user`/`password` or `token`, and the urls without".into(),
                ),
            );
        }
        (bare, found)
    }

    /// A connection's `probe:`: `false` turns it off, a map tunes it.
    fn probe(
        &mut self,
        obj: &mut Obj,
        check_topic: fn(&str) -> Result<(), Problem>,
    ) -> Option<Probe> {
        let defaults = Probe::default();
        let Some(node) = obj.get("probe") else {
            return Some(defaults);
        };
        if let Value::Bool(on) = node.value {
            return on.then_some(defaults);
        }
        let mut probe_obj = self.obj(
            node,
            "`probe` (false, or a map of interval, timeout, topic)",
        )?;
        let interval = self.duration(&mut probe_obj, "interval", defaults.interval);
        let timeout = self.duration(&mut probe_obj, "timeout", defaults.timeout);
        let topic = probe_obj.get("topic").and_then(|n| {
            let t = self.string(n, "topic")?;
            self.check(n.pos, check_topic(&t)).then_some(t)
        });
        if interval.is_zero() || timeout.is_zero() {
            self.error(
                node.pos,
                "a probe needs a non-zero `interval` and `timeout`",
                Some(
                    "write e.g. `probe: { interval: 30s, timeout: 10s }`, or `probe: false`".into(),
                ),
            );
        }
        probe_obj.finish(self);
        Some(Probe {
            interval,
            timeout,
            topic,
        })
    }

    /// An http:// or https:// URL, checked.
    fn http_url(&mut self, obj: &mut Obj, key: &'static str) -> Option<url::Url> {
        let node = self.required(obj, key)?;
        let text = self.string(node, key)?;
        match url::Url::parse(&text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
            _ => {
                self.error(
                    node.pos,
                    format!("`{}` is not an http:// or https:// URL", redact_url(&text)),
                    Some("write e.g. `https://db.example.com/realtime`".into()),
                );
                None
            }
        }
    }

    /// A mapping of header names to values (or templates), in the order written.
    fn header_map(&mut self, obj: &mut Obj, key: &'static str) -> Vec<(String, String)> {
        let Some(node) = obj.get(key) else {
            return Vec::new();
        };
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                format!("`{key}` must be a mapping, found {}", node.value.kind()),
                Some(format!("write `{key}: {{x-api-key: ${{API_KEY}}}}`")),
            );
            return Vec::new();
        };
        let mut headers = Vec::new();
        for (k, v) in entries {
            let Some(value) = self.string(v, &k.name) else {
                continue;
            };
            if self.check(k.pos, http::protocol::header(&k.name, &value)) {
                headers.push((k.name.clone(), value));
            }
        }
        headers
    }

    fn method(
        &mut self,
        obj: &mut Obj,
        allowed: &[&'static str],
        default: HttpMethod,
    ) -> HttpMethod {
        let Some(node) = obj.get("method") else {
            return default;
        };
        match self.choice(node, "method here", allowed) {
            Some("GET") => HttpMethod::Get,
            Some("POST") => HttpMethod::Post,
            Some("PUT") => HttpMethod::Put,
            _ => default,
        }
    }

    fn sse_connection(&mut self, node: &Node) -> Option<SseConnection> {
        let mut obj = self.obj(node, "an SSE connection")?;
        let mut url = self.http_url(&mut obj, "url");
        let method = self.method(&mut obj, &["GET", "POST"], HttpMethod::Get);
        let body = self.opt_string(&mut obj, "body");
        if body.is_some() && method == HttpMethod::Get {
            self.error(
                obj.pos,
                "a `body` needs `method: POST`",
                Some("add `method: POST`, or drop the body".into()),
            );
        }
        let headers = self
            .header_map(&mut obj, "headers")
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect();
        let query = obj.get("query");
        if let Some(node) = query {
            match &node.value {
                Value::Map(entries) => {
                    let mut pairs = Vec::new();
                    for (k, v) in entries {
                        if let Some(value) = self.string(v, &k.name) {
                            pairs.push((k.name.clone(), value));
                        }
                    }
                    if let Some(u) = &mut url {
                        u.query_pairs_mut().extend_pairs(pairs);
                    }
                }
                other => self.error(
                    node.pos,
                    format!("`query` must be a mapping, found {}", other.kind()),
                    Some("write `query: {apiKey: ${API_KEY}}`".into()),
                ),
            }
        }
        let tls = self.tls(&mut obj);
        let idle_timeout = self.duration(&mut obj, "idle_timeout", Duration::from_secs(60));
        let resume = self.opt_bool(&mut obj, "resume", true);
        let handshake = obj.get("handshake").and_then(|n| self.handshake(n));
        let max_line_size = self.sse_size(
            &mut obj,
            "max_line_size",
            SseConnection::DEFAULT_MAX_LINE_SIZE,
        );
        let max_event_size = self.sse_size(
            &mut obj,
            "max_event_size",
            SseConnection::DEFAULT_MAX_EVENT_SIZE,
        );
        let max_response_body = self.sse_size(
            &mut obj,
            "max_response_body",
            SseConnection::DEFAULT_MAX_RESPONSE_BODY,
        );
        obj.finish(self);
        Some(SseConnection {
            url: SecretUrl::new(url?.to_string()),
            method,
            body,
            headers,
            tls,
            idle_timeout,
            resume,
            handshake,
            max_line_size,
            max_event_size,
            max_response_body,
        })
    }

    /// A bound on what an SSE server sends: at least 1KiB (a smaller one would fail ordinary
    /// streams), at most 1GiB.
    fn sse_size(&mut self, obj: &mut Obj, key: &'static str, default: usize) -> usize {
        let pos = obj.get(key).map(|n| n.pos);
        let size = self.size(obj, key, default as u64);
        if !(1024..=1024 * 1024 * 1024).contains(&size) {
            if let Some(pos) = pos {
                self.error(
                    pos,
                    format!("`{key}` must be between 1KiB and 1GiB"),
                    Some(format!(
                        "the default is {}KiB; write e.g. `{key}: 16MiB`",
                        default / 1024
                    )),
                );
            }
            return default;
        }
        size as usize
    }

    fn handshake(&mut self, node: &Node) -> Option<Handshake> {
        let mut obj = self.obj(node, "a `handshake`")?;
        let on = self
            .required(&mut obj, "on")
            .and_then(|n| self.string(n, "on"));
        let method = self.method(&mut obj, &["GET", "POST", "PUT"], HttpMethod::Post);
        let template = |d: &mut Self, obj: &mut Obj, key: &'static str| {
            let n = obj.get(key)?;
            let text = d.string(n, key)?;
            d.template(n.pos, key, &text, &[]).then_some(text)
        };
        let url = match obj.get("url") {
            Some(_) => template(self, &mut obj, "url"),
            None => {
                self.error(
                    obj.pos,
                    "a `handshake` needs `url`",
                    Some(
                        "add `url: /api/realtime` (relative to the stream's URL) or a full URL"
                            .into(),
                    ),
                );
                None
            }
        };
        let body = template(self, &mut obj, "body");
        let headers = self.header_map(&mut obj, "headers");
        for (name, value) in &headers {
            self.template(obj.pos, name, value, &[]);
        }
        obj.finish(self);
        Some(Handshake {
            on: on?,
            method,
            url: SecretUrl::new(url?),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k, Secret::new(v)))
                .collect(),
            body,
        })
    }

    fn http_connection(&mut self, node: &Node) -> Option<HttpConnection> {
        let mut obj = self.obj(node, "an HTTP connection")?;
        let url = self.http_url(&mut obj, "url");
        let headers = self
            .header_map(&mut obj, "headers")
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect();
        let tls = self.tls(&mut obj);
        let timeout = self.duration(&mut obj, "timeout", Duration::from_secs(30));
        let max_concurrent = match obj.get("max_concurrent") {
            Some(n) => self.number(n, "max_concurrent", 1, 1024).unwrap_or(8) as usize,
            None => 8,
        };
        obj.finish(self);
        Some(HttpConnection {
            url: SecretUrl::new(url?.to_string()),
            headers,
            tls,
            timeout,
            max_concurrent,
        })
    }

    fn migratorydata_connection(&mut self, node: &Node) -> Option<MigratoryDataConnection> {
        let mut obj = self.obj(node, "a MigratoryData connection")?;
        let mut servers = Vec::new();
        match self.required(&mut obj, "servers") {
            Some(Node {
                value: Value::Seq(items),
                pos,
            }) => {
                if items.is_empty() {
                    self.error(
                        *pos,
                        "`servers` is empty",
                        Some("list at least one, e.g. `servers: [http://md1:8800]`".into()),
                    );
                }
                for n in items {
                    if let Some(u) = self.server_url(n) {
                        servers.push(u);
                    }
                }
            }
            Some(n) => {
                if let Some(u) = self.server_url(n) {
                    servers.push(u);
                }
            }
            None => {}
        }
        let token = self
            .required(&mut obj, "token")
            .and_then(|n| self.string(n, "token"))
            .map(Secret::new);
        let tls = self.tls(&mut obj);
        let timeout = self.duration(&mut obj, "timeout", Duration::from_secs(10));
        let poll_interval = self.duration(&mut obj, "poll_interval", Duration::from_secs(1));
        if poll_interval.is_zero() {
            self.error(
                obj.pos,
                "`poll_interval` cannot be 0",
                Some("write e.g. `250ms` or `1s`".into()),
            );
        }
        let max_response_size = self.size(
            &mut obj,
            "max_response_size",
            DEFAULT_MIGRATORYDATA_MAX_RESPONSE_SIZE,
        );
        if max_response_size < 1024 {
            self.error(
                obj.pos,
                "`max_response_size` must be at least 1KiB",
                Some("a consume answer carries up to 1000 messages: write e.g. `16MiB`".into()),
            );
        }
        obj.finish(self);
        Some(MigratoryDataConnection {
            servers,
            token: token?,
            tls,
            timeout,
            poll_interval,
            max_response_size: usize::try_from(max_response_size).unwrap_or(usize::MAX),
        })
    }

    /// One of a MigratoryData connection's `servers`: an http:// or https:// base URL, without
    /// a query (the token goes in `token:`, where it is kept secret).
    fn server_url(&mut self, node: &Node) -> Option<String> {
        let text = self.string(node, "server")?;
        match url::Url::parse(&text) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.has_host()
                    && u.query().is_none()
                    && u.username().is_empty()
                    && u.password().is_none() =>
            {
                Some(u.to_string())
            }
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "`{}` is not an http:// or https:// server URL",
                        // Without its query, which may hold the token.
                        redact_url(text.split(['?', '#']).next().unwrap_or_default())
                    ),
                    Some(
                        "write e.g. `http://md1.example.com:8800`, without credentials or a query (the token goes in `token:`)"
                            .into(),
                    ),
                );
                None
            }
        }
    }

    fn sse_server_connection(&mut self, node: &Node) -> Option<SseServerConnection> {
        let mut obj = self.obj(node, "an sse_server connection")?;
        let path = self.required(&mut obj, "path").and_then(|n| {
            let p = self.string(n, "path")?;
            // What a browser sends unescaped (RFC 3986 path characters), so the path in the
            // config is the path in the request; `{`, `}` and `%` stay out.
            let url_char = |c: char| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@".contains(c);
            if !p.starts_with('/') || p == "/" || !p.chars().all(url_char) {
                self.error(
                    n.pos,
                    format!("`{p}` is not a path ferry can serve a stream on"),
                    Some(
                        "write an absolute path of plain URL characters, such as `/events/sensors`"
                            .into(),
                    ),
                );
                return None;
            }
            if OWN_PATHS
                .iter()
                .any(|own| p == *own || p.starts_with(&format!("{own}/")))
            {
                self.error(
                    n.pos,
                    format!("`{p}` is the admin listener's own path"),
                    Some(format!(
                        "choose another path; {} and what is under them are taken",
                        OWN_PATHS.join(", ")
                    )),
                );
                return None;
            }
            Some(p)
        });
        let buffer = match obj.get("buffer") {
            Some(n) => self.number(n, "buffer", 0, 1_000_000).unwrap_or(1000) as usize,
            None => 1000,
        };
        let keep_alive = self.duration(&mut obj, "keep_alive", Duration::from_secs(15));
        let cors_origin = obj.get("cors_origin").and_then(|n| {
            let origin = self.string(n, "cors_origin")?;
            // One origin exactly as a browser sends it in `Origin:` (scheme, host, port).
            let is_origin = |o: &str| {
                url::Url::parse(o).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https") && u.origin().ascii_serialization() == o
                })
            };
            if origin == "*" || is_origin(&origin) {
                return Some(origin);
            }
            self.error(
                n.pos,
                format!("`{origin}` is not an origin"),
                Some("write `*` (pages from anywhere) or one origin, scheme and host, such as `https://dashboard.example.com`".into()),
            );
            None
        });
        let token = self.opt_string(&mut obj, "token").map(Secret::new);
        let max_clients = match obj.get("max_clients") {
            Some(n) => self
                .number(n, "max_clients", 1, 1_000_000)
                .map_or(SseServerConnection::DEFAULT_MAX_CLIENTS, |v| v as usize),
            None => SseServerConnection::DEFAULT_MAX_CLIENTS,
        };
        obj.finish(self);
        Some(SseServerConnection {
            path: path?,
            buffer,
            keep_alive,
            cors_origin,
            token,
            max_clients,
        })
    }

    /// Records a name-rule problem; true when there was none.
    fn check(&mut self, pos: Pos, result: Result<(), Problem>) -> bool {
        match result {
            Ok(()) => true,
            Err((message, hint)) => {
                self.error(pos, message, Some(hint));
                false
            }
        }
    }

    fn route(&mut self, node: &Node, connections: &BTreeMap<String, Connection>) -> Option<Route> {
        let mut obj = self.obj(node, "a route")?;
        let name = self.required(&mut obj, "name").and_then(|n| {
            let name = self.string(n, "name")?;
            self.check(n.pos, route_name(&name)).then_some(name)
        });
        let route_name = name.clone().unwrap_or_else(|| "?".into());
        let from = self
            .required(&mut obj, "from")
            .and_then(|n| self.source(n, &route_name, connections));
        // Templates may only name the captures the source's `match:` defines.
        let captures = from.as_ref().map(capture_names).unwrap_or_default();
        let captures = &captures;
        let to = match self.required(&mut obj, "to") {
            Some(Node {
                value: Value::Seq(items),
                pos,
            }) => {
                if items.is_empty() {
                    self.error(
                        *pos,
                        "`to` is an empty list",
                        Some("name at least one sink".into()),
                    );
                }
                // Decode every sink before giving up on any, so all their errors are reported.
                let sinks: Vec<_> = items
                    .iter()
                    .map(|n| self.sink(n, &route_name, connections, captures, "a sink (`to`)"))
                    .collect();
                sinks.into_iter().collect::<Option<Vec<_>>>()
            }
            Some(n) => self
                .sink(n, &route_name, connections, captures, "a sink (`to`)")
                .map(|s| vec![s]),
            None => None,
        };
        let transform = self.jq(&mut obj, "transform");
        let filter = self.jq(&mut obj, "filter");
        let transform_budget = self.transform_budget(&mut obj);
        let headers = match obj.get("headers") {
            Some(n) => self.header_rules(n, captures),
            None => HeaderRules::default(),
        };
        let queue = match obj.get("queue") {
            Some(n) => self.queue(n),
            None => Queue::default(),
        };
        let delivery_node = obj.get("delivery");
        let delivery = delivery_node.and_then(|n| {
            match self.choice(n, "`delivery`", &["at-least-once", "at-most-once"])? {
                "at-least-once" => Some(Delivery::AtLeastOnce),
                _ => Some(Delivery::AtMostOnce),
            }
        });
        let spool = obj.get("spool").and_then(|n| self.spool(n));
        let stop_after = match self.front {
            Front::Relay => obj
                .get("stop_after")
                .and_then(|n| self.number(n, "stop_after", 1, u64::MAX)),
            Front::File => None,
        };
        let dead_letter = obj.get("dead_letter").and_then(|n| {
            let sink = self.sink(
                n,
                &route_name,
                connections,
                captures,
                "the dead-letter sink",
            )?;
            if *sink.spec.target() == Target::Auto {
                // `auto` would publish a failed message under its own name, where the route
                // (or its twin) may pick it up again.
                self.error(
                    n.pos,
                    "a dead-letter sink needs a name of its own",
                    Some(
                        "add e.g. `subject: dead.{{ route }}` or `topic: dead/{{ route }}`".into(),
                    ),
                );
            }
            Some(sink)
        });
        obj.finish(self);
        let route = Route {
            name: name?,
            from: from?,
            to: to?,
            transform,
            filter,
            headers,
            queue,
            dead_letter,
            delivery,
            spool,
            stop_after,
            transform_budget,
        };
        if let (Some(node), Some(Delivery::AtLeastOnce)) = (delivery_node, delivery) {
            let guarantee = delivery::guarantee(&route, connections);
            for limit in &guarantee.limits {
                self.error(
                    node.pos,
                    format!(
                        "route `{}` cannot be at-least-once: {}",
                        route.name, limit.what
                    ),
                    Some(limit.fix.clone()),
                );
            }
        }
        Some(route)
    }

    fn spool(&mut self, node: &Node) -> Option<Spool> {
        let mut obj = self.obj(node, "`spool` (a map of dir, max_bytes)")?;
        let dir = self.path(&mut obj, "dir");
        let max_bytes = self.size(&mut obj, "max_bytes", DEFAULT_SPOOL_BYTES);
        if max_bytes < 1024 * 1024 {
            self.error(
                node.pos,
                "`max_bytes` of a spool must be at least 1MiB",
                Some("write e.g. `max_bytes: 1GiB`".into()),
            );
        }
        obj.finish(self);
        Some(Spool { dir, max_bytes })
    }

    fn header_rules(&mut self, node: &Node, captures: &[String]) -> HeaderRules {
        let mut rules = HeaderRules::default();
        let Some(mut obj) = self.obj(node, "`headers`") else {
            return rules;
        };
        rules.forward = self.opt_bool(&mut obj, "forward", true);
        match obj.get("remove") {
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => {
                rules.remove = items
                    .iter()
                    .filter_map(|n| self.string(n, "header name"))
                    .collect()
            }
            Some(n) => rules.remove = self.string(n, "header name").into_iter().collect(),
            None => {}
        }
        match obj.get("set") {
            Some(Node {
                value: Value::Map(entries),
                ..
            }) => {
                for (key, value) in entries {
                    if let Some(text) = self.string(value, "header value") {
                        if nats::names::header(&key.name, "").is_err() {
                            self.error(
                                key.pos,
                                format!("`{}` cannot be a header name", key.name),
                                Some("header names are printable ASCII without spaces or `:`, like `site` or `x-trace-id`".into()),
                            );
                        } else if marker::is_ferry_header(&key.name) {
                            self.error(
                                key.pos,
                                format!("`{}` is one of ferry's own headers", key.name),
                                Some("ferry sets `Ferry-*` headers itself (loop marker, dead letters); choose another name".into()),
                            );
                        }
                        self.template(value.pos, "headers.set", &text, captures);
                        rules.set.push((key.name.clone(), text));
                    }
                }
            }
            Some(other) => self.error(
                other.pos,
                format!(
                    "`headers.set` must be a mapping, found {}",
                    other.value.kind()
                ),
                Some("e.g. `set: { site: plant-1 }`".into()),
            ),
            None => {}
        }
        obj.finish(self);
        rules
    }

    /// A payload format (`payload_format`), json when not given.
    fn payload_format(&mut self, obj: &mut Obj) -> PayloadFormat {
        match obj.get("payload_format") {
            Some(n) => match self.choice(n, "payload format", &["json", "text", "bytes"]) {
                Some("text") => PayloadFormat::Text,
                Some("bytes") => PayloadFormat::Bytes,
                _ => PayloadFormat::Json,
            },
            None => PayloadFormat::Json,
        }
    }

    /// Compiles a template (reporting what is wrong with it); true when it is usable.
    fn template(&mut self, pos: Pos, key: &str, text: &str, captures: &[String]) -> bool {
        match template::Template::compile(text) {
            Err(message) => {
                self.error(
                    pos,
                    format!("template in `{key}` does not compile: {message}"),
                    Some("templates use {{ ... }}, e.g. `iot.{{ topic[1] }}.temperature`".into()),
                );
                false
            }
            Ok(t) => match t.unknown_capture(captures) {
                Some(name) => {
                    let hint = if captures.is_empty() {
                        "give the source a `match:` regex with named groups, e.g. `match: '^sensors/(?P<room>[^/]+)/temp$'`".to_string()
                    } else {
                        format!("the source's `match:` defines: {}", captures.join(", "))
                    };
                    self.error(
                        pos,
                        format!("template in `{key}` uses `{name}`, which the source's `match:` does not capture"),
                        Some(hint),
                    );
                    false
                }
                None => true,
            },
        }
    }

    /// `transform_timeout` and `transform_memory` of a route.
    fn transform_budget(&mut self, obj: &mut Obj) -> TransformBudget {
        let defaults = TransformBudget::default();
        let timeout = self.duration(obj, "transform_timeout", defaults.timeout);
        if let Some(node) = obj.get("transform_timeout")
            && timeout.is_zero()
        {
            self.error(
                node.pos,
                "`transform_timeout` must be longer than 0",
                Some("write e.g. `transform_timeout: 1s`".into()),
            );
        }
        let memory = self.size(obj, "transform_memory", defaults.memory);
        if let Some(node) = obj.get("transform_memory")
            && memory < TransformBudget::MIN_MEMORY
        {
            self.error(
                node.pos,
                "`transform_memory` must be at least 64MiB (the jq worker process itself needs that)",
                Some("write e.g. `transform_memory: 512MiB`".into()),
            );
        }
        TransformBudget { timeout, memory }
    }

    fn jq(&mut self, obj: &mut Obj, key: &'static str) -> Option<String> {
        let node = obj.get(key)?;
        let code = self.string(node, key)?;
        match jq::Program::compile(&code) {
            Ok(_) => Some(code),
            Err(message) => {
                self.error(
                    node.pos,
                    format!("jq expression in `{key}` does not compile: {message}"),
                    Some("check it with `jq` on a sample payload; it must be a jq program, e.g. `{room: .room}`".into()),
                );
                None
            }
        }
    }

    fn queue(&mut self, node: &Node) -> Queue {
        let defaults = Queue::default();
        let Some(mut obj) = self.obj(node, "`queue`") else {
            return defaults;
        };
        let max_messages = match obj.get("max_messages") {
            Some(n) => self
                .number(n, "max_messages", 1, 100_000_000)
                .unwrap_or(defaults.max_messages as u64) as usize,
            None => defaults.max_messages,
        };
        let max_bytes = self.size(&mut obj, "max_bytes", defaults.max_bytes as u64) as usize;
        let when_full = match obj.get("when_full") {
            Some(n) => match self.choice(
                n,
                "`when_full` policy",
                &["block", "drop_oldest", "drop_newest"],
            ) {
                Some("drop_oldest") => WhenFull::DropOldest,
                Some("drop_newest") => WhenFull::DropNewest,
                _ => WhenFull::Block,
            },
            None => WhenFull::Block,
        };
        obj.finish(self);
        Queue {
            max_messages,
            max_bytes,
            when_full,
        }
    }

    /// The `connection:` of a source or sink, checked against the defined connections.
    fn connection_ref<'c>(
        &mut self,
        obj: &mut Obj,
        route: &str,
        connections: &'c BTreeMap<String, Connection>,
    ) -> Option<(String, &'c Connection)> {
        let node = self.required(obj, "connection")?;
        let name = self.string(node, "connection")?;
        match connections.get(&name) {
            Some(c) => Some((name, c)),
            None if self.broken.contains(&name) => None,
            None => {
                let defined: Vec<&str> = connections.keys().map(String::as_str).collect();
                let mut hint = match did_you_mean(&name, defined.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`? "),
                    None => String::new(),
                };
                if defined.is_empty() {
                    hint.push_str("define it under `connections:`");
                } else {
                    hint.push_str(&format!("defined connections: {}", defined.join(", ")));
                }
                self.error(
                    node.pos,
                    format!("route `{route}` names connection `{name}`, which is not defined"),
                    Some(hint),
                );
                None
            }
        }
    }

    fn source(
        &mut self,
        node: &Node,
        route: &str,
        connections: &BTreeMap<String, Connection>,
    ) -> Option<Source> {
        let mut obj = self.obj(node, "a source (`from`)")?;
        let Some((connection, c)) = self.connection_ref(&mut obj, route, connections) else {
            // Without the protocol the other keys cannot be judged; leave them be.
            return None;
        };
        if let Some((what, hint)) = c
            .kind
            .protocol()
            .descriptor()
            .refusal(&connection, End::Source)
        {
            self.error(obj.pos, what, Some(hint));
            return None;
        }
        let spec = match &c.kind {
            ConnectionKind::Mqtt(mqtt) => {
                obj.what = "an MQTT source";
                let mut topics = Vec::new();
                let mut list = |d: &mut Self, n: &Node| {
                    if let Some(t) = d.string(n, "topic")
                        && d.check(n.pos, mqtt::names::filter(&t))
                    {
                        topics.push(t);
                    }
                };
                match (obj.get("topic"), obj.get("topics")) {
                    (Some(n), None) => list(self, n),
                    (
                        None,
                        Some(Node {
                            value: Value::Seq(items),
                            ..
                        }),
                    ) => {
                        for n in items {
                            list(self, n);
                        }
                    }
                    (None, Some(n)) => list(self, n),
                    (Some(_), Some(_)) => self.error(
                        obj.pos,
                        "an MQTT source takes `topic` or `topics`, not both",
                        Some("put every filter in `topics: [...]`".into()),
                    ),
                    (None, None) => self.error(
                        obj.pos,
                        "an MQTT source needs `topic`",
                        Some("add e.g. `topic: \"sensors/#\"`".into()),
                    ),
                }
                let qos = self.qos(&mut obj, 0);
                let share = obj.get("share").and_then(|n| {
                    let g = self.string(n, "share")?;
                    if g.is_empty() || g.contains(['/', '+', '#']) {
                        self.error(
                            n.pos,
                            format!("`{g}` is not a valid shared-subscription group"),
                            Some("a group name is one level: no `/`, `+` or `#`".into()),
                        );
                    }
                    Some(g)
                });
                let no_local = self.opt_bool(&mut obj, "no_local", false);
                if no_local && mqtt.version != MqttVersion::V5 {
                    self.error(
                        obj.pos,
                        "`no_local` needs MQTT 5",
                        Some(format!("set `version: 5` on connection `{connection}`")),
                    );
                }
                SourceSpec::Mqtt(MqttSource {
                    topics,
                    qos,
                    share,
                    no_local,
                })
            }
            ConnectionKind::Sse(_) => {
                obj.what = "an SSE source";
                let mut events = Vec::new();
                match obj.get("events") {
                    Some(Node {
                        value: Value::Seq(items),
                        ..
                    }) => {
                        for n in items {
                            if let Some(e) = self.string(n, "event")
                                && self.check(n.pos, sse::protocol::event_type(&e))
                            {
                                events.push(e);
                            }
                        }
                    }
                    Some(n) => {
                        if let Some(e) = self.string(n, "events")
                            && self.check(n.pos, sse::protocol::event_type(&e))
                        {
                            events.push(e);
                        }
                    }
                    None => {}
                }
                SourceSpec::Sse(SseSource { events })
            }
            ConnectionKind::MigratoryData(_) => {
                obj.what = "a MigratoryData source";
                let subject = self.required(&mut obj, "subject").and_then(|n| {
                    let s = self.string(n, "subject")?;
                    self.check(n.pos, migratorydata::protocol::subject(&s))
                        .then_some(s)
                });
                let history = obj
                    .get("history")
                    .and_then(|n| self.number(n, "history", 0, 1_000_000))
                    .map(|n| n as u32);
                SourceSpec::MigratoryData(MigratoryDataSource {
                    subject: subject.unwrap_or_default(),
                    history,
                })
            }
            // Only `ferry relay` builds standard input (Front::Relay).
            ConnectionKind::Stdio(_) => SourceSpec::Stdio,
            // Refused above: ferry only writes to them.
            ConnectionKind::Http(_) | ConnectionKind::SseServer(_) => return None,
            ConnectionKind::Nats(_) => {
                obj.what = "a NATS source";
                let subject = self.required(&mut obj, "subject").and_then(|n| {
                    let s = self.string(n, "subject")?;
                    self.check(n.pos, nats::names::subscription(&s))
                        .then_some(s)
                });
                let queue_group = self.opt_string(&mut obj, "queue");
                let jetstream = obj.get("jetstream").and_then(|n| self.jetstream_source(n));
                if let (Some(_), Some(_)) = (&queue_group, &jetstream) {
                    self.error(
                        obj.pos,
                        "a JetStream source takes no `queue`",
                        Some(
                            "instances that bind the same durable `consumer` share its messages"
                                .into(),
                        ),
                    );
                }
                SourceSpec::Nats(NatsSource {
                    subject: subject.unwrap_or_default(),
                    queue_group,
                    jetstream,
                })
            }
        };
        let pattern = obj.get("match").and_then(|n| {
            let text = self.string(n, "match")?;
            match regex::Regex::new(&text) {
                Ok(_) => Some(text),
                Err(e) => {
                    self.error(
                        n.pos,
                        format!(
                            "`match` is not a valid regular expression: {}",
                            one_line(&e.to_string())
                        ),
                        Some(
                            "name the parts you need, e.g. `^sensors/(?P<room>[^/]+)/temp$`".into(),
                        ),
                    );
                    None
                }
            }
        });
        let format = self.payload_format(&mut obj);
        let envelope = self.opt_bool(&mut obj, "envelope", false);
        obj.finish(self);
        Some(Source {
            connection,
            spec,
            pattern,
            format,
            envelope,
        })
    }

    fn jetstream_source(&mut self, node: &Node) -> Option<JetStreamSource> {
        let mut obj = self.obj(node, "`jetstream` (a map of stream, consumer, ...)")?;
        let name = |d: &mut Self, obj: &mut Obj, key: &'static str| {
            let n = d.required(obj, key)?;
            let s = d.string(n, key)?;
            // JetStream names become subject tokens: no dots, wildcards or spaces.
            if s.is_empty() || s.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
                d.error(
                    n.pos,
                    format!("`{s}` is not a valid JetStream {key} name"),
                    Some("use letters, digits, `-` and `_`".into()),
                );
                return None;
            }
            Some(s)
        };
        let stream = name(self, &mut obj, "stream");
        let consumer = name(self, &mut obj, "consumer");
        let max_ack_pending = match obj.get("max_ack_pending") {
            Some(n) => self
                .number(n, "max_ack_pending", 1, 1_000_000)
                .unwrap_or(1000) as i64,
            None => 1000,
        };
        let ack_wait = self.duration(&mut obj, "ack_wait", Duration::from_secs(30));
        let deliver = match obj.get("deliver") {
            Some(n) => match self.choice(n, "`deliver` policy", &["all", "new"]) {
                Some("new") => JetStreamDeliver::New,
                _ => JetStreamDeliver::All,
            },
            None => JetStreamDeliver::All,
        };
        obj.finish(self);
        Some(JetStreamSource {
            stream: stream?,
            consumer: consumer?,
            max_ack_pending,
            ack_wait,
            deliver,
        })
    }

    fn sink(
        &mut self,
        node: &Node,
        route: &str,
        connections: &BTreeMap<String, Connection>,
        captures: &[String],
        what: &'static str,
    ) -> Option<Sink> {
        let mut obj = self.obj(node, what)?;
        let (connection, c) = self.connection_ref(&mut obj, route, connections)?;
        if let Some((what, hint)) = c
            .kind
            .protocol()
            .descriptor()
            .refusal(&connection, End::Sink)
        {
            self.error(obj.pos, what, Some(hint));
            return None;
        }
        let spec = match &c.kind {
            ConnectionKind::Mqtt(_) => {
                obj.what = "an MQTT sink";
                let topic = self.target(&mut obj, "topic", mqtt::names::topic, captures);
                let qos = self.qos(&mut obj, 0);
                let retain = match obj.get("retain") {
                    Some(n) => {
                        match self.choice(n, "`retain` setting", &["true", "false", "source"]) {
                            Some("true") => Retain::Fixed(true),
                            Some("source") => Retain::FromSource,
                            _ => Retain::Fixed(false),
                        }
                    }
                    None => Retain::Fixed(false),
                };
                SinkSpec::Mqtt(MqttSink { topic, qos, retain })
            }
            ConnectionKind::Nats(_) => {
                obj.what = "a NATS sink";
                let subject = self.target(&mut obj, "subject", nats::names::subject, captures);
                let jetstream = self.opt_bool(&mut obj, "jetstream", false);
                SinkSpec::Nats(NatsSink { subject, jetstream })
            }
            ConnectionKind::Http(_) => {
                obj.what = "an HTTP sink";
                let url = self.target(&mut obj, "url", |_| Ok(()), captures);
                let method = self.method(&mut obj, &["POST", "PUT"], HttpMethod::Post);
                SinkSpec::Http(HttpSink { url, method })
            }
            ConnectionKind::SseServer(_) => {
                obj.what = "an sse_server sink";
                let event = self.target(&mut obj, "event", sse::protocol::event_type, captures);
                SinkSpec::SseServer(SseServerSink { event })
            }
            ConnectionKind::MigratoryData(_) => {
                obj.what = "a MigratoryData sink";
                let subject = self.target(
                    &mut obj,
                    "subject",
                    migratorydata::protocol::subject,
                    captures,
                );
                let retained = match obj.get("retained") {
                    Some(n) => {
                        match self.choice(n, "`retained` setting", &["true", "false", "source"]) {
                            Some("true") => Retain::Fixed(true),
                            Some("source") => Retain::FromSource,
                            _ => Retain::Fixed(false),
                        }
                    }
                    None => Retain::Fixed(false),
                };
                let qos = match obj.get("qos") {
                    Some(n) => {
                        match self.choice(n, "MigratoryData qos", &["standard", "guaranteed"]) {
                            Some("guaranteed") => MigratoryDataQos::Guaranteed,
                            _ => MigratoryDataQos::Standard,
                        }
                    }
                    None => MigratoryDataQos::Standard,
                };
                SinkSpec::MigratoryData(MigratoryDataSink {
                    subject,
                    retained,
                    qos,
                })
            }
            // Only `ferry relay` builds standard output (Front::Relay).
            ConnectionKind::Stdio(_) => SinkSpec::Stdio(StdioSink {
                subject: self.target(&mut obj, "subject", |_| Ok(()), captures),
            }),
            // Refused above: ferry only reads it.
            ConnectionKind::Sse(_) => return None,
        };
        let format = self.payload_format(&mut obj);
        let envelope = self.opt_bool(&mut obj, "envelope", false);
        obj.finish(self);
        Some(Sink {
            connection,
            spec,
            format,
            envelope,
        })
    }

    /// A sink's `topic`/`subject`: `auto`, or a template. A template without `{{` is a plain
    /// name and is checked against the protocol's rules right away.
    fn target(
        &mut self,
        obj: &mut Obj,
        key: &'static str,
        rule: fn(&str) -> Result<(), Problem>,
        captures: &[String],
    ) -> Target {
        let Some(node) = obj.get(key) else {
            return Target::Auto;
        };
        let Some(text) = self.string(node, key) else {
            return Target::Auto;
        };
        if text == "auto" {
            return Target::Auto;
        }
        if self.template(node.pos, key, &text, captures)
            && !text.contains("{{")
            && !text.contains("{%")
        {
            self.check(node.pos, rule(&text));
        }
        Target::Template(text)
    }
}

/// The named groups of a source's `match:` regex.
fn capture_names(source: &Source) -> Vec<String> {
    let Some(pattern) = &source.pattern else {
        return Vec::new();
    };
    regex::Regex::new(pattern)
        .map(|re| re.capture_names().flatten().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The first line of a multi-line message (regex errors draw the pattern over several lines).
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(": ")
}

/// A route's name becomes a directory (its spool's, under `state_dir`), a metric label and a
/// URL path segment (`/routes/NAME/tap`): nothing in it may climb out of a directory or cut a
/// path, and it must be printable.
fn route_name(name: &str) -> Result<(), Problem> {
    let hint = || {
        "a route name is also its spool's directory and a URL path segment: use letters, \
         digits, `-`, `_` and `.`, e.g. `sensors-to-nats`"
            .to_string()
    };
    let problem = if name.is_empty() {
        "a route name must not be empty"
    } else if name == "." || name == ".." {
        "a route name must not be `.` or `..`"
    } else if name.contains(['/', '\\']) {
        "a route name must not contain `/` or `\\`"
    } else if name.chars().any(char::is_control) {
        "a route name must not contain control characters (NUL, newline, ...)"
    } else if name.len() > 200 {
        "a route name must not be longer than 200 bytes"
    } else {
        return Ok(());
    };
    Err((problem.to_string(), hint()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup() -> Lookup<'static> {
        Lookup {
            var: &|n| (n == "NATS_URL").then(|| "nats://127.0.0.1:4222".to_string()),
            file: &|_| Ok("s3cret\n".to_string()),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text, "b.yaml", &lookup()) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    const GOOD: &str = r#"
defaults: &mqtt_defaults
  version: "3.1.1"
  keep_alive: 15s
connections:
  plant:
    mqtt:
      <<: *mqtt_defaults
      url: mqtt://user@broker:1884
      password: ${file:/run/secret}
  core:
    nats: { url: "${NATS_URL}", name: ferry }
routes:
  - name: telemetry
    from: { connection: plant, topics: ["sensors/+/temp", "x/#"], qos: 1, share: g }
    filter: '.value != null'
    transform: '{celsius: .value}'
    to:
      - { connection: core, subject: "iot.{{ topic[1] }}.temperature" }
      - { connection: plant, topic: "copy/{{ topic }}", retain: source }
    queue: { max_messages: 5, max_bytes: 1MiB, when_full: drop_oldest }
  - name: back
    from: { connection: core, subject: "cmd.>", queue: workers }
    to: { connection: plant }
"#;

    #[test]
    fn anchors_live_under_x_keys() {
        let text = GOOD.replace("defaults: &mqtt_defaults", "x-defaults: &mqtt_defaults");
        let config = parse(&text, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        let ConnectionKind::Mqtt(m) = &config.connections["plant"].kind else {
            panic!()
        };
        assert_eq!(m.version, MqttVersion::V311, "merged from the anchor");
        let err = parse(GOOD, "b.yaml", &lookup()).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        assert!(
            err.errors[0].message.contains("unknown key `defaults`"),
            "{err}"
        );
    }

    #[test]
    fn decodes_every_field() {
        let text = GOOD.replace(
            "defaults: &mqtt_defaults\n  version: \"3.1.1\"\n  keep_alive: 15s\n",
            "",
        );
        let text = text.replace(
            "      <<: *mqtt_defaults\n",
            "      version: \"3.1.1\"\n      keep_alive: 15s\n",
        );
        let config = parse(&text, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        let ConnectionKind::Mqtt(m) = &config.connections["plant"].kind else {
            panic!()
        };
        assert_eq!(m.version, MqttVersion::V311);
        assert_eq!(m.port, 1884);
        assert_eq!(m.username.as_deref(), Some("user"));
        assert_eq!(m.password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(m.keep_alive, Duration::from_secs(15));
        assert_eq!(m.client_id, "ferry-plant");
        let ConnectionKind::Nats(n) = &config.connections["core"].kind else {
            panic!()
        };
        assert_eq!(n.urls, vec!["nats://127.0.0.1:4222"]);
        let r = &config.routes[0];
        let SourceSpec::Mqtt(s) = &r.from.spec else {
            panic!()
        };
        assert_eq!(
            s.subscriptions(),
            vec!["$share/g/sensors/+/temp", "$share/g/x/#"]
        );
        assert_eq!(r.to.len(), 2);
        assert_eq!(r.queue.when_full, WhenFull::DropOldest);
        assert_eq!(r.queue.max_bytes, 1 << 20);
        let SinkSpec::Mqtt(sink) = &config.routes[1].to[0].spec else {
            panic!()
        };
        assert_eq!(sink.topic, Target::Auto);
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn reports_every_error_with_its_position() {
        let lines = errors(
            "connections:\n  core:\n    nats: { url: nats://x:4222 }\nroutes:\n  - name: r\n    from: { connection: core, subject: \"a b\" }\n    to: { connection: nope, subject: x }\n    filter: '.a =='\n",
        );
        let text = lines.join("\n");
        assert!(
            text.contains("b.yaml:6:40: error: NATS subject `a b` contains whitespace"),
            "{text}"
        );
        assert!(
            text.contains(
                "b.yaml:7:23: error: route `r` names connection `nope`, which is not defined"
            ),
            "{text}"
        );
        assert!(
            text.contains("error: jq expression in `filter` does not compile"),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_suggest() {
        let text = errors("connections:\n  c:\n    nats: { url: nats://x, nmae: a }\nroutes: []\n")
            .join("\n");
        assert!(
            text.contains("b.yaml:3:28: error: unknown key `nmae` in a NATS connection"),
            "{text}"
        );
        assert!(text.contains("hint: did you mean `name`?"), "{text}");
    }

    #[test]
    fn missing_variables_and_bad_values() {
        let text = errors(
            "connections:\n  m:\n    mqtt: { url: \"${NOPE}\", version: 4.5, keep_alive: soon }\nroutes: []\n",
        )
        .join("\n");
        assert!(
            text.contains("environment variable `NOPE` is not set"),
            "{text}"
        );
        assert!(
            text.contains("MQTT version `4.5` is not supported"),
            "{text}"
        );
        assert!(text.contains("`keep_alive` is not a duration"), "{text}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("lots"), None);
    }

    const MAPPING: &str = r#"
connections:
  m: { mqtt: { url: "mqtt://127.0.0.1:1883" } }
  n: { nats: { url: "nats://127.0.0.1:4222" } }
loop_guard: { instance: edge-1, max_hops: 4 }
routes:
  - name: r
    from: { connection: m, topic: "s/#", match: '^s/(?P<room>[^/]+)$', payload_format: text, envelope: true }
    headers: { forward: false, remove: [a, B], set: { room: "{{ match.room }}" } }
    to: { connection: n, subject: "x.{{ match.room }}", payload_format: bytes, envelope: true }
    dead_letter: { connection: n, subject: dead }
"#;

    #[test]
    fn dead_letters_need_a_name_and_headers_a_good_one() {
        let text = errors(&MAPPING.replace("subject: dead }", "}")).join("\n");
        assert!(
            text.contains("a dead-letter sink needs a name of its own"),
            "{text}"
        );
        let text = errors(&MAPPING.replace("set: { room", "set: { Ferry-Hops")).join("\n");
        assert!(
            text.contains("`Ferry-Hops` is one of ferry's own headers"),
            "{text}"
        );
    }

    #[test]
    fn decodes_the_mapping_keys() {
        let config = parse(MAPPING, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.loop_guard.instance.as_deref(), Some("edge-1"));
        assert_eq!(config.loop_guard.max_hops, 4);
        let r = &config.routes[0];
        assert_eq!(r.from.pattern.as_deref(), Some("^s/(?P<room>[^/]+)$"));
        assert_eq!(
            (r.from.format, r.from.envelope),
            (PayloadFormat::Text, true)
        );
        assert_eq!(
            (r.to[0].format, r.to[0].envelope),
            (PayloadFormat::Bytes, true)
        );
        assert!(!r.headers.forward);
        assert_eq!(r.headers.remove, vec!["a", "B"]);
        assert_eq!(r.headers.set[0].0, "room");
        assert_eq!(r.dead_letter.as_ref().unwrap().connection, "n");
    }

    #[test]
    fn reports_mapping_mistakes() {
        let bad = MAPPING
            .replace("(?P<room>[^/]+)$", "(?P<room>[^/]+$")
            .replace("payload_format: bytes", "payload_format: binary")
            .replace("max_hops: 4", "max_hops: 0")
            .replace("set: { room", "set: { \"bad name\"");
        let text = errors(&bad).join("\n");
        assert!(
            text.contains("`match` is not a valid regular expression"),
            "{text}"
        );
        assert!(
            text.contains("`binary` is not a valid payload format"),
            "{text}"
        );
        assert!(text.contains("max_hops"), "{text}");
        assert!(
            text.contains("`bad name` cannot be a header name"),
            "{text}"
        );
        let text = errors(&MAPPING.replace("x.{{ match.room }}", "x.{{ match.site }}")).join("\n");
        assert!(
            text.contains("b.yaml:10:")
                && text.contains("uses `match.site`, which the source's `match:` does not capture"),
            "{text}"
        );
        let text = errors(&MAPPING.replace(
            "dead_letter: { connection: n",
            "dead_letter: { connection: nn",
        ))
        .join("\n");
        assert!(
            text.contains("connection `nn`, which is not defined"),
            "{text}"
        );
    }

    const SSE_SERVER: &str = r#"
admin: { listen: 9090 }
connections:
  m: { mqtt: { url: "mqtt://127.0.0.1:1883" } }
  web: { sse_server: { path: "/events/sensors", cors_origin: "https://dash.example.com" } }
routes:
  - name: r
    from: { connection: m, topic: "s/#" }
    to: { connection: web, event: "{{ topic[1] }}" }
"#;

    #[test]
    fn admin_locks_are_parsed_with_their_defaults() {
        let admin = |admin: &str| {
            let yaml = SSE_SERVER.replace("admin: { listen: 9090 }", admin);
            let config = parse(&yaml, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
            config.admin.unwrap()
        };
        let loopback = admin("admin: {}");
        assert_eq!(loopback.allowed_hosts, ["localhost", "127.0.0.1", "[::1]"]);
        assert_eq!((loopback.token.is_none(), loopback.taps), (true, false));
        assert_eq!(loopback.max_connections, 256);
        assert_eq!(loopback.header_read_timeout, Duration::from_secs(5));
        assert_eq!(loopback.idle_timeout, Duration::from_secs(60));
        assert!(
            admin("admin: { listen: \"0.0.0.0:9\" }")
                .allowed_hosts
                .is_empty()
        );
        let locked = admin(
            "admin: { token: \"${file:/t}\", taps: true, allowed_hosts: [Ferry.Example, \"[::1]\"], max_connections: 9, header_read_timeout: 2s, idle_timeout: 30s, tls: { cert: /c.pem, key: /k.pem } }",
        );
        assert_eq!(locked.token.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(format!("{:?}", locked.token), "Some(***)");
        assert_eq!(locked.allowed_hosts, ["ferry.example", "[::1]"]);
        assert_eq!(locked.max_connections, 9);
        assert_eq!(locked.tls.unwrap().key, PathBuf::from("/k.pem"));
        assert!(
            admin("admin: { allowed_hosts: [a, \"*\"] }")
                .allowed_hosts
                .is_empty()
        );
        for (bad, says, at) in [
            (
                "allowed_hosts: [\"http://x\"]",
                "`http://x` is not a host name",
                40,
            ),
            ("allowed_hosts: [\"x:80\"]", "`x:80` is not a host name", 40),
            (
                "max_connections: 0",
                "`max_connections` must be a whole number",
                41,
            ),
            ("idle_timeout: 0s", "`idle_timeout` cannot be 0", 38),
            ("tls: { cert: /c.pem }", "needs `key`", 29),
        ] {
            let yaml = SSE_SERVER.replace(
                "admin: { listen: 9090 }",
                &format!("admin: {{ listen: 9090, {bad} }}"),
            );
            let text = errors(&yaml).join("\n");
            assert!(text.contains(says), "{bad}: {text}");
            assert!(
                text.contains(&format!("b.yaml:2:{at}:")),
                "{bad} at column {at}: {text}"
            );
        }
    }

    #[test]
    fn admin_listens_on_loopback_by_default() {
        let listen = |admin: &str| {
            let yaml = SSE_SERVER.replace("admin: { listen: 9090 }", admin);
            let config = parse(&yaml, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
            config.admin.unwrap().listen.to_string()
        };
        assert_eq!(
            listen("admin: {}"),
            format!("127.0.0.1:{DEFAULT_ADMIN_PORT}")
        );
        assert_eq!(listen("admin: { listen: 9000 }"), "127.0.0.1:9000");
        assert_eq!(listen("admin: { listen: \"[::]:9000\" }"), "[::]:9000");
        let bad = SSE_SERVER.replace("admin: { listen: 9090 }", "admin: { listen: nine }");
        let text = errors(&bad).join("\n");
        assert!(
            text.contains("`nine` is not an address to listen on"),
            "{text}"
        );
    }

    #[test]
    fn decodes_sse_server_streams() {
        let config = parse(SSE_SERVER, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.admin.as_ref().unwrap().listen,
            "127.0.0.1:9090".parse().unwrap()
        );
        let ConnectionKind::SseServer(s) = &config.connections["web"].kind else {
            panic!()
        };
        assert_eq!(s.path, "/events/sensors");
        assert_eq!((s.buffer, s.keep_alive), (1000, Duration::from_secs(15)));
        assert_eq!(s.cors_origin.as_deref(), Some("https://dash.example.com"));
        let any = SSE_SERVER.replace("\"https://dash.example.com\"", "\"*\"");
        let config = parse(&any, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        let ConnectionKind::SseServer(s) = &config.connections["web"].kind else {
            panic!()
        };
        assert_eq!(s.cors_origin.as_deref(), Some("*"));
    }

    #[test]
    fn refuses_sse_server_mistakes() {
        let text = errors(&SSE_SERVER.replace("admin: { listen: 9090 }\n", "")).join("\n");
        assert!(
            text.contains("serves SSE on the admin listener, which is off"),
            "{text}"
        );
        for (path, says) in [
            ("/healthz", "is the admin listener's own path"),
            ("/metrics", "is the admin listener's own path"),
            ("/routes/warm/tap", "is the admin listener's own path"),
            ("/events/{id}", "is not a path ferry can serve a stream on"),
            ("/caf%C3%A9", "is not a path ferry can serve a stream on"),
            ("events", "is not a path ferry can serve a stream on"),
        ] {
            let text = errors(&SSE_SERVER.replace("/events/sensors", path)).join("\n");
            assert!(text.contains(says), "{path}: {text}");
        }
        for origin in [
            "https://dash.example.com/",
            "https://dash.example.com/app",
            "dash.example.com",
            "ftp://x",
        ] {
            let text = errors(&SSE_SERVER.replace("https://dash.example.com", origin)).join("\n");
            assert!(text.contains("is not an origin"), "{origin}: {text}");
        }
        let two = SSE_SERVER.replace(
            "  web: {",
            "  web2: { sse_server: { path: \"/events/sensors\" } }\n  web: {",
        );
        let text = errors(&two).join("\n");
        assert!(text.contains("both serve `/events/sensors`"), "{text}");
    }
}

#[cfg(test)]
mod web_tests {
    use super::*;

    fn lookup() -> Lookup<'static> {
        Lookup {
            var: &|n| (n == "KEY").then(|| "k3y".to_string()),
            file: &|_| Ok("s3cret\n".to_string()),
        }
    }

    fn errors(text: &str) -> String {
        match parse(text, "b.yaml", &lookup()) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.to_string(),
        }
    }

    const WEB: &str = r#"
state_dir: /tmp/ferry-state
admin: { listen: 9090 }
connections:
  db:
    sse:
      url: https://db.example.com/realtime?x=1
      headers: { x-apikey: "${KEY}" }
      query: { apikey: "${KEY}" }
      idle_timeout: 90s
      handshake:
        on: PB_CONNECT
        url: /api/realtime
        body: '{"clientId": "{{ payload.clientId }}"}'
  hook:
    http: { url: "https://hooks.example.com/in/", timeout: 5s, max_concurrent: 2 }
  browser:
    sse_server: { path: /events, buffer: 50 }
  plant:
    mqtt: { url: mqtt://broker }
routes:
  - name: changes
    from: { connection: db, events: [post, put] }
    to:
      - { connection: plant, topic: "db/{{ event }}" }
      - { connection: hook, url: "{{ event }}", method: PUT }
      - { connection: browser }
"#;

    #[test]
    fn decodes_sse_http_and_sse_server() {
        let config = parse(WEB, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.state_dir(), PathBuf::from("/tmp/ferry-state"));
        assert_eq!(config.admin.unwrap().listen.to_string(), "127.0.0.1:9090");
        let ConnectionKind::Sse(sse) = &config.connections["db"].kind else {
            panic!()
        };
        assert_eq!(
            sse.url.expose(),
            "https://db.example.com/realtime?x=1&apikey=k3y",
            "query parameters are appended"
        );
        assert_eq!(sse.headers[0].1.expose(), "k3y");
        assert_eq!(sse.idle_timeout, Duration::from_secs(90));
        assert!(sse.resume);
        let handshake = sse.handshake.as_ref().unwrap();
        assert_eq!(
            (handshake.on.as_str(), handshake.method),
            ("PB_CONNECT", HttpMethod::Post)
        );
        let ConnectionKind::Http(http) = &config.connections["hook"].kind else {
            panic!()
        };
        assert_eq!((http.max_concurrent, http.timeout.as_secs()), (2, 5));
        let route = &config.routes[0];
        assert_eq!(
            route.from.spec,
            SourceSpec::Sse(SseSource {
                events: vec!["post".into(), "put".into()]
            })
        );
        assert_eq!(
            route.to[1].spec,
            SinkSpec::Http(HttpSink {
                url: Target::Template("{{ event }}".into()),
                method: HttpMethod::Put
            })
        );
        assert_eq!(
            route.to[2].spec,
            SinkSpec::SseServer(SseServerSink {
                event: Target::Auto
            })
        );
    }

    #[test]
    fn sse_input_bounds_have_defaults_and_a_range() {
        let config = parse(WEB, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        let ConnectionKind::Sse(sse) = &config.connections["db"].kind else {
            panic!()
        };
        assert_eq!(
            (sse.max_line_size, sse.max_event_size, sse.max_response_body),
            (16 << 20, 16 << 20, 64 << 10)
        );
        let set = WEB.replace(
            "      idle_timeout: 90s\n",
            "      idle_timeout: 90s\n      max_line_size: 1MiB\n      max_event_size: 2MiB\n      max_response_body: 4KiB\n",
        );
        let config = parse(&set, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        let ConnectionKind::Sse(sse) = &config.connections["db"].kind else {
            panic!()
        };
        assert_eq!(
            (sse.max_line_size, sse.max_event_size, sse.max_response_body),
            (1 << 20, 2 << 20, 4 << 10)
        );
        let tiny = WEB.replace(
            "      idle_timeout: 90s\n",
            "      idle_timeout: 90s\n      max_line_size: 10\n",
        );
        let text = errors(&tiny);
        assert!(
            text.contains("b.yaml:11:22")
                && text.contains("`max_line_size` must be between 1KiB and 1GiB"),
            "{text}"
        );
    }

    #[test]
    fn refuses_wrong_directions_and_missing_pieces() {
        let text = WEB
            .replace("admin: { listen: 9090 }\n", "")
            .replace("{ connection: browser }", "{ connection: db }")
            .replace("from: { connection: db,", "from: { connection: hook,")
            .replace("x-apikey", "x api key");
        let e = errors(&text);
        for expected in [
            "connection `browser` serves SSE on the admin listener, which is off",
            "it cannot be a sink",
            "it cannot be a source",
            "`x api key` is not a valid HTTP header name",
        ] {
            assert!(e.contains(expected), "missing `{expected}` in:\n{e}");
        }
        let e = errors(&WEB.replace("https://db.example.com/realtime?x=1", "ftp://db"));
        assert!(
            e.contains("`ftp://db` is not an http:// or https:// URL"),
            "{e}"
        );
        let e = errors(&WEB.replace("url: /api/realtime", "method: PATCH"));
        assert!(e.contains("a `handshake` needs `url`"), "{e}");
        assert!(e.contains("`PATCH` is not a valid method here"), "{e}");
    }

    const MD: &str = r#"
connections:
  md:
    migratorydata:
      servers: [http://127.0.0.1:8800, "https://md2.example.com"]
      token: ${KEY}
      poll_interval: 250ms
  plant:
    mqtt: { url: mqtt://broker }
routes:
  - name: in
    from: { connection: md, subject: /server/status, history: 5 }
    to: { connection: plant, topic: auto }
  - name: out
    from: { connection: plant, topic: "sensors/#" }
    to: { connection: md, subject: "/sensors/{{ topic[1] }}", retained: true, qos: guaranteed }
"#;

    #[test]
    fn decodes_migratorydata() {
        let config = parse(MD, "b.yaml", &lookup()).unwrap_or_else(|e| panic!("{e}"));
        let ConnectionKind::MigratoryData(md) = &config.connections["md"].kind else {
            panic!()
        };
        assert_eq!(
            md.servers,
            ["http://127.0.0.1:8800/", "https://md2.example.com/"]
        );
        assert_eq!(md.token.expose(), "k3y");
        assert_eq!(md.poll_interval, Duration::from_millis(250));
        assert_eq!(md.timeout, Duration::from_secs(10));
        assert_eq!(
            config.routes[0].from.spec,
            SourceSpec::MigratoryData(MigratoryDataSource {
                subject: "/server/status".into(),
                history: Some(5)
            })
        );
        assert_eq!(
            config.routes[1].to[0].spec,
            SinkSpec::MigratoryData(MigratoryDataSink {
                subject: Target::Template("/sensors/{{ topic[1] }}".into()),
                retained: Retain::Fixed(true),
                qos: MigratoryDataQos::Guaranteed,
            })
        );
    }

    #[test]
    fn refuses_migratorydata_mistakes_without_showing_the_token() {
        let e = errors(
            &MD.replace("subject: /server/status", "subject: server/status")
                .replace("qos: guaranteed", "qos: best")
                .replace("http://127.0.0.1:8800", "http://127.0.0.1:8800/?token=k3y")
                .replace("poll_interval: 250ms", "poll_interval: 0s"),
        );
        for expected in [
            "b.yaml:12:",
            "`server/status` is not a MigratoryData subject: it must start with `/`",
            "`best` is not a valid MigratoryData qos",
            "is not an http:// or https:// server URL",
            "`poll_interval` cannot be 0",
        ] {
            assert!(e.contains(expected), "missing `{expected}` in:\n{e}");
        }
        assert!(!e.contains("k3y"), "{e}");
        let e = errors(&MD.replace("      token: ${KEY}\n", ""));
        assert!(
            e.contains("a MigratoryData connection needs `token`"),
            "{e}"
        );
        let e = errors(&MD.replace("/sensors/{{ topic[1] }}", "sensors"));
        assert!(e.contains("must start with `/`"), "{e}");
    }
}

#[cfg(test)]
mod delivery_tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Config, String> {
        let lookup = Lookup {
            var: &|_| None,
            file: &|_| Ok(String::new()),
        };
        parse(text, "b.yaml", &lookup).map_err(|e| e.to_string())
    }

    const CONNECTIONS: &str = r#"
connections:
  plant: { mqtt: { url: mqtt://broker } }
  legacy: { mqtt: { url: mqtt://broker, version: "3.1.1", clean_start: true, probe: false } }
  core:
    nats:
      url: nats://server
      ping_interval: 5s
      probe: { interval: 2s, timeout: 1s, topic: _FERRY.me }
"#;

    #[test]
    fn decodes_delivery_spool_jetstream_and_probes() {
        let text = format!(
            "{CONNECTIONS}{}",
            r#"routes:
  - name: up
    from: { connection: plant, topic: "s/#", qos: 1 }
    to: { connection: core, subject: iot.s, jetstream: true }
    delivery: at-least-once
    spool: { dir: /tmp/spool-up, max_bytes: 2MiB }
  - name: down
    from:
      connection: core
      subject: "cmd.>"
      jetstream: { stream: CMD, consumer: ferry-cmd, max_ack_pending: 50, ack_wait: 5s, deliver: new }
    to: { connection: plant, topic: cmd, qos: 1 }
    spool: {}
    reconnect_note: &x 1
"#
        );
        // The stray key shows an unknown key is still refused next to the new ones.
        assert!(parse_text(&text).unwrap_err().contains("reconnect_note"));
        let config = parse_text(&text.replace("    reconnect_note: &x 1\n", ""))
            .unwrap_or_else(|e| panic!("{e}"));
        let ConnectionKind::Mqtt(plant) = &config.connections["plant"].kind else {
            panic!()
        };
        // A persistent session by default, with a day of session expiry on MQTT 5.
        assert!(!plant.clean_start);
        assert_eq!(plant.session_expiry, Some(DEFAULT_SESSION_EXPIRY));
        assert_eq!(plant.probe, Some(Probe::default()));
        let ConnectionKind::Mqtt(legacy) = &config.connections["legacy"].kind else {
            panic!()
        };
        assert_eq!((legacy.clean_start, legacy.session_expiry), (true, None));
        assert_eq!(legacy.probe, None);
        let ConnectionKind::Nats(core) = &config.connections["core"].kind else {
            panic!()
        };
        assert_eq!(core.ping_interval, Duration::from_secs(5));
        assert_eq!(
            core.probe,
            Some(Probe {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                topic: Some("_FERRY.me".into()),
            })
        );
        let up = &config.routes[0];
        assert_eq!(up.delivery, Some(Delivery::AtLeastOnce));
        assert_eq!(config.spool_dir(up), Some(PathBuf::from("/tmp/spool-up")));
        assert_eq!(up.spool.as_ref().unwrap().max_bytes, 2 << 20);
        let SinkSpec::Nats(sink) = &up.to[0].spec else {
            panic!()
        };
        assert!(sink.jetstream);
        let down = &config.routes[1];
        assert_eq!(down.delivery, None);
        assert_eq!(
            config.spool_dir(down),
            Some(config.state_dir().join("spool").join("down"))
        );
        let SourceSpec::Nats(source) = &down.from.spec else {
            panic!()
        };
        assert_eq!(
            source.jetstream,
            Some(JetStreamSource {
                stream: "CMD".into(),
                consumer: "ferry-cmd".into(),
                max_ack_pending: 50,
                ack_wait: Duration::from_secs(5),
                deliver: JetStreamDeliver::New,
            })
        );
        assert_eq!(
            delivery::guarantee(down, &config.connections).delivery,
            Delivery::AtLeastOnce
        );
    }

    #[test]
    fn refuses_at_least_once_where_a_side_cannot_keep_it() {
        let route = |from: &str, to: &str, extra: &str| {
            format!(
                "{CONNECTIONS}routes:\n  - name: r\n    from: {from}\n    to: {to}\n    delivery: at-least-once\n{extra}"
            )
        };
        let cases = [
            (
                route(
                    "{ connection: core, subject: a }",
                    "{ connection: plant, topic: a, qos: 1 }",
                    "",
                ),
                "core NATS subscription `a` on `core` has no redelivery",
                "jetstream: { stream: NAME, consumer: NAME }",
            ),
            (
                route(
                    "{ connection: plant, topic: a }",
                    "{ connection: core, subject: a }",
                    "",
                ),
                "at QoS 0, which the broker never redelivers",
                "set `qos: 1` on the source",
            ),
            (
                route(
                    "{ connection: legacy, topic: a, qos: 1 }",
                    "{ connection: core, subject: a }",
                    "",
                ),
                "starts a clean session",
                "remove `clean_start: true`",
            ),
            (
                route(
                    "{ connection: plant, topic: a, qos: 1 }",
                    "{ connection: legacy, topic: b }",
                    "",
                ),
                "publishes to `legacy` at QoS 0",
                "set `qos: 1` on the sink",
            ),
            (
                route(
                    "{ connection: plant, topic: a, qos: 1 }",
                    "{ connection: core, subject: a }",
                    "    queue: { when_full: drop_oldest }\n",
                ),
                "drops messages when it is full",
                "when_full: block",
            ),
        ];
        for (text, what, fix) in cases {
            let error = parse_text(&text).unwrap_err();
            assert!(error.contains("b.yaml:"), "{error}");
            assert!(error.contains(what), "{what:?} not in {error}");
            assert!(error.contains(fix), "{fix:?} not in {error}");
        }
        // A bad name and a probe without interval are refused with the rule.
        let error = parse_text(&route(
            "{ connection: core, subject: a, jetstream: { stream: a.b, consumer: c } }",
            "{ connection: plant, topic: a, qos: 1 }",
            "",
        ))
        .unwrap_err();
        assert!(
            error.contains("`a.b` is not a valid JetStream stream name"),
            "{error}"
        );
    }
}
