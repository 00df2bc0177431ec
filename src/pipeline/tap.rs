//! Copies of a route's messages, before and after mapping, for `ferry tap` (through the admin
//! listener). Tapping never slows or blocks the route: while nobody taps, each hook costs one
//! atomic load; while someone does, a hook clones the message (the payload is shared, not
//! copied) into a bounded broadcast channel, where a tapper that reads too slowly misses
//! events instead of holding the route up.
//!
//! The channel exists only while someone taps: its buffer is tens of kilobytes, and almost
//! no route is ever tapped, so at thousands of routes a channel per route would be most of
//! ferry's memory. The first tapper makes it, the last one to leave drops it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::message::Message;

/// How many events wait for the slowest tapper before it starts missing them.
const TAP_BUFFER: usize = 1024;

/// Where in the route a tapped event was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// As the route took the message from its queue, before mapping.
    Before,
    /// As mapped for one sink, just before it is published there.
    After,
    /// Left out by `match:`, the filter, or a transform that yielded nothing.
    Filtered,
    /// Could not be mapped or published (the reason comes with it).
    Failed,
}

impl Stage {
    /// The stage as `ferry tap` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Before => "before",
            Stage::After => "after",
            Stage::Filtered => "filtered",
            Stage::Failed => "failed",
        }
    }
}

/// One thing a route did with a message, as a tapper receives it.
#[derive(Debug)]
pub struct TapEvent {
    /// Where in the route it was seen.
    pub stage: Stage,
    /// The connection of the sink (`after`).
    pub sink: Option<String>,
    /// Why the message failed (`failed`).
    pub reason: Option<String>,
    /// The message at that stage.
    pub message: Message,
    /// When the route saw it.
    pub time: SystemTime,
}

/// What a route's tap and its tappers share.
#[derive(Default)]
struct Shared {
    /// Tappers connected now; the hooks do nothing while it is zero.
    tappers: AtomicUsize,
    /// The events' channel, while someone taps (and the route runs).
    events: Mutex<Option<broadcast::Sender<Arc<TapEvent>>>>,
}

impl Shared {
    fn events(&self) -> std::sync::MutexGuard<'_, Option<broadcast::Sender<Arc<TapEvent>>>> {
        self.events.lock().expect("tap lock")
    }
}

/// The route's side of its tap: when the last clone goes (the route is gone), the channel
/// goes with it, and its tappers see the end.
#[derive(Default)]
struct Inner(Arc<Shared>);

impl Drop for Inner {
    fn drop(&mut self) {
        self.0.events().take();
    }
}

/// A route's tap. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tap(Arc<Inner>);

impl Tap {
    /// A message as the route took it from its queue, before mapping.
    pub fn before(&self, message: &Message) {
        if self.is_tapped() {
            self.send(Stage::Before, None, None, message);
        }
    }

    /// A message as mapped for the sink on connection `sink`, before it is published.
    pub fn after(&self, sink: &str, message: &Message) {
        if self.is_tapped() {
            self.send(Stage::After, Some(sink.to_string()), None, message);
        }
    }

    /// A message the route's filter left out.
    pub fn filtered(&self, message: &Message) {
        if self.is_tapped() {
            self.send(Stage::Filtered, None, None, message);
        }
    }

    /// A message the route could not map or deliver; `reason` is only formatted when tapped.
    pub fn failed(&self, message: &Message, reason: &dyn std::fmt::Display) {
        if self.is_tapped() {
            self.send(Stage::Failed, None, Some(reason.to_string()), message);
        }
    }

    /// True while someone taps: the one atomic load every hook costs.
    pub fn is_tapped(&self) -> bool {
        self.shared().tappers.load(Ordering::Relaxed) > 0
    }

    fn shared(&self) -> &Shared {
        &(self.0).0
    }

    fn send(&self, stage: Stage, sink: Option<String>, reason: Option<String>, message: &Message) {
        let event = Arc::new(TapEvent {
            stage,
            sink,
            reason,
            message: message.clone(),
            time: SystemTime::now(),
        });
        // Never waits: a full channel overwrites the oldest event, which the slow tapper is
        // then told it missed. No channel, or an error, only means the last tapper just left.
        if let Some(events) = self.shared().events().as_ref() {
            let _ = events.send(event);
        }
    }

    /// Starts tapping: events from now on, until the [`Tapper`] is dropped. The tapper holds
    /// no reference to the route, so a route a reload removes ends its tappers' streams.
    pub fn subscribe(&self) -> Tapper {
        let shared = &(self.0).0;
        let mut events = shared.events();
        let events = events
            .get_or_insert_with(|| broadcast::channel(TAP_BUFFER).0)
            .subscribe();
        shared.tappers.fetch_add(1, Ordering::Relaxed);
        Tapper {
            events,
            shared: shared.clone(),
        }
    }
}

/// What a tapper receives next.
#[derive(Debug)]
pub enum Tapped {
    /// The next event.
    Event(Arc<TapEvent>),
    /// The tapper read too slowly and missed this many events.
    Skipped(u64),
    /// The route is gone (stopped by a reload or shutdown).
    Closed,
}

/// One tapper's subscription to a route's [`Tap`].
pub struct Tapper {
    events: broadcast::Receiver<Arc<TapEvent>>,
    shared: Arc<Shared>,
}

impl Tapper {
    /// The next event, or how many were missed, or the end.
    pub async fn next(&mut self) -> Tapped {
        match self.events.recv().await {
            Ok(event) => Tapped::Event(event),
            Err(broadcast::error::RecvError::Lagged(n)) => Tapped::Skipped(n),
            Err(broadcast::error::RecvError::Closed) => Tapped::Closed,
        }
    }
}

impl Drop for Tapper {
    fn drop(&mut self) {
        // Under the channel's lock, so a tapper arriving now finds the channel or makes one.
        let mut events = self.shared.events();
        if self.shared.tappers.fetch_sub(1, Ordering::Relaxed) == 1 {
            events.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: usize) -> Message {
        Message::new("mq".into(), format!("s/{n}"), format!("{n}"))
    }

    #[tokio::test]
    async fn untapped_hooks_send_nothing_and_a_slow_tapper_is_told_what_it_missed() {
        let tap = Tap::default();
        tap.before(&message(0));
        let mut tapper = tap.subscribe();
        for n in 1..=TAP_BUFFER + 10 {
            tap.before(&message(n));
        }
        // The route never waited; the tapper missed the oldest ten.
        match tapper.next().await {
            Tapped::Skipped(n) => assert_eq!(n, 10),
            other => panic!("expected a skip, got {other:?}"),
        }
        match tapper.next().await {
            Tapped::Event(e) => assert_eq!(e.message.subject, "s/11"),
            other => panic!("expected an event, got {other:?}"),
        }
        drop(tapper);
        assert!(!tap.is_tapped());
    }

    fn has_channel(tap: &Tap) -> bool {
        tap.shared().events().is_some()
    }

    #[tokio::test]
    async fn the_channel_exists_only_while_someone_taps() {
        let tap = Tap::default();
        tap.before(&message(0));
        assert!(!has_channel(&tap), "an untapped route holds a tap channel");

        let mut first = tap.subscribe();
        let mut second = tap.subscribe();
        assert!(has_channel(&tap));
        tap.before(&message(1));
        for tapper in [&mut first, &mut second] {
            match tapper.next().await {
                Tapped::Event(e) => assert_eq!(e.message.subject, "s/1"),
                other => panic!("expected an event, got {other:?}"),
            }
        }
        drop(first);
        assert!(has_channel(&tap), "dropped while a tapper remains");
        drop(second);
        assert!(!has_channel(&tap), "kept after the last tapper left");

        // A tapper coming later gets a channel of its own and the events from then on.
        tap.before(&message(2));
        let mut later = tap.subscribe();
        tap.filtered(&message(3));
        match later.next().await {
            Tapped::Event(e) => {
                assert_eq!(e.message.subject, "s/3");
                assert_eq!(e.stage, Stage::Filtered);
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_tapper_sees_the_end_when_the_route_goes() {
        let tap = Tap::default();
        let mut tapper = tap.subscribe();
        tap.after("nats", &message(1));
        drop(tap);
        assert!(matches!(tapper.next().await, Tapped::Event(_)));
        assert!(matches!(tapper.next().await, Tapped::Closed));
    }
}
