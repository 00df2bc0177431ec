//! Every task ferry runs goes through here, so that none can end or panic unnoticed.
//!
//! A task belongs to an [`Owner`]: a connection, a route, or ferry itself (the admin listener,
//! the systemd watchdog). When a task panics, or ends while its owner was not asked to stop,
//! the owner is marked down with why (logged once, shown on `/readyz` and `/metrics`), and:
//! - a **connection** or a **route** is restarted whole by the pipeline after a backoff, the
//!   same restart a reload makes: a connection's routes restart with it, and what a route had
//!   not confirmed comes again from its source, so an at-least-once route loses nothing;
//! - a task of **ferry** itself is made again by the function that made it, after a backoff.
//!
//! The systemd watchdog stops being fed only when an owner *cannot* be restarted (its restart
//! failed), not while a restart is merely pending.
//!
//! Blocking work ([`blocking`]) and threads ([`thread`]) start here too: a test reads the
//! source tree and finds no other place that spawns anything.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::status::{Backoff, error_text};
use crate::config::Reconnect;

/// What a task belongs to, and what is restarted when it fails.
// The names are shared: every task of an owner, and each of the supervisor's records of it,
// holds one, and at thousands of routes a copy each added up.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    Connection(Arc<str>),
    Route(Arc<str>),
    /// ferry's own tasks: the admin listener, the watchdog.
    Ferry,
}

impl Owner {
    /// `connection`, `route` or `ferry`: the `kind` label on `/metrics`.
    pub fn kind(&self) -> &'static str {
        match self {
            Owner::Connection(_) => "connection",
            Owner::Route(_) => "route",
            Owner::Ferry => "ferry",
        }
    }

    /// The connection's or route's name; empty for ferry.
    pub fn name(&self) -> &str {
        match self {
            Owner::Connection(name) | Owner::Route(name) => name,
            Owner::Ferry => "",
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Ferry => f.write_str("ferry"),
            owner => write!(f, "{} {}", owner.kind(), owner.name()),
        }
    }
}

/// An owner with a failed task, waiting for its restart.
#[derive(Clone, Debug)]
pub struct Down {
    /// The task that failed first (one restart covers all the owner's tasks).
    pub task: &'static str,
    /// Why: `panicked: ...` or `ended unexpectedly`.
    pub why: String,
    pub since: SystemTime,
    /// When the next restart is due.
    pub retry_at: Instant,
    /// Why the last restart failed, if it did: the owner cannot be restarted (the watchdog
    /// stops being fed while this is set).
    pub restart_failed: Option<String>,
    /// Restarted by the task's own loop (ferry's tasks), not by the pipeline.
    by_itself: bool,
}

/// Watches every task; cheap to clone.
#[derive(Clone, Default)]
pub struct Supervisor(Arc<Shared>);

#[derive(Default)]
struct Shared {
    registry: Mutex<Registry>,
    /// Wakes [`Supervisor::due`]: an owner went down.
    wake: Notify,
    /// Shutdown: tasks end as they are told to, nothing is restarted.
    shutting_down: AtomicBool,
}

#[derive(Default)]
struct Registry {
    down: BTreeMap<Owner, Down>,
    /// Failures (each followed by a restart) per owner and task since ferry started.
    restarts: BTreeMap<(Owner, &'static str), u64>,
    /// Made at an owner's first failure: most never fail.
    backoff: BTreeMap<Owner, Backoff>,
    /// The current generation of each owner's tasks: a failure reported by the tasks of an
    /// owner's previous run (ending as it is replaced) does not bring the new one down.
    generation: BTreeMap<Owner, u64>,
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// A new run of `owner` (at its start and at each restart): the handle its task groups are
    /// made from. `reconnect` paces its restarts.
    pub fn run_of(&self, owner: Owner, reconnect: &Reconnect) -> OwnerRun {
        let mut registry = self.0.registry.lock().expect("supervisor lock");
        let generation = registry.generation.entry(owner.clone()).or_default();
        *generation += 1;
        OwnerRun(Arc::new(Run {
            supervisor: self.clone(),
            owner,
            generation: *generation,
            reconnect: shared_pacing(reconnect),
        }))
    }

    /// Tasks ending from now on were told to: nothing is marked down or restarted.
    pub fn shutting_down(&self) {
        self.0.shutting_down.store(true, Ordering::Relaxed);
    }

    fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::Relaxed)
    }

    /// A task of `run` failed: marks its owner down (once, until it is restarted), logs why
    /// and when it restarts.
    fn failed(&self, run: &OwnerRun, task: &'static str, why: String, by_itself: bool) {
        if self.is_shutting_down() {
            return;
        }
        let mut registry = self.0.registry.lock().expect("supervisor lock");
        // A task that restarts itself has no previous run that could report late; ferry's
        // own tasks share one owner, and each has its run.
        if !by_itself && registry.generation.get(&run.0.owner) != Some(&run.0.generation) {
            return;
        }
        *registry
            .restarts
            .entry((run.0.owner.clone(), task))
            .or_default() += 1;
        if registry.down.contains_key(&run.0.owner) {
            return;
        }
        let delay = registry
            .backoff
            .entry(run.0.owner.clone())
            .or_insert_with(|| Backoff::new(&run.0.reconnect))
            .next_delay();
        tracing::error!(
            "{}: task `{task}` {why}; restarting {} in {}",
            run.0.owner,
            match run.0.owner {
                Owner::Ferry => "it",
                _ => "its tasks",
            },
            humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
        );
        registry.down.insert(
            run.0.owner.clone(),
            Down {
                task,
                why,
                since: SystemTime::now(),
                retry_at: Instant::now() + delay,
                restart_failed: None,
                by_itself,
            },
        );
        drop(registry);
        self.0.wake.notify_one();
    }

    /// Resolves with the owners whose restart is due (their backoff passed), for the pipeline
    /// to restart; never resolves while none is down.
    pub async fn due(&self) -> Vec<Owner> {
        loop {
            let woken = self.0.wake.notified();
            let next = {
                let registry = self.0.registry.lock().expect("supervisor lock");
                let now = Instant::now();
                let due: Vec<Owner> = (registry.down.iter())
                    .filter(|(_, d)| !d.by_itself && d.retry_at <= now)
                    .map(|(owner, _)| owner.clone())
                    .collect();
                if !due.is_empty() {
                    return due;
                }
                (registry.down.values())
                    .filter(|d| !d.by_itself)
                    .map(|d| d.retry_at)
                    .min()
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = woken => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    /// `owner` runs again: it is up as far as supervision goes.
    pub fn restarted(&self, owner: &Owner) {
        let mut registry = self.0.registry.lock().expect("supervisor lock");
        if let Some(down) = registry.down.remove(owner) {
            tracing::info!(
                "{owner}: restarted after its task `{}` {}",
                down.task,
                down.why
            );
        }
        if let Some(backoff) = registry.backoff.get_mut(owner) {
            backoff.reset();
        }
    }

    /// Restarting `owner` failed (`why`): it stays down, the watchdog stops being fed, and it
    /// is tried again after the next backoff.
    pub fn restart_failed(&self, owner: &Owner, why: &str) {
        let mut registry = self.0.registry.lock().expect("supervisor lock");
        let delay = match registry.backoff.get_mut(owner) {
            Some(backoff) => backoff.next_delay(),
            None => Duration::from_secs(1),
        };
        if let Some(down) = registry.down.get_mut(owner) {
            tracing::error!(
                "{owner}: cannot be restarted: {why}; trying again in {}",
                humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
            );
            down.restart_failed = Some(error_text(&why));
            down.retry_at = Instant::now() + delay;
        }
        drop(registry);
        self.0.wake.notify_one();
    }

    /// The owners that are down now, for `/readyz`.
    pub fn down(&self) -> Vec<(Owner, Down)> {
        let registry = self.0.registry.lock().expect("supervisor lock");
        (registry.down.iter())
            .map(|(owner, down)| (owner.clone(), down.clone()))
            .collect()
    }

    /// Failures per owner and task since ferry started, for `/metrics`.
    pub fn restarts(&self) -> Vec<(Owner, &'static str, u64)> {
        let registry = self.0.registry.lock().expect("supervisor lock");
        (registry.restarts.iter())
            .map(|((owner, task), n)| (owner.clone(), *task, *n))
            .collect()
    }

    /// `Err(why)` while some owner cannot be restarted: the systemd watchdog then stops being
    /// fed, and systemd restarts ferry.
    pub fn health(&self) -> Result<(), String> {
        let registry = self.0.registry.lock().expect("supervisor lock");
        let failed: Vec<String> = (registry.down.iter())
            .filter_map(|(owner, d)| {
                d.restart_failed
                    .as_ref()
                    .map(|why| format!("{owner}: {why}"))
            })
            .collect();
        match failed.is_empty() {
            true => Ok(()),
            false => Err(format!("cannot restart {}", failed.join("; "))),
        }
    }

    /// Forgets an owner that no longer runs (a reload removed it).
    pub fn forget(&self, owner: &Owner) {
        let mut registry = self.0.registry.lock().expect("supervisor lock");
        registry.down.remove(owner);
        registry.backoff.remove(owner);
        registry.generation.remove(owner);
    }
}

/// One run of an owner: its task groups report failures under this run's generation. Cheap to
/// clone: each of the run's groups and tasks holds it.
#[derive(Clone)]
pub struct OwnerRun(Arc<Run>);

struct Run {
    supervisor: Supervisor,
    owner: Owner,
    generation: u64,
    /// How its restarts are paced.
    reconnect: Arc<Reconnect>,
}

/// `reconnect` as a run holds it: the default pacing (every route's) is one value all runs
/// share, so that thousands of routes do not hold a copy each.
fn shared_pacing(reconnect: &Reconnect) -> Arc<Reconnect> {
    static DEFAULT: std::sync::OnceLock<Arc<Reconnect>> = std::sync::OnceLock::new();
    let default = DEFAULT.get_or_init(|| Arc::new(Reconnect::default()));
    match *reconnect == **default {
        true => default.clone(),
        false => Arc::new(reconnect.clone()),
    }
}

impl OwnerRun {
    /// A group of this run's tasks, which count as told to stop once `asked` is cancelled.
    pub fn tasks(&self, asked: CancellationToken) -> Tasks {
        Tasks {
            run: self.clone(),
            tracker: TaskTracker::new(),
            asked,
        }
    }
}

/// A group of tasks of one owner, which shutdown can close and wait for. Cheap to clone.
#[derive(Clone)]
pub struct Tasks {
    run: OwnerRun,
    tracker: TaskTracker,
    /// Cancelled when the group's tasks are told to stop: ending after that is no failure.
    asked: CancellationToken,
}

impl Tasks {
    /// A group whose failures nobody restarts (they are still logged): for tests and tools
    /// that run a connection on its own.
    pub fn unsupervised(asked: CancellationToken) -> Tasks {
        Supervisor::new()
            .run_of(Owner::Ferry, &Reconnect::default())
            .tasks(asked)
    }

    /// Spawns a task that runs until the group is told to stop: ending before that, or
    /// panicking, is a failure.
    pub fn spawn<F>(&self, task: &'static str, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_watched(task, future, true);
    }

    /// Spawns a task that may end by itself when its work is done (a route worker after
    /// `stop_after`, standard input at its end): only a panic is a failure.
    pub fn spawn_finite<F>(&self, task: &'static str, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_watched(task, future, false);
    }

    fn spawn_watched<F>(&self, task: &'static str, future: F, runs_until_asked: bool)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let run = self.run.clone();
        let asked = self.asked.clone();
        let future = fault::hook(run.0.owner.clone(), task, future);
        self.tracker.spawn(async move {
            let why = match AssertUnwindSafe(future).catch_unwind().await {
                Err(panic) => format!("panicked: {}", panic_text(panic.as_ref())),
                Ok(()) if runs_until_asked && !asked.is_cancelled() => {
                    "ended unexpectedly".to_string()
                }
                Ok(()) => return,
            };
            run.0.supervisor.failed(&run, task, why, false);
        });
    }

    /// Runs the task `make` makes until the group is told to stop; when it panics or ends
    /// before that, marks it down, waits the backoff, and makes it again (ferry's own tasks,
    /// which hold no messages: the admin listener, the watchdog).
    pub fn spawn_restarting<F, M>(&self, task: &'static str, mut make: M)
    where
        M: FnMut() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let run = self.run.clone();
        let asked = self.asked.clone();
        self.tracker.spawn(async move {
            loop {
                let future = fault::hook(run.0.owner.clone(), task, make());
                let why = match AssertUnwindSafe(future).catch_unwind().await {
                    Err(panic) => format!("panicked: {}", panic_text(panic.as_ref())),
                    Ok(()) if asked.is_cancelled() => return,
                    Ok(()) => "ended unexpectedly".to_string(),
                };
                if run.0.supervisor.is_shutting_down() {
                    return;
                }
                run.0.supervisor.failed(&run, task, why, true);
                let retry_at = (run.0.supervisor.down().into_iter())
                    .find(|(owner, _)| *owner == run.0.owner)
                    .map_or_else(Instant::now, |(_, down)| down.retry_at);
                tokio::select! {
                    () = tokio::time::sleep_until(retry_at) => {}
                    () = asked.cancelled() => return,
                }
                run.0.supervisor.restarted(&run.0.owner);
            }
        });
    }

    /// No more tasks will be added: [`Self::wait`] can finish.
    pub fn close(&self) {
        self.tracker.close();
    }

    /// Resolves once the group is closed and every task in it ended.
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }

    /// True while tasks of the group run (or it is not closed yet).
    pub fn is_running(&self) -> bool {
        !(self.tracker.is_closed() && self.tracker.is_empty())
    }
}

/// Runs blocking work (file I/O, fsync) on the runtime's blocking threads and waits for it; a
/// panic in it comes back as an error rather than taking the caller down.
pub async fn blocking<T, F>(work: F) -> Result<T, String>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(panic) => format!("panicked: {}", panic_text(panic.as_ref())),
            Err(e) => e.to_string(),
        })
}

/// Starts a named OS thread for blocking I/O that has no async form (standard input and
/// output). A panic in it ends only the thread, whose channel then closes: its owner sees the
/// end and reports it as a failure.
pub fn thread<F>(name: &str, work: F) -> std::io::Result<()>
where
    F: FnOnce() + Send + 'static,
{
    let label = name.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(work)) {
                tracing::error!("thread {label} panicked: {}", panic_text(panic.as_ref()));
            }
        })
        .map(|_| ())
}

/// The message a panic carried, masked and short as any error text.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let text = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => text,
        (_, Some(text)) => text.as_str(),
        _ => "(no message)",
    };
    error_text(&text)
}

/// Fault injection for tests: compiled into debug builds only (the ones `cargo test` runs),
/// so that the supervision tests still mean something once every real panic is fixed.
///
/// - `FERRY_FAULT_PANIC="route NAME/TASK"` (or `connection NAME/TASK`, `ferry/TASK`): on
///   SIGUSR1, the next poll of that task panics, once per signal.
/// - `FERRY_FAULT_PANIC_PAYLOAD=TEXT`: a route worker panics on every message whose payload
///   contains TEXT (see [`fault::message`]).
pub mod fault {
    #[cfg(debug_assertions)]
    mod hooks {
        use std::future::Future;
        use std::pin::Pin;
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::task::{Context, Poll};

        use super::super::Owner;

        static ARMED: AtomicBool = AtomicBool::new(false);

        fn target() -> Option<&'static str> {
            static TARGET: OnceLock<Option<String>> = OnceLock::new();
            TARGET
                .get_or_init(|| std::env::var("FERRY_FAULT_PANIC").ok())
                .as_deref()
        }

        /// Arms the task fault on every SIGUSR1, when `FERRY_FAULT_PANIC` names a task.
        pub fn install(tasks: &super::super::Tasks) {
            if target().is_none() {
                return;
            }
            let Ok(mut usr1) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            else {
                return;
            };
            tasks.spawn_finite("fault injection", async move {
                while usr1.recv().await.is_some() {
                    tracing::warn!("SIGUSR1: arming the fault FERRY_FAULT_PANIC={:?}", target());
                    ARMED.store(true, Ordering::SeqCst);
                }
            });
        }

        pub struct Hooked<F> {
            future: Pin<Box<F>>,
            name: String,
        }

        impl<F: Future<Output = ()>> Future for Hooked<F> {
            type Output = ();
            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                if ARMED.load(Ordering::Relaxed)
                    && target() == Some(self.name.as_str())
                    && ARMED.swap(false, Ordering::SeqCst)
                {
                    panic!("fault injected into {} (FERRY_FAULT_PANIC)", self.name);
                }
                self.future.as_mut().poll(cx)
            }
        }

        pub fn hook<F: Future<Output = ()>>(owner: Owner, task: &str, future: F) -> Hooked<F> {
            Hooked {
                future: Box::pin(future),
                name: format!("{owner}/{task}"),
            }
        }

        pub fn message(payload: &[u8]) {
            static TEXT: OnceLock<Option<Vec<u8>>> = OnceLock::new();
            let text = TEXT.get_or_init(|| {
                std::env::var("FERRY_FAULT_PANIC_PAYLOAD")
                    .ok()
                    .map(String::into_bytes)
            });
            if let Some(text) = text
                && !text.is_empty()
                && payload.windows(text.len()).any(|w| w == text.as_slice())
            {
                panic!("fault injected into a route worker (FERRY_FAULT_PANIC_PAYLOAD)");
            }
        }
    }

    #[cfg(debug_assertions)]
    pub use hooks::{hook, install, message};

    #[cfg(not(debug_assertions))]
    pub fn hook<F>(_: super::Owner, _: &str, future: F) -> F {
        future
    }

    #[cfg(not(debug_assertions))]
    pub fn install(_: &super::Tasks) {}

    /// Panics when the payload holds `FERRY_FAULT_PANIC_PAYLOAD` (debug builds only).
    #[cfg(not(debug_assertions))]
    #[inline(always)]
    pub fn message(_: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Reconnect {
        Reconnect {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            stable_after: Duration::from_secs(60),
        }
    }

    /// A panicking task marks its owner down with the panic's message; the owner is due for a
    /// restart after the backoff, and up once restarted.
    #[tokio::test]
    async fn a_panic_marks_the_owner_down_until_it_is_restarted() {
        let supervisor = Supervisor::new();
        let owner = Owner::Route("telemetry".into());
        let tasks = supervisor
            .run_of(owner.clone(), &quick())
            .tasks(CancellationToken::new());
        tasks.spawn("worker", async { panic!("boom «x»") });
        let due = tokio::time::timeout(Duration::from_secs(5), supervisor.due())
            .await
            .expect("the restart comes due");
        assert_eq!(due, vec![owner.clone()]);
        let down = supervisor.down();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].1.task, "worker");
        assert!(down[0].1.why.contains("boom «x»"), "{}", down[0].1.why);
        assert!(supervisor.health().is_ok(), "a pending restart is healthy");
        supervisor.restarted(&owner);
        assert!(supervisor.down().is_empty());
        assert_eq!(supervisor.restarts(), vec![(owner, "worker", 1)]);
    }

    /// A task that ends while its group was not told to stop is a failure; one that ends after
    /// is not, and neither is a finite task that ends.
    #[tokio::test]
    async fn ending_unasked_is_a_failure_and_ending_asked_is_not() {
        let supervisor = Supervisor::new();
        let asked = CancellationToken::new();
        let run = supervisor.run_of(Owner::Connection("plant".into()), &quick());
        let tasks = run.tasks(asked.clone());
        tasks.spawn_finite("reader", async {});
        tasks.spawn("event loop", async {});
        let due = tokio::time::timeout(Duration::from_secs(5), supervisor.due())
            .await
            .unwrap();
        assert_eq!(due, vec![Owner::Connection("plant".into())]);
        assert_eq!(supervisor.down()[0].1.why, "ended unexpectedly");
        supervisor.restarted(&Owner::Connection("plant".into()));

        let run = supervisor.run_of(Owner::Connection("plant".into()), &quick());
        let tasks = run.tasks(asked.clone());
        asked.cancel();
        tasks.spawn("event loop", async {});
        tasks.close();
        tasks.wait().await;
        assert!(supervisor.down().is_empty());
    }

    /// An owner keeps no backoff until its first failure: most routes never fail, and each
    /// backoff was a few hundred bytes at thousands of routes. The failed one gets its own.
    #[tokio::test]
    async fn only_an_owner_that_failed_keeps_a_backoff() {
        let supervisor = Supervisor::new();
        let backoffs = || supervisor.0.registry.lock().unwrap().backoff.len();
        let runs: Vec<OwnerRun> = (0..3)
            .map(|i| supervisor.run_of(Owner::Route(format!("r{i}").into()), &quick()))
            .collect();
        assert_eq!(backoffs(), 0);
        runs[1]
            .tasks(CancellationToken::new())
            .spawn("worker", async { panic!("x") });
        let due = tokio::time::timeout(Duration::from_secs(5), supervisor.due())
            .await
            .expect("the restart comes due");
        assert_eq!(due, vec![Owner::Route("r1".into())]);
        assert_eq!(backoffs(), 1);
    }

    /// A failure reported by an owner's previous run (its tasks ending as they are replaced)
    /// does not bring the new run down.
    #[tokio::test]
    async fn an_old_run_cannot_bring_the_new_one_down() {
        let supervisor = Supervisor::new();
        let owner = Owner::Route("r".into());
        let old = supervisor.run_of(owner.clone(), &quick());
        let _new = supervisor.run_of(owner.clone(), &quick());
        let tasks = old.tasks(CancellationToken::new());
        tasks.spawn("worker", async {});
        tasks.close();
        tasks.wait().await;
        assert!(supervisor.down().is_empty());
    }

    /// A restart that fails makes the health check fail (the watchdog stops), until one works.
    #[tokio::test]
    async fn health_fails_only_while_a_restart_fails() {
        let supervisor = Supervisor::new();
        let owner = Owner::Connection("c".into());
        let tasks = supervisor
            .run_of(owner.clone(), &quick())
            .tasks(CancellationToken::new());
        tasks.spawn("event loop", async { panic!("x") });
        tokio::time::timeout(Duration::from_secs(5), supervisor.due())
            .await
            .unwrap();
        assert!(supervisor.health().is_ok());
        supervisor.restart_failed(&owner, "the spool directory is gone");
        assert!(supervisor.health().unwrap_err().contains("spool directory"));
        supervisor.restarted(&owner);
        assert!(supervisor.health().is_ok());
    }

    /// ferry's own tasks are made again by their function after they fail.
    #[tokio::test]
    async fn a_restarting_task_is_made_again() {
        let supervisor = Supervisor::new();
        let asked = CancellationToken::new();
        let tasks = supervisor
            .run_of(Owner::Ferry, &quick())
            .tasks(asked.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut runs = 0;
        tasks.spawn_restarting("admin listener", move || {
            runs += 1;
            let (tx, n) = (tx.clone(), runs);
            async move {
                let _ = tx.send(n);
                if n < 3 {
                    panic!("run {n} fails");
                }
                std::future::pending::<()>().await;
            }
        });
        for expected in 1..=3 {
            let n = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap();
            assert_eq!(n, Some(expected));
        }
        assert_eq!(
            supervisor.restarts(),
            vec![(Owner::Ferry, "admin listener", 2)]
        );
        asked.cancel();
        tasks.close();
    }

    /// ferry's own tasks share one owner across runs (the admin listener's, the watchdog's):
    /// a restarting task of an earlier run still reports its failures.
    #[tokio::test]
    async fn a_restarting_task_of_an_earlier_run_still_reports() {
        let supervisor = Supervisor::new();
        let asked = CancellationToken::new();
        let admin = supervisor
            .run_of(Owner::Ferry, &quick())
            .tasks(asked.clone());
        let _watchdog = supervisor
            .run_of(Owner::Ferry, &quick())
            .tasks(asked.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        admin.spawn_restarting("admin listener", move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                panic!("down");
            }
        });
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap();
        }
        let restarts = supervisor.restarts();
        assert!(
            restarts
                .first()
                .is_some_and(|(_, task, n)| *task == "admin listener" && *n >= 1),
            "{restarts:?}"
        );
        asked.cancel();
    }

    /// Nothing in ferry's source spawns a task, a blocking job or a thread except this file:
    /// every one of them is supervised.
    #[test]
    fn nothing_else_spawns() {
        let forbidden = [
            "tokio::spawn",
            "task::spawn",
            "spawn_blocking",
            "thread::spawn",
            "thread::Builder",
            "TaskTracker",
            "JoinSet",
            "spawn_local",
        ];
        let mut found = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs")
                    || path.ends_with("contracts/supervisor.rs")
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // Unit tests may spawn what they test.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for (n, line) in code.lines().enumerate() {
                    let line = line.trim_start();
                    if line.starts_with("//") {
                        continue;
                    }
                    for word in forbidden {
                        if line.contains(word) {
                            found.push(format!("{}:{}: {line}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "spawn through contracts::supervisor instead:\n{}",
            found.join("\n")
        );
    }
}
