//! A route's bounded queue between its source and its sinks.
//!
//! Bounded twice, by message count and by payload bytes, so a slow sink can never make ferry's
//! memory grow without limit. When it is full, the route's `when_full` decides: `block` makes the
//! source wait (it stops reading from its connection, and the broker's own flow control takes
//! over), `drop_oldest` / `drop_newest` drop a message and count it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::config::{Queue as QueueConfig, WhenFull};
use crate::message::Incoming;

struct State {
    items: VecDeque<Incoming>,
    bytes: usize,
    /// No more pushes will come (the sources stopped): the consumer drains and ends.
    closed: bool,
}

struct Shared {
    config: QueueConfig,
    route: Arc<str>,
    state: Mutex<State>,
    /// Wakes the consumer when a message arrives or the queue closes.
    not_empty: Notify,
    /// Wakes blocked producers when room frees up.
    not_full: Notify,
    /// Messages dropped because the queue was full (drop_oldest / drop_newest).
    dropped: AtomicU64,
    drop_log: crate::contracts::status::RateLimitedLog,
}

impl Shared {
    /// Whether a message of `size` payload bytes must wait (or make room).
    fn full(&self, state: &State, size: usize) -> bool {
        state.items.len() >= self.config.max_messages
            // One message larger than max_bytes still passes alone, or it never would.
            || (state.bytes + size > self.config.max_bytes && !state.items.is_empty())
    }

    /// Room for one more message in `items`, which holds fewer than `max_messages`. The ring
    /// doubles as it fills, but never past `max_messages`: doubling alone would take the
    /// default 10,000 to 16,384 slots, 1.3 MB a full route holds that no message can use.
    fn make_room(&self, items: &mut VecDeque<Incoming>) {
        if items.len() == items.capacity() {
            let more = items
                .len()
                .max(4)
                .min(self.config.max_messages - items.len());
            items.reserve_exact(more);
        }
    }
}

/// Creates a route's queue: the input its source pushes into, the output its worker pops from.
pub fn bounded(route: &str, config: QueueConfig) -> (RouteInput, RouteOutput) {
    let shared = Arc::new(Shared {
        config,
        route: route.into(),
        state: Mutex::new(State {
            items: VecDeque::new(),
            bytes: 0,
            closed: false,
        }),
        not_empty: Notify::new(),
        not_full: Notify::new(),
        dropped: AtomicU64::new(0),
        drop_log: Default::default(),
    });
    (
        RouteInput {
            shared: shared.clone(),
        },
        RouteOutput { shared },
    )
}

/// The source side of a route's queue. Cheap to clone.
#[derive(Clone)]
pub struct RouteInput {
    shared: Arc<Shared>,
}

impl RouteInput {
    /// Hands a message to the route. With `when_full: block` this waits for room; otherwise it
    /// never waits. Returns `false` when the route no longer takes messages (shutting down).
    pub async fn push(&self, incoming: Incoming) -> bool {
        let mut incoming = incoming;
        loop {
            let room = self.shared.not_full.notified();
            match self.try_push(incoming) {
                Ok(taken) => return taken,
                Err(back) => incoming = back,
            }
            room.await;
        }
    }

    /// `push` for a source that must not wait: where `push` would wait for room, gives the
    /// message back (`Err`) for the source to hold on to until [`Self::room`].
    // The message comes back as it went in: boxing it would cost an allocation per message.
    #[allow(clippy::result_large_err)]
    pub fn try_push(&self, incoming: Incoming) -> Result<bool, Incoming> {
        let shared = &*self.shared;
        let size = incoming.message.payload.len();
        let mut state = shared.state.lock().expect("queue lock");
        if state.closed {
            return Ok(false);
        }
        if !shared.full(&state, size) {
            state.bytes += size;
            shared.make_room(&mut state.items);
            state.items.push_back(incoming);
            drop(state);
            shared.not_empty.notify_one();
            return Ok(true);
        }
        match shared.config.when_full {
            WhenFull::Block => Err(incoming),
            WhenFull::DropNewest => {
                drop(state);
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                self.log_drop("drop_newest");
                // Dropping is what the route asked for (at-most-once), so the source is told
                // the message is dealt with. A nack would hold back every later
                // acknowledgement of an in-order source (MQTT, the SSE cursor) until a
                // restart, and then bring the dropped message back.
                incoming.ack.confirm();
                Ok(true)
            }
            WhenFull::DropOldest => {
                let mut dropped = Vec::new();
                while !state.items.is_empty()
                    && (state.items.len() >= shared.config.max_messages
                        || state.bytes + size > shared.config.max_bytes)
                {
                    let old = state.items.pop_front().expect("not empty");
                    state.bytes -= old.message.payload.len();
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    dropped.push(old.ack);
                }
                state.bytes += size;
                shared.make_room(&mut state.items);
                state.items.push_back(incoming);
                drop(state);
                // As for drop_newest; outside the lock, as acks call into sources.
                dropped.into_iter().for_each(crate::message::Ack::confirm);
                self.log_drop("drop_oldest");
                shared.not_empty.notify_one();
                Ok(true)
            }
        }
    }

    /// Resolves once a message of `size` payload bytes fits in the queue, or it closed: time
    /// to `try_push` it again.
    pub async fn room(&self, size: usize) {
        let shared = &*self.shared;
        loop {
            let room = shared.not_full.notified();
            {
                let state = shared.state.lock().expect("queue lock");
                if state.closed || !shared.full(&state, size) {
                    return;
                }
            }
            room.await;
        }
    }

    /// The source has nothing more to give (the end of standard input): the route delivers
    /// what is queued, then ends.
    pub fn finish(&self) {
        let shared = &*self.shared;
        shared.state.lock().expect("queue lock").closed = true;
        shared.not_empty.notify_one();
        shared.not_full.notify_waiters();
    }

    fn log_drop(&self, policy: &str) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        self.shared.drop_log.warn(|| {
            format!(
                "route {}: queue full, dropping messages ({policy}); {dropped} dropped so far",
                self.shared.route
            )
        });
    }
}

/// The worker side of a route's queue. Shutdown keeps a clone to close it and count what is
/// left.
#[derive(Clone)]
pub struct RouteOutput {
    shared: Arc<Shared>,
}

impl RouteOutput {
    /// The route's name, for its worker and its supervision to share.
    pub fn route(&self) -> &Arc<str> {
        &self.shared.route
    }

    /// The next message, or `None` once the queue is closed and empty.
    pub async fn pop(&self) -> Option<Incoming> {
        loop {
            let arrived = self.shared.not_empty.notified();
            if let Some(incoming) = self.try_pop() {
                return Some(incoming);
            }
            if self.is_closed() {
                // What a push put in just before closing is taken above on the next turn.
                return self.try_pop();
            }
            arrived.await;
        }
    }

    /// Resolves once a message is queued or the queue is closed, taking nothing.
    pub async fn wait_for_message(&self) {
        loop {
            let arrived = self.shared.not_empty.notified();
            {
                let state = self.shared.state.lock().expect("queue lock");
                if !state.items.is_empty() || state.closed {
                    return;
                }
            }
            arrived.await;
        }
    }

    /// The next message if one is queued now, without waiting.
    pub fn try_pop(&self) -> Option<Incoming> {
        let shared = &*self.shared;
        let mut state = shared.state.lock().expect("queue lock");
        let incoming = state.items.pop_front()?;
        state.bytes -= incoming.message.payload.len();
        drop(state);
        shared.not_full.notify_waiters();
        Some(incoming)
    }

    /// Stops accepting messages: pushes fail from now on; `pop` drains what is queued, then ends.
    pub fn close(&self) {
        self.shared.state.lock().expect("queue lock").closed = true;
        self.shared.not_empty.notify_one();
        self.shared.not_full.notify_waiters();
    }

    /// Drops every queued message unconfirmed (a nack to its source): shutdown gave up on them.
    pub fn discard(&self) {
        let items = {
            let mut state = self.shared.state.lock().expect("queue lock");
            state.bytes = 0;
            std::mem::take(&mut state.items)
        };
        // Outside the lock, as acks call into sources.
        drop(items);
    }

    /// Whether the queue was closed (shutdown).
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().expect("queue lock").closed
    }

    /// Messages waiting in the queue.
    pub fn len(&self) -> usize {
        self.shared.state.lock().expect("queue lock").items.len()
    }

    /// Payload bytes waiting in the queue.
    pub fn bytes(&self) -> usize {
        self.shared.state.lock().expect("queue lock").bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's bounds and `when_full` policy, as configured.
    pub fn config(&self) -> &QueueConfig {
        &self.shared.config
    }

    /// Messages dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;
    use crate::pipeline::testing::{MemorySource, numbered, payload, within};

    fn queue(
        max_messages: usize,
        max_bytes: usize,
        when_full: WhenFull,
    ) -> (RouteInput, RouteOutput) {
        bounded(
            "telemetry",
            QueueConfig {
                max_messages,
                max_bytes,
                when_full,
            },
        )
    }

    /// What the queue holds, oldest first.
    fn drain(output: &RouteOutput) -> Vec<String> {
        std::iter::from_fn(|| output.try_pop())
            .map(|i| payload(&i.message))
            .collect()
    }

    /// A full queue's ring holds `max_messages` slots, not the next power of two, whichever
    /// way it filled; after a drop it stays at that size.
    #[tokio::test]
    async fn a_full_queue_holds_no_more_slots_than_it_may_use() {
        let source = MemorySource::new("plant");
        for when_full in [WhenFull::Block, WhenFull::DropOldest] {
            let (input, _output) = queue(10, 1 << 20, when_full);
            source
                .feed(&input, "t", (0..10).map(|i| format!("m-{i}")))
                .await;
            let slots = || input.shared.state.lock().unwrap().items.capacity();
            assert_eq!(slots(), 10, "{when_full:?}");
            if when_full == WhenFull::DropOldest {
                source.feed(&input, "t", ["m-10"]).await;
                assert_eq!(slots(), 10);
            }
        }
    }

    #[tokio::test]
    async fn a_full_queue_blocks_the_source_until_the_route_takes_one() {
        let source = MemorySource::new("plant");
        let (input, output) = queue(2, 1024, WhenFull::Block);
        source.feed(&input, "t", ["m-0", "m-1"]).await;

        let push = input.push(source.message("t", "m-2"));
        tokio::pin!(push);
        assert!(
            push.as_mut().now_or_never().is_none(),
            "pushed past the bound"
        );
        assert_eq!(output.len(), 2);

        let first = within("a pop", output.pop()).await.expect("queued");
        assert_eq!(payload(&first.message), "m-0");
        assert!(within("the blocked push, once room freed up", push).await);
        assert_eq!(drain(&output), ["m-1", "m-2"]);
        assert_eq!(output.dropped(), 0);
        assert!(
            source.confirmed().is_empty(),
            "a blocking queue drops nothing"
        );
    }

    #[tokio::test]
    async fn the_byte_bound_holds_but_one_larger_message_passes_alone() {
        let source = MemorySource::new("plant");
        let (input, output) = queue(100, 10, WhenFull::DropNewest);
        source.feed(&input, "t", ["aaaa", "bbbb", "cccc"]).await;
        assert_eq!(output.bytes(), 8);
        assert_eq!(output.dropped(), 1, "12 bytes in a 10-byte queue");
        assert_eq!(drain(&output), ["aaaa", "bbbb"]);

        let large = "x".repeat(64);
        source.feed(&input, "t", [&large]).await;
        assert_eq!(
            output.dropped(),
            1,
            "an empty queue takes a message of any size"
        );
        assert_eq!(output.bytes(), 64);
        source.feed(&input, "t", ["y"]).await;
        assert_eq!(output.dropped(), 2);
        assert_eq!(drain(&output), [large]);
        assert_eq!(output.bytes(), 0);
    }

    #[tokio::test]
    async fn drop_newest_drops_the_new_message_counts_it_and_confirms_it() {
        let source = MemorySource::new("plant");
        let (input, output) = queue(2, 1024, WhenFull::DropNewest);
        source.feed(&input, "t", numbered("m", 5)).await;

        assert_eq!(output.dropped(), 3);
        assert_eq!(drain(&output), ["m-0", "m-1"]);
        // Dropping is what the route asked for: the source hears the message is dealt with.
        assert_eq!(source.confirmed(), ["m-2", "m-3", "m-4"]);
    }

    #[tokio::test]
    async fn drop_oldest_drops_the_oldest_counts_it_and_confirms_it() {
        let source = MemorySource::new("plant");
        let (input, output) = queue(2, 1024, WhenFull::DropOldest);
        source.feed(&input, "t", numbered("m", 5)).await;

        assert_eq!(output.dropped(), 3);
        assert_eq!(drain(&output), ["m-3", "m-4"]);
        assert_eq!(source.confirmed(), ["m-0", "m-1", "m-2"]);
    }

    #[tokio::test]
    async fn drop_oldest_drops_as_many_as_the_byte_bound_needs() {
        let source = MemorySource::new("plant");
        let (input, output) = queue(100, 10, WhenFull::DropOldest);
        source
            .feed(&input, "t", ["aaa", "bbb", "ccc", "dddddddd"])
            .await;

        assert_eq!(output.dropped(), 3);
        assert_eq!(output.bytes(), 8);
        assert_eq!(drain(&output), ["dddddddd"]);
        assert_eq!(source.confirmed(), ["aaa", "bbb", "ccc"]);
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_new_messages_and_drains() {
        let source = MemorySource::new("plant");
        let (input, output) = queue(1, 1024, WhenFull::Block);
        source.feed(&input, "t", ["m-0"]).await;
        let blocked = input.push(source.message("t", "m-1"));
        tokio::pin!(blocked);
        assert!(blocked.as_mut().now_or_never().is_none());

        output.close();
        // The blocked source is woken and told the route takes no more.
        assert!(!within("the blocked push's end", blocked).await);
        assert!(!within("a push", input.push(source.message("t", "m-2"))).await);
        assert_eq!(source.nacked(), ["m-1", "m-2"]);
        let last = within("a pop", output.pop()).await;
        let last = last.expect("what was queued is still delivered");
        assert_eq!(payload(&last.message), "m-0");
        assert!(within("the end of the queue", output.pop()).await.is_none());
    }

    #[tokio::test]
    async fn waiting_for_a_message_ends_when_one_is_queued_or_the_queue_closes() {
        let source = MemorySource::new("plant");
        let (input, output) = queue(10, 1024, WhenFull::Block);
        let waiting = output.wait_for_message();
        tokio::pin!(waiting);
        assert!(waiting.as_mut().now_or_never().is_none(), "nothing queued");
        source.feed(&input, "t", ["m-0"]).await;
        within("the wait, once a message came", waiting).await;
        assert_eq!(output.len(), 1, "waiting takes nothing");
        assert_eq!(drain(&output), ["m-0"]);

        let waiting = output.wait_for_message();
        tokio::pin!(waiting);
        assert!(waiting.as_mut().now_or_never().is_none());
        output.close();
        within("the wait, once the queue closed", waiting).await;
    }

    #[tokio::test]
    async fn the_end_of_the_source_lets_the_route_drain_and_end() {
        let source = MemorySource::new("stdin");
        let (input, output) = queue(10, 1024, WhenFull::Block);
        source.feed(&input, "t", ["m-0"]).await;
        input.finish();
        let last = within("a pop", output.pop()).await;
        assert_eq!(last.map(|i| payload(&i.message)), Some("m-0".into()));
        assert!(within("the end of the queue", output.pop()).await.is_none());
    }

    #[tokio::test]
    async fn discard_drops_what_is_queued_unconfirmed() {
        let source = MemorySource::new("plant");
        let (input, output) = queue(10, 1024, WhenFull::Block);
        source.feed(&input, "t", numbered("m", 3)).await;
        output.close();
        output.discard();

        assert_eq!(source.nacked(), ["m-0", "m-1", "m-2"]);
        assert!(source.confirmed().is_empty());
        assert_eq!((output.len(), output.bytes()), (0, 0));
        assert!(within("the end of the queue", output.pop()).await.is_none());
    }
}
