//! Loops between routes, found before anything runs.
//!
//! A two-way bridge (MQTT `bridge/#` → NATS, NATS `bridge.>` → MQTT) feeds each message back to
//! where it came from, forever. At run time ferry marks what it publishes (NATS headers, MQTT 5
//! user properties: the instance, the connections the message entered on and was published to,
//! a hop count) and never publishes a message to a connection it has already been on. That guard
//! must only apply to sinks that can close a loop: a deliberate "mirror" route back to the
//! origin broker under a topic nothing subscribes to has to keep working. This module is the
//! static analysis that says which sinks those are, and whether the guard can really stop each
//! loop: MQTT 3.1.1 has no user properties, so the marker is lost on every hop through it.
//!
//! The route graph: one node per route, and an edge from route `r` through its sink `k` to
//! route `r'` when sink `k` publishes to the broker `r'` subscribes on, under names `r'`'s
//! filter(s) may match. Names are estimated from the sink's `auto` conversion or its template;
//! every estimate errs towards more overlap, since a missed loop is worse than a guarded sink.
//! The graph and its cycles are built in `route_graph`, at a cost that grows with the routes
//! and edges rather than with their pairs; whether two names meet is `overlap`'s.
//!
//! What each protocol contributes (its wildcards, its servers, whether it carries the marker)
//! comes from its [`Descriptor`](crate::connectors::protocol::Descriptor).
//!
//! Pure code: no I/O, only the validated [`Config`]. It lives with the configuration checks,
//! not in `mapping`: it reads the whole configuration at once, where mapping works on one route.

mod overlap;
mod route_graph;

use std::collections::{BTreeMap, BTreeSet};

use super::model::{
    Config, Connection, ConnectionKind, MqttVersion, Protocol, Route, Sink, Target,
};
use super::resolved::{ResolvedRoute, ResolvedSink};
use crate::connectors::protocol::{Described, Subscribes, Wildcards};
use crate::mapping::codec::{filter_to_subjects, subject_to_topic};
use overlap::overlaps;
use route_graph::{Edge, RouteGraph};

/// What the analysis found: where the run-time guard applies, and every loop with its verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Analysis {
    /// (route index, sink index) pairs that lie on at least one cycle: the runtime guard
    /// applies there, and only there. Exact, even when the cycle list is truncated.
    pub guarded: BTreeSet<(usize, usize)>,
    /// Routes whose MQTT 5 source subscriptions can use `no_local`: everything ferry itself
    /// publishes on that connection and the route could receive back would be dropped by the
    /// guard anyway, so the broker need not send it.
    pub no_local: BTreeSet<usize>,
    /// Every simple cycle of the route graph (up to a cap), each starting at its lowest route.
    pub cycles: Vec<Cycle>,
    /// `true` when there were more cycles than could be listed: verdicts may be missing.
    pub truncated: bool,
    /// Each connection's broker, named by the first (in name order) connection to the same
    /// server. The run-time marker should record these, so a message that left through one
    /// connection is recognised before it returns through another to the same broker.
    pub brokers: BTreeMap<String, String>,
}

/// One loop: a route publishes what the next one receives, around back to the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    pub hops: Vec<Hop>,
    pub verdict: Verdict,
}

/// One step of a loop: a route's sink, publishing what the next route in the loop receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub route: usize,
    pub sink: usize,
    /// The connection the sink publishes to.
    pub connection: String,
    /// The names the sink may publish, as patterns in its protocol's syntax.
    pub names: Vec<String>,
    /// `false` when the sink's connection is MQTT 3.1.1: the marker is lost on this hop.
    pub marked: bool,
}

/// Whether the run-time guard can stop a loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every hop carries the marker: a message is dropped before it would return to a
    /// connection it has been on, the one it entered on included.
    Guarded,
    /// One hop crosses an MQTT 3.1.1 connection, where the marker is lost. The guard still
    /// stops the loop, but a message that entered elsewhere comes back once: it is published
    /// on `connection` under `topics`, received there as new, and relayed round again.
    EchoOnce {
        connection: String,
        topics: Vec<String>,
    },
    /// Nothing remembers where the message has been (two hops or more over MQTT 3.1.1, or a
    /// route feeding itself over 3.1.1): an endless loop. `ferry check` refuses the config.
    Unguarded { connections: Vec<String> },
}

impl Cycle {
    /// The loop for a person, e.g. route up (plant `bridge/#` → core `bridge`, `bridge.>`) →
    /// route down (core `bridge.>` → plant `bridge/#`) → route up.
    pub fn describe(&self, config: &Config) -> String {
        let mut parts: Vec<String> = self
            .hops
            .iter()
            .map(|hop| {
                let route = &config.routes[hop.route];
                format!(
                    "route {} ({} {} → {} {})",
                    route.name,
                    route.from.connection,
                    quoted(&route.from.spec.names()),
                    hop.connection,
                    quoted(&hop.names),
                )
            })
            .collect();
        if let Some(first) = self.hops.first() {
            parts.push(format!("route {}", config.routes[first.route].name));
        }
        parts.join(" → ")
    }
}

/// Patterns in backticks, separated by commas.
fn quoted(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds every loop in `config`'s routes, where the guard applies, and where `no_local` is safe.
pub fn analyse(config: &Config) -> Analysis {
    let brokers = brokers(config);
    let graph = RouteGraph::new(config, &brokers);
    let guarded = graph.on_cycles();
    let no_local = no_local(config, &graph.edges, &guarded);
    let (found, truncated) = graph.simple_cycles();
    let cycles = found.into_iter().map(|path| cycle(config, &path)).collect();
    Analysis {
        guarded,
        no_local,
        cycles,
        truncated,
        brokers,
    }
}

// ---------------------------------------------------------------------------------------------
// Names: what a source subscribes to and what a sink may publish.

/// The wildcards of a source's or sink's protocol; `None` for those the loop analysis leaves
/// out (no ferry sink publishes to an SSE stream's event types; HTTP and `sse_server` sinks feed
/// no route).
fn wildcards(protocol: Protocol) -> Option<Wildcards> {
    protocol.descriptor().wildcards()
}

/// Whether `route`'s source subscribes to the name `name` (a topic or subject of its protocol,
/// or an SSE event type).
pub fn receives(route: &Route, name: &str) -> bool {
    let source = &route.from.spec;
    match wildcards(source.protocol()) {
        Some(w) => source
            .names()
            .iter()
            .any(|filter| overlaps(name, filter, w)),
        None => source.protocol().descriptor().takes(source, name),
    }
}

/// The names a route's sink `sink` may publish, as patterns in the sink protocol's syntax.
fn sink_names(route: &Route, sink: usize) -> Vec<String> {
    let spec = &route.to[sink].spec;
    let Some(to) = wildcards(spec.protocol()) else {
        return Vec::new();
    };
    let source = &route.from.spec;
    match spec.target() {
        Target::Auto => match wildcards(source.protocol()) {
            Some(_) => auto_names(&source.names(), source.protocol(), spec.protocol()),
            // SSE event types become names as they are; no types listed means any name.
            None => match source.names() {
                events if events.is_empty() => vec![to.rest.to_string()],
                events => events,
            },
        },
        Target::Template(template) => vec![template_pattern(template, to)],
    }
}

/// `auto` publishes the source's own names, converted: the source filters, converted.
fn auto_names(filters: &[String], from: Protocol, to: Protocol) -> Vec<String> {
    match (from, to) {
        // MQTT `a/#` also receives `a` itself, which NATS `a.>` would not cover: the codec's
        // filter conversion names both, as nats-server subscribes both.
        (Protocol::Mqtt, Protocol::Nats) => {
            filters.iter().flat_map(|f| filter_to_subjects(f)).collect()
        }
        (Protocol::Nats, Protocol::Mqtt) => filters.iter().map(|s| subject_to_topic(s)).collect(),
        _ => filters.to_vec(),
    }
}

/// The names a template may render, as one pattern. Each level of pure literal text stays; a
/// level with an expression becomes a one-level wildcard, unless the expression may span levels
/// (see [`spans_levels`]): then the rest is a multi-level wildcard. Control blocks (`{% %}`)
/// and comments make it a multi-level wildcard from the start.
fn template_pattern(template: &str, syntax: Wildcards) -> String {
    if template.contains("{%") || template.contains("{#") {
        return syntax.rest.to_string();
    }
    let mut levels: Vec<String> = Vec::new();
    let mut literal = String::new();
    let mut has_expression = false;
    let mut rest = template;
    loop {
        let (text, expression, after) = match rest.split_once("{{") {
            Some((text, tail)) => match tail.split_once("}}") {
                Some((expression, after)) => (text, Some(expression), after),
                None => (rest, None, ""),
            },
            None => (rest, None, ""),
        };
        for (i, piece) in text.split(syntax.separator).enumerate() {
            if i > 0 {
                levels.push(level(&literal, has_expression, syntax));
                literal.clear();
                has_expression = false;
            }
            literal.push_str(piece);
        }
        let Some(expression) = expression else {
            levels.push(level(&literal, has_expression, syntax));
            break;
        };
        if spans_levels(expression) {
            levels.push(syntax.rest.to_string());
            break;
        }
        has_expression = true;
        rest = after;
    }
    levels.join(&syntax.separator.to_string())
}

/// One level of a template's pattern: its literal text, or a one-level wildcard.
fn level(literal: &str, has_expression: bool, syntax: Wildcards) -> String {
    if has_expression {
        syntax.one_level.to_string()
    } else {
        literal.to_string()
    }
}

/// Whether a template expression may render several levels: the whole `topic` or `subject`
/// (not indexed), or a filter that rewrites a whole name (`nats`, `mqtt`, `replace`, `join`).
/// Anything else (an index, a payload field, a header) is taken to be one level.
fn spans_levels(expression: &str) -> bool {
    identifiers(expression).into_iter().any(|(start, end)| {
        let word = &expression[start..end];
        let before = expression[..start].trim_end().chars().last();
        let after = expression[end..].trim_start().chars().next();
        match word {
            "topic" | "subject" => before != Some('.') && after != Some('['),
            "nats" | "mqtt" | "replace" | "join" => before == Some('|'),
            _ => false,
        }
    })
}

/// The byte ranges of the identifiers in a template expression, outside string literals.
fn identifiers(expression: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut quote: Option<char> = None;
    let mut start: Option<usize> = None;
    for (i, c) in expression.char_indices() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        let word_char = c.is_alphanumeric() || c == '_';
        match (start, word_char) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                found.push((s, i));
                start = None;
            }
            _ => {}
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
        }
    }
    if let Some(s) = start {
        found.push((s, expression.len()));
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Brokers: which connections reach the same server.

/// Each connection's broker: connections of one protocol that share a server (MQTT host:port,
/// NATS any URL's host:port, counted transitively, since URLs of one cluster fail over to each
/// other) are one broker, named by the first of them in name order.
fn brokers(config: &Config) -> BTreeMap<String, String> {
    let names: Vec<&Connection> = config.connections.values().collect();
    let mut group: Vec<usize> = (0..names.len()).collect();
    for i in 0..names.len() {
        for j in 0..i {
            if same_server(names[i], names[j]) {
                let (gi, gj) = (group[i], group[j]);
                let low = gi.min(gj);
                for g in group.iter_mut() {
                    if *g == gi || *g == gj {
                        *g = low;
                    }
                }
            }
        }
    }
    names
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), names[group[i]].name.clone()))
        .collect()
}

/// Whether two connections of the same protocol point at a common server.
fn same_server(a: &Connection, b: &Connection) -> bool {
    let protocol = a.kind.protocol();
    if protocol != b.kind.protocol() {
        return false;
    }
    let servers = |c: &Connection| -> Vec<String> {
        protocol
            .descriptor()
            .servers(&c.kind)
            .iter()
            .map(|(host, port)| server(host, *port))
            .collect()
    };
    let theirs = servers(b);
    servers(a).iter().any(|s| theirs.contains(s))
}

/// `host:port`, with the names of the loopback interface made one.
fn server(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "127.0.0.1" | "::1" | "[::1]" => "localhost",
        h => h,
    };
    format!("{host}:{port}")
}

// ---------------------------------------------------------------------------------------------
// Verdicts.

/// Whether a connection carries the marker (NATS headers, MQTT 5 user properties; not MQTT
/// 3.1.1). An unknown connection is taken not to.
fn carries_marker(config: &Config, connection: &str) -> bool {
    config
        .connections
        .get(connection)
        .is_some_and(|c| c.kind.protocol().descriptor().carries_marker(&c.kind))
}

/// A cycle's hops and verdict, from its edges.
fn cycle(config: &Config, path: &[Edge]) -> Cycle {
    let hops: Vec<Hop> = path
        .iter()
        .map(|e| {
            let route = &config.routes[e.from];
            let connection = route.to[e.sink].connection.clone();
            Hop {
                route: e.from,
                sink: e.sink,
                marked: carries_marker(config, &connection),
                names: sink_names(route, e.sink),
                connection,
            }
        })
        .collect();
    let verdict = verdict(&hops);
    Cycle { hops, verdict }
}

/// The guard stops a loop when something remembers where the message has been. The marker
/// records the connection a message entered on, so with one unmarked hop the loop still ends
/// when it gets back to that hop's connection, after one echo of what entered elsewhere; with
/// two, or when the only hop is unmarked, every pass looks new.
fn verdict(hops: &[Hop]) -> Verdict {
    let unmarked: Vec<&Hop> = hops.iter().filter(|h| !h.marked).collect();
    match unmarked.as_slice() {
        [] => Verdict::Guarded,
        [hop] if hops.len() >= 2 => Verdict::EchoOnce {
            connection: hop.connection.clone(),
            topics: hop.names.clone(),
        },
        _ => {
            let mut connections: Vec<String> = Vec::new();
            for hop in unmarked {
                if !connections.contains(&hop.connection) {
                    connections.push(hop.connection.clone());
                }
            }
            Verdict::Unguarded { connections }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// no_local.

/// Routes whose MQTT 5 subscriptions can ask the broker not to send back what the same
/// connection published. Route `r`, subscribed on connection `C`, qualifies when all its sinks
/// are guarded and on one connection `D`, and every route that feeds it through a sink on `C`
/// has its source on `D`: what such a route publishes on `C` entered on `D`, so `r`'s guard
/// would drop it before it reached `D` again. The broker's `no_local` just saves the trip.
fn no_local(
    config: &Config,
    edges: &[Edge],
    guarded: &BTreeSet<(usize, usize)>,
) -> BTreeSet<usize> {
    // The edges into each route.
    let mut feeders: Vec<Vec<Edge>> = vec![Vec::new(); config.routes.len()];
    for edge in edges {
        feeders[edge.to].push(*edge);
    }
    config
        .routes
        .iter()
        .enumerate()
        .filter(|&(r, route)| {
            let source = &route.from.connection;
            let on_mqtt5 = config
                .connections
                .get(source)
                .is_some_and(|c| c.kind.protocol().descriptor().has_no_local(&c.kind));
            let Some(first) = route.to.first() else {
                return false;
            };
            let sink = &first.connection;
            let all_guarded_on_one = route
                .to
                .iter()
                .enumerate()
                .all(|(k, s)| &s.connection == sink && guarded.contains(&(r, k)));
            let feeders_from_sink = feeders[r]
                .iter()
                .filter(|e| &config.routes[e.from].to[e.sink].connection == source)
                .all(|e| &config.routes[e.from].from.connection == sink);
            on_mqtt5 && all_guarded_on_one && feeders_from_sink
        })
        .map(|(r, _)| r)
        .collect()
}

impl Analysis {
    /// Route number `index` of `config` (whose analysis this is), resolved.
    pub fn resolve<'c>(
        &self,
        config: &'c Config,
        index: usize,
    ) -> Result<ResolvedRoute<'c>, String> {
        let route = &config.routes[index];
        let connection = |name: &str| {
            config
                .connections
                .get(name)
                .ok_or_else(|| format!("connection {name} is not defined"))
        };
        let sink = |sink: &Sink, guarded: bool| -> Result<ResolvedSink, String> {
            let guard = guarded.then(|| {
                let broker = self.brokers.get(&sink.connection);
                config
                    .connections
                    .keys()
                    .filter(|c| *c == &sink.connection || self.brokers.get(*c) == broker)
                    .cloned()
                    .collect()
            });
            let kind = &connection(&sink.connection)?.kind;
            Ok(ResolvedSink {
                protocol: kind.protocol(),
                guard,
                carries_headers: !matches!(
                    kind,
                    ConnectionKind::Mqtt(mqtt) if mqtt.version == MqttVersion::V311
                ),
            })
        };
        Ok(ResolvedRoute {
            route,
            source_names: connection(&route.from.connection)?.kind.names(),
            sinks: route
                .to
                .iter()
                .enumerate()
                .map(|(k, s)| sink(s, self.guarded.contains(&(index, k))))
                .collect::<Result<_, _>>()?,
            dead_letter: route
                .dead_letter
                .as_ref()
                .map(|s| sink(s, false))
                .transpose()?,
            max_hops: config.loop_guard.max_hops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::route_graph::MAX_CYCLES;
    use super::*;
    use crate::config::{ConnectionKind, Lookup, MqttVersion, parse};

    /// MQTT's and NATS's wildcards.
    fn syntax(protocol: Protocol) -> Wildcards {
        wildcards(protocol).unwrap()
    }

    /// The config of `yaml`, loops and all. Parsing refuses endless loops, which these tests
    /// must see; so MQTT 3.1.1 connections (one line each here) are parsed as MQTT 5 and set
    /// back afterwards.
    fn config(yaml: &str) -> Config {
        let v311: Vec<&str> = yaml
            .lines()
            .filter(|l| l.contains(r#"version: "3.1.1""#))
            .filter_map(|l| l.trim().split(':').next())
            .collect();
        let text = yaml.replace(r#"version: "3.1.1""#, r#"version: "5""#);
        let mut config =
            parse(&text, "test.yaml", &Lookup::system()).unwrap_or_else(|e| panic!("{e}"));
        for name in v311 {
            if let ConnectionKind::Mqtt(m) = &mut config.connections.get_mut(name).unwrap().kind {
                m.version = MqttVersion::V311;
            }
        }
        config
    }

    /// `plant` (MQTT, version as given) and `core` (NATS), bridged both ways under `bridge`.
    fn two_way(version: &str) -> Config {
        config(&format!(
            r#"
connections:
  plant: {{ mqtt: {{ url: "mqtt://plant:1883", version: "{version}" }} }}
  core: {{ nats: {{ url: "nats://core:4222" }} }}
routes:
  - name: up
    from: {{ connection: plant, topic: "bridge/#" }}
    to: {{ connection: core }}
  - name: down
    from: {{ connection: core, subject: "bridge.>" }}
    to: {{ connection: plant }}
"#
        ))
    }

    #[test]
    fn mqtt_overlap() {
        let yes = |a, b| overlaps(a, b, syntax(Protocol::Mqtt));
        assert!(yes("a", "a/#"), "`a/#` receives its parent");
        assert!(yes("a/#", "a"));
        assert!(yes("a/b/c", "a/#"));
        assert!(yes("a/+/c", "+/b/#"));
        assert!(yes("a/", "a/+"), "`+` matches an empty level");
        assert!(!yes("a/b/c", "a/+"));
        assert!(!yes("a/b", "a/c"));
        assert!(!yes("b/#", "a/#"));
        // MQTT 4.7.2: a filter starting with a wildcard never receives a `$` topic ...
        assert!(!yes("$SYS/x", "#"));
        assert!(!yes("$SYS/x", "+/x"));
        assert!(yes("$SYS/x", "$SYS/#"));
        assert!(yes("a/$x", "a/+"), "only the first level counts");
        // ... but a published pattern starting with a wildcard may name any topic.
        assert!(yes("+/x", "$SYS/x"));
        assert!(yes("#", "$SYS/#"));
    }

    #[test]
    fn nats_overlap() {
        let yes = |a, b| overlaps(a, b, syntax(Protocol::Nats));
        assert!(!yes("a", "a.>"), "`>` needs at least one more token");
        assert!(yes("a.b", "a.>"));
        assert!(yes("a.>", "a.b.c"));
        assert!(yes("a.*.c", "*.b.>"));
        assert!(!yes("a.b.c", "a.*"));
        assert!(!yes("a.b", "a.c"));
        assert!(yes("$SYS.x", ">"), "NATS has no `$` rule");
        assert!(yes(">", "*"));
    }

    #[test]
    fn template_patterns() {
        let nats = |t| template_pattern(t, syntax(Protocol::Nats));
        let mqtt = |t| template_pattern(t, syntax(Protocol::Mqtt));
        assert_eq!(nats("iot.{{ topic[1] }}.temperature"), "iot.*.temperature");
        assert_eq!(nats("fwd.{{ topic | nats }}"), "fwd.>");
        assert_eq!(nats("{{ subject }}"), ">");
        assert_eq!(nats("{{ subject[-1] }}.{{ payload.room | lower }}"), "*.*");
        assert_eq!(nats("plain.name"), "plain.name");
        assert_eq!(mqtt("copy/{{ topic }}/x"), "copy/#");
        assert_eq!(mqtt("out/{{ subject | mqtt }}"), "out/#");
        assert_eq!(mqtt("x/{{ subject | replace('.', '/') }}"), "x/#");
        assert_eq!(mqtt("a/b{{ topic[0] }}c/d"), "a/+/d");
        assert_eq!(
            mqtt("x/{{ payload.topic }}"),
            "x/+",
            "a payload field, not the topic"
        );
        assert_eq!(mqtt("x/{{ 'topic' }}"), "x/+", "a string, not the topic");
        assert_eq!(mqtt("{% if true %}a{% endif %}"), "#");
    }

    #[test]
    fn auto_names_keep_the_parent() {
        let filters = ["a/#".to_string(), "b/+".to_string()];
        assert_eq!(
            auto_names(&filters, Protocol::Mqtt, Protocol::Nats),
            ["a", "a.>", "b.*"]
        );
        assert_eq!(
            auto_names(&["a.>".to_string()], Protocol::Nats, Protocol::Mqtt),
            ["a/#"]
        );
    }

    #[test]
    fn same_broker() {
        let c = config(
            r#"
connections:
  a: { mqtt: { url: "mqtt://Broker" } }
  b: { mqtt: { url: "mqtt://broker:1883", version: "3.1.1" } }
  c: { mqtt: { url: "mqtt://broker:1884" } }
  d: { mqtt: { url: "mqtt://127.0.0.1:1883" } }
  e: { mqtt: { url: "mqtt://localhost:1883" } }
  n1: { nats: { url: ["nats://n1:4222", "nats://n2:4222"] } }
  n2: { nats: { url: "tls://n2" } }
  n3: { nats: { url: "nats://n3:4222" } }
  nb: { nats: { url: "nats://broker:1883" } }
routes: []
"#,
        );
        let b = brokers(&c);
        let broker = |name: &str| b[name].as_str();
        assert_eq!(broker("a"), "a");
        assert_eq!(broker("b"), "a", "default port, host case");
        assert_eq!(broker("c"), "c", "another port");
        assert_eq!(broker("e"), "d", "loopback names");
        assert_eq!(broker("n2"), "n1", "a shared URL, default port");
        assert_eq!(broker("n3"), "n3");
        assert_eq!(broker("nb"), "nb", "another protocol");
    }

    #[test]
    fn a_loop_through_two_connections_to_one_broker() {
        let c = config(
            r#"
connections:
  in: { mqtt: { url: "mqtt://plant" } }
  out: { mqtt: { url: "mqtt://plant:1883" } }
  core: { nats: { url: "nats://core" } }
routes:
  - name: up
    from: { connection: in, topic: "a/#" }
    to: { connection: core }
  - name: down
    from: { connection: core, subject: "a.>" }
    to: { connection: out }
"#,
        );
        let a = analyse(&c);
        assert_eq!(a.guarded, BTreeSet::from([(0, 0), (1, 0)]));
        assert_eq!(a.cycles.len(), 1);
    }

    #[test]
    fn two_way_mqtt5_and_nats_is_guarded() {
        let c = two_way("5");
        let a = analyse(&c);
        assert_eq!(a.guarded, BTreeSet::from([(0, 0), (1, 0)]));
        assert_eq!(a.no_local, BTreeSet::from([0]));
        assert_eq!(a.cycles.len(), 1);
        assert_eq!(a.cycles[0].verdict, Verdict::Guarded);
        assert_eq!(
            a.cycles[0].describe(&c),
            "route up (plant `bridge/#` → core `bridge`, `bridge.>`) → \
             route down (core `bridge.>` → plant `bridge/#`) → route up"
        );
        assert!(!a.truncated);
    }

    #[test]
    fn a_mirror_route_is_no_loop() {
        let c = config(
            r#"
connections:
  plant: { mqtt: { url: "mqtt://plant" } }
  core: { nats: { url: "nats://core" } }
routes:
  - name: up
    from: { connection: plant, topic: "bridge/#" }
    to: { connection: core }
  - name: mirror
    from: { connection: core, subject: "bridge.>" }
    to: { connection: plant, topic: "mirror/{{ subject | mqtt }}" }
"#,
        );
        let a = analyse(&c);
        assert!(a.guarded.is_empty());
        assert!(a.cycles.is_empty());
        assert!(a.no_local.is_empty());
    }

    #[test]
    fn two_way_mqtt311_and_nats_echoes_once() {
        let a = analyse(&two_way("3.1.1"));
        assert_eq!(a.guarded, BTreeSet::from([(0, 0), (1, 0)]));
        assert!(a.no_local.is_empty(), "3.1.1 has no no_local");
        assert_eq!(a.cycles.len(), 1);
        assert_eq!(
            a.cycles[0].verdict,
            Verdict::EchoOnce {
                connection: "plant".into(),
                topics: vec!["bridge/#".into()],
            }
        );
    }

    #[test]
    fn a_loop_over_two_mqtt311_connections_is_unguarded() {
        let c = config(
            r#"
connections:
  plant: { mqtt: { url: "mqtt://plant", version: "3.1.1" } }
  edge: { mqtt: { url: "mqtt://edge", version: "3.1.1" } }
routes:
  - name: out
    from: { connection: plant, topic: "x/#" }
    to: { connection: edge }
  - name: in
    from: { connection: edge, topic: "x/+/y" }
    to: { connection: plant, topic: "x/{{ topic[1] }}/z" }
"#,
        );
        let a = analyse(&c);
        assert_eq!(a.cycles.len(), 1);
        assert_eq!(
            a.cycles[0].verdict,
            Verdict::Unguarded {
                connections: vec!["edge".into(), "plant".into()],
            }
        );
    }

    fn self_loop(version: &str) -> Config {
        config(&format!(
            r#"
connections:
  plant: {{ mqtt: {{ url: "mqtt://plant", version: "{version}" }} }}
routes:
  - name: echo
    from: {{ connection: plant, topic: "a/#" }}
    to: {{ connection: plant, topic: "a/x" }}
"#
        ))
    }

    #[test]
    fn a_self_loop_is_unguarded_on_mqtt311() {
        let a = analyse(&self_loop("3.1.1"));
        assert_eq!(a.guarded, BTreeSet::from([(0, 0)]));
        assert_eq!(a.cycles.len(), 1);
        assert_eq!(
            a.cycles[0].verdict,
            Verdict::Unguarded {
                connections: vec!["plant".into()],
            }
        );
    }

    #[test]
    fn a_self_loop_is_guarded_on_mqtt5() {
        let c = self_loop("5");
        let a = analyse(&c);
        assert_eq!(a.guarded, BTreeSet::from([(0, 0)]));
        assert_eq!(a.no_local, BTreeSet::from([0]));
        assert_eq!(a.cycles[0].verdict, Verdict::Guarded);
        assert_eq!(
            a.cycles[0].describe(&c),
            "route echo (plant `a/#` → plant `a/x`) → route echo"
        );
    }

    #[test]
    fn a_three_route_loop() {
        let c = config(
            r#"
connections:
  a: { mqtt: { url: "mqtt://a" } }
  b: { mqtt: { url: "mqtt://b" } }
  n: { nats: { url: "nats://n" } }
routes:
  - name: a-to-n
    from: { connection: a, topic: "t/#" }
    to: [{ connection: n }, { connection: a, topic: "archive/{{ topic }}" }]
  - name: n-to-b
    from: { connection: n, subject: "t.*.x" }
    to: { connection: b }
  - name: b-to-a
    from: { connection: b, topic: "t/+/x" }
    to: { connection: a, topic: "t/{{ topic[1] }}/back" }
"#,
        );
        let a = analyse(&c);
        assert_eq!(a.guarded, BTreeSet::from([(0, 0), (1, 0), (2, 0)]));
        assert_eq!(a.cycles.len(), 1);
        let hops: Vec<(usize, usize)> =
            a.cycles[0].hops.iter().map(|h| (h.route, h.sink)).collect();
        assert_eq!(hops, [(0, 0), (1, 0), (2, 0)]);
        assert_eq!(a.cycles[0].verdict, Verdict::Guarded);
        // `a-to-n` also archives (unguarded); `b-to-a` is fed on `b` by a route from `n`, and a
        // message that entered on `n` must still reach `a`: neither may use no_local.
        assert!(a.no_local.is_empty());
    }

    #[test]
    fn a_dense_graph_is_cut_short_but_fully_guarded() {
        let mut yaml =
            String::from("connections:\n  c: { nats: { url: \"nats://c\" } }\nroutes:\n");
        for i in 0..12 {
            yaml.push_str(&format!(
                "  - {{ name: r{i}, from: {{ connection: c, subject: \">\" }}, to: {{ connection: c, subject: x }} }}\n"
            ));
        }
        let a = analyse(&config(&yaml));
        assert!(a.truncated);
        assert_eq!(a.cycles.len(), MAX_CYCLES);
        assert_eq!(a.guarded.len(), 12);
    }

    /// Two loops hidden among 2,000 routes, one through two routes and one through three, are
    /// both found and named, and no other sink is guarded.
    #[test]
    fn two_loops_among_two_thousand_routes() {
        let mut yaml = String::from(
            "connections:\n  plant: { mqtt: { url: \"mqtt://plant\" } }\n  core: { nats: { url: \"nats://core\" } }\nroutes:\n",
        );
        for i in 0..1000 {
            yaml.push_str(&format!(
                "  - {{ name: up{i}, from: {{ connection: plant, topic: \"site{i}/+/temp\" }}, to: {{ connection: core, subject: \"idle.site{i}\" }} }}\n"
            ));
        }
        for i in 0..997 {
            yaml.push_str(&format!(
                "  - {{ name: down{i}, from: {{ connection: core, subject: \"cmd.site{i}.*\" }}, to: {{ connection: plant, topic: \"commands/site{i}/{{{{ subject[2] }}}}\" }} }}\n"
            ));
        }
        // up123 publishes `idle.site123`, which `echo` takes back to `site123/x/temp`.
        yaml.push_str("  - { name: echo, from: { connection: core, subject: idle.site123 }, to: { connection: plant, topic: site123/x/temp } }\n");
        // down456's commands come back, through two more routes, as a command to the same site.
        yaml.push_str("  - { name: again, from: { connection: plant, topic: commands/site456/# }, to: { connection: core, subject: relay.site456 } }\n");
        yaml.push_str("  - { name: relay, from: { connection: core, subject: relay.site456 }, to: { connection: core, subject: cmd.site456.relayed } }\n");
        let c = config(&yaml);
        assert_eq!(c.routes.len(), 2000);
        let a = analyse(&c);
        let described: Vec<String> = a.cycles.iter().map(|cycle| cycle.describe(&c)).collect();
        assert_eq!(
            described,
            [
                "route up123 (plant `site123/+/temp` → core `idle.site123`) → \
                 route echo (core `idle.site123` → plant `site123/x/temp`) → route up123",
                "route down456 (core `cmd.site456.*` → plant `commands/site456/+`) → \
                 route again (plant `commands/site456/#` → core `relay.site456`) → \
                 route relay (core `relay.site456` → core `cmd.site456.relayed`) → route down456",
            ]
        );
        assert!(
            a.cycles
                .iter()
                .all(|cycle| cycle.verdict == Verdict::Guarded)
        );
        assert_eq!(
            a.guarded,
            BTreeSet::from([(123, 0), (1456, 0), (1997, 0), (1998, 0), (1999, 0)])
        );
        assert!(!a.truncated);
    }
}
