//! The YAML tree to the typed [`Config`], collecting every error on the way.
//!
//! Operators fixing a file want every error at once, each with its position and a hint. Each
//! section (admin, loop guard, a connection's settings, a route and its source, sinks,
//! headers, queue and spool) is checked against the schema of its type and read through serde
//! (`decode.rs`), then checked for what its shape cannot say (`connections/`, `route_ends.rs`,
//! and the route's and connection's checks here). The file's own top level is still read here
//! by hand, as an [`Obj`] that remembers which keys were asked for and reports the rest as
//! unknown with a "did you mean".

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::connections::{ConnectionSection, READ_ON_THEIR_OWN as CONNECTION_SECTIONS};
use super::diagnostics::{ConfigErrors, Diagnostic, did_you_mean};
use super::file::{ConfigFile, READ_ON_THEIR_OWN as FILE_SECTIONS};
use super::interpolate::{Lookup, scalar_text};
use super::loops;
use super::model::*;
#[cfg(test)]
use super::ranges::{parse_duration, parse_size};
use super::reader::Reader;
use super::route_section::{READ_ON_THEIR_OWN, RouteSection};
use super::yaml::{self, Key, Node, Pos, Value};
use super::{admin_listener, decode, delivery, request_route, schema};
use crate::connectors::protocol::PROTOCOLS;
use crate::mapping::{jq, marker};

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
    // One parse of the built-in schema for every section of the document.
    let _schema = schema::hold();
    let mut d = Decoder {
        lookup,
        errors: Vec::new(),
        broken: Vec::new(),
        front,
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
    errors: Vec<Diagnostic>,
    /// Connections whose own errors were reported: routes naming them say nothing more.
    broken: Vec<String>,
    front: Front,
}

impl<'a> Decoder<'a> {
    /// The reader of the sections converted to their serde types, reporting here.
    fn reader(&mut self) -> Reader<'_> {
        Reader::new(self.lookup, &mut self.errors)
    }

    /// What `read` makes of a section; `None` when the section had errors.
    fn read<T>(&mut self, read: impl FnOnce(&mut Reader) -> Option<T>) -> Option<T> {
        let mut reader = self.reader();
        let value = read(&mut reader);
        value.filter(|_| !reader.damaged)
    }

    fn error(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.errors.push(Diagnostic {
            pos,
            message: message.into(),
            hint,
        });
    }

    /// A string value, `${...}` interpolated. Numbers and booleans are taken as their text.
    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        scalar_text(node, what, self.lookup)
            .map_err(|e| self.errors.push(e))
            .ok()
    }

    // ---------------------------------------------------------------------------------------

    fn config(&mut self, root: &Node) -> Option<Config> {
        // The admin listener, loop guard, connections and routes are read on their own, below.
        let read = decode::outer::<ConfigFile>(root, FILE_SECTIONS, self.lookup);
        self.errors.extend(read.errors);
        if !matches!(root.value, Value::Map(_)) {
            return None;
        }
        let loop_guard = match root.get("loop_guard") {
            Some(n) => self.loop_guard(n),
            None => LoopGuard::default(),
        };
        let admin = root
            .get("admin")
            .and_then(|n| admin_listener::read(n, self.lookup, &mut self.errors));
        let mut connections = BTreeMap::new();
        match root.get("connections") {
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
                // Checks across connections.
                self.reader()
                    .served_on_admin_listener(entries, &connections, admin.is_some());
            }
            Some(other) => self.error(
                other.pos,
                format!(
                    "`connections` must be a mapping, found {}",
                    other.value.kind()
                ),
                Some("name each connection: `plant: {mqtt: {url: ...}}`".into()),
            ),
            // Said by the file's schema.
            None => {}
        }
        let mut routes = Vec::new();
        let mut route_positions = Vec::new();
        // A set, not a scan of the routes read so far: a file may hold thousands of routes.
        let mut route_names = HashSet::new();
        match root.get("routes") {
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => {
                for item in items {
                    if let Some(route) = self.route(item, &connections) {
                        if !route_names.insert(route.name.clone()) {
                            self.error(
                                item.pos,
                                format!("two routes are called `{}`", route.name),
                                Some("give every route its own name".into()),
                            );
                        }
                        routes.push(Arc::new(route));
                        route_positions.push(item.pos);
                    }
                }
            }
            Some(other) => self.error(
                other.pos,
                format!("`routes` must be a list, found {}", other.value.kind()),
                Some("start each route with `- name: ...`".into()),
            ),
            // Said by the file's schema.
            None => {}
        }
        let file = read.value?;
        request_route::mark_asking(&routes, &mut connections);
        let config = Config {
            connections,
            routes,
            shutdown_timeout: file.shutdown_timeout,
            startup_timeout: file.startup_timeout,
            threads: file.threads,
            loop_guard,
            state_dir: file.state_dir,
            admin,
        };
        self.refuse_endless_loops(&config, &route_positions);
        Some(config)
    }

    fn loop_guard(&mut self, node: &Node) -> LoopGuard {
        let read = decode::section::<LoopGuard>(node, self.lookup);
        self.errors.extend(read.errors);
        let Some(guard) = read.value else {
            return LoopGuard::default();
        };
        if let Some(name) = &guard.instance
            && (name.is_empty() || name.contains([',', '\r', '\n']))
        {
            self.error(
                node.get("instance").map_or(node.pos, |n| n.pos),
                format!("`{name}` cannot name a ferry instance"),
                Some("use a short name without commas, e.g. the host name".into()),
            );
        }
        guard
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
        if self.front == Front::Relay
            && let Some(n) = node.get("stdio")
        {
            return Some(Connection {
                name,
                kind: ConnectionKind::Stdio(self.read(|r| r.stdio_connection(n))?),
                reconnect: Reconnect::default(),
            });
        }
        let errors = decode::shape::<ConnectionSection>(node, CONNECTION_SECTIONS, self.lookup);
        self.errors.extend(errors);
        if !matches!(node.value, Value::Map(_)) {
            return None;
        }
        let reconnect = match node.get("reconnect") {
            Some(node) => self.reader().reconnect(node),
            None => Reconnect::default(),
        };
        // The protocols a file can name, as the registry lists them; one arm each below, which
        // the compiler asks for when a protocol is added.
        let protocols = PROTOCOLS.iter().filter(|d| d.in_config_files());
        let given: Vec<(Protocol, &Node)> = protocols
            .clone()
            .filter_map(|d| node.get(d.name()).map(|n| (d.protocol(), n)))
            .collect();
        let kind = match given.as_slice() {
            [(Protocol::Mqtt, n)] => self
                .read(|r| r.mqtt_connection(&name, n))
                .map(ConnectionKind::Mqtt),
            [(Protocol::Nats, n)] => self
                .read(|r| r.nats_connection(n))
                .map(ConnectionKind::Nats),
            [(Protocol::Sse, n)] => self.read(|r| r.sse_connection(n)).map(ConnectionKind::Sse),
            [(Protocol::Http, n)] => self
                .read(|r| r.http_connection(n))
                .map(ConnectionKind::Http),
            [(Protocol::SseServer, n)] => self
                .read(|r| r.sse_server_connection(n))
                .map(ConnectionKind::SseServer),
            [(Protocol::HttpServer, n)] => self
                .read(|r| r.http_server_connection(n))
                .map(ConnectionKind::HttpServer),
            [(Protocol::MigratoryData, n)] => self
                .read(|r| r.migratorydata_connection(n))
                .map(ConnectionKind::MigratoryData),
            // Never in a file (`in_config_files`): only `ferry relay` builds it, above.
            [(Protocol::Stdio, _)] => None,
            [] => {
                let keys: Vec<String> = protocols.map(|d| format!("`{}:`", d.name())).collect();
                let (last, rest) = keys.split_last().expect("a file can name some protocol");
                self.error(
                    key.pos,
                    format!("connection `{name}` names no protocol"),
                    Some(format!(
                        "put its settings under {} or {last}",
                        rest.join(", ")
                    )),
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
        Some(Connection {
            name,
            kind: kind?,
            reconnect,
        })
    }

    /// Records a name-rule problem; true when there was none.
    fn check(
        &mut self,
        pos: Pos,
        result: Result<(), crate::connectors::protocol::Problem>,
    ) -> bool {
        match result {
            Ok(()) => true,
            Err((message, hint)) => {
                self.error(pos, message, Some(hint));
                false
            }
        }
    }

    fn route(&mut self, node: &Node, connections: &BTreeMap<String, Connection>) -> Option<Route> {
        if !matches!(node.value, Value::Map(_)) {
            self.error(
                node.pos,
                format!(
                    "expected a mapping for a route, found {}",
                    node.value.kind()
                ),
                Some("write `key: value` pairs, indented under it".into()),
            );
            return None;
        }
        // `stop_after` (`--count`) is the relay's alone: the file's schema does not know it.
        let (stop_after, without_stop);
        let node = match (self.front, &node.value) {
            (Front::Relay, Value::Map(entries)) => {
                stop_after = match node.get("stop_after").map(|n| &n.value) {
                    Some(Value::Int(n)) => u64::try_from(*n).ok().filter(|n| *n > 0),
                    Some(Value::Str(n)) => n.parse().ok().filter(|n| *n > 0),
                    _ => None,
                };
                without_stop = Node {
                    value: Value::Map(
                        entries
                            .iter()
                            .filter(|(k, _)| k.name != "stop_after")
                            .cloned()
                            .collect(),
                    ),
                    ..node.clone()
                };
                &without_stop
            }
            _ => {
                stop_after = None;
                node
            }
        };
        // Its source, sinks, headers, queue and spool are read on their own, below: they
        // depend on the connections they name.
        let read = decode::outer::<RouteSection>(node, READ_ON_THEIR_OWN, self.lookup);
        let damaged = !read.errors.is_empty();
        self.errors.extend(read.errors);
        let section = read.value;
        let at = |key: &str| node.get(key).map_or(node.pos, |n| n.pos);
        let name = section.as_ref().and_then(|r| {
            self.check(at("name"), route_name(&r.name))
                .then(|| r.name.clone())
        });
        let route_name = name.clone().unwrap_or_else(|| "?".into());
        let from = node
            .get("from")
            .and_then(|n| self.source(n, &route_name, connections));
        // Templates may only name the captures the source's `match:` defines.
        let captures = from.as_ref().map(capture_names).unwrap_or_default();
        let captures = &captures;
        let to = match node.get("to") {
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
        let section = section?;
        let transform_budget = self.transform_budget(&section, node);
        let transform = self.jq(section.transform, at("transform"), "transform");
        let filter = self.jq(section.filter, at("filter"), "filter");
        let headers = match node.get("headers") {
            Some(n) => self.header_rules(n, captures),
            None => HeaderRules::default(),
        };
        let queue = match node.get("queue") {
            Some(n) => self.queue(n),
            None => Queue::default(),
        };
        let delivery_node = node.get("delivery");
        let delivery = section.delivery.map(Delivery::from);
        let spool = node.get("spool").and_then(|n| self.spool(n));
        let request = node
            .get("request")
            .and_then(|n| self.reader().section::<Request>(n));
        let dead_letter = node.get("dead_letter").and_then(|n| {
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
        if damaged {
            return None;
        }
        let mut route = Route {
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
            request,
        };
        if route.request.is_some() {
            for (place, message, hint) in request_route::problems(&route, connections) {
                let key = match place {
                    request_route::At::From => "from",
                    request_route::At::To => "to",
                    request_route::At::Spool => "spool",
                };
                self.error(at(key), message, Some(hint));
            }
            route.from.spec.answer_requests();
        }
        // A POST is answered once it is delivered only where the route promises it.
        if matches!(route.from.spec, SourceSpec::HttpServer(_)) {
            let promised = delivery::guarantee(&route, connections).delivery;
            if let SourceSpec::HttpServer(source) = &mut route.from.spec {
                source.confirm = promised == Delivery::AtLeastOnce;
            }
        }
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
        let spool: Spool = self.reader().section(node)?;
        if spool.max_bytes < 1024 * 1024 {
            self.error(
                node.pos,
                "`max_bytes` of a spool must be at least 1MiB",
                Some("write e.g. `max_bytes: 1GiB`".into()),
            );
        }
        Some(spool)
    }

    fn header_rules(&mut self, node: &Node, captures: &[String]) -> HeaderRules {
        let Some(rules) = self.reader().section::<HeaderRules>(node) else {
            return HeaderRules::default();
        };
        let entries = match node.get("set").map(|n| &n.value) {
            Some(Value::Map(entries)) => entries.as_slice(),
            _ => &[],
        };
        for ((name, text), (key, value)) in rules.set.iter().zip(entries) {
            if crate::connectors::nats::names::header(name, "").is_err() {
                self.error(
                    key.pos,
                    format!("`{name}` cannot be a header name"),
                    Some("header names are printable ASCII without spaces or `:`, like `site` or `x-trace-id`".into()),
                );
            } else if marker::is_ferry_header(name) {
                self.error(
                    key.pos,
                    format!("`{name}` is one of ferry's own headers"),
                    Some("ferry sets `Ferry-*` headers itself (loop marker, dead letters); choose another name".into()),
                );
            }
            self.template(value.pos, "headers.set", text, captures);
        }
        rules
    }

    /// Compiles a template (reporting what is wrong with it); true when it is usable.
    fn template(&mut self, pos: Pos, key: &str, text: &str, captures: &[String]) -> bool {
        self.reader().template(pos, key, text, captures)
    }

    /// `transform_timeout` and `transform_memory` of the route at `node`.
    fn transform_budget(&mut self, route: &RouteSection, node: &Node) -> TransformBudget {
        let (timeout, memory) = (route.transform_timeout, route.transform_memory);
        if let Some(at) = node.get("transform_timeout")
            && timeout.is_zero()
        {
            self.error(
                at.pos,
                "`transform_timeout` must be longer than 0",
                Some("write e.g. `transform_timeout: 1s`".into()),
            );
        }
        if let Some(at) = node.get("transform_memory")
            && memory < TransformBudget::MIN_MEMORY
        {
            self.error(
                at.pos,
                "`transform_memory` must be at least 64MiB (the jq worker process itself needs that)",
                Some("write e.g. `transform_memory: 512MiB`".into()),
            );
        }
        TransformBudget { timeout, memory }
    }

    /// The jq program of `key` (written at `pos`), if it compiles.
    fn jq(&mut self, code: Option<String>, pos: Pos, key: &str) -> Option<String> {
        let code = code?;
        match jq::Program::compile(&code) {
            Ok(_) => Some(code),
            Err(message) => {
                self.error(
                    pos,
                    format!("jq expression in `{key}` does not compile: {message}"),
                    Some("check it with `jq` on a sample payload; it must be a jq program, e.g. `{room: .room}`".into()),
                );
                None
            }
        }
    }

    fn queue(&mut self, node: &Node) -> Queue {
        self.reader().section(node).unwrap_or_default()
    }

    /// The `connection:` of the source or sink at `node` (called `what`), checked against the
    /// defined connections.
    fn connection_ref<'c>(
        &mut self,
        node: &Node,
        what: &str,
        route: &str,
        connections: &'c BTreeMap<String, Connection>,
    ) -> Option<(String, &'c Connection)> {
        if !matches!(node.value, Value::Map(_)) {
            self.error(
                node.pos,
                format!("expected a mapping for {what}, found {}", node.value.kind()),
                Some("write `key: value` pairs, indented under it".into()),
            );
            return None;
        }
        let Some(at) = node.get("connection") else {
            self.error(
                node.pos,
                format!("{what} needs `connection`"),
                Some("add `connection: ...`".into()),
            );
            return None;
        };
        let name = self.string(at, "connection")?;
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
                    at.pos,
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
        // Without the protocol the other keys cannot be judged; leave them be.
        let (name, c) = self.connection_ref(node, "a source (`from`)", route, connections)?;
        self.read(|r| r.source(node, name, c))
    }

    fn sink(
        &mut self,
        node: &Node,
        route: &str,
        connections: &BTreeMap<String, Connection>,
        captures: &[String],
        what: &'static str,
    ) -> Option<Sink> {
        let (name, c) = self.connection_ref(node, what, route, connections)?;
        self.read(|r| r.sink(node, name, c, captures))
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

/// A route's name becomes a directory (its spool's, under `state_dir`), a metric label and a
/// URL path segment (`/routes/NAME/tap`): nothing in it may climb out of a directory or cut a
/// path, and it must be printable.
fn route_name(name: &str) -> Result<(), crate::connectors::protocol::Problem> {
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
mod tests;
