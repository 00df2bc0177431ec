//! MQTT 5 request/response on request routes.
//!
//! As a source, a request is a PUBLISH with a Response Topic: its answer is published there,
//! with the request's Correlation Data and at the request's QoS, by the connection's replier
//! task (an answer is given from any task, a publish may have to wait for the client). With
//! no reply, the answer is an empty message whose user properties say why, the pair a NATS
//! requester gets as headers (`mapping/answer.rs`). A request without a Response Topic cannot
//! be answered: the route dead-letters it.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::client::{Client, Response};
use crate::contracts::ConnectionContext;
use crate::mapping::answer;
use crate::message::{Headers, Reply};

/// An answer on its way to a requester's response topic.
struct Answered {
    to: Response,
    qos: u8,
    payload: Bytes,
    headers: Headers,
}

/// Hands answers to the connection's replier task.
#[derive(Clone)]
pub struct Replies(mpsc::UnboundedSender<Answered>);

/// The answers waiting for the replier task, until the connection starts it.
pub struct Replier(mpsc::UnboundedReceiver<Answered>);

// Unbounded, yet bounded by the routes: an answer is one of a route's `max_in_flight`.
pub fn channel() -> (Replies, Replier) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Replies(tx), Replier(rx))
}

impl Replies {
    /// The way back to the sender of a request that came with `response` at `qos`.
    pub fn to(&self, response: Option<&Response>, qos: u8) -> Reply {
        let Some(to) = response.cloned() else {
            return Reply::nowhere("a request without a response topic");
        };
        let replies = self.0.clone();
        Reply::new(move |answered| {
            let (payload, headers) = answer::sent(answered);
            let _ = replies.send(Answered {
                to,
                qos,
                payload,
                headers,
            });
        })
    }
}

impl Replier {
    /// Starts the task that publishes the answers of this connection's request routes.
    pub fn spawn(self, client: Client, runtime: &ConnectionContext) {
        let Replier(mut answers) = self;
        let close = runtime.close.clone();
        runtime.tasks.spawn("replier", async move {
            loop {
                let answered = tokio::select! {
                    _ = close.cancelled() => break,
                    answered = answers.recv() => match answered {
                        Some(answered) => answered,
                        None => break,
                    },
                };
                let Answered {
                    to,
                    qos,
                    payload,
                    headers,
                } = answered;
                let published = client
                    .publish_v5(to.topic, payload, qos, &headers, None, to.correlation)
                    .await;
                if published.is_err() {
                    tracing::debug!("cannot answer a request: the client refused the publish");
                }
            }
        });
    }
}
