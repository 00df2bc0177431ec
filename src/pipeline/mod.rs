//! Routes, queues, acks, supervision and shutdown: everything between the connectors.

pub mod queue;
pub mod route;
pub mod spool;
pub mod status;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, SourceSpec};
use crate::connectors::{self, Runtime};
use crate::mapping::{Mapping, loops};
use route::{RouteCounters, RouteSink, RouteWorker};
use spool::Spool;
use status::{ConnectionStatus, State};

/// A running set of routes and the connections they use.
pub struct Pipeline {
    runtime: Runtime,
    /// Cancelled when the shutdown deadline passed.
    abandon: CancellationToken,
    queues: Vec<queue::RouteOutput>,
    workers: TaskTracker,
    statuses: Vec<ConnectionStatus>,
    shutdown_timeout: Duration,
    /// Per-route counters, by route name.
    pub counters: BTreeMap<String, Arc<RouteCounters>>,
}

impl Pipeline {
    /// Opens every connection a route uses, wires every route, and starts them all.
    pub fn start(config: &Config) -> anyhow::Result<Pipeline> {
        connectors::tls::install_crypto_provider();
        let runtime = Runtime {
            tasks: TaskTracker::new(),
            sources: TaskTracker::new(),
            stop_sources: CancellationToken::new(),
            close: CancellationToken::new(),
        };
        let abandon = CancellationToken::new();
        let mut connections = BTreeMap::new();
        let mut statuses = Vec::new();
        let mut used = |name: &str| -> anyhow::Result<()> {
            if !connections.contains_key(name) {
                let c = config
                    .connections
                    .get(name)
                    .with_context(|| format!("connection {name} is not defined"))?;
                let status = ConnectionStatus::new(name, c.kind.protocol().name());
                statuses.push(status.clone());
                connections.insert(
                    name.to_string(),
                    connectors::open(c, status, &config.state_dir()),
                );
            }
            Ok(())
        };
        for route in &config.routes {
            used(&route.from.connection)?;
            for sink in route.to.iter().chain(&route.dead_letter) {
                used(&sink.connection)?;
            }
        }
        let analysis = loops::analyse(config);
        let instance = instance_name(config);
        for cycle in &analysis.cycles {
            if let loops::Verdict::EchoOnce { .. } = cycle.verdict {
                tracing::warn!("{}", cycle.describe(config));
            }
        }

        let workers = TaskTracker::new();
        let ids = Arc::new(route::MessageIds::default());
        let mut queues = Vec::new();
        let mut counters = BTreeMap::new();
        let mut route_workers = Vec::new();
        for (index, route) in config.routes.iter().enumerate() {
            let (input, output) = queue::bounded(&route.name, route.queue.clone());
            let source = connections
                .get_mut(&route.from.connection)
                .expect("opened above");
            let mut spec = route.from.spec.clone();
            if let SourceSpec::Mqtt(mqtt) = &mut spec
                && analysis.no_local.contains(&index)
            {
                // The other half of a two-way pair publishes here: let the broker keep our
                // own publishes from coming back at all (MQTT 5), rather than drop them later.
                mqtt.no_local = true;
            }
            source
                .add_source(&route.name, &spec, input)
                .with_context(|| format!("route {}", route.name))?;
            let mut sink = |sink: &crate::config::Sink| -> anyhow::Result<RouteSink> {
                let connection = connections.get_mut(&sink.connection).expect("opened above");
                Ok(RouteSink {
                    connection: sink.connection.clone(),
                    sink: connection.add_sink(&sink.spec)?,
                    spool: None,
                })
            };
            let mut sinks: Vec<RouteSink> = route
                .to
                .iter()
                .map(&mut sink)
                .collect::<anyhow::Result<_>>()?;
            let dead_letter = route.dead_letter.as_ref().map(&mut sink).transpose()?;
            let route_counters = Arc::new(RouteCounters::default());
            if let (Some(spool), Some(dir)) = (&route.spool, config.spool_dir(route)) {
                // One spool per sink, so a sink that is up never gets another's backlog twice.
                for (index, sink) in sinks.iter_mut().enumerate() {
                    let dir = dir.join(format!("{index}-{}", sink.connection));
                    let opened = Spool::open(&dir, spool.max_bytes, route_counters.spool_bytes.clone())
                        .with_context(|| format!(
                            "route {}: cannot use the spool directory {}; set the route's `spool: {{ dir: ... }}` or `state_dir:` to a directory ferry may write",
                            route.name,
                            dir.display()
                        ))?;
                    sink.spool = Some(opened);
                }
            }
            counters.insert(route.name.clone(), route_counters.clone());
            queues.push(output.clone());
            route_workers.push(RouteWorker {
                name: route.name.as_str().into(),
                queue: output,
                mapping: Mapping::new(config, index, &analysis, &instance)
                    .map_err(|e| anyhow::anyhow!("route {}: {e}", route.name))?,
                sinks,
                dead_letter,
                counters: route_counters,
                abandon: abandon.clone(),
                warnings: Default::default(),
                at_most_once: route.delivery == Some(crate::config::Delivery::AtMostOnce),
                ids: ids.clone(),
            });
        }
        // Bound before any connection starts, so a taken port fails the start.
        if let Some(admin) = &config.admin {
            let streams = connections.values_mut().filter_map(|c| c.admin_routes());
            crate::admin::AdminListener::bind(admin, streams)?.serve(&runtime);
        }
        for (_, connection) in connections {
            connection.start(&runtime);
        }
        for worker in route_workers {
            workers.spawn(worker.run());
        }
        workers.close();
        Ok(Pipeline {
            runtime,
            abandon,
            queues,
            workers,
            statuses,
            shutdown_timeout: config.shutdown_timeout,
            counters,
        })
    }

    /// Resolves once every connection is up (connected and subscribed), logging `ferry ready`.
    pub async fn ready(&self) {
        loop {
            if self.statuses.iter().all(|s| s.state() == State::Up) {
                tracing::info!(
                    "ferry ready: {} route(s) over {} connection(s)",
                    self.counters.len(),
                    self.statuses.len()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The names of the connections that are not up, each with its state, for the log and
    /// `/readyz` while (or after) startup waits for them.
    pub fn not_up(&self) -> Vec<String> {
        self.statuses
            .iter()
            .filter(|s| s.state() != State::Up)
            .map(|s| format!("{} ({:?})", s.name(), s.state()).to_lowercase())
            .collect()
    }

    /// A handle the systemd watchdog asks whether the supervisor is healthy.
    pub fn health(&self) -> Health {
        Health {}
    }

    /// Replaces the running configuration with `config` (already validated): restarts only the
    /// connections and routes that changed. (Lead is implementing this; for now it only logs.)
    pub async fn reload(&mut self, config: Config) -> ReloadSummary {
        let _ = config;
        tracing::warn!("reload is not implemented yet");
        ReloadSummary::default()
    }

    /// Runs until `stop` resolves, then shuts down: the sources stop reading, what is queued
    /// is delivered within the shutdown timeout, and the connections close cleanly.
    pub async fn run_until(self, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        tokio::select! {
            _ = self.ready() => stop.await,
            _ = &mut stop => {}
        }
        self.shutdown().await;
    }

    /// Shuts down: the sources stop reading, what is queued is delivered within the shutdown
    /// timeout, and the connections close cleanly.
    pub async fn shutdown(self) {
        tracing::info!(
            "shutting down: sources stop, queued messages drain (up to {:?})",
            self.shutdown_timeout
        );
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        self.runtime.stop_sources.cancel();
        // Sources hand over what they already received; a queue that stays full past the
        // deadline (a sink that never comes back) must not hold shutdown up forever.
        self.runtime.sources.close();
        let _ = tokio::time::timeout_at(deadline, self.runtime.sources.wait()).await;
        for q in &self.queues {
            q.close();
        }
        if tokio::time::timeout_at(deadline, self.workers.wait())
            .await
            .is_err()
        {
            let left: usize = self.queues.iter().map(|q| q.len()).sum();
            tracing::warn!(
                "shutdown timeout passed with {left} message(s) undelivered; giving up on them"
            );
            self.abandon.cancel();
            self.workers.wait().await;
            // Nack what is left while the connections are still open, so a source that can
            // (JetStream) hands those messages out again at once rather than after ack_wait.
            for q in &self.queues {
                q.discard();
            }
        }
        self.runtime.close.cancel();
        self.runtime.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.runtime.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within 5s");
        }
        tracing::info!("ferry stopped");
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

/// Answers the systemd watchdog: whether the supervisor is healthy. Cheap to clone.
#[derive(Clone)]
pub struct Health {}

impl Health {
    /// `Err(why)` when something that should run has stopped (a route worker or a connection's
    /// supervisor ended unexpectedly); the watchdog then stops pinging.
    pub fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What a reload changed, for the log.
#[derive(Debug, Default)]
pub struct ReloadSummary {
    pub routes_started: Vec<String>,
    pub routes_restarted: Vec<String>,
    pub routes_stopped: Vec<String>,
    pub routes_unchanged: Vec<String>,
    pub connections_restarted: Vec<String>,
    /// Settings that take effect only at the next start (`admin:`, `state_dir:`), named.
    pub needs_restart: Vec<String>,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "routes started: {}; restarted: {}; stopped: {}; unchanged: {}; connections restarted: {}",
            list(&self.routes_started),
            list(&self.routes_restarted),
            list(&self.routes_stopped),
            list(&self.routes_unchanged),
            list(&self.connections_restarted),
        )?;
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; takes effect only after a restart: {}",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}
