//! What a configuration asks to run: a plan per connection some route uses and per route. A
//! reload compares the plans of the new configuration with those that run, and restarts what
//! differs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::loops;
use crate::config::{self, Config, SourceSpec};

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
    pub(super) brokers: BTreeMap<String, String>,
    pub(super) loop_guard: config::LoopGuard,
    pub(super) instance: String,
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
        let instance = instance_name(config);
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
            let mut spec = route.from.spec.clone();
            if let SourceSpec::Mqtt(mqtt) = &mut spec
                && no_local
            {
                // The other half of a two-way pair publishes here: let the broker keep our
                // own publishes from coming back at all (MQTT 5), rather than drop them later.
                mqtt.no_local = true;
            }
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
                    brokers: analysis.brokers.clone(),
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
        None => host_name(),
    }
}

/// The machine's host name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferry".to_string())
}
