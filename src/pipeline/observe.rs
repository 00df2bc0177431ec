//! What the admin listener (`/readyz`, `/metrics`, `/routes`, `ferry tap`) sees of the running
//! pipeline: its routes and connections as of the last start or reload.

use std::sync::{Arc, RwLock};

use super::route::RouteCounters;
use super::tap::Tap;
use crate::config;
use crate::contracts::queue::RouteOutput;
use crate::contracts::status::ConnectionStatus;
use crate::contracts::supervisor::Supervisor;

/// A shared view of the running pipeline. Cheap to clone; a reload replaces what it holds, so
/// a reader takes a [`View`] and looks at that one consistently.
#[derive(Clone, Default)]
pub struct Observed(Arc<RwLock<Arc<View>>>);

impl Observed {
    /// The routes and connections running now.
    pub fn view(&self) -> Arc<View> {
        self.0.read().expect("observed lock").clone()
    }

    pub(crate) fn set(&self, view: View) {
        *self.0.write().expect("observed lock") = Arc::new(view);
    }
}

/// The running routes and connections, in the configuration's order.
#[derive(Default)]
pub struct View {
    pub routes: Vec<RouteView>,
    pub connections: Vec<ConnectionStatus>,
    /// Which connections and routes wait for a restart after a task failed, and how often
    /// each task failed.
    pub supervisor: Supervisor,
}

/// One running route. Its counters, queue and tap live as long as the route does: a reload
/// that restarts the route's worker keeps them, so counters never go back.
pub struct RouteView {
    /// The route as configured: its name, the connections of its source, sinks and
    /// dead-letter sink. The running configuration's own, shared rather than copied.
    pub route: Arc<config::Route>,
    /// `delivery: at-least-once` (or implied by its sides).
    pub at_least_once: bool,
    pub counters: Arc<RouteCounters>,
    /// Depth (`len`), bytes (`bytes`) and drops (`dropped`) of its queue.
    pub queue: RouteOutput,
    pub tap: Tap,
}

impl RouteView {
    pub fn name(&self) -> &str {
        &self.route.name
    }
}
