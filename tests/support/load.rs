//! A numbered load driven through ferry while a test does something to it (kills an
//! instance, restarts one), with the publisher held to a window: it sends the next chunk only
//! while fewer than `window` numbers are beyond the highest one relayed so far. Whatever ferry
//! holds at any moment is therefore at most `window + chunk` messages, which bounds what a
//! killed instance can lose or relay twice.
//!
//! Each arrival is kept with the subject it came on, so a test that gives every instance its
//! own sink subject (`out.1`, `out.2`, ...) sees which instance relayed what.

use std::ops::Range;

use super::*;

/// Where a load's messages go in.
pub enum LoadInput<'a> {
    /// MQTT at QoS 1: a chunk is sent once the broker acknowledged every message of it.
    Mqtt(&'a MqttPeer),
    /// Core NATS: a chunk is sent once a round trip through the server followed it.
    Nats(&'a NatsPeer),
    /// JetStream: a chunk is sent once the stream stored every message of it.
    JetStream(&'a NatsPeer),
}

impl LoadInput<'_> {
    async fn publish(&self, topic: &str, label: &str, seqs: Range<usize>) {
        let messages = seqs.map(|i| (topic.to_string(), seq_payload(label, i, 64)));
        match self {
            LoadInput::Mqtt(peer) => peer.publish_all(messages, 1).await,
            LoadInput::Nats(peer) => peer.publish_all(messages).await,
            LoadInput::JetStream(peer) => peer.jetstream_publish_all(messages).await,
        }
    }
}

/// One message that arrived: its number and the subject (or topic) it came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub seq: usize,
    pub via: String,
}

/// A numbered load of `total` messages on `topic`, collected from `inbox`.
pub struct Load<'a> {
    input: LoadInput<'a>,
    inbox: Inbox,
    topic: String,
    label: String,
    pub total: usize,
    pub window: usize,
    pub chunk: usize,
    /// Numbers `0..published` were sent (and acknowledged, as [`LoadInput`] says).
    pub published: usize,
    /// Everything that arrived, in arrival order, duplicates included.
    pub arrivals: Vec<Arrival>,
    seen: Vec<bool>,
    unique: usize,
    highest: Option<usize>,
}

impl<'a> Load<'a> {
    /// `total` numbered messages (`seq_payload(label, i, 64)`) on `topic`, sent `chunk` at a
    /// time while fewer than `window` are beyond the highest relayed; what arrives is read
    /// from `inbox`.
    pub fn new(
        input: LoadInput<'a>,
        topic: &str,
        label: &str,
        total: usize,
        inbox: Inbox,
    ) -> Load<'a> {
        Load {
            input,
            inbox,
            topic: topic.to_string(),
            label: label.to_string(),
            total,
            window: 2_000,
            chunk: 250,
            published: 0,
            arrivals: Vec::new(),
            seen: vec![false; total],
            unique: 0,
            highest: None,
        }
    }

    /// Distinct numbers that arrived.
    pub fn unique(&self) -> usize {
        self.unique
    }

    /// Number `seq` arrived at least once.
    pub fn arrived(&self, seq: usize) -> bool {
        self.seen.get(seq).copied().unwrap_or(false)
    }

    /// Every number arrived at least once.
    pub fn complete(&self) -> bool {
        self.unique == self.total
    }

    /// The tally of everything that arrived.
    pub fn tally(&self) -> Tally {
        Tally::of(self.total, self.arrivals.iter().map(|a| a.seq))
    }

    /// The subjects the arrivals came on, in the order each first appeared.
    pub fn senders(&self) -> Vec<String> {
        let mut senders: Vec<String> = Vec::new();
        for a in &self.arrivals {
            if !senders.contains(&a.via) {
                senders.push(a.via.clone());
            }
        }
        senders
    }

    /// How many arrivals came on `via`, from the `from`-th arrival on.
    pub fn count_via(&self, via: &str, from: usize) -> usize {
        (self.arrivals[from..].iter())
            .filter(|a| a.via == via)
            .count()
    }

    /// Publishes within the window and collects arrivals until `done` holds; panics after
    /// `timeout`, saying what arrived.
    pub async fn run_until(&mut self, what: &str, done: impl Fn(&Self) -> bool, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            let beyond = self.published - self.highest.map_or(0, |h| h + 1);
            if self.published < self.total && beyond < self.window {
                let end = (self.published + self.chunk).min(self.total);
                let seqs = self.published..end;
                self.input.publish(&self.topic, &self.label, seqs).await;
                self.published = end;
                self.drain();
                continue;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.inbox.recv(left).await {
                Some(m) => self.record(m),
                None => panic!(
                    "{}: {what} did not happen within {timeout:?}: {} published, {}, by \
                     subject {:?}",
                    self.label,
                    self.published,
                    self.tally(),
                    self.by_subject()
                ),
            }
        }
    }

    /// Collects what arrives within `window` and nothing else (after the load, to catch late
    /// duplicates: an absence can only be checked over a window).
    pub async fn collect_for(&mut self, window: Duration) {
        for m in self.inbox.collect_for(window).await {
            self.record(m);
        }
    }

    /// Collects until nothing arrives for `quiet` (whatever relays has relayed what it will);
    /// panics if arrivals go on past `timeout`.
    pub async fn settle(&mut self, quiet: Duration, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let before = self.arrivals.len();
            self.collect_for(quiet).await;
            if self.arrivals.len() == before {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: still arriving after {timeout:?}: {}",
                self.label,
                self.tally()
            );
        }
    }

    /// Arrivals per subject, for failure messages and reports.
    pub fn by_subject(&self) -> Vec<(String, usize)> {
        (self.senders().into_iter())
            .map(|s| {
                let n = self.count_via(&s, 0);
                (s, n)
            })
            .collect()
    }

    fn drain(&mut self) {
        for m in self.inbox.drain() {
            self.record(m);
        }
    }

    fn record(&mut self, m: Msg) {
        let Some((label, seq)) = parse_seq(&m.payload) else {
            panic!("{}: not a numbered message: {m:?}", self.label);
        };
        assert_eq!(label, self.label, "a message of another load: {m:?}");
        if seq < self.total && !std::mem::replace(&mut self.seen[seq], true) {
            self.unique += 1;
        }
        self.highest = self.highest.max(Some(seq));
        self.arrivals.push(Arrival { seq, via: m.topic });
    }
}
