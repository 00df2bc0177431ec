//! How the spool frames its records on disk, and what a record body holds.
//!
//! Format 2 (segments starting `FERRYSP2`), written by this version:
//! `[marker: F5 'r' 'e' 'c'][length: u32 LE][crc32 of length and body: u32 LE][body]`.
//! The marker is what lets a reader get past a damaged record: it scans forward for the next
//! marker whose length fits the file, whose checksum verifies and whose body decodes, and goes
//! on from there, so one bad byte costs one record, not the rest of the segment.
//!
//! Format 1 (`FERRYSP1`, written before): the same without the marker. Its segments are still
//! read (they exist only across an upgrade, and new appends always start a format-2 segment),
//! but a damaged record there skips the rest of its segment: without a marker, finding the
//! next record means trying a checksum at every byte offset, each over up to the rest of the
//! file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use crate::message::Message;

/// What every segment file of the current format starts with.
pub const MAGIC: &[u8; 8] = b"FERRYSP2";
/// What segments of the first format start with (read, never written any more).
pub const MAGIC_V1: &[u8; 8] = b"FERRYSP1";
pub const SEGMENT_HEADER: u64 = MAGIC.len() as u64;
/// In front of every format-2 record: rare in text and in ferry's own record bodies.
pub const RECORD_MARKER: [u8; 4] = [0xF5, b'r', b'e', b'c'];
/// Encoding of a record body, first byte of each body.
const BODY_FORMAT: u8 = 1;

/// A segment's record framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `[length][crc][body]`: no marker, no resynchronisation.
    V1,
    /// `[marker][length][crc][body]`.
    V2,
}

impl Format {
    /// The format a segment header names, if it is one of ferry's.
    pub fn of_header(header: &[u8]) -> Option<Format> {
        if header == MAGIC {
            Some(Format::V2)
        } else if header == MAGIC_V1 {
            Some(Format::V1)
        } else {
            None
        }
    }

    /// Bytes in front of each record body.
    pub fn record_header(self) -> u64 {
        match self {
            Format::V1 => 8,
            Format::V2 => 12,
        }
    }
}

/// CRC32 of a record's length field and body.
fn checksum(length: &[u8; 4], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(length);
    hasher.update(body);
    hasher.finalize()
}

/// Appends the format-2 record holding `body` to `out`.
pub fn frame(body: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let Ok(length) = u32::try_from(body.len()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message larger than 4 GiB",
        ));
    };
    out.extend_from_slice(&RECORD_MARKER);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&checksum(&length.to_le_bytes(), body).to_le_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Checks a record header read at `offset` of a segment whose valid part ends at `len`;
/// returns the length and checksum of the body that follows.
fn check_header(
    format: Format,
    header: &[u8],
    offset: u64,
    len: u64,
) -> Result<(u64, u32), String> {
    let fields = match format {
        Format::V1 => header,
        Format::V2 if header[..4] == RECORD_MARKER => &header[4..],
        Format::V2 => return Err("no record marker".into()),
    };
    let length = u32::from_le_bytes(fields[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(fields[4..8].try_into().expect("4 bytes"));
    let size = u64::from(length);
    let left = len - offset - format.record_header();
    if size == 0 {
        return Err("a record of impossible length 0".into());
    }
    if size > left {
        return Err(format!(
            "a record cut short (it claims {size} bytes, {left} are left)"
        ));
    }
    Ok((size, crc))
}

/// Reads and checks the record at `offset` of a segment whose valid part ends at `len`.
pub fn read_record(file: &File, format: Format, offset: u64, len: u64) -> Result<Bytes, String> {
    let header_len = format.record_header();
    if offset + header_len > len {
        return Err("a record header cut short".into());
    }
    let mut header = [0u8; 12];
    let header = &mut header[..header_len as usize];
    file.read_exact_at(header, offset)
        .map_err(|e| format!("cannot read a record ({e})"))?;
    let (size, crc) = check_header(format, header, offset, len)?;
    let mut body = vec![0u8; size as usize];
    file.read_exact_at(&mut body, offset + header_len)
        .map_err(|e| format!("cannot read a record ({e})"))?;
    let length = (size as u32).to_le_bytes();
    if checksum(&length, &body) != crc {
        return Err("a record whose checksum does not match".into());
    }
    Ok(Bytes::from(body))
}

/// The offset of the first whole, valid format-2 record that starts after `from` in a segment
/// whose valid part ends at `len` (its marker found, its length within the file, its checksum
/// right, its body decodes); `None` when there is none.
pub fn next_record(file: &File, from: u64, len: u64) -> io::Result<Option<u64>> {
    let start = from + 1;
    if start >= len {
        return Ok(None);
    }
    // A segment is at most 16 MiB (or one larger message): read the rest at once.
    let mut rest = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut rest, start)?;
    Ok(find_record(&rest).map(|at| start + at as u64))
}

/// How many body bytes one search for the next record may checksum: a payload can hold
/// marker-and-length look-alikes (it is remote data), each costing a checksum over up to the
/// rest of the segment, so without a budget the search is quadratic in the segment's size.
/// 256 MiB is sixteen times the largest segment, a fraction of a second of CRC32; past it the
/// search gives up, as if no valid record followed.
pub const SEARCH_BUDGET: u64 = 256 * 1024 * 1024;

/// The offset in `bytes` of the first whole, valid format-2 record.
pub fn find_record(bytes: &[u8]) -> Option<usize> {
    let header_len = Format::V2.record_header() as usize;
    let mut at = 0;
    let mut budget = SEARCH_BUDGET;
    while at + header_len <= bytes.len() {
        at += bytes[at..]
            .windows(RECORD_MARKER.len())
            .position(|w| w == RECORD_MARKER)?;
        if at + header_len > bytes.len() {
            return None;
        }
        let header = &bytes[at..at + header_len];
        if let Ok((size, crc)) = check_header(Format::V2, header, at as u64, bytes.len() as u64) {
            budget = budget.checked_sub(size)?;
            let body = &bytes[at + header_len..at + header_len + size as usize];
            if checksum(&(size as u32).to_le_bytes(), body) == crc
                && decode(Bytes::copy_from_slice(body)).is_ok()
            {
                return Some(at);
            }
        }
        at += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Record bodies: everything a sink needs to publish the message again.

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_option(out: &mut Vec<u8>, value: &Option<String>) {
    match value {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_bytes(out, s.as_bytes());
        }
    }
}

pub fn encode(m: &Message, out: &mut Vec<u8>) {
    out.push(BODY_FORMAT);
    put_bytes(out, m.subject.as_bytes());
    put_bytes(out, &m.payload);
    put_u32(out, m.headers.len());
    for (name, value) in &m.headers {
        put_bytes(out, name.as_bytes());
        put_bytes(out, value.as_bytes());
    }
    out.push(m.qos);
    out.push(u8::from(m.retain));
    put_bytes(out, m.origin.as_bytes());
    let received = m
        .received
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    out.extend_from_slice(&received.to_le_bytes());
    put_option(out, &m.event);
    put_option(out, &m.id);
}

/// Reads a record body; the payload shares the body's buffer.
struct Reader {
    body: Bytes,
    at: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, String> {
        if self.body.len() - self.at < n {
            return Err("a record that does not decode".into());
        }
        self.at += n;
        Ok(self.body.slice(self.at - n..self.at))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b[..].try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = self.u32()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| "a record that does not decode".into())
    }

    fn option(&mut self) -> Result<Option<String>, String> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.string().map(Some),
        }
    }
}

pub fn decode(body: Bytes) -> Result<Message, String> {
    let mut r = Reader { body, at: 0 };
    if r.u8()? != BODY_FORMAT {
        return Err("a record of an unknown format".into());
    }
    let subject = r.string()?;
    let payload = r.bytes()?;
    let count = r.u32()?;
    let mut headers = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        headers.push((r.string()?, r.string()?));
    }
    let qos = r.u8()?;
    let retain = r.u8()? != 0;
    let origin: Arc<str> = r.string()?.into();
    // Far-future times from a damaged body must not overflow `SystemTime`.
    let received = UNIX_EPOCH
        .checked_add(Duration::from_micros(r.u64()?))
        .unwrap_or(UNIX_EPOCH);
    let event = r.option()?;
    let id = r.option()?;
    if r.at != r.body.len() {
        return Err("a record with bytes left over".into());
    }
    Ok(Message {
        subject,
        payload,
        headers,
        qos,
        retain,
        origin,
        received,
        event,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let m = Message::new("plant".into(), format!("iot.{n}"), format!("payload {n}"));
        encode(&m, &mut out);
        out
    }

    /// A segment of `n` format-2 records (header included), and where each record starts.
    fn segment(n: usize) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = MAGIC.to_vec();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(bytes.len());
            frame(&body(i), &mut bytes).unwrap();
        }
        (bytes, starts)
    }

    fn file_of(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    #[test]
    fn the_next_record_after_damage_is_found_by_its_marker_and_checksum() {
        let (mut bytes, starts) = segment(5);
        // One flipped byte in the body of record 1.
        bytes[starts[1] + 20] ^= 0x01;
        let (_dir, file) = file_of(&bytes);
        let len = bytes.len() as u64;
        assert!(read_record(&file, Format::V2, starts[1] as u64, len).is_err());
        assert_eq!(
            next_record(&file, starts[1] as u64, len).unwrap(),
            Some(starts[2] as u64)
        );
        // Damage in the length field: the same.
        let (mut bytes, starts) = segment(5);
        bytes[starts[3] + 6] = 0xff;
        let (_dir, file) = file_of(&bytes);
        assert!(read_record(&file, Format::V2, starts[3] as u64, len).is_err());
        assert_eq!(
            next_record(&file, starts[3] as u64, len).unwrap(),
            Some(starts[4] as u64)
        );
        // Nothing valid after the last record.
        assert_eq!(next_record(&file, starts[4] as u64, len).unwrap(), None);
    }

    #[test]
    fn a_marker_inside_a_payload_is_not_taken_for_a_record() {
        let mut m = Message::new("plant".into(), "x".to_string(), "");
        let mut fake = Vec::new();
        // A payload holding the start of a record with a wrong checksum.
        fake.extend_from_slice(&RECORD_MARKER);
        fake.extend_from_slice(&4u32.to_le_bytes());
        fake.extend_from_slice(&[0; 8]);
        m.payload = Bytes::from(fake);
        let mut b = Vec::new();
        encode(&m, &mut b);
        let mut bytes = Vec::new();
        frame(&b, &mut bytes).unwrap();
        assert_eq!(find_record(&bytes[1..]), None);
    }

    #[test]
    fn a_segment_full_of_record_look_alikes_is_searched_in_bounded_time() {
        // Markers with a length reaching to the end and a wrong checksum, every 12 bytes of
        // 16 MiB (what a payload could hold): without a budget, 1.4 million checksums over
        // 8 MiB on average.
        let len = 16 * 1024 * 1024 / 12 * 12;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() + 12 <= len {
            let rest = (len - bytes.len() - 12) as u32;
            bytes.extend_from_slice(&RECORD_MARKER);
            bytes.extend_from_slice(&rest.to_le_bytes());
            bytes.extend_from_slice(&[0; 4]);
        }
        let started = std::time::Instant::now();
        assert_eq!(find_record(&bytes), None);
        let took = started.elapsed();
        eprintln!("searched 16 MiB of look-alikes in {took:?}");
        assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes as a segment: reading and scanning never panic, and whatever is
        /// taken for a record really is one.
        #[test]
        fn arbitrary_segment_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), offset in 0usize..420) {
            let (_dir, file) = file_of(&bytes);
            let len = bytes.len() as u64;
            let offset = (offset as u64).min(len);
            for format in [Format::V1, Format::V2] {
                if let Ok(body) = read_record(&file, format, offset, len) {
                    let _ = decode(body);
                }
            }
            if let Some(at) = next_record(&file, offset, len).unwrap() {
                prop_assert!(at > offset);
                let body = read_record(&file, Format::V2, at, len);
                prop_assert!(body.is_ok());
                prop_assert!(decode(body.unwrap()).is_ok());
            }
            let _ = decode(Bytes::from(bytes));
        }

        /// Real records with a few bytes of garbage spliced in anywhere: every record after
        /// the damage is found again.
        #[test]
        fn damage_costs_only_the_records_it_touches(at in 8usize..2000, garbage in proptest::collection::vec(any::<u8>(), 1..40)) {
            let (bytes, starts) = segment(20);
            let at = at.min(bytes.len() - 1);
            let mut damaged = bytes[..at].to_vec();
            damaged.extend_from_slice(&garbage);
            damaged.extend_from_slice(&bytes[at..]);
            let (_dir, file) = file_of(&damaged);
            let len = damaged.len() as u64;
            // Walk the file as the spool does.
            let mut offset = SEGMENT_HEADER;
            let mut read = 0;
            while offset < len {
                match read_record(&file, Format::V2, offset, len) {
                    Ok(body) => {
                        offset += Format::V2.record_header() + body.len() as u64;
                        read += 1;
                    }
                    Err(_) => match next_record(&file, offset, len).unwrap() {
                        Some(next) => offset = next,
                        None => break,
                    },
                }
            }
            let untouched = starts.iter().filter(|s| **s >= at).count();
            prop_assert!(read >= untouched, "{read} read, {untouched} after the damage");
        }
    }
}
