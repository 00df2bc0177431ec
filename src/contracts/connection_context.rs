//! What a started connection gets from ferry: the supervised task groups it runs on and the
//! two tokens that stop it, in shutdown's order (sources first, then the connection).

use tokio_util::sync::CancellationToken;

use super::supervisor::{OwnerRun, Tasks};

/// What a started connection gets from ferry.
#[derive(Clone)]
pub struct ConnectionContext {
    /// Every connection task goes here, supervised (a task that panics or ends before `close`
    /// restarts the connection), so shutdown can wait for them.
    pub tasks: Tasks,
    /// Tasks that only feed route queues, supervised likewise until `stop_sources`. Shutdown
    /// waits for them (after `stop_sources`) before it closes the queues, so what a source
    /// already received still gets delivered.
    pub sources: Tasks,
    /// Cancelled when the sources must stop reading (shutdown step one).
    pub stop_sources: CancellationToken,
    /// Cancelled when the connection must close (shutdown step two, after the queues drained).
    pub close: CancellationToken,
}

impl ConnectionContext {
    /// A context with its own tasks and tokens, for one run of a connection (each connection
    /// has one, so a reload or a restart can stop one connection while the others run).
    pub fn new(run: &OwnerRun) -> ConnectionContext {
        let stop_sources = CancellationToken::new();
        let close = CancellationToken::new();
        ConnectionContext {
            // A source task may end once its sources are told to stop; a connection task
            // only once it is told to close.
            sources: run.tasks(stop_sources.clone()),
            tasks: run.tasks(close.clone()),
            stop_sources,
            close,
        }
    }
}
