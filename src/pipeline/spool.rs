//! A route sink's store-and-forward spool: while the sink is unreachable, the messages the
//! route mapped for it wait here, on disk, and the source is acknowledged once they are durable;
//! when the sink is back they are forwarded in order. The spool survives a restart.
//!
//! On disk, a spool is a directory of segment files and a cursor:
//! - `<20-digit id>.seg`: the 8-byte header `FERRYSP2`, then records, each
//!   `[marker][length: u32 LE][crc32 of length and body: u32 LE][body: length bytes]`
//!   ([`record`] has the details, and how segments of the first format are still read).
//!   Appends go to the last segment; a new one starts when it would pass `segment size`
//!   (16 MiB at most).
//! - `cursor`: `<segment id> <offset>`, the first record not yet forwarded, replaced atomically
//!   (write, rename) every [`CURSOR_EVERY`] forwarded records, when a segment is finished and
//!   when the spool empties. It may lag behind: a restart then forwards a few messages again
//!   (at least once, never lost). A cursor that cannot be written (a full disk) is logged and
//!   left behind; it never stops the spool, nor a start.
//! - `lock`: locked (`flock`) while a ferry has the spool open, so two processes (or two
//!   routes given the same `dir`) never write into one log.
//! - `<segment>.seg.<offset>.damaged`: bytes of a damaged record, kept for a human.
//!
//! Every file is created 0600 and every directory 0700, whatever the umask: spooled messages
//! are the users' data.
//!
//! Segments before the cursor are deleted as soon as they are forwarded; when the spool is
//! empty, no segment is left. A record that does not check out (its checksum, covering the
//! length too, does not match, or its length is impossible) is either damage or a torn tail:
//! - damage, when a valid record follows it (found by its marker and checksum): its bytes are
//!   moved aside to a `.damaged` file, with a warning naming the file and offset, and
//!   forwarding goes on with the next valid record; nothing else is lost;
//! - a torn tail (a crash while appending, or zeroes a file system left there) when nothing
//!   valid follows it in the last segment: at open, that segment is cut back to its last whole
//!   record (the cut bytes kept aside the same way), so appends continue after valid data.
//!
//! Nothing panics on a bad file.
//!
//! Durability: [`Spool::append`] writes to the page cache; [`Spool::sync`] makes every append
//! so far durable with one `fdatasync` (group commit). The route confirms the sources' acks
//! only after that.

mod record;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::contracts::private_files::{create_private_dir, private_file};
use crate::message::Message;
use record::{Format, MAGIC, SEGMENT_HEADER, decode, encode, frame, next_record, read_record};

/// Marker, length and checksum in front of each record body written now.
const RECORD_HEADER: u64 = 12;
/// The largest segment file.
const MAX_SEGMENT: u64 = 16 * 1024 * 1024;
/// The smallest segment file limit, for tiny `max_bytes`.
const MIN_SEGMENT: u64 = 64 * 1024;
/// The cursor is saved after this many forwarded records (and on every segment change): a
/// crash forwards at most this many again.
pub const CURSOR_EVERY: u32 = 1024;

/// Why [`Spool::append`] did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The route's spools already hold `max_bytes`.
    #[error("the spool is full ({max_bytes} bytes)")]
    Full { max_bytes: u64 },
    #[error("cannot write to the spool: {0}")]
    Io(#[from] io::Error),
}

/// A place in the log: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    segment: u64,
    offset: u64,
}

/// A segment file on disk and how many of its bytes are valid records (header included).
#[derive(Debug)]
struct Segment {
    id: u64,
    len: u64,
    format: Format,
}

/// The spool's files, used under [`Spool`]'s lock (or alone, in the tests).
struct SegmentLog {
    dir: PathBuf,
    /// `<dir>/lock`, locked while the log is open: two writers would interleave records.
    _lock: File,
    /// The route's limit, shared by its sinks' spools.
    max_bytes: u64,
    /// Bytes not yet forwarded in every spool of the route (records with their headers).
    used: Arc<AtomicU64>,
    segment_limit: u64,
    /// Segments on disk, oldest first. The last one takes the appends.
    segments: VecDeque<Segment>,
    /// The last segment, open for writing; `None` until the first append after an open or
    /// after the spool emptied.
    writer: Option<Arc<File>>,
    /// Appends since the last [`SegmentLog::sync_handle`].
    unsynced: bool,
    /// The first record not yet forwarded.
    read: Position,
    /// The segment `read` is in, open for reading.
    reader: Option<(u64, File)>,
    /// Where the record [`SegmentLog::peek`] returned ends, until it is forwarded.
    peeked_end: Option<u64>,
    /// Bytes from `read` to the end of the log.
    pending: u64,
    /// Records forwarded since the cursor was last saved.
    since_cursor: u32,
    /// The last cursor save failed (so the failure is logged once, not at every retry).
    cursor_failing: bool,
    /// The id the next new segment gets: always above every id used before, so a stale
    /// cursor never points into a newer segment.
    next_id: u64,
    /// Reused for encoding records.
    buffer: Vec<u8>,
    /// What was damaged and skipped, as logged (for tests).
    repairs: Vec<String>,
    /// Damaged records met since the open, and their bytes.
    damaged_records: u64,
    damaged_bytes: u64,
    /// The spool was found full since it last emptied (so that is logged once).
    full: bool,
}

fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

impl SegmentLog {
    /// Opens (creating it if needed) the spool in `dir`, recovering what a previous process
    /// left: segments, cursor, and a torn tail in the last segment.
    fn open(dir: &Path, max_bytes: u64, used: Arc<AtomicU64>) -> io::Result<SegmentLog> {
        create_private_dir(dir)?;
        let lock = private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        if let Err(e) = lock.try_lock() {
            return Err(match e {
                fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "another ferry (or route) is using this spool; give each its own `dir`",
                ),
                fs::TryLockError::Error(e) => e,
            });
        }
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut log = SegmentLog {
            dir: dir.to_path_buf(),
            _lock: lock,
            max_bytes,
            used,
            segment_limit: (max_bytes / 4).clamp(MIN_SEGMENT, MAX_SEGMENT),
            segments: VecDeque::new(),
            writer: None,
            unsynced: false,
            read: Position {
                segment: 0,
                offset: SEGMENT_HEADER,
            },
            reader: None,
            peeked_end: None,
            pending: 0,
            since_cursor: 0,
            cursor_failing: false,
            next_id: 1,
            buffer: Vec::new(),
            repairs: Vec::new(),
            damaged_records: 0,
            damaged_bytes: 0,
            full: false,
        };
        let cursor = log.load_cursor();
        for &id in &ids {
            if cursor.is_some_and(|c| id < c.segment) {
                // Forwarded before the last process stopped, not yet deleted.
                let _ = fs::remove_file(log.path(id));
                continue;
            }
            let path = log.path(id);
            let len = fs::metadata(&path)?.len();
            let mut header = [0u8; MAGIC.len()];
            let readable = File::open(&path)?.read_exact_at(&mut header, 0).is_ok();
            let format = Format::of_header(&header).filter(|_| readable);
            let Some(format) = format else {
                // Created but never written (a crash right after), or not ours: keep it aside
                // for a human, out of the log.
                let aside = path.with_extension("seg.damaged");
                log.repair(format!(
                    "spool file {} does not start with a spool header ({len} bytes); moved aside to {}",
                    path.display(),
                    aside.display()
                ));
                fs::rename(&path, &aside)?;
                continue;
            };
            log.segments.push_back(Segment { id, len, format });
        }
        log.next_id = ids.last().map_or(1, |last| last + 1);
        if let Some(c) = cursor {
            log.next_id = log.next_id.max(c.segment + 1);
        }
        log.read = match (cursor, log.segments.front()) {
            (Some(c), Some(first)) if c.segment == first.id => Position {
                segment: c.segment,
                offset: c.offset.clamp(SEGMENT_HEADER, first.len),
            },
            (_, Some(first)) => Position {
                segment: first.id,
                offset: SEGMENT_HEADER,
            },
            (_, None) => Position {
                segment: log.next_id,
                offset: SEGMENT_HEADER,
            },
        };
        log.repair_tail()?;
        // Record bytes only: segment headers are not what the spool holds.
        log.pending = log
            .segments
            .iter()
            .map(|s| s.len - SEGMENT_HEADER)
            .sum::<u64>()
            - log
                .segments
                .front()
                .map_or(0, |_| log.read.offset - SEGMENT_HEADER);
        log.used.fetch_add(log.pending, Ordering::Relaxed);
        // Tries the directory now; a cursor that cannot be written (a full disk) is no reason
        // not to start: it only makes a later restart forward more again.
        log.save_cursor_or_warn();
        Ok(log)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    fn repair(&mut self, warning: String) {
        tracing::warn!("{warning}");
        self.repairs.push(warning);
    }

    /// The saved cursor, if there is a readable one.
    fn load_cursor(&mut self) -> Option<Position> {
        let path = self.dir.join("cursor");
        let text = match fs::read(&path) {
            // A cursor is two numbers: anything longer is not one.
            Ok(text) if text.len() <= 64 => String::from_utf8_lossy(&text).into_owned(),
            Ok(text) => format!("{} bytes", text.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.repair(format!(
                    "cannot read {}: {e}; forwarding the spool from its oldest segment",
                    path.display()
                ));
                return None;
            }
        };
        let mut fields = text.split_whitespace().map(str::parse::<u64>);
        match (fields.next(), fields.next(), fields.next()) {
            (Some(Ok(segment)), Some(Ok(offset)), None) => Some(Position { segment, offset }),
            _ => {
                self.repair(format!(
                    "{} is damaged ({text:?}); forwarding the spool from its oldest segment",
                    path.display()
                ));
                None
            }
        }
    }

    /// Replaces the cursor file atomically.
    fn save_cursor(&mut self) -> io::Result<()> {
        self.since_cursor = 0;
        let tmp = self.dir.join("cursor.tmp");
        let text = format!("{} {}\n", self.read.segment, self.read.offset);
        let written = private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .and_then(|mut file| io::Write::write_all(&mut file, text.as_bytes()))
            .and_then(|()| fs::rename(&tmp, self.dir.join("cursor")));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Saves the cursor; a failure is logged (once until a save works again) and otherwise
    /// ignored: a cursor left behind only means more is forwarded again after a restart.
    fn save_cursor_or_warn(&mut self) {
        match self.save_cursor() {
            Ok(()) => self.cursor_failing = false,
            Err(e) => {
                if !std::mem::replace(&mut self.cursor_failing, true) {
                    tracing::warn!(
                        "cannot save the spool cursor in {}: {e}; carrying on (a restart \
                         forwards the messages since the last saved cursor again)",
                        self.dir.display()
                    );
                }
            }
        }
    }

    /// Copies bytes `from..to` of segment `id` to `<segment>.<from>.damaged`; says where they
    /// went (or why they could not be kept), for the warning.
    fn set_aside(&mut self, id: u64, from: u64, to: u64) -> String {
        self.damaged_records += 1;
        self.damaged_bytes += to - from;
        let aside = self
            .dir
            .join(format!("{}.{from}.damaged", segment_name(id)));
        let kept = File::open(self.path(id)).and_then(|segment| {
            let mut bytes = vec![0u8; (to - from) as usize];
            segment.read_exact_at(&mut bytes, from)?;
            let mut file = private_file()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&aside)?;
            io::Write::write_all(&mut file, &bytes)?;
            file.sync_all()
        });
        let total = format!(
            "{} damaged record(s), {} byte(s), since the spool was opened",
            self.damaged_records, self.damaged_bytes
        );
        match kept {
            Ok(()) => format!("kept in {} ({total})", aside.display()),
            Err(e) => format!("could not keep them in {}: {e} ({total})", aside.display()),
        }
    }

    /// Checks the last segment's records and cuts it back to its last whole one, so appends
    /// continue after valid data. A bad record followed by valid ones is damage, not a torn
    /// tail: it stays, for the reader to set aside when it gets there.
    fn repair_tail(&mut self) -> io::Result<()> {
        let Some(last) = self.segments.back() else {
            return Ok(());
        };
        let (id, len, format) = (last.id, last.len, last.format);
        let path = self.path(id);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut offset = if self.read.segment == id {
            self.read.offset
        } else {
            SEGMENT_HEADER
        };
        while offset < len {
            match read_record(&file, format, offset, len) {
                Ok(body) => offset += format.record_header() + body.len() as u64,
                Err(why) => {
                    if format == Format::V2
                        && let Some(next) = next_record(&file, offset, len)?
                    {
                        offset = next;
                        continue;
                    }
                    let kept = self.set_aside(id, offset, len);
                    self.repair(format!(
                        "spool file {}: {why} at offset {offset}, and nothing valid after it: \
                         a write cut short by a crash; dropping its last {} byte(s), {kept}",
                        path.display(),
                        len - offset
                    ));
                    file.set_len(offset)?;
                    file.sync_all()?;
                    self.segments.back_mut().expect("checked").len = offset;
                    break;
                }
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Writes one record (not yet durable: see [`SegmentLog::sync_handle`]). Returns its size.
    fn append(&mut self, message: &Message) -> Result<u64, AppendError> {
        let mut body = std::mem::take(&mut self.buffer);
        body.clear();
        encode(message, &mut body);
        let result = self.append_body(&body);
        self.buffer = body;
        result
    }

    fn append_body(&mut self, body: &[u8]) -> Result<u64, AppendError> {
        let size = RECORD_HEADER + body.len() as u64;
        if self.used.load(Ordering::Relaxed) + size > self.max_bytes {
            return Err(AppendError::Full {
                max_bytes: self.max_bytes,
            });
        }
        let mut record = Vec::with_capacity(size as usize);
        frame(body, &mut record)?;
        let writer = self.writer_for(size)?;
        let offset = self.segments.back().expect("writer_for made one").len;
        if let Err(e) = writer.write_all_at(&record, offset) {
            // A partial record would hide every later one: cut it off again.
            let _ = writer.set_len(offset);
            return Err(e.into());
        }
        self.segments.back_mut().expect("checked").len += size;
        self.pending += size;
        self.used.fetch_add(size, Ordering::Relaxed);
        self.unsynced = true;
        Ok(size)
    }

    /// The file the next `size`-byte record goes to: the last segment, or a new one when
    /// there is none, the last would grow past the segment limit, or it is of the first
    /// format (left by an older ferry).
    fn writer_for(&mut self, size: u64) -> io::Result<Arc<File>> {
        let full = self.segments.back().is_none_or(|s| {
            s.format != Format::V2 || (s.len > SEGMENT_HEADER && s.len + size > self.segment_limit)
        });
        if let (Some(writer), false) = (&self.writer, full) {
            return Ok(writer.clone());
        }
        if !full {
            // The last segment, left by a previous process (or before the spool emptied).
            let id = self.segments.back().expect("not full").id;
            let file = Arc::new(OpenOptions::new().write(true).open(self.path(id))?);
            self.writer = Some(file.clone());
            return Ok(file);
        }
        if let Some(old) = self.writer.take() {
            // Once the log moves on, nothing syncs the old segment again.
            old.sync_data()?;
        }
        let id = self.next_id;
        let path = self.path(id);
        let file = private_file().write(true).create_new(true).open(&path)?;
        if let Err(e) = file.write_all_at(MAGIC, 0).and_then(|()| file.sync_data()) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        // The new file's name must survive a crash as well as its content.
        File::open(&self.dir)?.sync_all()?;
        self.next_id += 1;
        if self.segments.is_empty() {
            self.read = Position {
                segment: id,
                offset: SEGMENT_HEADER,
            };
        }
        self.segments.push_back(Segment {
            id,
            len: SEGMENT_HEADER,
            format: Format::V2,
        });
        let file = Arc::new(file);
        self.writer = Some(file.clone());
        Ok(file)
    }

    /// The file to `fdatasync` to make every append so far durable, if any is not yet.
    fn sync_handle(&mut self) -> Option<Arc<File>> {
        if !std::mem::take(&mut self.unsynced) {
            return None;
        }
        self.writer.clone()
    }

    /// The oldest message not yet forwarded, without taking it; `None` when there is none.
    /// Damaged records are set aside (with a warning) and never returned.
    fn peek(&mut self) -> io::Result<Option<Message>> {
        loop {
            self.finish_segments()?;
            if self.pending == 0 {
                return Ok(None);
            }
            let segment = self
                .segments
                .front()
                .expect("pending bytes are in a segment");
            let (id, len, format) = (segment.id, segment.len, segment.format);
            if self.reader.as_ref().is_none_or(|(open, _)| *open != id) {
                self.reader = Some((id, File::open(self.path(id))?));
            }
            let (_, file) = self.reader.as_ref().expect("opened above");
            let offset = self.read.offset;
            let why = match read_record(file, format, offset, len).and_then(|body| {
                let end = offset + format.record_header() + body.len() as u64;
                decode(body).map(|m| (m, end))
            }) {
                Ok((message, end)) => {
                    self.peeked_end = Some(end);
                    return Ok(Some(message));
                }
                Err(why) => why,
            };
            // Format 1 has no marker to find the next record by.
            let next = match format {
                Format::V2 => next_record(file, offset, len)?,
                Format::V1 => None,
            };
            let resume = next.unwrap_or(len);
            let kept = self.set_aside(id, offset, resume);
            let goes_on = match next {
                Some(next) => format!("forwarding goes on at offset {next}"),
                None => "forwarding goes on with the next segment".into(),
            };
            self.repair(format!(
                "spool file {}: {why} at offset {offset}; {} damaged byte(s) skipped and {kept}; \
                 {goes_on}",
                self.path(id).display(),
                resume - offset
            ));
            self.consume(resume - offset);
        }
    }

    /// The message [`SegmentLog::peek`] returned was delivered: moves past it. Returns the
    /// bytes it freed.
    fn forwarded(&mut self) -> io::Result<u64> {
        let end = self
            .peeked_end
            .take()
            .expect("forwarded() follows a peek() that returned a message");
        let size = end - self.read.offset;
        self.consume(size);
        self.since_cursor += 1;
        self.finish_segments()?;
        if self.since_cursor >= CURSOR_EVERY {
            self.save_cursor_or_warn();
        }
        Ok(size)
    }

    fn consume(&mut self, bytes: u64) {
        self.read.offset += bytes;
        self.pending -= bytes;
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Deletes the segments everything was forwarded from, then saves the cursor; when the
    /// spool is empty, that is every segment.
    fn finish_segments(&mut self) -> io::Result<()> {
        let mut finished = Vec::new();
        while let Some(first) = self.segments.front() {
            let last = self.segments.len() == 1;
            if self.read.offset < first.len || (last && self.pending > 0) {
                break;
            }
            finished.push(first.id);
            self.segments.pop_front();
            self.read = Position {
                segment: self.segments.front().map_or(self.next_id, |s| s.id),
                offset: SEGMENT_HEADER,
            };
        }
        if finished.is_empty() {
            return Ok(());
        }
        if self.segments.is_empty() {
            self.writer = None;
            self.full = false;
        }
        self.reader = None;
        // Deleted before the cursor is saved: that frees the room a full disk needs for the
        // cursor, and a cursor left behind (not written) then points at a deleted segment, so
        // a restart starts with the oldest one left: messages forwarded again, never lost.
        let mut failed = None;
        for id in finished {
            if let Err(e) = fs::remove_file(self.path(id))
                && e.kind() != io::ErrorKind::NotFound
            {
                failed = Some(e);
            }
        }
        self.save_cursor_or_warn();
        failed.map_or(Ok(()), Err)
    }

    /// Saves the cursor and makes the appends durable, before the spool is dropped.
    fn close(&mut self) -> io::Result<()> {
        if let Some(file) = self.sync_handle() {
            file.sync_data()?;
        }
        self.save_cursor_or_warn();
        Ok(())
    }
}

/// One sink's spool, shared by the route worker (which appends and syncs) and the sink's
/// forwarder (which reads and forwards). File operations are short page-cache reads and writes
/// under a lock; the one slow call, `fdatasync`, runs off the async threads.
pub struct Spool {
    /// Boxed: a sink holds its `Option<Spool>` in place, and most sinks have no spool, so
    /// they should not pay for a segment log's size.
    log: Mutex<Box<SegmentLog>>,
    dir: PathBuf,
    /// Wakes the forwarder: a record was appended.
    appended: Notify,
    /// Wakes a worker waiting for room: a record was forwarded.
    released: Notify,
}

impl Spool {
    /// Opens the spool in `dir` (created if missing), with what a previous process left in it.
    /// `used` counts the bytes held by every spool of the route, which together may hold
    /// `max_bytes`. Fails when the directory cannot be created or written.
    pub fn open(dir: &Path, max_bytes: u64, used: Arc<AtomicU64>) -> io::Result<Spool> {
        Ok(Spool {
            log: Mutex::new(Box::new(SegmentLog::open(dir, max_bytes, used)?)),
            dir: dir.to_path_buf(),
            appended: Notify::new(),
            released: Notify::new(),
        })
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Box<SegmentLog>> {
        self.log.lock().expect("spool lock")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Nothing waits to be forwarded.
    pub fn is_empty(&self) -> bool {
        self.log().is_empty()
    }

    /// Some appends are not yet durable: the acks behind them must wait for [`Spool::sync`].
    pub fn unsynced(&self) -> bool {
        self.log().unsynced
    }

    /// True the first time it is asked after an append found the spool full, until the spool
    /// empties: a full spool is a state worth one log line, not one per message.
    pub fn newly_full(&self) -> bool {
        !std::mem::replace(&mut self.log().full, true)
    }

    /// Bytes waiting to be forwarded.
    pub fn pending_bytes(&self) -> u64 {
        self.log().pending
    }

    /// Damaged records set aside since the spool was opened, and their bytes.
    pub fn damaged(&self) -> (u64, u64) {
        let log = self.log();
        (log.damaged_records, log.damaged_bytes)
    }

    /// Appends a message. It is durable only after the next [`Spool::sync`].
    pub fn append(&self, message: &Message) -> Result<u64, AppendError> {
        let size = self.log().append(message)?;
        self.appended.notify_waiters();
        Ok(size)
    }

    /// Resolves once every message appended so far is on disk (one `fdatasync` for all of
    /// them: group commit).
    pub async fn sync(&self) -> io::Result<()> {
        let Some(file) = self.log().sync_handle() else {
            return Ok(());
        };
        crate::contracts::supervisor::blocking(move || file.sync_data())
            .await
            .map_err(io::Error::other)?
    }

    /// Resolves when the spool may have room again (a message was forwarded). Create it
    /// before the append that found the spool full, so no forward in between is missed.
    pub fn room(&self) -> Notified<'_> {
        self.released.notified()
    }

    /// The oldest message not yet forwarded, waiting for one to be appended if there is none.
    /// Call [`Spool::forwarded`] once the sink confirmed it; until then it is returned again.
    pub async fn next(&self) -> io::Result<Message> {
        loop {
            let appended = self.appended.notified();
            if let Some(message) = self.log().peek()? {
                return Ok(message);
            }
            appended.await;
        }
    }

    /// The sink confirmed the message [`Spool::next`] returned: it leaves the spool.
    pub fn forwarded(&self) -> io::Result<()> {
        let result = self.log().forwarded().map(|_| ());
        self.released.notify_waiters();
        result
    }

    /// Makes the appends durable and saves the cursor, at shutdown.
    pub fn close(&self) -> io::Result<()> {
        self.log().close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn message(n: usize) -> Message {
        let mut m = Message::new("plant".into(), format!("iot.{n}"), format!("payload {n}"));
        m.headers = vec![
            ("room".into(), format!("r{n}")),
            ("room".into(), "again".into()),
        ];
        m.qos = 1;
        m.retain = n.is_multiple_of(2);
        m.event = n.is_multiple_of(3).then(|| "update".to_string());
        m.id = Some(format!("id-{n}"));
        m
    }

    fn open(dir: &Path, max_bytes: u64) -> SegmentLog {
        SegmentLog::open(dir, max_bytes, Arc::new(AtomicU64::new(0))).unwrap()
    }

    /// Forwards everything the log holds, returning the payloads.
    fn drain(log: &mut SegmentLog) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(m) = log.peek().unwrap() {
            out.push(String::from_utf8(m.payload.to_vec()).unwrap());
            log.forwarded().unwrap();
        }
        out
    }

    fn payloads(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|n| format!("payload {n}")).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_message_comes_back_as_it_went_in() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 1 << 20);
        let sent: Vec<Message> = (0..4).map(message).collect();
        for m in &sent {
            log.append(m).unwrap();
        }
        for want in sent {
            let got = log.peek().unwrap().unwrap();
            assert_eq!(got.subject, want.subject);
            assert_eq!(got.payload, want.payload);
            assert_eq!(got.headers, want.headers);
            assert_eq!((got.qos, got.retain), (want.qos, want.retain));
            assert_eq!(got.origin, want.origin);
            assert_eq!((got.event, got.id), (want.event, want.id));
            let micros = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_micros();
            assert_eq!(micros(got.received), micros(want.received));
            log.forwarded().unwrap();
        }
        assert!(log.peek().unwrap().is_none());
    }

    #[test]
    fn messages_are_forwarded_in_order_and_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 1 << 20);
        assert!(log.is_empty());
        for n in 0..10 {
            log.append(&message(n)).unwrap();
        }
        // Peeking again without forwarding returns the same message.
        assert_eq!(log.peek().unwrap().unwrap().payload, "payload 0");
        assert_eq!(log.peek().unwrap().unwrap().payload, "payload 0");
        log.forwarded().unwrap();
        let mut got = drain(&mut log);
        // Appends while forwarding go behind what is there.
        for n in 10..15 {
            log.append(&message(n)).unwrap();
        }
        got.extend(drain(&mut log));
        assert_eq!(got, payloads(1..15));
        assert!(log.is_empty());
        assert_eq!(log.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_reopened_spool_forwards_what_the_last_process_left_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 1 << 20);
        for n in 0..10 {
            log.append(&message(n)).unwrap();
        }
        for _ in 0..3 {
            log.peek().unwrap();
            log.forwarded().unwrap();
        }
        log.close().unwrap();
        drop(log);

        let mut log = open(dir.path(), 1 << 20);
        assert!(log.repairs.is_empty(), "{:?}", log.repairs);
        log.append(&message(10)).unwrap();
        assert_eq!(drain(&mut log), payloads(3..11));
    }

    #[test]
    fn a_stale_cursor_forwards_again_rather_than_lose() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 1 << 20);
        for n in 0..5 {
            log.append(&message(n)).unwrap();
        }
        for _ in 0..2 {
            log.peek().unwrap();
            log.forwarded().unwrap();
        }
        // A crash: no close, so the cursor still says "from the start".
        drop(log);
        let mut log = open(dir.path(), 1 << 20);
        assert_eq!(drain(&mut log), payloads(0..5));
    }

    #[test]
    fn a_torn_tail_is_cut_off_with_a_warning_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 1 << 20);
        let mut ends = Vec::new();
        for n in 0..5 {
            log.append(&message(n)).unwrap();
            ends.push(log.segments.back().unwrap().len);
        }
        drop(log);
        let file = segment_files(dir.path()).pop().unwrap();
        // The last record only half written.
        let f = OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(ends[3] + (ends[4] - ends[3]) / 2).unwrap();
        drop(f);

        let mut log = open(dir.path(), 1 << 20);
        assert_eq!(log.repairs.len(), 1, "{:?}", log.repairs);
        let warning = &log.repairs[0];
        assert!(warning.contains(&file.display().to_string()), "{warning}");
        assert!(
            warning.contains(&format!("offset {}", ends[3])),
            "{warning}"
        );
        // Appends continue after the last whole record, and are read back.
        log.append(&message(5)).unwrap();
        let mut want = payloads(0..4);
        want.push("payload 5".into());
        assert_eq!(drain(&mut log), want);
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_detected_by_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 1 << 20);
        let mut ends = Vec::new();
        for n in 0..3 {
            log.append(&message(n)).unwrap();
            ends.push(log.segments.back().unwrap().len);
        }
        drop(log);
        let file = segment_files(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&file).unwrap();
        let at = (ends[2] - 3) as usize;
        bytes[at] ^= 0x40;
        fs::write(&file, bytes).unwrap();

        let mut log = open(dir.path(), 1 << 20);
        assert_eq!(log.repairs.len(), 1, "{:?}", log.repairs);
        assert!(log.repairs[0].contains("checksum"), "{}", log.repairs[0]);
        assert!(
            log.repairs[0].contains(&format!("offset {}", ends[1])),
            "{}",
            log.repairs[0]
        );
        assert_eq!(drain(&mut log), payloads(0..2));
    }

    #[test]
    fn zeroes_after_the_last_record_are_not_taken_for_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 1 << 20);
        log.append(&message(0)).unwrap();
        drop(log);
        let file = segment_files(dir.path()).pop().unwrap();
        let f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all_at(&[0u8; 64], f.metadata().unwrap().len())
            .unwrap();
        drop(f);
        let mut log = open(dir.path(), 1 << 20);
        assert_eq!(log.repairs.len(), 1, "{:?}", log.repairs);
        assert_eq!(drain(&mut log), payloads(0..1));
    }

    fn damaged_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "damaged"))
            .collect();
        files.sort();
        files
    }

    fn numbers(payloads: &[String]) -> Vec<usize> {
        payloads
            .iter()
            .map(|p| p.strip_prefix("payload ").unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn a_flipped_byte_in_the_middle_of_the_last_segment_costs_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 1 << 20);
        let mut ends = vec![SEGMENT_HEADER];
        for n in 0..100 {
            log.append(&message(n)).unwrap();
            ends.push(log.segments.back().unwrap().len);
        }
        drop(log);
        let file = segment_files(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&file).unwrap();
        // A byte in the body of record 40.
        let at = (ends[40] + 20) as usize;
        bytes[at] ^= 0x10;
        fs::write(&file, bytes).unwrap();

        let mut log = open(dir.path(), 1 << 20);
        assert!(log.repairs.is_empty(), "not a torn tail: {:?}", log.repairs);
        let got = drain(&mut log);
        let mut want = payloads(0..40);
        want.extend(payloads(41..100));
        assert_eq!(got, want);
        assert_eq!(log.repairs.len(), 1, "{:?}", log.repairs);
        let warning = &log.repairs[0];
        assert!(
            warning.contains(&format!("offset {}", ends[40])),
            "{warning}"
        );
        assert!(
            warning.contains(&format!("offset {}", ends[41])),
            "{warning}"
        );
        let aside = damaged_files(dir.path());
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(
            warning.contains(&aside[0].display().to_string()),
            "{warning}"
        );
        assert_eq!(
            fs::metadata(&aside[0]).unwrap().len(),
            ends[41] - ends[40],
            "exactly the damaged record is kept aside"
        );
        assert_eq!(
            (log.damaged_records, log.damaged_bytes),
            (1, ends[41] - ends[40])
        );
        assert!(log.is_empty());
        assert_eq!(log.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn damage_in_an_older_segment_costs_only_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        // The smallest segments: 64 KiB, about 1,500 messages each.
        let mut log = open(dir.path(), 256 * 1024);
        let mut n = 0;
        while segment_files(dir.path()).len() < 2 {
            log.append(&message(n)).unwrap();
            n += 1;
        }
        drop(log);
        let first = segment_files(dir.path()).remove(0);
        let mut bytes = fs::read(&first).unwrap();
        let middle = bytes.len() / 2;
        // The length field or body of a record: either way, damage.
        bytes[middle] ^= 0xff;
        bytes[middle + 1] ^= 0xff;
        fs::write(&first, bytes).unwrap();

        let mut log = open(dir.path(), 256 * 1024);
        assert!(
            log.repairs.is_empty(),
            "only the last segment is checked at open"
        );
        let got = drain(&mut log);
        assert_eq!(log.repairs.len(), 1, "{:?}", log.repairs);
        assert!(log.repairs[0].contains(&first.display().to_string()));
        let numbers = numbers(&got);
        assert_eq!(
            got.len(),
            n - 1,
            "one record lost, not the rest of the segment"
        );
        assert!(numbers.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*numbers.last().unwrap(), n - 1);
        assert_eq!(damaged_files(dir.path()).len(), 1);
        assert!(log.is_empty());
        assert_eq!(log.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn segments_of_the_first_format_are_still_forwarded() {
        let dir = tempfile::tempdir().unwrap();
        // What an older ferry wrote: `FERRYSP1`, records without a marker.
        let mut bytes = record::MAGIC_V1.to_vec();
        for n in 0..3 {
            let mut body = Vec::new();
            encode(&message(n), &mut body);
            let length = (body.len() as u32).to_le_bytes();
            let mut crc = crc32fast::Hasher::new();
            crc.update(&length);
            crc.update(&body);
            bytes.extend_from_slice(&length);
            bytes.extend_from_slice(&crc.finalize().to_le_bytes());
            bytes.extend_from_slice(&body);
        }
        fs::write(dir.path().join(segment_name(7)), &bytes).unwrap();
        let mut log = open(dir.path(), 1 << 20);
        assert!(log.repairs.is_empty(), "{:?}", log.repairs);
        // New appends go to a new segment of the current format, behind the old one.
        log.append(&message(3)).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 2);
        assert_eq!(drain(&mut log), payloads(0..4));
    }

    #[test]
    fn a_cursor_that_cannot_be_written_neither_fails_the_open_nor_keeps_segments() {
        let dir = tempfile::tempdir().unwrap();
        // Writing the cursor fails: its temporary file's name is taken by a directory.
        fs::create_dir(dir.path().join("cursor.tmp")).unwrap();
        let mut log = open(dir.path(), 256 * 1024);
        let mut n = 0;
        while segment_files(dir.path()).len() < 3 {
            log.append(&message(n)).unwrap();
            n += 1;
        }
        assert_eq!(drain(&mut log), payloads(0..n));
        assert!(
            segment_files(dir.path()).is_empty(),
            "forwarded segments are deleted: {:?}",
            segment_files(dir.path())
        );
        log.close().unwrap();
        drop(log);
        let mut log = open(dir.path(), 256 * 1024);
        assert!(log.is_empty());
        assert!(drain(&mut log).is_empty(), "nothing forwarded twice");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Arbitrary bytes after a segment header, as the last segment and as an older one:
        /// opening and draining never panic, and the spool ends empty.
        #[test]
        fn arbitrary_segment_bytes_open_and_drain_without_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            v1 in proptest::bool::ANY,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let magic = if v1 { record::MAGIC_V1 } else { MAGIC };
            for id in [1, 2] {
                let mut file = magic.to_vec();
                file.extend_from_slice(&bytes);
                fs::write(dir.path().join(segment_name(id)), file).unwrap();
            }
            let mut log = open(dir.path(), 1 << 20);
            drain(&mut log);
            proptest::prop_assert!(log.is_empty());
            proptest::prop_assert_eq!(log.used.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn max_bytes_is_enforced_and_room_comes_back_as_messages_leave() {
        let dir = tempfile::tempdir().unwrap();
        let size = {
            let mut body = Vec::new();
            encode(&message(0), &mut body);
            RECORD_HEADER + body.len() as u64
        };
        let mut log = open(dir.path(), size * 3 + size / 2);
        for n in 0..3 {
            log.append(&message(n)).unwrap();
        }
        assert!(matches!(
            log.append(&message(3)),
            Err(AppendError::Full { .. })
        ));
        log.peek().unwrap();
        log.forwarded().unwrap();
        log.append(&message(3)).unwrap();
        assert_eq!(drain(&mut log), payloads(1..4));
    }

    #[test]
    fn spools_of_one_route_share_max_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let used = Arc::new(AtomicU64::new(0));
        let size = {
            let mut body = Vec::new();
            encode(&message(0), &mut body);
            RECORD_HEADER + body.len() as u64
        };
        // Room for three records of the route, not four.
        let max = size * 3 + size / 2;
        let mut a = SegmentLog::open(&dir.path().join("a"), max, used.clone()).unwrap();
        let mut b = SegmentLog::open(&dir.path().join("b"), max, used.clone()).unwrap();
        a.append(&message(0)).unwrap();
        a.append(&message(1)).unwrap();
        b.append(&message(2)).unwrap();
        assert!(matches!(
            b.append(&message(3)),
            Err(AppendError::Full { .. })
        ));
        assert_eq!(used.load(Ordering::Relaxed), a.pending + b.pending);
    }

    #[test]
    fn forwarded_segments_are_deleted_and_an_empty_spool_leaves_no_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 256 * 1024);
        let mut n = 0;
        while segment_files(dir.path()).len() < 3 {
            log.append(&message(n)).unwrap();
            n += 1;
        }
        let first = segment_files(dir.path()).remove(0);
        while segment_files(dir.path()).contains(&first) {
            log.peek().unwrap().unwrap();
            log.forwarded().unwrap();
        }
        assert_eq!(segment_files(dir.path()).len(), 2);
        drain(&mut log);
        assert!(segment_files(dir.path()).is_empty());
        // And the log goes on, with new segment ids.
        log.append(&message(n)).unwrap();
        let again = segment_files(dir.path());
        assert_eq!(again.len(), 1);
        assert!(again[0] > first);
        drop(log);
        let mut log = open(dir.path(), 256 * 1024);
        assert_eq!(drain(&mut log), payloads(n..n + 1));
    }

    #[test]
    fn a_spool_in_use_cannot_be_opened_twice() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path(), 1 << 20);
        let second = SegmentLog::open(dir.path(), 1 << 20, Default::default());
        let error = second.err().expect("the second open fails");
        assert!(error.to_string().contains("another ferry"), "{error}");
        drop(first);
        open(dir.path(), 1 << 20);
    }

    #[test]
    fn an_unwritable_directory_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, "").unwrap();
        assert!(SegmentLog::open(&file.join("spool"), 1 << 20, Default::default()).is_err());
    }

    /// Append + fdatasync throughput, 128-byte payloads, one fsync per message and one per
    /// group of messages (group commit). Run with
    /// `cargo test --release --lib spool::tests::throughput -- --ignored --nocapture`;
    /// `FERRY_SPOOL_BENCH_DIR` picks the file system (default: the system's temp dir).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn throughput() {
        let base = std::env::var_os("FERRY_SPOOL_BENCH_DIR").map(PathBuf::from);
        let dir = match &base {
            Some(base) => tempfile::tempdir_in(base).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let mut m = message(0);
        m.payload = Bytes::from(vec![b'x'; 128]);
        for group in [1usize, 16, 64, 256, 1024] {
            let mut log = open(&dir.path().join(format!("g{group}")), 1 << 30);
            let n = (group * 200).clamp(2_000, 50_000);
            let start = std::time::Instant::now();
            for i in 0..n {
                log.append(&m).unwrap();
                if (i + 1).is_multiple_of(group) {
                    log.sync_handle().unwrap().sync_data().unwrap();
                }
            }
            let appended = start.elapsed();
            let start = std::time::Instant::now();
            assert_eq!(drain(&mut log).len(), n);
            let read = start.elapsed();
            println!(
                "group of {group:>4}: {:>9.0} msg/s appended and made durable, {:>9.0} msg/s read and forwarded",
                n as f64 / appended.as_secs_f64(),
                n as f64 / read.as_secs_f64()
            );
        }
    }

    #[tokio::test]
    async fn the_forwarder_waits_for_appends() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), 1 << 20, Default::default()).unwrap());
        let reader = spool.clone();
        let forwarder = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(reader.next().await.unwrap().payload);
                reader.forwarded().unwrap();
            }
            got
        });
        for n in 0..3 {
            tokio::task::yield_now().await;
            spool.append(&message(n)).unwrap();
            spool.sync().await.unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(5), forwarder)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, ["payload 0", "payload 1", "payload 2"]);
        assert!(spool.is_empty());
    }
}
