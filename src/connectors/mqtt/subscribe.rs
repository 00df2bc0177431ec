//! Subscribing a connection's filters, however many: the SUBSCRIBE packets are queued on the
//! client as its request queue has room, across turns of the event loop. The event loop is the
//! task that polls the client, so it must never wait for room itself; each turn it polls, the
//! client takes queued requests off, and the next turn queues more.
//!
//! With subscription identifiers (MQTT 5, when the broker supports them), each filter has a
//! SUBSCRIBE of its own carrying the identifier `index + 1`. A broker may send one copy of a
//! message per matching subscription (mosquitto does, on MQTT 5); the identifiers in each copy
//! tell which subscriptions it is for, so each route takes exactly one copy (`dispatch`).
//! Without identifiers, the filters go in as few SUBSCRIBE packets as fit in `PACKET_BYTES`
//! and the broker's Maximum Packet Size: one for a usual config.

use std::ops::Range;

use super::client::{Client, SubscribeError, SubscribeNotice, Subscription};

/// The largest SUBSCRIBE ferry sends with several filters. MQTT 3.1.1 cannot learn the
/// broker's packet size limit, and a broker closes the connection over a packet above it: a
/// bound well below any broker's default keeps thousands of filters from ever being refused.
const PACKET_BYTES: usize = 16 * 1024;
/// What a SUBSCRIBE takes besides its filters, at most: fixed header (5), packet id (2) and
/// MQTT 5 properties with a subscription identifier (6).
const PACKET_OVERHEAD: usize = 13;

/// The SUBSCRIBE packets of one connection, queued as the client has room.
pub struct Subscribing {
    /// Each packet: the range of the connection's subscriptions it carries, and its
    /// subscription identifier.
    packets: Vec<(Range<usize>, Option<usize>)>,
    /// One per packet queued so far, in order.
    notices: Vec<SubscribeNotice>,
}

/// What a turn's feeding came to.
pub enum Fed {
    /// The client's queue is full: more to queue next turn.
    More,
    /// Every packet is queued; the answers are to come.
    All(SubAcks),
    /// The client refused a packet (an invalid filter, or it is gone).
    Failed(anyhow::Error),
}

impl Subscribing {
    /// `identify`: the broker supports subscription identifiers. `max_packet_size`: the largest
    /// packet the broker accepts, when it said (MQTT 5).
    pub fn new(
        subscriptions: &[Subscription],
        identify: bool,
        max_packet_size: Option<u32>,
    ) -> Self {
        let packets = match identify {
            true => (0..subscriptions.len())
                .map(|index| (index..index + 1, Some(index + 1)))
                .collect(),
            false => {
                let limit =
                    max_packet_size.map_or(PACKET_BYTES, |max| PACKET_BYTES.min(max as usize));
                split(subscriptions, limit)
                    .into_iter()
                    .map(|range| (range, None))
                    .collect()
            }
        };
        Subscribing {
            packets,
            notices: Vec::new(),
        }
    }

    /// Queues the packets not queued yet, in order, until the client's queue is full.
    pub fn feed(&mut self, client: &Client, subscriptions: &[Subscription]) -> Fed {
        while let Some((range, id)) = self.packets.get(self.notices.len()) {
            match client.try_subscribe(&subscriptions[range.clone()], *id) {
                Ok(notice) => self.notices.push(notice),
                Err(SubscribeError::Full) => return Fed::More,
                Err(SubscribeError::Failed(error)) => return Fed::Failed(error),
            }
        }
        Fed::All(SubAcks(std::mem::take(&mut self.notices)))
    }
}

/// Splits the subscriptions, in order, into packets of at most `limit` bytes (a filter larger
/// than that alone goes in a packet of its own).
fn split(subscriptions: &[Subscription], limit: usize) -> Vec<Range<usize>> {
    let mut packets = Vec::new();
    let mut start = 0;
    let mut bytes = PACKET_OVERHEAD;
    for (index, subscription) in subscriptions.iter().enumerate() {
        // A length-prefixed filter and its options byte.
        let size = 2 + subscription.filter.len() + 1;
        if index > start && bytes + size > limit {
            packets.push(start..index);
            start = index;
            bytes = PACKET_OVERHEAD;
        }
        bytes += size;
    }
    if start < subscriptions.len() {
        packets.push(start..subscriptions.len());
    }
    packets
}

/// The pending answers to a connection's SUBSCRIBE packets.
pub struct SubAcks(Vec<SubscribeNotice>);

impl SubAcks {
    /// Per subscription, in order: `None` when granted, or the broker's reason for refusing it.
    /// `Err` when a SUBSCRIBE never got an answer (the connection dropped first).
    pub async fn wait(self) -> Result<Vec<Option<String>>, String> {
        let mut codes = Vec::new();
        for notice in self.0 {
            codes.extend(notice.wait().await?);
        }
        Ok(codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriptions(filters: impl IntoIterator<Item = String>) -> Vec<Subscription> {
        filters
            .into_iter()
            .map(|filter| Subscription {
                filter,
                qos: 0,
                no_local: false,
            })
            .collect()
    }

    #[test]
    fn with_identifiers_each_filter_has_its_own_packet() {
        let subs = subscriptions(["a/#".into(), "b".into(), "c/+".into()]);
        let packets = Subscribing::new(&subs, true, None).packets;
        assert_eq!(
            packets,
            vec![(0..1, Some(1)), (1..2, Some(2)), (2..3, Some(3))]
        );
    }

    #[test]
    fn without_identifiers_a_usual_config_is_one_packet() {
        let subs = subscriptions((0..100).map(|i| format!("site{i}/+/temp")));
        assert_eq!(
            Subscribing::new(&subs, false, None).packets,
            vec![(0..100, None)]
        );
        assert!(Subscribing::new(&[], false, None).packets.is_empty());
    }

    #[test]
    fn many_filters_are_split_in_order_within_the_limits() {
        let subs = subscriptions((0..20_000).map(|i| format!("site{i}/+/temp")));
        for (max, limit) in [(None, PACKET_BYTES), (Some(1000), 1000)] {
            let packets = Subscribing::new(&subs, false, max).packets;
            assert!(packets.len() > 1);
            let mut next = 0;
            for (range, id) in &packets {
                assert_eq!(*id, None);
                assert_eq!(range.start, next);
                next = range.end;
                let size: usize = subs[range.clone()]
                    .iter()
                    .map(|s| 2 + s.filter.len() + 1)
                    .sum();
                assert!(PACKET_OVERHEAD + size <= limit, "{range:?}: {size}");
            }
            assert_eq!(next, subs.len());
        }
        // A filter above the limit still goes, alone.
        let subs = subscriptions(["a".into(), "x".repeat(100), "b".into()]);
        assert_eq!(split(&subs, 50), vec![0..1, 1..2, 2..3]);
    }
}
