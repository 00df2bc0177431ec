//! What a configuration asks to run: a plan per connection some route uses and per route. A
//! reload compares the plans of the new configuration with those that run, and restarts what
//! differs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::loops;
use crate::config::{self, Config, SourceSpec};
use crate::connectors::protocol::Described;

/// What a connection is made of; a connection restarts on a reload when this changes.
#[derive(Clone, PartialEq)]
pub(super) struct ConnectionPlan {
    pub(super) connection: config::Connection,
    /// The routes reading from it: what they subscribe to, the queue they fill.
    pub(super) sources: Vec<PlannedSource>,
    pub(super) state_dir: PathBuf,
}

/// A route reading from a connection: the route itself, shared with the configuration, and
/// what it subscribes with when that is not its own source (see [`PlannedSource::spec`]).
#[derive(Clone)]
pub(super) struct PlannedSource {
    pub(super) route: Arc<config::Route>,
    /// Its source with `no_local`, for the half of a two-way pair; boxed, as few routes
    /// have it.
    no_local: Option<Box<SourceSpec>>,
}

impl PlannedSource {
    /// What the route subscribes to.
    pub(super) fn spec(&self) -> &SourceSpec {
        self.no_local.as_deref().unwrap_or(&self.route.from.spec)
    }
}

/// The connection restarts when a route reading from it subscribes to something else or
/// fills another kind of queue; the rest of the route is its worker's.
impl PartialEq for PlannedSource {
    fn eq(&self, other: &Self) -> bool {
        self.route.name == other.route.name
            && self.spec() == other.spec()
            && self.route.queue == other.route.queue
    }
}

/// What a route's worker is made of; the worker restarts on a reload when this changes.
#[derive(Clone, PartialEq)]
pub(super) struct RoutePlan {
    /// The configuration's own route, shared rather than copied.
    pub(super) route: Arc<config::Route>,
    /// Its sinks (by index) that lie on a loop, where the loop guard applies.
    pub(super) guarded: Vec<usize>,
    pub(super) no_local: bool,
    /// What every route's plan shares.
    pub(super) everywhere: Arc<Everywhere>,
    pub(super) spool_dir: Option<PathBuf>,
}

/// What the mapping of every route is made of besides the route itself, one for the whole
/// configuration.
#[derive(PartialEq)]
pub(super) struct Everywhere {
    /// The brokers of the whole configuration.
    brokers: BTreeMap<String, String>,
    loop_guard: config::LoopGuard,
    pub(super) instance: Arc<str>,
}

/// Every connection a route uses: its source's, its sinks', its dead-letter sink's.
pub(super) fn route_connections(route: &config::Route) -> impl Iterator<Item = &String> {
    std::iter::once(&route.from.connection)
        .chain(route.to.iter().map(|s| &s.connection))
        .chain(route.dead_letter.iter().map(|s| &s.connection))
}

/// What a configuration asks to run: a plan per connection some route uses and per route.
pub(super) struct Plans {
    pub(super) connections: BTreeMap<String, ConnectionPlan>,
    pub(super) routes: BTreeMap<String, RoutePlan>,
    pub(super) analysis: loops::Analysis,
}

impl Plans {
    pub(super) fn of(config: &Config) -> Plans {
        let analysis = loops::analyse(config);
        let everywhere = Arc::new(Everywhere {
            brokers: analysis.brokers.clone(),
            loop_guard: config.loop_guard.clone(),
            instance: instance_name(config).into(),
        });
        let state_dir = config.state_dir();
        let mut connections = BTreeMap::new();
        let mut routes = BTreeMap::new();
        for (index, route) in config.routes.iter().enumerate() {
            for name in route_connections(route) {
                if let Some(c) = config.connections.get(name) {
                    connections
                        .entry(name.clone())
                        .or_insert_with(|| ConnectionPlan {
                            connection: c.clone(),
                            sources: Vec::new(),
                            state_dir: state_dir.clone(),
                        });
                }
            }
            let no_local = analysis.no_local.contains(&index);
            if let Some(plan) = connections.get_mut(&route.from.connection) {
                plan.sources.push(PlannedSource {
                    route: route.clone(),
                    // The other half of a two-way pair publishes here: let the broker keep
                    // our own publishes from coming back at all (MQTT 5), rather than drop
                    // them later.
                    no_local: no_local.then(|| {
                        let protocol = route.from.spec.protocol();
                        Box::new(protocol.descriptor().with_no_local(&route.from.spec))
                    }),
                });
            }
            routes.insert(
                route.name.clone(),
                RoutePlan {
                    route: route.clone(),
                    guarded: (0..route.to.len())
                        .filter(|sink| analysis.guarded.contains(&(index, *sink)))
                        .collect(),
                    no_local,
                    everywhere: everywhere.clone(),
                    spool_dir: config.spool_dir(route),
                },
            );
        }
        Plans {
            connections,
            routes,
            analysis,
        }
    }
}

/// The name this ferry marks what it publishes with: `loop_guard.instance`, else the host name.
pub fn instance_name(config: &Config) -> String {
    match &config.loop_guard.instance {
        Some(name) => name.clone(),
        None => crate::config::values::host_name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Lookup, parse};

    /// The source each connection's plan subscribes with, by route.
    fn planned_sources(yaml: &str) -> BTreeMap<String, SourceSpec> {
        Plans::of(&config(yaml))
            .connections
            .into_values()
            .flat_map(|plan| plan.sources)
            .map(|source| (source.route.name.clone(), source.spec().clone()))
            .collect()
    }

    fn config(yaml: &str) -> Config {
        parse(yaml, "test.yaml", &Lookup::system()).unwrap_or_else(|e| panic!("{e}"))
    }

    const TWO_ROUTES: &str = r#"
connections:
  mq: { mqtt: { url: "mqtt://localhost:1883" } }
  nc: { nats: { url: "nats://localhost:4222" } }
routes:
  - name: temps
    from: { connection: mq, topic: "site/+/temp" }
    to: { connection: nc, subject: "temps.out" }
  - name: levels
    from: { connection: mq, topic: "site/+/level" }
    to: { connection: nc, subject: "levels.out" }
"#;

    /// A route's plan, and its connection's, hold the configuration's own route: at thousands
    /// of routes a copy of each was megabytes.
    #[test]
    fn the_plans_share_the_configurations_routes() {
        let config = config(TWO_ROUTES);
        let plans = Plans::of(&config);
        for route in &config.routes {
            assert!(Arc::ptr_eq(&plans.routes[&route.name].route, route));
        }
        let sources = &plans.connections["mq"].sources;
        assert_eq!(sources.len(), 2);
        for (source, route) in sources.iter().zip(&config.routes) {
            assert!(Arc::ptr_eq(&source.route, route));
            assert_eq!(source.spec(), &route.from.spec);
        }
    }

    /// A reload compares the plans by what the routes say, not by which copy they are: a
    /// changed route gets a new plan (its worker restarts), its source's connection restarts
    /// only when what it subscribes to changed, and an unchanged route keeps running.
    #[test]
    fn a_changed_route_changes_its_plan_and_only_a_changed_source_its_connection() {
        let old = Plans::of(&config(TWO_ROUTES));
        let same = Plans::of(&config(TWO_ROUTES));
        assert!(old.routes["temps"] == same.routes["temps"]);
        assert!(old.connections["mq"] == same.connections["mq"]);

        let new_sink = Plans::of(&config(&TWO_ROUTES.replace("temps.out", "temps.new")));
        assert!(old.routes["temps"] != new_sink.routes["temps"]);
        assert!(old.routes["levels"] == new_sink.routes["levels"]);
        assert!(old.connections["mq"] == new_sink.connections["mq"]);

        let new_source = Plans::of(&config(&TWO_ROUTES.replace("site/+/temp", "plant/+/temp")));
        assert!(old.routes["temps"] != new_source.routes["temps"]);
        assert!(old.connections["mq"] != new_source.connections["mq"]);
        assert!(old.connections["nc"] == new_source.connections["nc"]);
    }

    fn no_local(spec: &SourceSpec) -> bool {
        match spec {
            SourceSpec::Mqtt(mqtt) => mqtt.no_local,
            other => panic!("not an MQTT source: {other:?}"),
        }
    }

    /// A two-way bridge over MQTT 5 subscribes with `no_local`, so the broker keeps ferry's own
    /// publishes from coming back; a one-way route does not ask for it.
    #[test]
    fn the_mqtt_half_of_a_two_way_bridge_subscribes_with_no_local() {
        let two_way = |version: &str| {
            format!(
                r#"
connections:
  mq: {{ mqtt: {{ url: "mqtt://localhost:1883", version: "{version}" }} }}
  nc: {{ nats: {{ url: "nats://localhost:4222" }} }}
routes:
  - name: up
    from: {{ connection: mq, topic: "bridge/#" }}
    to: {{ connection: nc, subject: auto }}
  - name: down
    from: {{ connection: nc, subject: "bridge.>" }}
    to: {{ connection: mq, topic: auto }}
"#
            )
        };
        assert!(no_local(&planned_sources(&two_way("5"))["up"]));

        let one_way = two_way("5").replace("bridge.>", "elsewhere.>");
        assert!(!no_local(&planned_sources(&one_way)["up"]));
    }
}
