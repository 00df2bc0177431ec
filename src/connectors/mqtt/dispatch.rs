//! The dispatcher: hands each message the event loop received to the routes that take it, in
//! arrival order, on the event loop's task; a route whose queue is full and blocks
//! (`when_full: block`) holds the message there while the event loop goes on polling.
//!
//! Finding those routes costs the same however many routes the connection has
//! ([`Routing`]): with subscription identifiers, each identifier in the message leads straight
//! to the routes that subscribed its filter; without, the topic is looked up in a tree of
//! every route's filters. Only the routes found check the message against their own filters.

use std::collections::VecDeque;
use std::sync::Arc;

use super::acks::Receipt;
use super::client::{AckToken, RECEIVE_MAXIMUM};
use super::replies::{Asked, Replies, Response};
use super::topic;
use super::topic_tree::TopicTree;
use crate::contracts::queue::RouteInput;
use crate::message::{Ack, Incoming, Message};

/// A route reading from this connection.
pub struct RouteSource {
    pub input: RouteInput,
    /// The route's subscriptions: their identifier (index + 1 in the connection's list) and
    /// their filter as applied to topic names (without `$share/GROUP/`).
    pub filters: Vec<(usize, String)>,
    /// A request route's: its messages come with the way back to their requester.
    pub replies: Option<Replies>,
    /// Not a route but ferry's own reply topic: what arrives there goes to the requests
    /// waiting for it (its `input` takes nothing).
    pub asked: Option<Arc<Asked>>,
}

impl RouteSource {
    /// Whether this route takes a message on `topic_name` delivered for the subscriptions
    /// `subscription_ids` (empty when unknown: MQTT 3.1.1, or a broker without identifiers).
    ///
    /// A broker may deliver one copy per matching subscription. The route takes only the copy
    /// for its first subscription that matches the topic, so it sees each message once even
    /// when its own filters, or other routes' filters, overlap.
    fn accepts(&self, topic_name: &str, subscription_ids: &[usize]) -> bool {
        let mut matching = self
            .filters
            .iter()
            .filter(|(_, f)| topic::matches(topic_name, f));
        match matching.next() {
            None => false,
            Some(_) if subscription_ids.is_empty() => true,
            Some((id, _)) => subscription_ids.contains(id),
        }
    }
}

/// Which routes take a message, found without going through every route. Built once, at start.
struct Routing {
    routes: Vec<RouteSource>,
    /// By subscription identifier (index + 1), the routes that subscribed its filter, in route
    /// order. Identical filters of several routes are one subscription of the connection.
    by_id: Vec<Vec<usize>>,
    /// Every route's filters, each standing for its route.
    tree: TopicTree<usize>,
}

impl Routing {
    fn new(routes: Vec<RouteSource>) -> Self {
        let mut by_id: Vec<Vec<usize>> = Vec::new();
        let mut tree = TopicTree::new();
        for (index, route) in routes.iter().enumerate() {
            for (id, filter) in &route.filters {
                if by_id.len() < *id {
                    by_id.resize_with(*id, Vec::new);
                }
                let subscribers = &mut by_id[id - 1];
                if subscribers.last() != Some(&index) {
                    subscribers.push(index);
                }
                tree.insert(filter, index);
            }
        }
        Routing {
            routes,
            by_id,
            tree,
        }
    }

    /// The routes that take a message on `topic_name` delivered for `subscription_ids`
    /// (empty when unknown), in route order, into `takers` (cleared first).
    fn takers(&self, topic_name: &str, subscription_ids: &[usize], takers: &mut Vec<usize>) {
        takers.clear();
        if subscription_ids.is_empty() {
            self.tree.matches(topic_name, |route| takers.push(route));
        } else {
            for id in subscription_ids {
                if let Some(routes) = id.checked_sub(1).and_then(|i| self.by_id.get(i)) {
                    takers.extend(routes);
                }
            }
        }
        takers.sort_unstable();
        takers.dedup();
        // A route with overlapping filters takes only the copy of its first matching one.
        takers.retain(|&route| self.routes[route].accepts(topic_name, subscription_ids));
    }
}

/// A message that arrived, as the event loop hands it to the routes.
pub struct Arrival {
    pub message: Message,
    pub subscription_ids: Vec<usize>,
    /// QoS 1/2: the message's place in the ack order.
    pub receipt: Option<Receipt<AckToken>>,
    /// MQTT 5: where its answer goes, for request routes.
    pub response: Option<Box<Response>>,
}

/// Hands each message the event loop received to every route whose filters match its topic,
/// in arrival order, on the event loop's own task: a message reaches its routes' queues with
/// no task in between. It never waits: a route whose queue is full and blocks
/// (`when_full: block`) keeps the message here, and the event loop waits for its room
/// ([`Dispatcher::room`]) while it goes on polling.
pub struct Dispatcher {
    connection: Arc<str>,
    routing: Routing,
    /// The message being handed over, while a route has not taken it yet.
    current: Option<HandOver>,
    /// The routes of the current message, in route order (kept between messages).
    takers: Vec<usize>,
}

/// Where the hand-over of one message stands.
struct HandOver {
    /// `None` once the last route's copy is made.
    message: Option<Message>,
    receipt: Option<Receipt<AckToken>>,
    /// How many of its routes took it.
    taken: usize,
    /// The copy the next route had no room for.
    waiting: Option<Incoming>,
    /// Where its answer goes, and at which QoS, for request routes.
    response: Option<Box<Response>>,
    qos: u8,
}

impl Dispatcher {
    pub fn new(connection: Arc<str>, routes: Vec<RouteSource>) -> Self {
        Dispatcher {
            connection,
            routing: Routing::new(routes),
            current: None,
            takers: Vec::new(),
        }
    }

    /// Hands the waiting messages (`next` gives them, oldest first) to their routes, as far as
    /// the routes take them without waiting. `false` when a route's queue is full and blocks:
    /// the message stays here, and [`Self::room`] says when to try again.
    pub fn hand_over(&mut self, mut next: impl FnMut() -> Option<Arrival>) -> bool {
        loop {
            let current = match &mut self.current {
                Some(current) => current,
                None => {
                    let Some(arrival) = next() else {
                        return true;
                    };
                    let (message, ids) = (&arrival.message, &arrival.subscription_ids);
                    self.routing.takers(&message.subject, ids, &mut self.takers);
                    if self.takers.is_empty() {
                        tracing::debug!(
                            connection = %self.connection,
                            topic = %message.subject,
                            "no route matches; dropped"
                        );
                        if let Some(receipt) = arrival.receipt {
                            receipt.confirm();
                        }
                        continue;
                    }
                    self.current.insert(HandOver {
                        qos: arrival.message.qos,
                        message: Some(arrival.message),
                        receipt: arrival.receipt,
                        taken: 0,
                        waiting: None,
                        response: arrival.response,
                    })
                }
            };
            while let Some(&route) = self.takers.get(current.taken) {
                if let Some(asked) = &self.routing.routes[route].asked {
                    let reply = match current.taken + 1 == self.takers.len() {
                        true => current.message.take(),
                        false => current.message.clone(),
                    };
                    let correlation = current
                        .response
                        .as_ref()
                        .and_then(|r| r.correlation.as_ref());
                    asked.settle(reply.expect("a copy per route"), correlation);
                    current.taken += 1;
                    continue;
                }
                let replies = self.routing.routes[route].replies.as_ref();
                let incoming = current.waiting.take().unwrap_or_else(|| {
                    // Every route but the last gets a (cheap) clone; the last the message.
                    let message = match current.taken + 1 == self.takers.len() {
                        true => current.message.take(),
                        false => current.message.clone(),
                    };
                    Incoming {
                        message: message.expect("a copy per route"),
                        ack: share(&current.receipt),
                        reply: replies.map(|r| r.to(current.response.as_deref(), current.qos)),
                    }
                });
                // A `false` from the queue means the route is shutting down: its copy is let
                // go of, unconfirmed.
                match self.routing.routes[route].input.try_push(incoming) {
                    Ok(_) => current.taken += 1,
                    Err(back) => {
                        current.waiting = Some(back);
                        return false;
                    }
                }
            }
            // Every route has its own share of the receipt now: the message is acknowledged
            // once they all confirmed.
            if let Some(receipt) = self.current.take().and_then(|done| done.receipt) {
                receipt.confirm();
            }
        }
    }

    /// The queue of the route holding up the current message, and the size to wait for there
    /// ([`RouteInput::room`]); `None` while nothing waits.
    pub fn blocked_on(&self) -> Option<(&RouteInput, usize)> {
        let current = self.current.as_ref()?;
        let incoming = current.waiting.as_ref()?;
        let route = &self.routing.routes[self.takers[current.taken]];
        Some((&route.input, incoming.message.payload.len()))
    }
}

/// Messages the event loop holds for full routes before it leaves further ones with the
/// broker. Above the receive maximum, so QoS 1/2 messages from a broker that keeps to it never
/// fill it.
const PENDING_LIMIT: usize = RECEIVE_MAXIMUM as usize + 256;
/// Payload bytes the event loop holds for full routes at most.
const PENDING_MAX_BYTES: usize = 64 << 20;

/// Received messages waiting for the routes to have room, oldest first.
#[derive(Default)]
pub struct Pending {
    items: VecDeque<Arrival>,
    /// Their payload bytes.
    bytes: usize,
}

impl Pending {
    pub fn push(&mut self, arrival: Arrival) {
        self.bytes += arrival.message.payload.len();
        self.items.push_back(arrival);
    }

    /// At the cap: what arrives now stays with the broker (see `event_loop`).
    pub fn is_full(&self) -> bool {
        self.items.len() >= PENDING_LIMIT || self.bytes >= PENDING_MAX_BYTES
    }

    pub fn retain(&mut self, keep: impl FnMut(&Arrival) -> bool) {
        self.items.retain(keep);
        self.bytes = self.items.iter().map(|d| d.message.payload.len()).sum();
    }

    /// The oldest, taken out.
    pub fn pop_front(&mut self) -> Option<Arrival> {
        let arrival = self.items.pop_front()?;
        self.bytes -= arrival.message.payload.len();
        Some(arrival)
    }
}

/// A route's ack for its copy of a message: confirming it settles the route's share of
/// `receipt`; dropped unconfirmed, it drops the share unconfirmed: a nack.
fn share(receipt: &Option<Receipt<AckToken>>) -> Ack {
    match receipt {
        Some(receipt) => {
            let share = receipt.clone();
            Ack::new(move |confirmed| {
                if confirmed {
                    share.confirm();
                }
            })
        }
        None => Ack::none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::queue::bounded;

    fn route(filters: &[(usize, &str)]) -> RouteSource {
        RouteSource {
            input: bounded("r", Default::default()).0,
            filters: filters.iter().map(|(id, f)| (*id, f.to_string())).collect(),
            replies: None,
            asked: None,
        }
    }

    #[test]
    fn without_identifiers_routes_match_by_topic() {
        let r = route(&[(1, "a/#"), (2, "b/+")]);
        assert!(r.accepts("a", &[]));
        assert!(r.accepts("b/c", &[]));
        assert!(!r.accepts("b/c/d", &[]));
        assert!(!r.accepts("c", &[]));
    }

    #[test]
    fn with_identifiers_a_route_takes_one_copy() {
        // Overlapping filters of one route: copies for subscription 1 and 2 may both arrive.
        let r = route(&[(1, "a/#"), (2, "a/b")]);
        assert!(r.accepts("a/b", &[1]));
        assert!(!r.accepts("a/b", &[2]));
        assert!(r.accepts("a/b", &[2, 1]));
        assert!(r.accepts("a/c", &[1]));
        // A copy for another route's subscription is not this route's.
        assert!(!r.accepts("a/c", &[3]));
        // The topic must still match: a stray identifier does not pull in foreign topics.
        assert!(!r.accepts("x/y", &[1]));
        // Shared: a route whose filter is `$share/g/t/#` stores `t/#`.
        let shared = route(&[(4, "t/#")]);
        assert!(shared.accepts("t/x", &[4]));
        assert!(!shared.accepts("t/x", &[1]));
    }

    fn takers(routing: &Routing, topic_name: &str, ids: &[usize]) -> Vec<usize> {
        let mut takers = Vec::new();
        routing.takers(topic_name, ids, &mut takers);
        takers
    }

    #[test]
    fn an_identifier_leads_to_every_route_of_its_filter() {
        // Routes 0 and 2 share subscription 1; route 1 has 2 and 3, overlapping.
        let routing = Routing::new(vec![
            route(&[(1, "a/+")]),
            route(&[(2, "a/#"), (3, "a/b")]),
            route(&[(1, "a/+")]),
            route(&[(4, "c")]),
        ]);
        assert_eq!(routing.by_id, vec![vec![0, 2], vec![1], vec![1], vec![3]]);
        assert_eq!(takers(&routing, "a/b", &[1]), vec![0, 2]);
        // Route 1 takes the copy of its first matching filter only.
        assert_eq!(takers(&routing, "a/b", &[3]), Vec::<usize>::new());
        assert_eq!(takers(&routing, "a/b", &[3, 2, 1]), vec![0, 1, 2]);
        // A stray or unknown identifier pulls in nothing.
        assert_eq!(takers(&routing, "x", &[4]), Vec::<usize>::new());
        assert_eq!(takers(&routing, "c", &[0, 9]), Vec::<usize>::new());
    }

    #[test]
    fn without_identifiers_the_topic_finds_the_routes() {
        let routing = Routing::new(vec![
            route(&[(1, "a/+")]),
            route(&[(2, "a/#"), (3, "a/b")]),
            route(&[(4, "#")]),
        ]);
        assert_eq!(takers(&routing, "a/b", &[]), vec![0, 1, 2]);
        assert_eq!(takers(&routing, "a", &[]), vec![1, 2]);
        assert_eq!(takers(&routing, "$SYS/x", &[]), Vec::<usize>::new());
    }

    mod agrees_with_every_route {
        use super::*;
        use proptest::prelude::*;

        fn filter() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::collection::vec(prop_oneof!["a", "b", "\\+"], 1..4)
                    .prop_map(|levels| levels.join("/")),
                Just("#".to_string()),
                "[ab]/#",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 500,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// The routes found are exactly those that accept the message, asked one by one.
            #[test]
            fn takers_are_the_routes_that_accept(
                routes in prop::collection::vec(prop::collection::vec(filter(), 1..4), 1..8),
                topic in prop::collection::vec(prop_oneof!["a", "b"], 1..4),
                ids in prop::collection::vec(0usize..12, 0..3),
            ) {
                // Identical filters are one subscription, as the connection makes them.
                let mut subscriptions: Vec<String> = Vec::new();
                let routes: Vec<RouteSource> = routes
                    .iter()
                    .map(|filters| {
                        let with_ids: Vec<(usize, &str)> = filters
                            .iter()
                            .map(|f| {
                                let index = subscriptions.iter().position(|s| s == f);
                                let index = index.unwrap_or_else(|| {
                                    subscriptions.push(f.clone());
                                    subscriptions.len() - 1
                                });
                                (index + 1, f.as_str())
                            })
                            .collect();
                        route(&with_ids)
                    })
                    .collect();
                let topic = topic.join("/");
                let expected: Vec<usize> = (0..routes.len())
                    .filter(|&i| routes[i].accepts(&topic, &ids))
                    .collect();
                let routing = Routing::new(routes);
                prop_assert_eq!(takers(&routing, &topic, &ids), expected);
            }
        }
    }
}
