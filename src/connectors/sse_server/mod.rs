//! SSE server sink (`sse_server`): serves a route's messages as a `text/event-stream` on a
//! path of the admin listener, so a web page follows an MQTT topic or NATS subject with
//! nothing but `new EventSource(url)`.
//!
//! Each served event carries `event:` (the sink's rendered name, the MQTT topic or NATS
//! subject by default), `id:` and the payload as `data:` lines. Per connection, one hub keeps
//! the most recent events in a ring buffer; every client is a cursor into it:
//! - **ids** grow by one per event and start, at each ferry start, at the Unix time in
//!   microseconds, so they keep increasing across restarts and a browser that reconnects to a
//!   restarted ferry is not sent "old" ids;
//! - a client that reconnects with `Last-Event-ID` gets what it missed from the last `buffer`
//!   events, then the live ones; if some of what it missed is no longer kept (older than the
//!   buffer, or sent by a previous ferry), it gets what is kept and a comment saying events
//!   are missing. An id newer than any sent (unknown) gets only live events;
//! - **the sink never waits for clients**: `send` stores the event and wakes the clients, then
//!   confirms at once. There is no client acknowledgement in SSE, so "confirmed" means
//!   "in the buffer", not "seen by a browser";
//! - a client reading too slowly to keep up falls behind its cursor; when the events it has
//!   not read yet are pushed out of the ring (`buffer` events, at least [`LIVE_SLACK`]), it
//!   skips to the oldest kept event and gets a comment saying events are missing. It is not
//!   disconnected: a reconnecting EventSource would only be sent the buffer again, and a
//!   chronically slow one would do so in a loop.
//!
//! **Limits and access.** Each event is rendered once into shared bytes: a client's queue holds
//! references, so a hundred clients that stopped reading cost their sockets' buffers, not a
//! copy of every event each; the listener's idle timeout then closes them. A stream takes at
//! most `max_clients` clients (one more gets 503). With `token` set, a client must show it as
//! `?token=` or in the `ferry_token` cookie (an EventSource can send no header), else 401.
//!
//! A stream answers `?event=a,b` with only the events of those names (the rest of the query
//! is ignored, so cache-busting parameters do no harm). With `cors_origin` set, the response
//! carries `Access-Control-Allow-Origin`, which is all a page on another origin needs: an
//! EventSource sends no preflight.

pub mod config;
pub mod protocol;
mod read;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Connection, HttpRoutes, Sinks};
use crate::config::{Secret, SinkSpec};
use crate::contracts::admin_listener::same_secret;
use crate::contracts::status::ConnectionStatus;
use crate::contracts::{BoxFuture, ConnectionContext, Sink, SinkError};
use crate::message::Message;

/// Events the ring keeps at least, however small `buffer` is: how far a live client may fall
/// behind before it skips events. `buffer` alone decides how much a reconnect replays.
const LIVE_SLACK: usize = 256;

/// A stream ferry serves on the admin listener.
pub struct SseServerConnection {
    path: String,
    status: ConnectionStatus,
    hub: Arc<Hub>,
}

impl SseServerConnection {
    pub fn new(name: &str, config: config::SseServerConnection, status: ConnectionStatus) -> Self {
        let first_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |t| t.as_micros() as u64)
            .max(1);
        SseServerConnection {
            path: config.path.clone(),
            status,
            hub: Arc::new(Hub::new(name, &config, first_id)),
        }
    }
}

/// Makes the sinks of one stream: each publishes into its hub.
struct StreamSinks(Arc<Hub>);

impl Sinks for StreamSinks {
    fn add_sink(&self, _sink: &SinkSpec) -> anyhow::Result<Arc<dyn Sink>> {
        Ok(Arc::new(StreamSink(self.0.clone())))
    }
}

impl Connection for SseServerConnection {
    fn sinks(&mut self) -> Arc<dyn Sinks> {
        Arc::new(StreamSinks(self.hub.clone()))
    }

    fn admin_routes(&mut self) -> Option<HttpRoutes> {
        Some(
            axum::Router::new()
                .route(&self.path, get(serve_stream))
                .with_state(self.hub.clone()),
        )
    }

    /// There is no broker: the stream is up once the admin listener is bound, which the
    /// pipeline does before it starts the connections.
    fn start(self: Box<Self>, runtime: &ConnectionContext) {
        self.status.up(&format!(
            "(serving SSE at {} on the admin listener)",
            self.path
        ));
        let (hub, close) = (self.hub, runtime.close.clone());
        runtime.tasks.spawn("stream closer", async move {
            close.cancelled().await;
            hub.closed.cancel();
        });
    }
}

/// One event as stored and sent.
struct Stored {
    id: u64,
    /// The event name, for `?event=` filters.
    event: String,
    /// The whole event as sent, rendered once and shared by every client.
    frame: Bytes,
}

/// One event in the wire format: `id:`, `event:`, a `data:` line per line of `text` (which
/// has no CR LF pairs left; a lone CR ends a line too, as an SSE parser takes it).
fn render(id: u64, event: &str, text: &str) -> Bytes {
    let mut frame = String::with_capacity(text.len() + event.len() + 40);
    frame.push_str("id: ");
    frame.push_str(&id.to_string());
    frame.push_str("\nevent: ");
    frame.push_str(event);
    frame.push('\n');
    for line in text.split(['\n', '\r']) {
        frame.push_str("data: ");
        frame.push_str(line);
        frame.push('\n');
    }
    frame.push('\n');
    Bytes::from(frame)
}

/// A comment line (ignored by EventSource).
fn comment(text: &str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
}

/// The most recent events, oldest first, with consecutive ids.
struct Ring {
    events: VecDeque<Arc<Stored>>,
    capacity: usize,
    /// The id the next event gets.
    next_id: u64,
}

/// What a client is to be sent next.
struct Since {
    events: Vec<Arc<Stored>>,
    /// Some events after the client's cursor are not kept any more.
    missed: bool,
}

impl Ring {
    fn new(capacity: usize, first_id: u64) -> Self {
        Ring {
            events: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            next_id: first_id,
        }
    }

    /// The id of the last event stored (one less than the first id before any).
    fn newest(&self) -> u64 {
        self.next_id - 1
    }

    /// Stores the event `make` builds with the next id, pushing out the oldest when full.
    fn push(&mut self, make: impl FnOnce(u64) -> Stored) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(Arc::new(make(id)));
        id
    }

    /// The events after id `after`, looking no further back than the last `limit` events.
    fn since(&self, after: u64, limit: usize) -> Since {
        let oldest = self.events.front().map_or(self.next_id, |e| e.id);
        let first_kept = oldest.max(self.next_id.saturating_sub(limit as u64));
        let wanted = after.saturating_add(1);
        let from = wanted.max(first_kept);
        let skip = usize::try_from(from - oldest).unwrap_or(usize::MAX);
        Since {
            events: self
                .events
                .range(skip.min(self.events.len())..)
                .cloned()
                .collect(),
            missed: from > wanted,
        }
    }
}

/// What the sink and the clients of one `sse_server` connection share.
struct Hub {
    name: String,
    ring: Mutex<Ring>,
    /// How many of the latest events a reconnecting client may be sent.
    replay: usize,
    /// The newest id, changed on every event: wakes the clients.
    newest: watch::Sender<u64>,
    /// Cancelled when the connections close (after the shutdown drain): the streams end.
    closed: CancellationToken,
    keep_alive: Duration,
    cors_origin: Option<HeaderValue>,
    clients: AtomicUsize,
    /// Clients served at once, at most.
    max_clients: usize,
    /// What a client must show; `None`: public.
    token: Option<Secret>,
}

impl Hub {
    fn new(name: &str, config: &config::SseServerConnection, first_id: u64) -> Hub {
        let ring = Ring::new(config.buffer.max(LIVE_SLACK), first_id);
        let (newest, _) = watch::channel(ring.newest());
        Hub {
            name: name.to_string(),
            ring: Mutex::new(ring),
            replay: config.buffer,
            newest,
            closed: CancellationToken::new(),
            keep_alive: config.keep_alive,
            // The parser let only `*` and plain origins through: valid header values.
            cors_origin: config
                .cors_origin
                .as_deref()
                .and_then(|o| HeaderValue::from_str(o).ok()),
            clients: AtomicUsize::new(0),
            max_clients: config.max_clients,
            token: config.token.clone(),
        }
    }

    /// Stores a message as the next event and wakes the clients. Never waits for them.
    fn publish(&self, message: &Message) -> Result<u64, SinkError> {
        let text = std::str::from_utf8(&message.payload).map_err(|_| {
            SinkError::Rejected(
                "the payload is not UTF-8 text, and an SSE stream carries only text; `payload_format: bytes` on the source and `envelope: true` on the sink send it as base64 in JSON".into(),
            )
        })?;
        if text.is_empty() {
            return Err(SinkError::Rejected(
                "the payload is empty, and EventSource drops an event without data".into(),
            ));
        }
        if crate::connectors::sse::protocol::event_type(&message.subject).is_err() {
            return Err(SinkError::Rejected(format!(
                "`{}` cannot be an SSE event type: it must be one non-empty line",
                message.subject.escape_debug()
            )));
        }
        // Every line break becomes a `data:` line break; a client joins them with LF, so
        // CRLF arrives as LF (a lone CR too: SSE has no way to carry one).
        let text = match text.contains('\r') {
            true => Cow::Owned(text.replace("\r\n", "\n")),
            false => Cow::Borrowed(text),
        };
        let mut ring = self.ring.lock().expect("sse ring lock");
        let id = ring.push(|id| Stored {
            id,
            event: message.subject.clone(),
            frame: render(id, &message.subject, &text),
        });
        // Under the lock, so the clients see ids change in order.
        self.newest.send_replace(id);
        Ok(id)
    }
}

/// A route's handle on the stream.
struct StreamSink(Arc<Hub>);

impl Sink for StreamSink {
    /// Confirms as soon as the event is in the buffer: SSE clients acknowledge nothing.
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SinkError>> {
        let result = self.0.publish(message).map(drop);
        Box::pin(std::future::ready(result))
    }
}

#[derive(serde::Deserialize)]
struct StreamQuery {
    /// Comma-separated event names: send only those.
    event: Option<String>,
    /// The stream's token, for a stream that has one.
    token: Option<String>,
}

/// The cookie a page may set for a stream that has a token.
const TOKEN_COOKIE: &str = "ferry_token";

/// True when the request shows `token` as `?token=` or in the `ferry_token` cookie.
fn shows_token(token: &Secret, query: Option<&str>, headers: &HeaderMap) -> bool {
    let expected = token.expose().as_bytes();
    if query.is_some_and(|given| same_secret(given.as_bytes(), expected)) {
        return true;
    }
    // As bytes: another cookie's value may be anything, and must not hide this one.
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let at = pair.iter().position(|&b| b == b'=')?;
            Some((pair[..at].trim_ascii(), &pair[at + 1..]))
        })
        .any(|(name, value)| {
            name == TOKEN_COOKIE.as_bytes() && same_secret(value.trim_ascii(), expected)
        })
}

/// `GET <path>`: the event stream, resumed after `Last-Event-ID` when the client sends one.
async fn serve_stream(
    State(hub): State<Arc<Hub>>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Response {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let only = query.event.map(|names| {
        names
            .split(',')
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect()
    });
    if let Some(token) = &hub.token
        && !shows_token(token, query.token.as_deref(), &headers)
    {
        return (
            StatusCode::UNAUTHORIZED,
            "this stream needs its token: ?token=TOKEN or the ferry_token cookie\n",
        )
            .into_response();
    }
    let cors_origin = hub.cors_origin.clone();
    let Some(client) = Client::connect(hub, last_event_id, only) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "10")],
            "this stream has as many clients as it serves (max_clients); try again later\n",
        )
            .into_response();
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(client.into_stream()),
    )
        .into_response();
    let headers = response.headers_mut();
    // nginx buffers proxied responses unless told not to; a stream must not be buffered.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(origin) = cors_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
}

/// One connected client: a cursor into the hub's ring.
struct Client {
    hub: Arc<Hub>,
    /// The last id this client has; it is sent what comes after.
    after: u64,
    /// Events (and notes) fetched but not yet handed to the response body: shared frames.
    pending: VecDeque<Bytes>,
    newest: watch::Receiver<u64>,
    /// `?event=`: the names it wants, or all.
    only: Option<Vec<String>>,
}

impl Client {
    /// Registers a client, or `None` when the stream has `max_clients` already. With
    /// `last_event_id`, what it missed (within `buffer`) is queued first; without, it starts
    /// with the next event.
    fn connect(
        hub: Arc<Hub>,
        last_event_id: Option<u64>,
        only: Option<Vec<String>>,
    ) -> Option<Client> {
        let max = hub.max_clients;
        let n = hub
            .clients
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?
            + 1;
        // Subscribe before reading the ring: an event stored in between wakes the client
        // (and is then found already sent), so nothing falls in the gap.
        let newest = hub.newest.subscribe();
        let after = hub.ring.lock().expect("sse ring lock").newest();
        let mut client = Client {
            after,
            pending: VecDeque::new(),
            newest,
            only,
            hub,
        };
        if let Some(id) = last_event_id {
            client.after = id;
            client.fetch(client.hub.replay);
        }
        tracing::debug!(
            connection = %client.hub.name,
            "SSE client connected (Last-Event-ID {}, {} event(s) to replay; {n} client(s))",
            last_event_id.map_or("none".to_string(), |id| id.to_string()),
            client.pending.len(),
        );
        Some(client)
    }

    /// Queues what came after `self.after` (among the last `limit` events) and moves the
    /// cursor to the newest event.
    fn fetch(&mut self, limit: usize) {
        let ring = self.hub.ring.lock().expect("sse ring lock");
        let since = ring.since(self.after, limit);
        let newest = ring.newest();
        drop(ring);
        if since.missed {
            self.pending.push_back(comment(&format!(
                "events after id {} are missing: they are no longer buffered",
                self.after
            )));
        }
        let wanted = |e: &&Arc<Stored>| {
            self.only
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| *n == e.event))
        };
        self.pending
            .extend(since.events.iter().filter(wanted).map(|e| e.frame.clone()));
        self.after = newest;
    }

    /// The events as the response body streams them: queued ones first, then each new one as
    /// it is stored, until the connections close (what was stored by then is still sent); a
    /// keep-alive comment when nothing was sent for `keep_alive`.
    fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        futures_util::stream::unfold((self, false), |(mut client, mut closing)| async move {
            loop {
                if let Some(event) = client.pending.pop_front() {
                    return Some((Ok(event), (client, closing)));
                }
                if closing {
                    return None;
                }
                tokio::select! {
                    _ = client.hub.closed.cancelled() => closing = true,
                    changed = client.newest.changed() => closing = changed.is_err(),
                    () = tokio::time::sleep(client.hub.keep_alive) => {
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (client, closing)));
                    }
                }
                client.fetch(usize::MAX);
            }
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let left = self.hub.clients.fetch_sub(1, Ordering::Relaxed) - 1;
        tracing::debug!(connection = %self.hub.name, "SSE client gone ({left} client(s))");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: u64) -> Stored {
        Stored {
            id,
            event: "e".into(),
            frame: Bytes::new(),
        }
    }

    fn ids(since: &Since) -> Vec<u64> {
        since.events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn ring_replays_after_a_cursor_and_says_when_events_are_gone() {
        let mut ring = Ring::new(5, 100);
        assert_eq!(ring.newest(), 99);
        let none = ring.since(99, usize::MAX);
        assert!(none.events.is_empty() && !none.missed);
        for _ in 0..8 {
            ring.push(stored);
        }
        // Kept: 103..=107.
        assert_eq!(ring.newest(), 107);
        let s = ring.since(104, usize::MAX);
        assert_eq!((ids(&s), s.missed), (vec![105, 106, 107], false));
        let s = ring.since(102, usize::MAX);
        assert_eq!((ids(&s), s.missed), (vec![103, 104, 105, 106, 107], false));
        // 102 is gone.
        let s = ring.since(101, usize::MAX);
        assert_eq!((ids(&s), s.missed), (vec![103, 104, 105, 106, 107], true));
        // A cursor from before this ferry started.
        let s = ring.since(7, usize::MAX);
        assert_eq!((ids(&s), s.missed), (vec![103, 104, 105, 106, 107], true));
        // Up to date, or an id never sent: nothing, nothing missed.
        for after in [107, 500, u64::MAX] {
            let s = ring.since(after, usize::MAX);
            assert!(s.events.is_empty() && !s.missed, "{after}");
        }
        // A replay limit looks back only so far.
        let s = ring.since(103, 2);
        assert_eq!((ids(&s), s.missed), (vec![106, 107], true));
        let s = ring.since(105, 2);
        assert_eq!((ids(&s), s.missed), (vec![106, 107], false));
        let s = ring.since(104, 0);
        assert!(s.events.is_empty() && s.missed);
    }

    fn hub(buffer: usize) -> Arc<Hub> {
        let config = config::SseServerConnection {
            path: "/e".into(),
            buffer,
            keep_alive: Duration::from_secs(15),
            cors_origin: None,
            token: None,
            max_clients: 5,
        };
        Arc::new(Hub::new("web", &config, 1_000))
    }

    fn message(subject: &str, payload: &'static [u8]) -> Message {
        Message::new("m".into(), subject, payload)
    }

    /// What a client's queue would put on the wire.
    fn wire(client: &mut Client) -> String {
        let mut out = String::new();
        while let Some(frame) = client.pending.pop_front() {
            out.push_str(std::str::from_utf8(&frame).unwrap());
        }
        out
    }

    #[test]
    fn events_carry_name_id_and_every_line() {
        let hub = hub(10);
        let mut client = Client::connect(hub.clone(), None, None).unwrap();
        hub.publish(&message(
            "sensors/kitchen",
            b"{\"a\": 1,\r\n \"b\": 2}\nend",
        ))
        .unwrap();
        client.fetch(usize::MAX);
        assert_eq!(
            wire(&mut client),
            "id: 1000\nevent: sensors/kitchen\ndata: {\"a\": 1,\ndata:  \"b\": 2}\ndata: end\n\n"
        );
    }

    #[test]
    fn refuses_what_a_stream_cannot_carry() {
        let hub = hub(10);
        for (subject, payload, says) in [
            ("e", &b"\xff\xfe"[..], "not UTF-8"),
            ("e", &b""[..], "empty"),
            ("a\nb", &b"x"[..], "cannot be an SSE event type"),
        ] {
            match hub.publish(&message(subject, payload)) {
                Err(SinkError::Rejected(reason)) => assert!(reason.contains(says), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(hub.ring.lock().unwrap().newest(), 999, "nothing stored");
    }

    #[test]
    fn clients_resume_within_the_buffer_and_filter_by_name() {
        let hub = hub(3);
        for i in 0..6 {
            let name = if i % 2 == 0 { "even" } else { "odd" };
            hub.publish(&Message::new("m".into(), name, format!("{i}")))
                .unwrap();
        }
        // Ids 1000..=1005; the ring keeps all six (LIVE_SLACK), a reconnect replays three.
        let mut fresh = Client::connect(hub.clone(), None, None).unwrap();
        assert!(fresh.pending.is_empty(), "no Last-Event-ID: live only");
        let resumed = Client::connect(hub.clone(), Some(1003), None).unwrap();
        assert_eq!(resumed.pending.len(), 2);
        let mut late = Client::connect(hub.clone(), Some(1000), None).unwrap();
        let text = wire(&mut late);
        assert!(
            text.starts_with(": events after id 1000 are missing"),
            "{text}"
        );
        assert!(
            text.contains("id: 1003\n") && !text.contains("id: 1002\n"),
            "{text}"
        );
        let mut odd = Client::connect(hub.clone(), Some(999), Some(vec!["odd".into()])).unwrap();
        let text = wire(&mut odd);
        assert_eq!(text.matches("event: odd").count(), 2, "{text}");
        assert!(!text.contains("event: even"), "{text}");
        hub.publish(&message("odd", b"new")).unwrap();
        fresh.fetch(usize::MAX);
        odd.fetch(usize::MAX);
        assert!(wire(&mut fresh).contains("id: 1006\n"));
        assert!(wire(&mut odd).contains("id: 1006\n"));
        assert_eq!(hub.clients.load(Ordering::Relaxed), 4);
        let fifth = Client::connect(hub.clone(), None, None).unwrap();
        assert!(
            Client::connect(hub.clone(), None, None).is_none(),
            "max_clients 5"
        );
        drop((fresh, resumed, late, odd, fifth));
        assert_eq!(hub.clients.load(Ordering::Relaxed), 0);
        assert!(Client::connect(hub.clone(), None, None).is_some());
    }

    proptest::proptest! {
        /// Any payload text (line breaks of every kind, any Unicode) is framed so that an SSE
        /// parser gets it back: each line one `data:` line, joined with LF.
        #[test]
        fn any_text_is_framed_into_data_lines(
            id in proptest::num::u64::ANY,
            event in "[^\r\n]{1,20}",
            text in "(\\PC|\r\n|\n|\r){1,200}",
        ) {
            let text = text.replace("\r\n", "\n");
            let frame = render(id, &event, &text);
            let frame = std::str::from_utf8(&frame).unwrap();
            let block = frame.strip_suffix("\n\n").unwrap();
            let mut lines = block.split('\n');
            let (id_line, event_line) = (format!("id: {id}"), format!("event: {event}"));
            proptest::prop_assert_eq!(lines.next(), Some(id_line.as_str()));
            proptest::prop_assert_eq!(lines.next(), Some(event_line.as_str()));
            let data: Vec<&str> = lines
                .map(|l| l.strip_prefix("data: ").expect("a data line"))
                .collect();
            proptest::prop_assert_eq!(data.join("\n"), text.replace('\r', "\n"));
        }

        /// A `Cookie` header is remote text: any value is judged without a panic, and the
        /// token is found among any other pairs.
        #[test]
        fn any_cookie_header_is_judged(before in "\\PC{0,40}", after in "[^;]{0,20}(;[^;]{0,20}){0,3}") {
            let token = Secret::new("t0k");
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&before) {
                headers.insert(header::COOKIE, v);
                let _ = shows_token(&token, None, &headers);
            }
            let cookie = format!("a=1; ferry_token=t0k;{after}");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                headers.insert(header::COOKIE, v);
                proptest::prop_assert!(shows_token(&token, None, &headers));
            }
        }
    }

    #[test]
    fn a_stream_token_is_taken_from_the_query_or_the_cookie() {
        let token = Secret::new("t0k");
        let cookie = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
            headers
        };
        let none = HeaderMap::new();
        assert!(shows_token(&token, Some("t0k"), &none));
        assert!(!shows_token(&token, Some("t0"), &none));
        assert!(!shows_token(&token, None, &none));
        assert!(shows_token(&token, None, &cookie("a=b; ferry_token=t0k")));
        assert!(!shows_token(
            &token,
            None,
            &cookie("ferry_token=x; other=t0k")
        ));
        assert!(!shows_token(&token, None, &cookie("xferry_token=t0k")));
    }

    #[test]
    fn a_slow_client_skips_what_was_pushed_out_and_is_told() {
        let hub = hub(0);
        let mut slow = Client::connect(hub.clone(), None, None).unwrap();
        for i in 0..LIVE_SLACK + 10 {
            hub.publish(&Message::new("m".into(), "e", format!("{i}")))
                .unwrap();
        }
        slow.fetch(usize::MAX);
        assert_eq!(
            slow.pending.len(),
            LIVE_SLACK + 1,
            "a note and what is kept"
        );
        let text = wire(&mut slow);
        assert!(
            text.starts_with(": events after id 999 are missing"),
            "{text}"
        );
        // buffer: 0 replays nothing, but says so.
        let resumed = Client::connect(hub.clone(), Some(1_100), None).unwrap();
        assert_eq!(resumed.pending.len(), 1);
    }
}
