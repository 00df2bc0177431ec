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
    /// The routes reading from it: name, what they subscribe to, the queue they fill.
    pub(super) sources: Vec<(String, SourceSpec, config::Queue)>,
    pub(super) state_dir: PathBuf,
}

/// What a route's worker is made of; the worker restarts on a reload when this changes.
#[derive(Clone, PartialEq)]
pub(super) struct RoutePlan {
    pub(super) route: config::Route,
    /// Its sinks (by index) that lie on a loop, where the loop guard applies.
    pub(super) guarded: Vec<usize>,
    pub(super) no_local: bool,
    /// The brokers of the whole configuration, one map every route's plan shares.
    pub(super) brokers: Arc<BTreeMap<String, String>>,
    pub(super) loop_guard: config::LoopGuard,
    pub(super) instance: Arc<str>,
    pub(super) spool_dir: Option<PathBuf>,
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
        let instance: Arc<str> = instance_name(config).into();
        let brokers = Arc::new(analysis.brokers.clone());
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
            let spec = if no_local {
                // The other half of a two-way pair publishes here: let the broker keep our
                // own publishes from coming back at all (MQTT 5), rather than drop them later.
                let protocol = route.from.spec.protocol();
                protocol.descriptor().with_no_local(&route.from.spec)
            } else {
                route.from.spec.clone()
            };
            if let Some(plan) = connections.get_mut(&route.from.connection) {
                plan.sources
                    .push((route.name.clone(), spec, route.queue.clone()));
            }
            routes.insert(
                route.name.clone(),
                RoutePlan {
                    route: route.clone(),
                    guarded: (0..route.to.len())
                        .filter(|sink| analysis.guarded.contains(&(index, *sink)))
                        .collect(),
                    no_local,
                    brokers: brokers.clone(),
                    loop_guard: config.loop_guard.clone(),
                    instance: instance.clone(),
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
        let config = parse(yaml, "test.yaml", &Lookup::system()).unwrap_or_else(|e| panic!("{e}"));
        Plans::of(&config)
            .connections
            .into_values()
            .flat_map(|plan| plan.sources)
            .map(|(route, spec, _)| (route, spec))
            .collect()
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
