//! The event-stream parser of the WHATWG HTML standard ("Server-sent events": parsing an event
//! stream, interpreting an event stream): bytes in, events out, fed chunk by chunk as they come
//! off the network, with no I/O of its own so that every rule can be tested on its own.
//!
//! What the standard says, and what this does:
//! - The stream is UTF-8; one leading byte order mark is dropped, and bytes that are not UTF-8
//!   become U+FFFD. Lines are decoded one at a time: CR and LF are ASCII and never part of a
//!   multi-byte sequence, so this gives the same text as decoding the whole stream.
//! - A line ends at CR, LF or CRLF, also when the CR ends one chunk and the LF starts the next.
//! - A line starting with `:` is a comment. Otherwise the field name runs to the first `:` (or is
//!   the whole line) and one space after the colon is dropped from the value.
//! - `data` appends the value and a LF to the data buffer; `event` sets the type; `id` sets the
//!   last event ID unless the value holds NULL; `retry` made only of ASCII digits sets the
//!   reconnection time; any other field is ignored.
//! - An empty line dispatches: the last event ID is kept (for this event, the ones after it, and
//!   the next connection's `Last-Event-ID`); an event with no data is not dispatched; the data's
//!   last LF is dropped; the type defaults to `message`.
//! - An event the stream ends in the middle of is not dispatched.
//!
//! Bounds: a line longer than `max_line` bytes or an event whose data grows past `max_event`
//! bytes stops the parser with [`TooLong`], before the bytes are kept, so a server sending an
//! endless line costs at most `max_line` bytes of memory.

use std::fmt;
use std::time::Duration;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `message` unless the stream named another type.
    pub event_type: String,
    pub data: String,
    /// The last event ID when the event was dispatched: its own `id:`, or the one before it.
    /// Empty when the stream never set one (or reset it with an empty `id:`).
    pub last_event_id: String,
}

/// The stream broke one of the parser's bounds. The parser keeps nothing of the offending
/// line or event; the connection is to be failed and reopened from the last event ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TooLong {
    /// A line grew past `max_line` bytes without ending.
    Line { max: usize },
    /// An event's data grew past `max_event` bytes before the empty line that ends it.
    Event { max: usize },
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TooLong::Line { max } => write!(
                f,
                "the server sent a line longer than {max} bytes (max_line_size)"
            ),
            TooLong::Event { max } => write!(
                f,
                "the server sent an event with more than {max} bytes of data (max_event_size)"
            ),
        }
    }
}

/// How large a line and an event may grow.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_line: usize,
    pub max_event: usize,
}

/// An event stream being parsed: one per connection, the last event ID carried from the one
/// before.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    /// The bytes of the line not yet ended.
    line: Vec<u8>,
    /// The last byte seen was a CR: a LF right after it ends no second line.
    after_cr: bool,
    /// No line has ended yet: the first one may start with a byte order mark.
    first_line: bool,
    data: String,
    event_type: String,
    /// The last event ID buffer: set by `id:`, kept across events.
    id_buffer: String,
    /// The last event ID string: the buffer as of the last empty line.
    last_event_id: String,
    retry: Option<Duration>,
    /// Lines ended so far.
    lines: u64,
    /// Once a bound was broken, the parser takes nothing more.
    broken: Option<TooLong>,
}

impl Parser {
    /// A parser for a new connection whose last event ID is `last_event_id` (empty for none).
    pub fn new(limits: Limits, last_event_id: String) -> Parser {
        Parser {
            limits,
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            data: String::new(),
            event_type: String::new(),
            id_buffer: last_event_id.clone(),
            last_event_id,
            retry: None,
            lines: 0,
            broken: None,
        }
    }

    /// The last event ID: what the next connection sends as `Last-Event-ID` (empty: none).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time the stream asked for with its last valid `retry:`, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// How many lines the stream has ended so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Parses the next chunk, appending the events it completes to `events`. After an error
    /// the events completed before it are still in `events`, and every later call fails too.
    pub fn feed(&mut self, mut chunk: &[u8], events: &mut Vec<Event>) -> Result<(), TooLong> {
        if let Some(error) = self.broken {
            return Err(error);
        }
        while !chunk.is_empty() {
            if std::mem::take(&mut self.after_cr) && chunk[0] == b'\n' {
                chunk = &chunk[1..];
                continue;
            }
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.take_line_bytes(&chunk[..end])?;
                    self.after_cr = chunk[end] == b'\r';
                    chunk = &chunk[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    let result = self.line_ended(&line, events);
                    // The buffer is reused: no allocation per line.
                    self.line = line;
                    self.line.clear();
                    result?;
                }
                None => {
                    self.take_line_bytes(chunk)?;
                    chunk = &[];
                }
            }
        }
        Ok(())
    }

    fn take_line_bytes(&mut self, bytes: &[u8]) -> Result<(), TooLong> {
        if self.line.len() + bytes.len() > self.limits.max_line {
            return Err(self.break_with(TooLong::Line {
                max: self.limits.max_line,
            }));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn break_with(&mut self, error: TooLong) -> TooLong {
        self.broken = Some(error);
        self.line = Vec::new();
        self.data = String::new();
        error
    }

    fn line_ended(&mut self, line: &[u8], events: &mut Vec<Event>) -> Result<(), TooLong> {
        self.lines += 1;
        let mut line = line;
        if std::mem::take(&mut self.first_line) {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // a comment
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        // Field names are compared byte for byte: a name that is not UTF-8 is none of these.
        match name {
            b"data" => {
                let value = String::from_utf8_lossy(value);
                if self.data.len() + value.len() + 1 > self.limits.max_event {
                    return Err(self.break_with(TooLong::Event {
                        max: self.limits.max_event,
                    }));
                }
                // The data becomes the message's payload, queued as it is: the first line gets
                // room for itself and its LF exactly, not the doubling a push makes, which a
                // full queue of one-line events would hold twice over.
                if self.data.is_empty() {
                    self.data.reserve_exact(value.len() + 1);
                }
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"event" => self.event_type = String::from_utf8_lossy(value).into_owned(),
            b"id" if !value.contains(&0) => {
                self.id_buffer = String::from_utf8_lossy(value).into_owned();
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Digits past what a u64 of milliseconds holds are a reconnection time longer
                // than any process lives: the largest one stands in for it.
                let ms = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(u64::MAX);
                self.retry = Some(Duration::from_millis(ms));
            }
            // An `id` holding NULL, a `retry` that is not all digits, any other field.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, events: &mut Vec<Event>) {
        self.last_event_id.clone_from(&self.id_buffer);
        let event_type = std::mem::take(&mut self.event_type);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the LF the last `data` line added
        events.push(Event {
            event_type: if event_type.is_empty() {
                "message".into()
            } else {
                event_type
            },
            data,
            last_event_id: self.last_event_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ROOMY: Limits = Limits {
        max_line: 1 << 20,
        max_event: 1 << 20,
    };

    fn parse_chunks(chunks: &[&[u8]]) -> (Vec<Event>, Parser) {
        let mut parser = Parser::new(ROOMY, String::new());
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut events).expect("within the limits");
        }
        (events, parser)
    }

    fn parse(stream: &str) -> Vec<Event> {
        parse_chunks(&[stream.as_bytes()]).0
    }

    fn event(event_type: &str, data: &str, id: &str) -> Event {
        Event {
            event_type: event_type.into(),
            data: data.into(),
            last_event_id: id.into(),
        }
    }

    fn message(data: &str) -> Event {
        event("message", data, "")
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped_once() {
        assert_eq!(
            parse("\u{FEFF}data: 1\n\n\u{FEFF}data: 2\n\n"),
            vec![message("1")],
            "the second BOM is part of a field name no one knows"
        );
        assert_eq!(
            parse("\u{FEFF}\u{FEFF}data: 1\n\n"),
            vec![],
            "only one BOM is dropped"
        );
        let bom = "\u{FEFF}".as_bytes();
        assert_eq!(
            parse_chunks(&[&bom[..1], &bom[1..], b"data: 1\n\n"]).0,
            vec![message("1")],
            "a BOM split across chunks"
        );
    }

    #[test]
    fn lines_end_at_cr_lf_or_crlf() {
        assert_eq!(
            parse("data: a\rdata: b\ndata: c\r\n\r\ndata: d\r\r"),
            vec![message("a\nb\nc"), message("d")]
        );
    }

    #[test]
    fn a_cr_ending_one_chunk_and_a_lf_starting_the_next_are_one_line_end() {
        let (events, _) = parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(events, vec![message("a\nb")]);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters_and_the_stream_goes_on() {
        let (events, _) =
            parse_chunks(&[b"data: a\xFFb\xC3\n\n", b"event: t\xE2\x82\ndata: c\n\n"]);
        assert_eq!(
            events,
            vec![message("a\u{FFFD}b\u{FFFD}"), event("t\u{FFFD}", "c", "")]
        );
    }

    #[test]
    fn a_utf8_character_split_across_chunks_is_kept_whole() {
        let euro = "€".as_bytes();
        let (events, _) = parse_chunks(&[b"data: ", &euro[..2], &euro[2..], b"\n\n"]);
        assert_eq!(events, vec![message("€")]);
    }

    #[test]
    fn comments_are_ignored() {
        assert_eq!(
            parse(": hello\ndata: 1\n:\n\n:only a comment\n\n"),
            vec![message("1")]
        );
    }

    #[test]
    fn a_field_without_a_colon_has_an_empty_value() {
        // `data` alone appends an empty line; two of them make one LF of data.
        assert_eq!(parse("data\ndata\n\n"), vec![message("\n")]);
        assert_eq!(parse("data\n\n"), vec![message("")]);
        assert_eq!(parse("event\ndata: x\n\n"), vec![message("x")]);
    }

    #[test]
    fn one_space_after_the_colon_is_dropped() {
        assert_eq!(
            parse("data:a\n\ndata: b\n\ndata:  c\n\ndata:\td\n\n"),
            vec![message("a"), message("b"), message(" c"), message("\td")]
        );
    }

    #[test]
    fn data_lines_are_joined_with_lf() {
        assert_eq!(
            parse("data: one\ndata: two\ndata:\ndata: four\n\n"),
            vec![message("one\ntwo\n\nfour")]
        );
    }

    /// A one-line event's data holds no more memory than its bytes and the LF it was read
    /// with: it is queued as the payload, thousands at a time.
    #[test]
    fn a_one_line_event_holds_no_spare_room() {
        let line = "x".repeat(128);
        for event in parse(&format!("data: {line}\n\ndata: {line}\n\n")) {
            assert_eq!(event.data, line);
            assert!(
                event.data.capacity() <= line.len() + 1,
                "{}",
                event.data.capacity()
            );
        }
    }

    #[test]
    fn an_event_with_empty_data_is_not_dispatched() {
        assert_eq!(
            parse("event: ping\n\nid: 1\n\nretry: 5\n\ndata: x\n\n"),
            vec![event("message", "x", "1")]
        );
    }

    #[test]
    fn the_event_type_defaults_to_message_and_resets_after_each_event() {
        assert_eq!(
            parse("event: put\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n"),
            vec![event("put", "1", ""), message("2"), message("3")]
        );
        assert_eq!(
            parse("event: put\n\ndata: 4\n\n"),
            vec![message("4")],
            "a type without data is dropped with its block"
        );
    }

    #[test]
    fn an_id_containing_null_is_ignored() {
        assert_eq!(
            parse("id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n"),
            vec![event("message", "a", "1"), event("message", "b", "1")]
        );
    }

    #[test]
    fn the_last_event_id_carries_over_to_later_events_and_an_empty_id_clears_it() {
        let (events, parser) = parse_chunks(&[b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"]);
        assert_eq!(
            events,
            vec![
                event("message", "a", "7"),
                event("message", "b", "7"),
                event("message", "c", "")
            ]
        );
        assert_eq!(parser.last_event_id(), "");
    }

    #[test]
    fn the_last_event_id_carries_over_to_the_next_connection() {
        let mut parser = Parser::new(ROOMY, "41".into());
        let mut events = Vec::new();
        parser.feed(b"data: a\n\n", &mut events).unwrap();
        assert_eq!(events, vec![event("message", "a", "41")]);
        assert_eq!(parser.last_event_id(), "41");
    }

    #[test]
    fn an_id_in_a_block_without_data_still_sets_the_last_event_id() {
        let (events, parser) = parse_chunks(&[b"id: 9\n\n"]);
        assert_eq!(events, vec![]);
        assert_eq!(parser.last_event_id(), "9");
    }

    #[test]
    fn an_id_in_an_event_the_stream_ends_in_is_not_the_last_event_id() {
        let (events, parser) = parse_chunks(&[b"id: 1\ndata: a\n\nid: 2\ndata: b\n"]);
        assert_eq!(events, vec![event("message", "a", "1")]);
        assert_eq!(parser.last_event_id(), "1");
    }

    #[test]
    fn retry_with_only_ascii_digits_sets_the_reconnection_time() {
        let (_, parser) = parse_chunks(&[b"retry: 1500\n\n"]);
        assert_eq!(parser.retry(), Some(Duration::from_millis(1500)));
        let (_, parser) = parse_chunks(&[b"retry:20\nretry: 3x\nretry: -1\nretry: 1.5\nretry:\n"]);
        assert_eq!(
            parser.retry(),
            Some(Duration::from_millis(20)),
            "others are ignored"
        );
        let (_, parser) = parse_chunks(&[b"retry:  5\n"]);
        assert_eq!(parser.retry(), None, "a second space is not a digit");
        let (_, parser) = parse_chunks(&[b"retry: 99999999999999999999999\n"]);
        assert_eq!(parser.retry(), Some(Duration::from_millis(u64::MAX)));
    }

    #[test]
    fn a_block_of_only_unknown_fields_is_ignored() {
        assert_eq!(
            parse("data: 1\n\nfoo: bar\nData: x\nDATA\n\ndata: 2\n\n"),
            vec![message("1"), message("2")]
        );
    }

    #[test]
    fn an_unfinished_event_at_the_end_is_not_dispatched() {
        assert_eq!(parse("data: 1\n\ndata: 2\n"), vec![message("1")]);
        assert_eq!(parse("data: 1\n\ndata: 2"), vec![message("1")]);
    }

    #[test]
    fn a_line_past_max_line_fails_the_stream_and_keeps_what_came_before() {
        let limits = Limits {
            max_line: 16,
            max_event: 1024,
        };
        let mut parser = Parser::new(limits, String::new());
        let mut events = Vec::new();
        parser
            .feed(b"id: 1\ndata: ok\n\ndata: 0123", &mut events)
            .unwrap();
        let error = parser.feed(b"456789abcdef", &mut events).unwrap_err();
        assert_eq!(error, TooLong::Line { max: 16 });
        assert_eq!(events, vec![event("message", "ok", "1")]);
        assert_eq!(parser.last_event_id(), "1");
        assert!(
            parser.line.capacity() == 0,
            "the long line's bytes are freed"
        );
        assert_eq!(
            parser.feed(b"\n\n", &mut events),
            Err(error),
            "it stays failed"
        );
    }

    #[test]
    fn an_event_past_max_event_fails_the_stream() {
        let limits = Limits {
            max_line: 1024,
            max_event: 10,
        };
        let mut parser = Parser::new(limits, String::new());
        let mut events = Vec::new();
        parser.feed(b"data: 12345\n", &mut events).unwrap();
        assert_eq!(
            parser.feed(b"data: 12345\n", &mut events),
            Err(TooLong::Event { max: 10 })
        );
        assert!(events.is_empty());
    }

    #[test]
    fn a_line_of_exactly_max_line_bytes_is_taken() {
        let limits = Limits {
            max_line: 8,
            max_event: 8,
        };
        let mut parser = Parser::new(limits, String::new());
        let mut events = Vec::new();
        parser.feed(b"data:123\n\n", &mut events).unwrap();
        assert_eq!(events, vec![message("123")]);
    }

    fn parse_split(
        bytes: &[u8],
        cuts: &[usize],
        limits: Limits,
    ) -> (Vec<Event>, Result<(), TooLong>, String, Option<Duration>) {
        let mut parser = Parser::new(limits, String::new());
        let mut events = Vec::new();
        let mut start = 0;
        let mut result = Ok(());
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        for end in cuts.into_iter().chain([bytes.len()]) {
            result = parser.feed(&bytes[start..end], &mut events);
            start = end;
            if result.is_err() {
                break;
            }
        }
        (
            events,
            result,
            parser.last_event_id().to_owned(),
            parser.retry(),
        )
    }

    /// Bytes that look like an event stream often enough to reach every rule.
    fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"data".to_vec()),
            Just(b"data: ".to_vec()),
            Just(b"event:".to_vec()),
            Just(b"id: ".to_vec()),
            Just(b"retry: ".to_vec()),
            Just(b":".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
            Just(b"\0".to_vec()),
            Just("é€😀".as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..6),
            "[0-9]{1,4}".prop_map(String::into_bytes),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// However the network cuts the stream, the parser sees the same events, last event ID
        /// and retry as from one chunk, and never panics; events hold only whole characters.
        #[test]
        fn chunk_boundaries_never_change_the_events(
            bytes in prop_oneof![stream_bytes(), proptest::collection::vec(any::<u8>(), 0..300)],
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = parse_split(&bytes, &[], ROOMY);
            let split = parse_split(&bytes, &cuts, ROOMY);
            prop_assert_eq!(&split, &whole);
            for event in &whole.0 {
                prop_assert!(!event.last_event_id.contains('\0'));
                prop_assert!(!event.event_type.is_empty());
            }
        }

        /// With small limits, a cut stream fails exactly where the whole one does, with the
        /// same events before the failure, and the parser never holds more than the limits.
        #[test]
        fn limits_hold_however_the_stream_is_cut(
            bytes in stream_bytes(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            max_line in 1usize..24,
            max_event in 1usize..24,
        ) {
            let limits = Limits { max_line, max_event };
            let whole = parse_split(&bytes, &[], limits);
            let split = parse_split(&bytes, &cuts, limits);
            prop_assert_eq!(&split, &whole);
            for event in &whole.0 {
                prop_assert!(event.data.len() < max_event);
            }
        }
    }
}
