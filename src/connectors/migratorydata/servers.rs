//! The failover list of a MigratoryData connection, as MigratoryData's own clients keep it
//! (`setServers`): requests go to one server at a time, the first of the list to start with;
//! on a connection failure (cannot connect, no answer in time, a 5xx) the next one takes over;
//! once a server other than the first has stayed up for `reconnect.stable_after`, ferry goes
//! back to the first.
//!
//! Shared by every source poller and sink of the connection, so they all talk to the same
//! server. The lock is held only to read or move the position, never across a request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use url::Url;

use crate::contracts::status::{ConnectionStatus, State};

/// The servers of one connection and which one is in use.
pub struct Servers {
    connection: Arc<str>,
    /// Base URLs, in the user's order. Never logged whole: see `origins`.
    bases: Vec<Url>,
    /// `scheme://host:port` of each, the only part of a server's address ferry logs.
    origins: Vec<String>,
    stable_after: Duration,
    status: ConnectionStatus,
    position: Mutex<Position>,
}

struct Position {
    /// The server in use.
    index: usize,
    /// Since when it has answered without a failure in between (`None`: not yet).
    up_since: Option<Instant>,
}

impl Servers {
    /// The failover list over `bases` (at least one).
    pub fn new(
        connection: Arc<str>,
        bases: Vec<Url>,
        stable_after: Duration,
        status: ConnectionStatus,
    ) -> Servers {
        assert!(!bases.is_empty(), "the parser refuses an empty `servers`");
        let origins = bases
            .iter()
            .map(|u| u.origin().ascii_serialization())
            .collect();
        Servers {
            connection,
            bases,
            origins,
            stable_after,
            status,
            position: Mutex::new(Position {
                index: 0,
                up_since: None,
            }),
        }
    }

    /// How many servers the list has.
    pub fn len(&self) -> usize {
        self.bases.len()
    }

    /// The server to send the next request to: its index (for [`Self::succeeded`] and
    /// [`Self::failed`]) and base URL. Goes back to the first server once another one has
    /// been up for `stable_after`.
    pub fn pick(&self) -> (usize, &Url) {
        let mut p = self.position.lock().expect("servers lock");
        if p.index != 0
            && p.up_since
                .is_some_and(|since| since.elapsed() >= self.stable_after)
        {
            tracing::info!(
                connection = %self.connection,
                "{} stayed up for {:?}: going back to the first server, {}",
                self.origins[p.index],
                self.stable_after,
                self.origins[0]
            );
            p.index = 0;
            p.up_since = None;
        }
        (p.index, &self.bases[p.index])
    }

    /// `scheme://host:port` of server `index`: what logs and errors may show of it.
    pub fn origin(&self, index: usize) -> &str {
        &self.origins[index]
    }

    /// Server `index` answered: the connection is up (logged once, on the change).
    pub fn succeeded(&self, index: usize) {
        {
            let mut p = self.position.lock().expect("servers lock");
            if p.index == index && p.up_since.is_none() {
                p.up_since = Some(Instant::now());
            }
        }
        self.status.up(&format!("to {}", self.origins[index]));
    }

    /// Server `index` could not be reached (`reason`, which names no secret): the next server
    /// in the list takes over, unless another request already moved on. The first failure
    /// after the connection was up is a warning; the ones that follow while it stays down are
    /// debug lines, so a retry loop does not flood the log.
    pub fn failed(&self, index: usize, reason: &str) {
        let was_up = self.status.state() != State::Down;
        self.status
            .unreachable(&format_args!("{}: {reason}", self.origins[index]));
        if self.bases.len() == 1 {
            return;
        }
        let mut p = self.position.lock().expect("servers lock");
        if p.index != index {
            return; // another request failed over already
        }
        p.index = (index + 1) % self.bases.len();
        p.up_since = None;
        let next = &self.origins[p.index];
        drop(p);
        if was_up {
            tracing::warn!(connection = %self.connection, "failing over from {} to {next}", self.origins[index]);
        } else {
            tracing::debug!(connection = %self.connection, "trying {next}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(stable_after: Duration) -> Servers {
        Servers::new(
            "md".into(),
            vec![
                Url::parse("http://a:1/").unwrap(),
                Url::parse("http://b:2/").unwrap(),
                Url::parse("http://c:3/").unwrap(),
            ],
            stable_after,
            ConnectionStatus::new("md", "migratorydata"),
        )
    }

    #[test]
    fn a_failure_moves_to_the_next_server_once() {
        let s = servers(Duration::from_secs(60));
        assert_eq!(s.pick().0, 0);
        s.failed(0, "refused");
        assert_eq!(s.pick().0, 1);
        // A second request that failed on the first server does not skip the second.
        s.failed(0, "refused");
        assert_eq!(s.pick().0, 1);
        s.failed(1, "refused");
        s.failed(2, "refused");
        assert_eq!(s.pick().0, 0, "round the list");
        assert_eq!(s.origin(1), "http://b:2");
    }

    #[test]
    fn back_to_the_first_after_stable_after() {
        let s = servers(Duration::from_millis(30));
        s.failed(0, "refused");
        let (index, _) = s.pick();
        assert_eq!(index, 1);
        s.succeeded(1);
        assert_eq!(s.pick().0, 1, "not stable yet");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(s.pick().0, 0);
    }
}
