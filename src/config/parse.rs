//! The YAML tree to the typed [`Config`], collecting every error on the way.
//!
//! serde's derive stops at the first error; operators fixing a file want them all, each with its
//! position and a hint. So the typed model is filled by hand from the positioned tree: each
//! mapping is an [`Obj`] that remembers which keys were asked for, and reports the rest as
//! unknown with a "did you mean".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::connections::Reader;
use super::diagnostics::{ConfigErrors, Diagnostic, did_you_mean};
use super::interpolate::{Lookup, interpolate};
use super::model::*;
use super::ranges::{
    DURATION_HINT, NumberProblem, SIZE_HINT, check_duration, check_size, duration_of_seconds,
};
#[cfg(test)]
use super::ranges::{parse_duration, parse_size};
use super::yaml::{self, Key, Node, Pos, Value};
use super::{admin_listener, decode, delivery};
use crate::mapping::{jq, loops, marker, names};

/// Parses and validates the text of a configuration file called `file`.
pub fn parse(text: &str, file: &str, lookup: &Lookup) -> Result<Config, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        file: file.to_string(),
        errors,
    };
    let root = yaml::parse(text).map_err(|(pos, message)| {
        fail(vec![Diagnostic {
            pos,
            message: format!("invalid YAML: {message}"),
            hint: None,
        }])
    })?;
    let mut d = Decoder {
        lookup,
        errors: Vec::new(),
        broken: Vec::new(),
    };
    let config = d.config(&root);
    match config {
        Some(config) if d.errors.is_empty() => Ok(config),
        _ => {
            d.errors.sort_by_key(|e| (e.pos.line, e.pos.col));
            Err(fail(d.errors))
        }
    }
}

struct Decoder<'a> {
    lookup: &'a Lookup<'a>,
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
    /// The reader of the sections converted to their serde types, reporting here.
    fn reader(&mut self) -> Reader<'_> {
        Reader {
            lookup: self.lookup,
            errors: &mut self.errors,
        }
    }

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
        let admin = top
            .get("admin")
            .and_then(|n| admin_listener::read(n, self.lookup, &mut self.errors));
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
        let guard: LoopGuard = match decode::section(node, self.lookup) {
            Ok(guard) => guard,
            Err(errors) => {
                self.errors.extend(errors);
                return LoopGuard::default();
            }
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
        let mut obj = self.obj(node, "a connection")?;
        let reconnect = match obj.get("reconnect") {
            Some(node) => self.reader().reconnect(node),
            None => Reconnect::default(),
        };
        const PROTOCOLS: [&str; 6] = ["mqtt", "nats", "sse", "http", "sse_server", "migratorydata"];
        let given: Vec<(&'static str, &Node)> = PROTOCOLS
            .iter()
            .filter_map(|p| obj.get(p).map(|n| (*p, n)))
            .collect();
        let kind = match given.as_slice() {
            [("mqtt", n)] => self.reader().mqtt(&name, n).map(ConnectionKind::Mqtt),
            [("nats", n)] => self.reader().nats(n).map(ConnectionKind::Nats),
            [("sse", n)] => self.reader().sse(n).map(ConnectionKind::Sse),
            [("http", n)] => self.reader().http(n).map(ConnectionKind::Http),
            [("migratorydata", n)] => self
                .reader()
                .migratorydata(n)
                .map(ConnectionKind::MigratoryData),
            [(_, n)] => self.reader().sse_server(n).map(ConnectionKind::SseServer),
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

    /// Records a name-rule problem; true when there was none.
    fn check(&mut self, pos: Pos, result: Result<(), names::Problem>) -> bool {
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
            stop_after: None,
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
                        if names::nats_header(&key.name, "").is_err() {
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

    /// Compiles a template (reporting what is wrong with it); true when it is usable.
    fn template(&mut self, pos: Pos, key: &str, text: &str, captures: &[String]) -> bool {
        self.reader().template(pos, key, text, captures)
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
        self.reader().source(node, name, c)
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
        self.reader().sink(node, name, c, captures)
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
fn route_name(name: &str) -> Result<(), names::Problem> {
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
        assert_eq!(
            plant.session_expiry,
            Some(Duration::from_secs(24 * 60 * 60))
        );
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
