//! The resume cursor: the id of the last event whose delivery every route confirmed, kept on
//! disk so that after a restart ferry asks the server (`Last-Event-ID`) for exactly what came
//! after it.
//!
//! Routes confirm out of order (each has its own queue and sinks), so the cursor is not simply
//! the last confirmed id: the [`Tracker`] numbers the events in stream order and moves the
//! cursor to the id of the newest event such that it and every event before it is settled.
//! One event that is not delivered (a route dropped it from a full queue, or shutdown gave up
//! on it) holds the cursor before it for the rest of the run: after a restart the server
//! replays from there. At least once, never less.
//!
//! The [`CursorFile`] is written atomically (a temporary file, fsync, rename), by one task that
//! always writes the newest cursor and skips the ones that went by in the meantime.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::contracts::private_files::{create_private_dir, private_file};
use crate::message::Ack;

/// Settles the events of one stream, in order, into the cursor.
pub struct Tracker {
    state: Mutex<State>,
    /// The cursor, for the task that saves it.
    cursor: watch::Sender<Option<String>>,
    connection: Arc<str>,
}

struct State {
    /// Sequence number the next event gets.
    next: u64,
    /// Sequence number of `pending[0]`.
    first: u64,
    /// Events not yet settled, from the oldest; settled ones are popped off the front.
    pending: VecDeque<Pending>,
    /// The first event a route did not deliver: the cursor never passes it in this run, so
    /// neither it nor anything after it is tracked.
    stuck_at: Option<u64>,
}

struct Pending {
    id: Option<String>,
    /// Routes that have not confirmed yet.
    waiting: usize,
}

impl Tracker {
    /// A tracker whose cursor starts at `cursor` (the one read from disk).
    pub fn new(connection: Arc<str>, cursor: Option<String>) -> Arc<Tracker> {
        Arc::new(Tracker {
            state: Mutex::new(State {
                next: 0,
                first: 0,
                pending: VecDeque::new(),
                stuck_at: None,
            }),
            cursor: watch::Sender::new(cursor),
            connection,
        })
    }

    /// The cursor as it moves.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.cursor.subscribe()
    }

    /// The current cursor.
    pub fn cursor(&self) -> Option<String> {
        self.cursor.borrow().clone()
    }

    /// Registers the next event of the stream, going to `routes` routes (0 is fine: an event no
    /// route takes is settled at once, and its id still moves the cursor). Returns one ack per
    /// route.
    pub fn begin(self: &Arc<Self>, id: Option<String>, routes: usize) -> Vec<Ack> {
        let mut state = self.state.lock().expect("tracker lock");
        let seq = state.next;
        state.next += 1;
        if state.stuck_at.is_some() {
            return (0..routes).map(|_| Ack::none()).collect();
        }
        state.pending.push_back(Pending {
            id,
            waiting: routes,
        });
        self.advance(&mut state);
        drop(state);
        (0..routes)
            .map(|_| {
                let tracker = self.clone();
                Ack::new(move |delivered| tracker.settle(seq, delivered))
            })
            .collect()
    }

    /// One route is done with event `seq`: delivered (`true`) or not.
    fn settle(&self, seq: u64, delivered: bool) {
        let mut state = self.state.lock().expect("tracker lock");
        if state.stuck_at.is_some_and(|stuck| seq >= stuck) || seq < state.first {
            return;
        }
        let index = (seq - state.first) as usize;
        if delivered {
            if let Some(event) = state.pending.get_mut(index) {
                event.waiting = event.waiting.saturating_sub(1);
            }
            self.advance(&mut state);
        } else {
            state.stuck_at = Some(seq);
            state.pending.truncate(index);
            drop(state);
            tracing::warn!(
                connection = %self.connection,
                "an event was not delivered (a full queue dropped it, or shutdown gave up on it): \
                 the resume cursor stays before it until ferry restarts, and the server replays \
                 from there then"
            );
        }
    }

    /// Pops the settled events off the front and moves the cursor to the newest id among them.
    fn advance(&self, state: &mut State) {
        let mut newest = None;
        while state.pending.front().is_some_and(|e| e.waiting == 0) {
            let event = state.pending.pop_front().expect("not empty");
            state.first += 1;
            if event.id.is_some() {
                newest = event.id;
            }
        }
        if let Some(id) = newest {
            self.cursor.send_replace(Some(id));
        }
    }
}

/// What a cursor file (`<state_dir>/sse/<connection>.json`) holds.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Saved {
    /// The stream's URL without its query (which may hold an API key), or another connector's
    /// name for its stream: a cursor is only good for the stream it came from.
    url: String,
    last_event_id: Option<String>,
}

/// Where one connection's cursor lives.
pub struct CursorFile {
    path: PathBuf,
    /// The stream's URL without query, fragment or password.
    url: String,
    connection: Arc<str>,
    /// What the file holds now.
    saved: Option<String>,
}

impl CursorFile {
    /// The SSE cursor file of `connection` under `state_dir` (`sse/<connection>.json`), for
    /// the stream at `url`. See [`Self::open_in`].
    pub fn open(
        state_dir: &Path,
        connection: Arc<str>,
        url: &str,
    ) -> anyhow::Result<(CursorFile, Option<String>)> {
        let hint = format!(
            "ferry keeps the SSE resume cursor (the id of the last delivered event) there. \
             Set `state_dir:` in bridges.yaml to a directory ferry may write, run ferry \
             under systemd with `StateDirectory=ferry` (then it is /var/lib/ferry), or set \
             `resume: false` on connection {connection}"
        );
        // `open_in` makes the name a file name.
        let name = connection.to_string();
        Self::open_in(
            &state_dir.join("sse"),
            &name,
            connection,
            stream_url(url),
            hint,
        )
    }

    /// The cursor file `<dir>/<name>.json` of `connection`, for the stream called `stream`
    /// (a cursor saved for another stream is not used; `stream` must hold no secret). Creates
    /// the directory, reads the saved cursor, and writes it back once, so a directory ferry
    /// cannot write to is found now, before anything starts, and not at the first event;
    /// `hint` then says what to do. Other connectors keep their cursors with this too
    /// (MigratoryData's epoch/seq).
    pub fn open_in(
        dir: &Path,
        name: &str,
        connection: Arc<str>,
        stream: String,
        hint: String,
    ) -> anyhow::Result<(CursorFile, Option<String>)> {
        let mut file = CursorFile {
            path: dir.join(format!("{}.json", file_name(name))),
            url: stream,
            connection,
            saved: None,
        };
        create_private_dir(dir)
            .with_context(|| format!("cannot create the directory {}. {hint}", dir.display()))?;
        let cursor = file.load();
        match file.save(&cursor) {
            Ok(()) => file.saved.clone_from(&cursor),
            // A full disk is no reason not to start: the cursor is saved once there is room
            // again (until then a restart replays more).
            Err(e) if is_disk_full(&e) => tracing::warn!(
                connection = %file.connection,
                "cannot save the resume cursor in {}: {e}; carrying on",
                dir.display()
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot write in {}. {hint}", dir.display()));
            }
        }
        Ok((file, cursor))
    }

    /// The saved cursor, if there is one for this stream.
    fn load(&self) -> Option<String> {
        let text = match std::fs::read(&self.path) {
            // A cursor is a URL and an event id: a huge file is not one (and is not parsed).
            Ok(text) if text.len() > MAX_CURSOR_FILE => {
                tracing::warn!(connection = %self.connection, "the resume cursor {} is {} bytes, not a cursor; starting without one", self.path.display(), text.len());
                return None;
            }
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(connection = %self.connection, "cannot read the resume cursor {}: {e}; starting without one", self.path.display());
                return None;
            }
        };
        match serde_json::from_slice::<Saved>(&text) {
            Ok(saved) if saved.url == self.url => {
                if let Some(id) = &saved.last_event_id {
                    tracing::info!(connection = %self.connection, "resuming after event id {id:?} (from {})", self.path.display());
                }
                saved.last_event_id
            }
            Ok(saved) => {
                tracing::info!(
                    connection = %self.connection,
                    "the saved resume cursor is for {}, not {}: starting without one",
                    saved.url,
                    self.url
                );
                None
            }
            Err(e) => {
                tracing::warn!(connection = %self.connection, "the resume cursor {} is unreadable ({e}); starting without one", self.path.display());
                None
            }
        }
    }

    /// Writes the cursor atomically: a crash leaves the old file or the new one, never half.
    fn save(&self, cursor: &Option<String>) -> std::io::Result<()> {
        let saved = Saved {
            url: self.url.clone(),
            last_event_id: cursor.clone(),
        };
        let text = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
        let temp = self.path.with_extension("json.tmp");
        let written = private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(&text)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temp, &self.path));
        if let Err(e) = written {
            // No half-written temporary file left to take the room of the next try.
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        // The rename itself is durable once the directory is synced.
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Saves the cursor whenever it moves, the newest one each time and no more than ten
    /// times a second, until `close`; then saves the final one.
    pub async fn keep(self, mut cursor: watch::Receiver<Option<String>>, close: CancellationToken) {
        let mut written = self.saved.clone();
        let file = Arc::new(self);
        let failures = crate::contracts::status::RateLimitedLog::default();
        loop {
            tokio::select! {
                changed = cursor.changed() => if changed.is_err() { break },
                _ = close.cancelled() => break,
            }
            let id = cursor.borrow_and_update().clone();
            if id != written && file.write(&id, &failures).await {
                written = id;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = close.cancelled() => break,
            }
        }
        let id = cursor.borrow().clone();
        if id != written {
            file.write(&id, &failures).await;
        }
    }

    async fn write(
        self: &Arc<Self>,
        cursor: &Option<String>,
        failures: &crate::contracts::status::RateLimitedLog,
    ) -> bool {
        let file = self.clone();
        let cursor = cursor.clone();
        let result = crate::contracts::supervisor::blocking(move || file.save(&cursor)).await;
        match result {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                failures.warn(|| {
                    format!(
                        "connection {}: cannot save the resume cursor in {}: {e}",
                        self.connection,
                        self.path.display()
                    )
                });
                false
            }
            Err(_) => false,
        }
    }
}

/// The URL a cursor belongs to: without query (API keys), fragment or credentials.
pub fn stream_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_string(),
    }
}

/// A full disk (or quota), as opposed to a directory ferry may not write at all.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// The longest cursor file read (its event id is bounded by the SSE line limit anyway).
const MAX_CURSOR_FILE: usize = 1024 * 1024;

/// A connection (or stream) name as a file name in its directory, one to one, so two names
/// never share a file and none leaves the directory: letters, digits, `-` and `_` stay, and so
/// does `.` but at the start; every other byte is `%` and two hex digits (`../x` is
/// `%2E.%2Fx`, `a b` is `a%20b`).
pub fn file_name(connection: &str) -> String {
    let mut name = String::with_capacity(connection.len());
    for (i, b) in connection.bytes().enumerate() {
        match b {
            b'.' if i > 0 => name.push('.'),
            b'-' | b'_' => name.push(b as char),
            b if b.is_ascii_alphanumeric() => name.push(b as char),
            b => name.push_str(&format!("%{b:02X}")),
        }
    }
    if name.is_empty() {
        name.push('%');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> (Arc<Tracker>, watch::Receiver<Option<String>>) {
        let t = Tracker::new("db".into(), Some("start".into()));
        let rx = t.subscribe();
        (t, rx)
    }

    fn id(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn confirms_out_of_order_move_the_cursor_only_over_settled_events() {
        let (t, _) = tracker();
        let mut a1 = t.begin(id("1"), 1);
        let mut a2 = t.begin(id("2"), 1);
        let mut a3 = t.begin(id("3"), 1);
        a3.pop().unwrap().confirm();
        assert_eq!(t.cursor(), id("start"), "3 is done but 1 and 2 are not");
        a2.pop().unwrap().confirm();
        assert_eq!(t.cursor(), id("start"));
        a1.pop().unwrap().confirm();
        assert_eq!(t.cursor(), id("3"), "1..3 all done");
    }

    #[test]
    fn an_event_for_two_routes_needs_both() {
        let (t, _) = tracker();
        let mut acks = t.begin(id("1"), 2);
        acks.pop().unwrap().confirm();
        assert_eq!(t.cursor(), id("start"));
        acks.pop().unwrap().confirm();
        assert_eq!(t.cursor(), id("1"));
    }

    #[test]
    fn events_no_route_takes_are_settled_at_once_and_carry_the_cursor() {
        let (t, _) = tracker();
        assert!(t.begin(id("1"), 0).is_empty());
        assert_eq!(t.cursor(), id("1"));
        let mut a2 = t.begin(id("2"), 1);
        t.begin(id("3"), 0);
        assert_eq!(t.cursor(), id("1"), "2 is still on its way");
        a2.pop().unwrap().confirm();
        assert_eq!(t.cursor(), id("3"));
    }

    #[test]
    fn events_without_id_are_waited_for_but_leave_the_cursor() {
        let (t, _) = tracker();
        let mut a1 = t.begin(None, 1);
        let mut a2 = t.begin(id("2"), 1);
        let mut a3 = t.begin(None, 1);
        a2.pop().unwrap().confirm();
        assert_eq!(
            t.cursor(),
            id("start"),
            "the event before 2 is not delivered yet"
        );
        a1.pop().unwrap().confirm();
        assert_eq!(t.cursor(), id("2"));
        a3.pop().unwrap().confirm();
        assert_eq!(t.cursor(), id("2"), "no id: the cursor stays");
    }

    #[test]
    fn a_nack_holds_the_cursor_before_it_for_good() {
        let (t, _) = tracker();
        let mut a1 = t.begin(id("1"), 1);
        let mut a2 = t.begin(id("2"), 1);
        let mut a3 = t.begin(id("3"), 1);
        drop(a2.pop().unwrap()); // dropped unconfirmed: a nack
        a3.pop().unwrap().confirm();
        assert_eq!(t.cursor(), id("start"));
        a1.pop().unwrap().confirm();
        assert_eq!(t.cursor(), id("1"), "up to the nacked event");
        let mut a4 = t.begin(id("4"), 1);
        a4.pop().unwrap().confirm();
        t.begin(id("5"), 0);
        assert_eq!(t.cursor(), id("1"), "never past the nack in this run");
        let state = t.state.lock().unwrap();
        assert!(state.pending.is_empty(), "nothing is kept after a nack");
    }

    #[test]
    fn the_cursor_is_published_to_the_saver() {
        let (t, mut rx) = tracker();
        assert_eq!(*rx.borrow_and_update(), id("start"));
        t.begin(id("9"), 0);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), id("9"));
    }

    #[test]
    fn the_file_keeps_the_cursor_for_its_url_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = "https://db.example.com/realtime?apikey=s3cret";
        let (file, cursor) = CursorFile::open(dir.path(), "db".into(), url).unwrap();
        assert_eq!(cursor, None);
        file.save(&id("42")).unwrap();
        let text = std::fs::read_to_string(dir.path().join("sse/db.json")).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(
            serde_json::from_str::<Saved>(&text).unwrap(),
            Saved {
                url: "https://db.example.com/realtime".into(),
                last_event_id: id("42")
            }
        );
        let (_, cursor) = CursorFile::open(dir.path(), "db".into(), url).unwrap();
        assert_eq!(cursor, id("42"));
        let (_, cursor) = CursorFile::open(
            dir.path(),
            "db".into(),
            "https://other.example.com/realtime",
        )
        .unwrap();
        assert_eq!(cursor, None, "a cursor of another stream is not used");
    }

    #[test]
    fn a_state_dir_that_is_a_file_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("state");
        std::fs::write(&not_a_dir, "").unwrap();
        let err = CursorFile::open(&not_a_dir, "db".into(), "http://x/")
            .err()
            .unwrap();
        let text = format!("{err:#}");
        assert!(
            text.contains(&not_a_dir.join("sse").display().to_string()),
            "{text}"
        );
        assert!(text.contains("state_dir"), "{text}");
        assert!(text.contains("StateDirectory=ferry"), "{text}");
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name("db"), "db");
        assert_eq!(file_name("db.eu-1_a"), "db.eu-1_a");
        assert_eq!(file_name("../etc/x"), "%2E.%2Fetc%2Fx");
        assert_eq!(file_name("a b/c"), "a%20b%2Fc");
        assert_eq!(file_name("a_b"), "a_b");
        assert_eq!(file_name("é"), "%C3%A9");
        assert_eq!(file_name(""), "%");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any name: one path component of safe characters, never `.`/`..`, and two different
        /// names never share a file.
        #[test]
        fn any_name_is_one_safe_file_name_of_its_own(a in ".{0,12}", b in ".{0,12}") {
            let name = file_name(&a);
            proptest::prop_assert!(!name.is_empty());
            proptest::prop_assert!(!name.starts_with('.'));
            proptest::prop_assert!(name.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.%".contains(&c)));
            proptest::prop_assert_eq!(a == b, name == file_name(&b));
        }
    }

    #[test]
    fn a_connection_name_is_made_a_file_name_once() {
        let dir = tempfile::tempdir().unwrap();
        let (file, _) = CursorFile::open(dir.path(), "a b/../c".into(), "http://x/s").unwrap();
        file.save(&id("1")).unwrap();
        assert!(dir.path().join("sse/a%20b%2F..%2Fc.json").is_file());
    }

    #[test]
    fn cursor_files_and_their_directory_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (file, _) = CursorFile::open(dir.path(), "db".into(), "http://x/s").unwrap();
        file.save(&id("1")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("sse")), 0o700);
        assert_eq!(mode(&dir.path().join("sse/db.json")), 0o600);
    }

    #[tokio::test]
    async fn the_saver_writes_the_newest_cursor_and_a_final_one_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let (file, _) = CursorFile::open(dir.path(), "db".into(), "http://x/s").unwrap();
        let t = Tracker::new("db".into(), None);
        let close = CancellationToken::new();
        let saver = tokio::spawn(file.keep(t.subscribe(), close.clone()));
        for i in 0..100 {
            t.begin(Some(i.to_string()), 0);
        }
        close.cancel();
        saver.await.unwrap();
        let (_, cursor) = CursorFile::open(dir.path(), "db".into(), "http://x/s").unwrap();
        assert_eq!(cursor, id("99"));
    }
}
