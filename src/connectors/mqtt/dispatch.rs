//! The dispatcher: the task that hands each message the event loop received to the routes
//! that take it, in arrival order, waiting on full route queues (`when_full: block`) so the
//! event loop never has to.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::acks::Receipt;
use super::client::AckToken;
use super::topic;
use crate::contracts::queue::RouteInput;
use crate::message::{Ack, Incoming, Message};

/// A route reading from this connection.
pub struct RouteSource {
    pub input: RouteInput,
    /// The route's subscriptions: their identifier (index + 1 in the connection's list) and
    /// their filter as applied to topic names (without `$share/GROUP/`).
    pub filters: Vec<(usize, String)>,
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

/// A message that arrived, as the event loop hands it to the dispatcher.
pub struct Arrival {
    pub message: Message,
    pub subscription_ids: Vec<usize>,
    /// QoS 1/2: the message's place in the ack order.
    pub receipt: Option<Receipt<AckToken>>,
}

/// Gives each received message to every route whose filters match its topic, in arrival order.
/// Ends once the event loop stopped forwarding (the sources stopped) and everything it had
/// forwarded is handed over, or at close.
pub async fn dispatch(
    connection: Arc<str>,
    routes: Vec<RouteSource>,
    mut rx: mpsc::Receiver<Arrival>,
    close: CancellationToken,
) {
    loop {
        let Arrival {
            message,
            subscription_ids: ids,
            receipt,
        } = tokio::select! {
            biased;
            _ = close.cancelled() => return,
            arrival = rx.recv() => match arrival {
                Some(arrival) => arrival,
                None => return,
            },
        };
        let Some(last) = routes
            .iter()
            .rposition(|r| r.accepts(&message.subject, &ids))
        else {
            tracing::debug!(%connection, topic = %message.subject, "no route matches; dropped");
            if let Some(receipt) = receipt {
                receipt.confirm();
            }
            continue;
        };
        // Every matching route but the last gets a (cheap) clone; the last the message itself.
        for route in routes[..last]
            .iter()
            .filter(|r| r.accepts(&message.subject, &ids))
        {
            if !deliver(route, message.clone(), &receipt, &close).await {
                return;
            }
        }
        if !deliver(&routes[last], message, &receipt, &close).await {
            return;
        }
        // Every route has its own share of the receipt now: the message is acknowledged once
        // they all confirmed.
        if let Some(receipt) = receipt {
            receipt.confirm();
        }
    }
}

/// Pushes `message` into the route's queue, waiting for room if the route blocks when full,
/// with an ack that settles the route's share of `receipt`. `false` when the connection closed
/// meanwhile.
async fn deliver(
    route: &RouteSource,
    message: Message,
    receipt: &Option<Receipt<AckToken>>,
    close: &CancellationToken,
) -> bool {
    let ack = match receipt {
        // Dropped unconfirmed, the closure drops the receipt unconfirmed: a nack.
        Some(receipt) => {
            let share = receipt.clone();
            Ack::new(move |confirmed| {
                if confirmed {
                    share.confirm();
                }
            })
        }
        None => Ack::none(),
    };
    let incoming = Incoming { message, ack };
    tokio::select! {
        biased;
        _ = close.cancelled() => false,
        // A `false` from push means the route is shutting down: nothing more to do here.
        _ = route.input.push(incoming) => true,
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
}
