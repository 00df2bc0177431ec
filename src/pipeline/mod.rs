//! Routes, queues, acks, supervision, reload and shutdown: everything between the connectors.
//!
//! Starting and reloading are one operation ([`Pipeline::apply`]): compare what runs with what
//! the configuration asks for, stop what changed, start what is new. Starting is applying a
//! configuration to an empty pipeline.
//!
//! What a reload restarts:
//! - a **connection** when its own settings changed, or the set of routes reading from it (what
//!   it subscribes to, and the queues it fills) changed: subscriptions are made when a
//!   connection connects, so a new subscription set means a new connection. Routes that only
//!   publish through it do not count: their sinks can be made on a running connection.
//! - a **route** when its own settings changed, or one of its connections restarts. Its queue,
//!   counters and tap survive when its queue settings did not change, so a route whose mapping
//!   changed loses nothing: the new worker takes the next message from the same queue.
//!
//! Before a source connection stops, the routes it feeds finish what it already gave them
//! (within `shutdown_timeout`), so their acknowledgements still reach the broker on the
//! connection that received them: no duplicates from a reload on a quiet path.

pub mod counters;
pub mod identity;
pub mod jq_worker;
pub mod observe;
mod plans;
mod reload_summary;
pub mod route;
pub mod spool;
pub mod tap;
mod worker_handle;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::loops;
use crate::config::{self, Config};
use crate::connectors::protocol::Described;
use crate::connectors::{self, HttpRoutes, Sinks};
use crate::contracts::ConnectionContext;
use crate::contracts::queue::{self, RouteInput, RouteOutput};
use crate::contracts::status::{ConnectionStatus, State};
use crate::contracts::supervisor::{self, Owner, Supervisor};
use crate::mapping::Mapping;
use route::{MessageIds, RouteCounters, RouteSink, RouteWorker, Suspects};
use spool::Spool;
use worker_handle::WorkerHandle;

pub use plans::instance_name;
use plans::{ConnectionPlan, Plans, RoutePlan, route_connections};
pub use reload_summary::ReloadSummary;

/// Binds the admin listener with the HTTP routes the connections serve on it (before any
/// connection starts, so a taken port fails the start) and serves it on the given tasks. The
/// daemon passes the admin listener's own, which sits above the pipeline.
pub type ServeAdmin = fn(
    &config::Admin,
    Vec<HttpRoutes>,
    observe::Observed,
    &ConnectionContext,
) -> anyhow::Result<()>;

/// A running set of routes and the connections they use.
pub struct Pipeline {
    /// The configuration that runs.
    config: Option<Config>,
    connections: BTreeMap<String, LiveConnection>,
    /// In the configuration's order.
    routes: Vec<LiveRoute>,
    /// The admin listener's tasks; closed last, so it answers through the shutdown drain.
    admin: ConnectionContext,
    serve_admin: ServeAdmin,
    admin_bound: bool,
    /// Cancelled when the shutdown deadline passed.
    abandon: CancellationToken,
    ids: Arc<MessageIds>,
    observed: observe::Observed,
    supervisor: Supervisor,
}

/// One connection as it runs.
struct LiveConnection {
    plan: ConnectionPlan,
    runtime: ConnectionContext,
    sinks: Arc<dyn Sinks>,
    status: ConnectionStatus,
    /// An `sse_server` stream is served by the admin listener's router, which is built once:
    /// it keeps running as started until the next restart.
    serves_admin: bool,
}

/// One route as it runs.
struct LiveRoute {
    plan: RoutePlan,
    input: RouteInput,
    output: RouteOutput,
    counters: Arc<RouteCounters>,
    tap: tap::Tap,
    /// The messages that panicked its worker (see [`Suspects`]).
    suspects: Arc<Suspects>,
    worker: WorkerHandle,
}

impl Pipeline {
    /// Opens every connection a route uses, wires every route, and starts them all. Fails
    /// (nothing keeps running) when a connection or route cannot be set up, or the admin
    /// listener's port is taken.
    pub fn start(config: &Config, serve_admin: ServeAdmin) -> anyhow::Result<Pipeline> {
        connectors::tls::install_crypto_provider();
        let supervisor = Supervisor::new();
        let admin =
            ConnectionContext::new(&supervisor.run_of(Owner::Ferry, &config::Reconnect::default()));
        supervisor::fault::install(&admin.tasks);
        let mut pipeline = Pipeline {
            config: None,
            connections: BTreeMap::new(),
            routes: Vec::new(),
            admin,
            serve_admin,
            admin_bound: false,
            abandon: CancellationToken::new(),
            ids: Arc::new(MessageIds::default()),
            observed: observe::Observed::default(),
            supervisor,
        };
        // Nothing runs yet, so nothing is stopped and applying cannot wait on anything.
        let mut summary = ReloadSummary::default();
        pipeline.start_new(config, &BTreeSet::new(), &mut summary, true)?;
        Ok(pipeline)
    }

    /// Resolves once every connection is up (connected and subscribed), logging `ferry ready`.
    pub async fn ready(&self) {
        self.ready_quietly().await;
        release_freed_memory();
        tracing::info!(
            "ferry ready: {} route(s) over {} connection(s)",
            self.routes.len(),
            self.connections.len()
        );
    }

    async fn ready_quietly(&self) {
        while !self.not_up().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The connections that are not up, each with its state and the routes that wait for it,
    /// for the log while (or after) startup waits for them.
    pub fn not_up(&self) -> Vec<String> {
        self.connections
            .iter()
            .filter(|(_, c)| c.status.state() != State::Up)
            .map(|(name, c)| {
                let routes: Vec<&str> = self
                    .routes
                    .iter()
                    .filter(|r| route_connections(&r.plan.route).any(|c| c == name))
                    .map(|r| r.plan.route.name.as_str())
                    .collect();
                format!(
                    "{name} ({}; routes {})",
                    format!("{:?}", c.status.state()).to_lowercase(),
                    routes.join(", ")
                )
            })
            .collect()
    }

    /// A handle the systemd watchdog asks whether the supervisor is healthy.
    pub fn health(&self) -> Health {
        Health(self.supervisor.clone())
    }

    /// The supervisor of every task the pipeline runs (the admin listener's and the
    /// watchdog's included).
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Resolves once some connection or route whose task failed is due for its restart (its
    /// backoff passed); then call [`Self::recover`]. Never resolves while all is well.
    pub async fn failed(&self) -> Vec<Owner> {
        self.supervisor.due().await
    }

    /// Restarts `owners` (connections and routes whose task panicked or ended), the way a
    /// reload restarts what changed: a connection's routes restart with it, and what they had
    /// not confirmed comes again from the source.
    pub async fn recover(&mut self, owners: Vec<Owner>) {
        let config = self
            .config
            .clone()
            .expect("a started pipeline has a configuration");
        let mut summary = ReloadSummary::default();
        let forced: BTreeSet<Owner> = owners.iter().cloned().collect();
        let restarted = self
            .stop_changed(&config, &config, &forced, &mut summary)
            .await;
        for live in &self.routes {
            if !live.worker.is_running() {
                // The dead worker's messages in flight were dropped unconfirmed with it.
                live.counters.unconfirmed.store(0, Ordering::Relaxed);
            }
        }
        let _ = self.start_new(&config, &restarted, &mut summary, false);
        for owner in owners {
            let runs = match &owner {
                Owner::Connection(name) => self.connections.contains_key(&**name),
                Owner::Route(name) => (self.routes.iter())
                    .any(|r| *r.plan.route.name == **name && r.worker.is_running()),
                Owner::Ferry => true,
            };
            match runs {
                true => self.supervisor.restarted(&owner),
                false => self
                    .supervisor
                    .restart_failed(&owner, &summary.failed.join("; ")),
            }
        }
    }

    /// Resolves once every route has ended by itself: its source ended (standard input) and
    /// what it queued was delivered, or it relayed its `stop_after` messages.
    pub async fn finished(&self) {
        for route in &self.routes {
            route.worker.done.wait().await;
        }
        // A worker that panicked has ended too, but it is not finished: it waits for its
        // restart (see [`Self::failed`]).
        let restarting = (self.supervisor.down().iter()).any(|(o, _)| matches!(o, Owner::Route(_)));
        if restarting {
            std::future::pending::<()>().await;
        }
    }

    /// How many routes run.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// What the admin listener sees of this pipeline; stays current across reloads.
    pub fn observed(&self) -> observe::Observed {
        self.observed.clone()
    }

    /// Replaces the running configuration with `config` (already validated): restarts only the
    /// connections and routes that changed (see the module's doc). What cannot be set up (a
    /// spool directory that cannot be written, say) is logged and left stopped; the rest runs.
    pub async fn reload(&mut self, config: Config) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let old = self
            .config
            .take()
            .expect("a started pipeline has a configuration");
        if old.admin != config.admin {
            summary.needs_restart.push("admin".into());
        }
        if old.threads != config.threads {
            summary.needs_restart.push("threads".into());
        }
        let restarted = self
            .stop_changed(&old, &config, &BTreeSet::new(), &mut summary)
            .await;
        // Not at start, so every failure is noted in the summary and nothing is returned.
        let _ = self.start_new(&config, &restarted, &mut summary, false);
        // As at start: the reload is done once what it (re)started is up, or startup_timeout.
        if tokio::time::timeout(config.startup_timeout, self.ready_quietly())
            .await
            .is_err()
        {
            tracing::warn!(
                "reload: not every connection is up after startup_timeout; the routes over these connections wait for them: {}",
                self.not_up().join(", ")
            );
        }
        release_freed_memory();
        summary
    }

    /// Stops what `new` changes or removes, and the connections and routes in `failed` (their
    /// task failed): source connections first (their routes finish what they already
    /// received), then route workers, then the connections themselves. Returns the
    /// connections it stopped.
    async fn stop_changed(
        &mut self,
        old: &Config,
        new: &Config,
        failed: &BTreeSet<Owner>,
        summary: &mut ReloadSummary,
    ) -> BTreeSet<String> {
        let deadline = Instant::now() + old.shutdown_timeout;
        let plans = Plans::of(new);
        let mut stopping: BTreeSet<String> = BTreeSet::new();
        for (name, live) in &self.connections {
            let has_failed = failed.contains(&Owner::Connection(name.as_str().into()));
            if plans.connections.get(name) == Some(&live.plan) && !has_failed {
                continue;
            }
            if live.serves_admin && plans.connections.contains_key(name) {
                summary.needs_restart.push(format!("connection {name}"));
                continue;
            }
            stopping.insert(name.clone());
        }
        let stops_route = |live: &LiveRoute| {
            let route = &live.plan.route;
            plans.routes.get(&route.name) != Some(&live.plan)
                || failed.contains(&Owner::Route(route.name.as_str().into()))
                || route_connections(route).any(|c| stopping.contains(c))
        };
        // 1. Sources of the connections that stop: they hand over what they received.
        for name in &stopping {
            let runtime = &self.connections[name].runtime;
            runtime.stop_sources.cancel();
            runtime.sources.close();
            let _ = tokio::time::timeout_at(deadline, runtime.sources.wait()).await;
        }
        // 2. Their routes deliver it and confirm it while the connections are still open.
        for live in &self.routes {
            if stopping.contains(&live.plan.route.from.connection) {
                live.drain(deadline).await;
            }
        }
        // 3. The workers that change stop.
        let mut kept = Vec::new();
        for live in std::mem::take(&mut self.routes) {
            if !stops_route(&live) {
                kept.push(live);
                continue;
            }
            live.worker.stop(deadline).await;
            let name = &live.plan.route.name;
            match plans.routes.get(name) {
                Some(_) => summary.routes_restarted.push(name.clone()),
                None => {
                    self.supervisor.forget(&Owner::Route(name.as_str().into()));
                    summary.routes_stopped.push(name.clone());
                    // Nothing will take what is left: the source sends it again.
                    live.output.discard();
                }
            }
            kept.push(live);
        }
        self.routes = kept;
        // 4. The connections close.
        for name in &stopping {
            let live = self.connections.remove(name).expect("listed above");
            live.runtime.close.cancel();
            live.runtime.tasks.close();
            if tokio::time::timeout(Duration::from_secs(5), live.runtime.tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!(connection = %name, "did not close within 5s");
            }
            if plans.connections.contains_key(name) {
                summary.connections_restarted.push(name.clone());
            } else {
                self.supervisor
                    .forget(&Owner::Connection(name.as_str().into()));
            }
        }
        stopping
    }

    /// Opens the connections `config` uses that do not run, and starts every route whose worker
    /// does not run (new, or stopped by [`Self::stop_changed`]). `restarted` names the
    /// connections that were stopped to be opened again. At the `initial` start, the first
    /// connection or route that cannot be set up fails it all; on a reload, it is left stopped,
    /// noted in `summary`, and the rest starts.
    fn start_new(
        &mut self,
        config: &Config,
        restarted: &BTreeSet<String>,
        summary: &mut ReloadSummary,
        initial: bool,
    ) -> anyhow::Result<()> {
        self.config = Some(config.clone());
        let mut failed = |e: anyhow::Error| -> anyhow::Result<()> {
            if initial {
                return Err(e);
            }
            tracing::error!("reload: {e:#}; left stopped");
            summary.failed.push(format!("{e:#}"));
            Ok(())
        };
        let mut plans = Plans::of(config);
        let analysis = &plans.analysis;
        for cycle in &analysis.cycles {
            if let loops::Verdict::EchoOnce { .. } = cycle.verdict {
                tracing::warn!("{}", cycle.describe(config));
            }
        }
        // Routes: keep the running ones, give the others their queue (the old one when its
        // settings did not change, so nothing in it is lost).
        let mut old: BTreeMap<String, LiveRoute> = std::mem::take(&mut self.routes)
            .into_iter()
            .map(|r| (r.plan.route.name.clone(), r))
            .collect();
        let mut to_start = Vec::new();
        self.routes.reserve_exact(config.routes.len());
        for (index, route) in config.routes.iter().enumerate() {
            let plan = plans.routes.remove(&route.name).expect("a plan per route");
            let live = match old.remove(&route.name) {
                Some(live) if live.worker.is_running() => {
                    summary.routes_unchanged.push(route.name.clone());
                    LiveRoute { plan, ..live }
                }
                Some(live) if live.plan.route.queue == route.queue => {
                    to_start.push(index);
                    LiveRoute { plan, ..live }
                }
                previous => {
                    let (input, output) = queue::bounded(&route.name, route.queue.clone());
                    to_start.push(index);
                    if previous.is_none() && !initial {
                        summary.routes_started.push(route.name.clone());
                    }
                    LiveRoute {
                        plan,
                        input,
                        output,
                        counters: previous
                            .as_ref()
                            .map_or_else(Default::default, |p| p.counters.clone()),
                        suspects: previous
                            .as_ref()
                            .map_or_else(Default::default, |p| p.suspects.clone()),
                        tap: previous.map(|p| p.tap).unwrap_or_default(),
                        worker: WorkerHandle::none(),
                    }
                }
            };
            self.routes.push(live);
        }
        // Connections: open the ones that do not run, their sources registered.
        let positions: HashMap<&str, usize> = (self.routes.iter().enumerate())
            .map(|(index, live)| (live.plan.route.name.as_str(), index))
            .collect();
        let mut opened = Vec::new();
        for (name, plan) in std::mem::take(&mut plans.connections) {
            if self.connections.contains_key(&name) {
                continue;
            }
            let status = ConnectionStatus::new(&name, plan.connection.kind.protocol().name());
            let mut connection =
                connectors::open(&plan.connection, status.clone(), &plan.state_dir);
            let mut refused = None;
            for source in &plan.sources {
                let route = &source.route.name;
                let live = &self.routes[positions[route.as_str()]];
                if let Err(e) = connection.add_source(route, source.spec(), live.input.clone()) {
                    refused = Some(e.context(format!("route {route}")));
                    break;
                }
            }
            if let Some(e) = refused {
                // Its routes find no connection and stay stopped too.
                failed(e.context(format!("connection {name}")))?;
                continue;
            }
            let sinks = connection.sinks();
            let serves_admin = plan
                .connection
                .kind
                .protocol()
                .descriptor()
                .serves_on_admin_listener();
            if serves_admin && self.admin_bound {
                summary.needs_restart.push(format!("connection {name}"));
            }
            let runtime = ConnectionContext::new(&self.supervisor.run_of(
                Owner::Connection(name.as_str().into()),
                &plan.connection.reconnect,
            ));
            self.connections.insert(
                name.clone(),
                LiveConnection {
                    plan,
                    runtime,
                    sinks,
                    status,
                    serves_admin,
                },
            );
            opened.push((name.clone(), connection));
        }
        // Workers, built before anything starts so a route that cannot be set up fails a start.
        let mut workers = Vec::new();
        for index in to_start {
            let live = &self.routes[index];
            match self.worker(config, index, live, analysis) {
                Ok(worker) => workers.push((index, worker)),
                Err(e) => failed(e)?,
            }
        }
        self.observed.set(observe::View {
            routes: self
                .routes
                .iter()
                .map(|r| r.view(&config.connections))
                .collect(),
            connections: self
                .connections
                .values()
                .map(|c| c.status.clone())
                .collect(),
            supervisor: self.supervisor.clone(),
        });
        // Bound before any connection starts, so a taken port fails the start.
        if let Some(admin) = config.admin.as_ref().filter(|_| initial) {
            let streams = opened.iter_mut().filter_map(|(_, c)| c.admin_routes());
            (self.serve_admin)(admin, streams.collect(), self.observed.clone(), &self.admin)?;
            self.admin_bound = true;
        }
        for (name, connection) in opened {
            connection.start(&self.connections[&name].runtime);
            if !restarted.contains(&name) && !initial {
                summary.connections_started.push(name);
            }
        }
        for (index, worker) in workers {
            let handle = WorkerHandle::spawn(&self.supervisor, worker);
            self.routes[index].worker = handle;
        }
        Ok(())
    }

    /// Builds the worker of route `index`: its mapping, its sinks (on the running
    /// connections), their spools.
    fn worker(
        &self,
        config: &Config,
        index: usize,
        live: &LiveRoute,
        analysis: &loops::Analysis,
    ) -> anyhow::Result<Box<RouteWorker>> {
        let route = &config.routes[index];
        anyhow::ensure!(
            self.connections.contains_key(&route.from.connection),
            "route {}: connection {} is not running",
            route.name,
            route.from.connection
        );
        let sink = |sink: &config::Sink| -> anyhow::Result<RouteSink> {
            let connection = self.connections.get(&sink.connection).with_context(|| {
                format!(
                    "route {}: connection {} is not running",
                    route.name, sink.connection
                )
            })?;
            Ok(RouteSink {
                connection: sink.connection.clone(),
                sink: connection
                    .sinks
                    .add_sink(&sink.spec)
                    .with_context(|| format!("route {}", route.name))?,
                spool: None,
            })
        };
        let mut sinks = Vec::with_capacity(route.to.len());
        for to in &route.to {
            sinks.push(sink(to)?);
        }
        let dead_letter = route.dead_letter.as_ref().map(sink).transpose()?;
        if let (Some(spool), Some(dir)) = (&route.spool, &live.plan.spool_dir) {
            // One spool per sink, so a sink that is up never gets another's backlog twice.
            for (index, sink) in sinks.iter_mut().enumerate() {
                let dir = dir.join(format!("{index}-{}", sink.connection));
                let opened = Spool::open(&dir, spool.max_bytes, live.counters.spool_bytes.clone())
                    .with_context(|| format!(
                        "route {}: cannot use the spool directory {}; set the route's `spool: {{ dir: ... }}` or `state_dir:` to a directory ferry may write",
                        route.name,
                        dir.display()
                    ))?;
                sink.spool = Some(Box::new(opened));
            }
        }
        Ok(Box::new(RouteWorker {
            name: live.output.route().clone(),
            queue: live.output.clone(),
            mapping: analysis
                .resolve(config, index)
                .and_then(|resolved| Mapping::new(&resolved, &live.plan.everywhere.instance))
                .map_err(|e| anyhow::anyhow!("route {}: {e}", route.name))?,
            sinks,
            dead_letter,
            counters: live.counters.clone(),
            abandon: self.abandon.child_token(),
            warnings: Default::default(),
            at_most_once: route.delivery == Some(config::Delivery::AtMostOnce),
            ids: self.ids.clone(),
            suspects: live.suspects.clone(),
            stop: CancellationToken::new(),
            tap: live.tap.clone(),
            stop_after: route.stop_after,
            request: route.request.clone(),
            jq: jq_worker::JqWorker::new(
                route.filter.as_deref(),
                route.transform.as_deref(),
                route.from.format,
                route.transform_budget,
            )
            .map(Box::new),
        }))
    }

    /// Shuts down: the sources stop reading, what is queued is delivered within the shutdown
    /// timeout, and the connections close cleanly.
    pub async fn shutdown(self) {
        let timeout = self
            .config
            .as_ref()
            .map_or(Duration::from_secs(10), |c| c.shutdown_timeout);
        tracing::info!("shutting down: sources stop, queued messages drain (up to {timeout:?})");
        self.supervisor.shutting_down();
        let deadline = Instant::now() + timeout;
        for c in self.connections.values() {
            c.runtime.stop_sources.cancel();
            c.runtime.sources.close();
        }
        // Sources hand over what they already received; a queue that stays full past the
        // deadline (a sink that never comes back) must not hold shutdown up forever.
        for c in self.connections.values() {
            let _ = tokio::time::timeout_at(deadline, c.runtime.sources.wait()).await;
        }
        for r in &self.routes {
            r.output.close();
        }
        let mut late = false;
        for r in &self.routes {
            late |= tokio::time::timeout_at(deadline, r.worker.done.wait())
                .await
                .is_err();
        }
        if late {
            let left: usize = self.routes.iter().map(|r| r.output.len()).sum();
            tracing::warn!(
                "shutdown timeout passed with {left} message(s) undelivered; giving up on them"
            );
            self.abandon.cancel();
            for r in &self.routes {
                r.worker.done.wait().await;
            }
            // Nack what is left while the connections are still open, so a source that can
            // (JetStream) hands those messages out again at once rather than after ack_wait.
            for r in &self.routes {
                r.output.discard();
            }
        }
        let runtimes = self.connections.values().map(|c| &c.runtime);
        for runtime in runtimes.clone().chain([&self.admin]) {
            runtime.close.cancel();
            runtime.tasks.close();
        }
        let closed = async {
            for runtime in runtimes.chain([&self.admin]) {
                runtime.tasks.wait().await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within 5s");
        }
        tracing::info!("ferry stopped");
    }
}

impl LiveRoute {
    /// Waits until the worker delivered and confirmed everything queued (the source stopped
    /// feeding it), or `deadline`.
    async fn drain(&self, deadline: Instant) {
        while self.worker.is_running()
            && (!self.output.is_empty() || self.counters.unconfirmed.load(Ordering::Relaxed) > 0)
        {
            if Instant::now() >= deadline {
                tracing::warn!(
                    route = %self.plan.route.name,
                    "reload: {} message(s) not delivered in time; their source sends them again",
                    self.output.len() as u64 + self.counters.unconfirmed.load(Ordering::Relaxed)
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn view(&self, connections: &BTreeMap<String, config::Connection>) -> observe::RouteView {
        let route = &self.plan.route;
        observe::RouteView {
            route: route.clone(),
            at_least_once: config::delivery::guarantee(route, connections).delivery
                == config::Delivery::AtLeastOnce,
            counters: self.counters.clone(),
            queue: self.output.clone(),
            tap: self.tap.clone(),
        }
    }
}

/// Gives the pages a start or a reload freed back to the system. Reading and starting
/// thousands of routes frees megabytes (the file's tree, the plans) that the allocator would
/// otherwise keep, scattered among what the routes hold, for as long as ferry runs.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator to the system; it takes
    // the allocator's locks, as any allocation does.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Answers the systemd watchdog: whether the supervisor is healthy. Cheap to clone.
#[derive(Clone)]
pub struct Health(Supervisor);

impl Health {
    /// `Err(why)` when something that should run cannot be restarted; the watchdog then stops
    /// pinging, and systemd restarts ferry. A task that failed and waits for its restart is
    /// not unhealthy: the supervisor is handling it.
    pub fn check(&self) -> Result<(), String> {
        self.0.health()
    }
}

// Last in the file: the spawn check reads a file only up to its first test attribute.
#[cfg(test)]
pub(crate) mod testing;
