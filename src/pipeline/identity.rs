//! Recognising a route's messages: ids for those whose source gave none (so a sink can
//! deduplicate a re-send), and fingerprints of those that panicked the route's worker (so one
//! cannot stop the route for good).

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::message::Message;

/// The messages that panicked a route's worker, by a fingerprint of subject and payload (the
/// same when the source sends the message again). A message that panics the worker once is
/// given a second chance after the restart (the panic may have had another cause); a second
/// panic dead-letters it, so one message can never stop a route for good.
#[derive(Debug, Default)]
pub struct Suspects(Mutex<VecDeque<u64>>);

/// How many fingerprints a route keeps: panics are rare, and a few suffice to catch a message
/// that comes back.
const SUSPECTS: usize = 64;

impl Suspects {
    /// Notes that `message` panicked the worker: true when it had done so once before.
    pub fn panicked_again(&self, message: &Message) -> bool {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        message.subject.hash(&mut hasher);
        message.payload.hash(&mut hasher);
        let fingerprint = hasher.finish();
        let mut seen = self.0.lock().expect("suspects lock");
        if let Some(at) = seen.iter().position(|f| *f == fingerprint) {
            seen.remove(at);
            return true;
        }
        if seen.len() == SUSPECTS {
            seen.pop_front();
        }
        seen.push_back(fingerprint);
        false
    }
}

/// Ids for messages whose source gave none (MQTT, core NATS), unique across processes: the
/// time this process started and a counter. A sink derives an idempotency key from
/// `Message.id` (JetStream's `Nats-Msg-Id`), so a message re-sent after a failed confirmation is
/// recognised, and two different messages never share a key.
#[derive(Debug)]
pub struct MessageIds {
    boot: String,
    next: AtomicU64,
}

impl Default for MessageIds {
    fn default() -> Self {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        MessageIds {
            boot: format!("{micros:x}.{:x}", std::process::id()),
            next: AtomicU64::new(0),
        }
    }
}

impl MessageIds {
    /// Gives `message` an id if its source did not.
    pub fn assign(&self, message: &mut Message) {
        if message.id.is_none() {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            // Not `format!`: this runs for every message of most routes.
            let mut number = itoa::Buffer::new();
            let number = number.format(n);
            let mut id = String::with_capacity(self.boot.len() + 1 + number.len());
            id.push_str(&self.boot);
            id.push('.');
            id.push_str(number);
            message.id = Some(id);
        }
    }
}
