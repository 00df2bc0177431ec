//! What a reload (or a restart after a task failed) changed, as one line for the log.

/// What a reload changed, for the log.
#[derive(Debug, Default)]
pub struct ReloadSummary {
    pub routes_started: Vec<String>,
    pub routes_restarted: Vec<String>,
    pub routes_stopped: Vec<String>,
    pub routes_unchanged: Vec<String>,
    pub connections_started: Vec<String>,
    pub connections_restarted: Vec<String>,
    /// Settings that take effect only at the next start (`admin:`, `sse_server` streams).
    pub needs_restart: Vec<String>,
    /// What could not be set up (it stays stopped).
    pub failed: Vec<String>,
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
            "routes started: {}; restarted: {}; stopped: {}; unchanged: {}; connections started: {}; restarted: {}",
            list(&self.routes_started),
            list(&self.routes_restarted),
            list(&self.routes_stopped),
            list(&self.routes_unchanged),
            list(&self.connections_started),
            list(&self.connections_restarted),
        )?;
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; changed but kept until the next restart: {}",
                self.needs_restart.join(", ")
            )?;
        }
        if !self.failed.is_empty() {
            write!(f, "; failed: {}", self.failed.join("; "))?;
        }
        Ok(())
    }
}
