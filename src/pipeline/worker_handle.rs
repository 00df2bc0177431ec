//! A route worker's task as the pipeline holds it: how to stop it, and whether it runs.

use std::sync::OnceLock;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::route::RouteWorker;
use crate::config;
use crate::contracts::supervisor::{Owner, Supervisor, Tasks};

/// A route worker's task and how to stop it.
#[derive(Clone)]
pub(super) struct WorkerHandle {
    /// Finish the message in hand and return (a reload replaces the worker).
    pub(super) stop: CancellationToken,
    /// Stop retrying an unavailable sink (a deadline passed).
    pub(super) abandon: CancellationToken,
    /// The worker's task (and its spool forwarders'), supervised.
    pub(super) done: Tasks,
}

impl WorkerHandle {
    /// The handle of a route whose worker does not run (yet).
    pub(super) fn none() -> WorkerHandle {
        // One handle serves every route without a worker: at a start of thousands of routes,
        // a group of its own came with a supervisor of its own and tokens of its own, a
        // kilobyte or two each until its worker started. Its tokens are cancelled only by a
        // stop, which finds the group ended and nothing that listens.
        static NONE: OnceLock<WorkerHandle> = OnceLock::new();
        NONE.get_or_init(|| {
            let done = Tasks::unsupervised(CancellationToken::new());
            done.close();
            WorkerHandle {
                stop: CancellationToken::new(),
                abandon: CancellationToken::new(),
                done,
            }
        })
        .clone()
    }

    /// Runs `worker` as a supervised task of its route: a panic restarts the route (see
    /// [`super::Pipeline::recover`]). The route worker's unit tests run it this way too.
    pub(super) fn spawn(supervisor: &Supervisor, worker: Box<RouteWorker>) -> WorkerHandle {
        let owner = Owner::Route(worker.name.clone());
        // Paced like a connection with default settings: a route has no `reconnect:` of its own.
        let run = supervisor.run_of(owner, &config::Reconnect::default());
        let handle = WorkerHandle {
            stop: worker.stop.clone(),
            abandon: worker.abandon.clone(),
            done: run.tasks(worker.stop.clone()),
        };
        // A worker ends when told to (a reload's stop, the queue closed at shutdown) or by
        // itself (`stop_after`): only a panic is a failure.
        // Boxed: a task keeps its future in place, and the supervision around it (the panic
        // catch) keeps room for it twice over: in place, an idle route's task took 4 KB.
        handle
            .done
            .spawn_finite("worker", Box::pin(worker.run(run)));
        handle.done.close();
        handle
    }

    /// Whether the worker's task still runs.
    pub(super) fn is_running(&self) -> bool {
        self.done.is_running()
    }

    /// Stops the worker, giving it until `deadline` to finish the message in hand.
    pub(super) async fn stop(&self, deadline: Instant) {
        self.stop.cancel();
        if tokio::time::timeout_at(deadline, self.done.wait())
            .await
            .is_err()
        {
            self.abandon.cancel();
            self.done.wait().await;
        }
    }
}
