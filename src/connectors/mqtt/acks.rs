//! Acknowledging incoming QoS 1/2 messages only once every route that took them confirmed, in
//! the order they arrived (MQTT requires PUBACK/PUBREC in arrival order [MQTT-4.6.0-2]).
//!
//! The event loop [`AckTracker::track`]s each QoS 1/2 PUBLISH as it arrives and gets a
//! [`Receipt`] for it. The dispatcher clones the receipt into one `Ack` per route the message
//! goes to and then lets go of its own (so a message no route takes is done at once). Each
//! confirmation is recorded here, under a short lock, from whatever task confirms (a route
//! worker): no await, no I/O. Once the oldest messages are done, their ack tokens are released
//! and the event loop is woken to send them; a token is never sent from anywhere else.
//!
//! A receipt let go of unconfirmed is a nack: the message was not delivered (shutdown came
//! first). It is never acknowledged, nor is anything that arrived after it, so the broker
//! delivers them again to the next session. (A queue that drops a message on purpose,
//! `when_full: drop_*`, confirms it: the route chose to lose it.)
//!
//! Generations: packet ids, and so ack tokens, belong to one network connection. When it ends,
//! [`AckTracker::new_generation`] forgets every message of the old one: the broker delivers
//! the unacknowledged ones again on the new connection, and a PUBACK for the old copy would
//! either be refused by the client (an unknown packet id fails the connection) or acknowledge a
//! different message that reuses the id before it was delivered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The messages of the current connection that are not acknowledged yet, oldest first.
pub struct AckTracker<T> {
    window: Mutex<Window<T>>,
    /// Woken when tokens are released, or a nack blocked the window.
    released: Notify,
}

struct Window<T> {
    generation: u64,
    /// Arrival number of `slots[0]`.
    first: u64,
    slots: VecDeque<Slot<T>>,
    /// Tokens whose turn came, for the event loop to send.
    released: Vec<T>,
    /// A message of this generation was nacked: nothing from it on is released.
    blocked: bool,
}

struct Slot<T> {
    token: T,
    /// Receipts still out: the event loop's or dispatcher's own, and one per route.
    holders: usize,
    /// Let go of unconfirmed: this slot and all after it stay.
    blocked: bool,
}

/// One tracked message: confirm it once delivered; dropping it unconfirmed is a nack. Clone it
/// for every route that takes the message.
pub struct Receipt<T> {
    tracker: Arc<AckTracker<T>>,
    generation: u64,
    sequence: u64,
    settled: bool,
}

impl<T> AckTracker<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(AckTracker {
            window: Mutex::new(Window {
                generation: 0,
                first: 0,
                slots: VecDeque::new(),
                released: Vec::new(),
                blocked: false,
            }),
            released: Notify::new(),
        })
    }

    /// Tracks a message that just arrived, whose ack is `token`.
    pub fn track(self: &Arc<Self>, token: T) -> Receipt<T> {
        let mut window = self.lock();
        let sequence = window.first + window.slots.len() as u64;
        window.slots.push_back(Slot {
            token,
            holders: 1,
            blocked: false,
        });
        Receipt {
            tracker: self.clone(),
            generation: window.generation,
            sequence,
            settled: false,
        }
    }

    /// The connection the tracked messages arrived on is gone: forgets them all, released
    /// tokens included. Their receipts settle into nothing from now on.
    pub fn new_generation(&self) {
        let mut window = self.lock();
        window.generation += 1;
        window.first += window.slots.len() as u64;
        window.slots.clear();
        window.released.clear();
        window.blocked = false;
    }

    /// A message of the current connection was nacked.
    pub fn blocked(&self) -> bool {
        self.lock().blocked
    }

    /// Moves the released tokens (oldest first) to the end of `into`.
    pub fn take_released(&self, into: &mut VecDeque<T>) {
        into.extend(self.lock().released.drain(..));
    }

    /// Resolves once tokens were released since the last call (or right away if they were
    /// released before anyone waited: the wake-up is kept).
    pub async fn wait_released(&self) {
        self.released.notified().await
    }

    /// Messages tracked and not acknowledged yet (released tokens not counted).
    pub fn unacknowledged(&self) -> usize {
        self.lock().slots.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window<T>> {
        self.window.lock().expect("ack tracker lock")
    }

    fn add_holder(&self, generation: u64, sequence: u64) {
        let mut window = self.lock();
        if let Some(slot) = window.slot(generation, sequence) {
            slot.holders += 1;
        }
    }

    fn settle(&self, generation: u64, sequence: u64, confirmed: bool) {
        let mut window = self.lock();
        let Some(slot) = window.slot(generation, sequence) else {
            return;
        };
        slot.holders -= 1;
        slot.blocked |= !confirmed;
        window.blocked |= !confirmed;
        if window.release() || !confirmed {
            drop(window);
            self.released.notify_one();
        }
    }
}

impl<T> Window<T> {
    fn slot(&mut self, generation: u64, sequence: u64) -> Option<&mut Slot<T>> {
        if generation != self.generation {
            return None;
        }
        let index = sequence.checked_sub(self.first)?;
        self.slots.get_mut(usize::try_from(index).ok()?)
    }

    /// Releases the done messages at the front. True if any were.
    fn release(&mut self) -> bool {
        let mut any = false;
        while let Some(slot) = self.slots.front()
            && slot.holders == 0
            && !slot.blocked
        {
            let slot = self.slots.pop_front().expect("front exists");
            self.first += 1;
            self.released.push(slot.token);
            any = true;
        }
        any
    }
}

impl<T> Receipt<T> {
    /// Delivered (or no route wanted it).
    pub fn confirm(mut self) {
        self.settled = true;
        self.tracker.settle(self.generation, self.sequence, true);
    }
}

impl<T> Clone for Receipt<T> {
    fn clone(&self) -> Self {
        self.tracker.add_holder(self.generation, self.sequence);
        Receipt {
            tracker: self.tracker.clone(),
            generation: self.generation,
            sequence: self.sequence,
            settled: false,
        }
    }
}

impl<T> Drop for Receipt<T> {
    fn drop(&mut self) {
        if !self.settled {
            self.tracker.settle(self.generation, self.sequence, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(tracker: &AckTracker<u32>) -> Vec<u32> {
        let mut out = VecDeque::new();
        tracker.take_released(&mut out);
        out.into()
    }

    /// Two routes take every message; the fast one confirms at once, the slow one later and
    /// out of order. Acks go out only for the confirmed prefix, in arrival order.
    #[test]
    fn acks_follow_arrival_order_across_routes_of_different_speed() {
        let tracker = AckTracker::new();
        let mut slow = Vec::new();
        for token in 1..=5 {
            let own = tracker.track(token);
            let fast = own.clone();
            slow.push(own.clone());
            own.confirm();
            fast.confirm();
        }
        assert_eq!(released(&tracker), Vec::<u32>::new());
        // The slow route finishes 3, then 2: still waiting for 1.
        let mut slow: VecDeque<_> = slow.into();
        let first = slow.pop_front().unwrap();
        let second = slow.pop_front().unwrap();
        let third = slow.pop_front().unwrap();
        third.confirm();
        second.confirm();
        assert_eq!(released(&tracker), Vec::<u32>::new());
        first.confirm();
        assert_eq!(released(&tracker), vec![1, 2, 3]);
        for receipt in slow {
            receipt.confirm();
        }
        assert_eq!(released(&tracker), vec![4, 5]);
        assert_eq!(tracker.unacknowledged(), 0);
    }

    #[test]
    fn a_message_no_route_takes_is_acknowledged_in_its_turn() {
        let tracker = AckTracker::new();
        let first = tracker.track(1);
        let route = first.clone();
        first.confirm();
        // Nobody wants 2: the dispatcher just confirms its own receipt.
        tracker.track(2).confirm();
        assert_eq!(released(&tracker), Vec::<u32>::new());
        route.confirm();
        assert_eq!(released(&tracker), vec![1, 2]);
    }

    #[test]
    fn a_nack_holds_back_itself_and_everything_after() {
        let tracker = AckTracker::new();
        let receipts: Vec<_> = (1..=4).map(|t| tracker.track(t)).collect();
        let mut receipts = receipts.into_iter();
        receipts.next().unwrap().confirm();
        drop(receipts.next().unwrap()); // 2: not delivered at shutdown
        receipts.next().unwrap().confirm();
        receipts.next().unwrap().confirm();
        assert_eq!(released(&tracker), vec![1]);
        assert_eq!(tracker.unacknowledged(), 3);
        assert!(tracker.blocked());
        // A new connection starts unblocked.
        tracker.new_generation();
        assert!(!tracker.blocked());
    }

    #[test]
    fn a_new_connection_forgets_the_old_ones_messages_and_tokens() {
        let tracker = AckTracker::new();
        let old = tracker.track(1);
        let old_route = old.clone();
        tracker.track(2).confirm(); // released? no: 1 is still out
        old.confirm();
        tracker.new_generation();
        // The route confirms the old message late: nothing is released for it.
        old_route.confirm();
        assert_eq!(released(&tracker), Vec::<u32>::new());
        // A released but unsent token of the old connection is gone too.
        let done = tracker.track(7);
        done.confirm();
        tracker.new_generation();
        assert_eq!(released(&tracker), Vec::<u32>::new());
        // The new connection's messages are tracked from scratch.
        let new = tracker.track(1);
        new.confirm();
        assert_eq!(released(&tracker), vec![1]);
        assert_eq!(tracker.unacknowledged(), 0);
    }

    #[tokio::test]
    async fn releasing_wakes_the_event_loop_even_before_it_waits() {
        let tracker = AckTracker::new();
        tracker.track(1).confirm();
        tokio::time::timeout(std::time::Duration::from_secs(1), tracker.wait_released())
            .await
            .expect("woken");
        assert_eq!(released(&tracker), vec![1]);
    }
}
