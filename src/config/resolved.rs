//! A route resolved against the rest of the configuration: what the stages that work on one
//! route (the mapping) need to know beyond the route itself, so they never read the whole
//! configuration.

use super::loops::Analysis;
use super::model::{Config, Protocol, Route, Sink};

/// One route and what the configuration around it says about it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedRoute<'c> {
    pub route: &'c Route,
    /// The protocol whose names the source's messages carry: its connection's, or for JSON
    /// lines on standard input the one the lines carry.
    pub source_names: Protocol,
    /// One per sink of `route.to`, in order.
    pub sinks: Vec<ResolvedSink>,
    /// The dead-letter sink's, when the route has one.
    pub dead_letter: Option<ResolvedSink>,
    /// A message that has crossed this many ferry hops is dropped (`loop_guard.max_hops`).
    pub max_hops: u32,
}

/// One sink of a resolved route.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedSink {
    /// Its connection's protocol.
    pub protocol: Protocol,
    /// When the sink lies on a cycle of routes: every connection to its broker, which a
    /// message must not have been on (ferry's loop guard); `None`: the sink is not guarded.
    pub guard: Option<Vec<String>>,
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
            Ok(ResolvedSink {
                protocol: connection(&sink.connection)?.kind.protocol(),
                guard,
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
