//! MQTT 5 request/response on request routes.
//!
//! As a source, a request is a PUBLISH with a Response Topic: its answer is published there,
//! with the request's Correlation Data and at the request's QoS, by the connection's replier
//! task (an answer is given from any task, a publish may have to wait for the client). With
//! no reply, the answer is an empty message whose user properties say why, the pair a NATS
//! requester gets as headers (`mapping/answer.rs`). A request without a Response Topic cannot
//! be answered: the route dead-letters it.
//!
//! As a sink, a request is published with the connection's reply topic as its Response Topic
//! and 16 random bytes as its Correlation Data; the connection subscribes to the reply topic
//! (only when a request route asks through it, again after every reconnect), and the
//! dispatcher hands what arrives there to the requests waiting ([`Asked`]), not to routes. A
//! reply whose correlation no request waits for (late, or unknown) is dropped and counted. The
//! requests waiting are bounded by the routes' `max_in_flight`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::client::Client;
use super::publish::PublishError;
use crate::contracts::{ConnectionContext, SinkError};
use crate::mapping::answer;
use crate::message::{Headers, Message, Reply};

/// MQTT 5 request/response: the topic an answer goes to and the correlation data it carries
/// back (the requester's, or ferry's own on the requests it makes).
#[derive(Clone, Debug)]
pub struct Response {
    /// `None` on a reply, which carries only the correlation data.
    pub topic: Option<String>,
    pub correlation: Option<Bytes>,
}

impl Response {
    /// What a PUBLISH's properties say of request/response, if anything. Boxed: few messages
    /// are requests or replies, and every event of the client has room for the largest.
    pub fn of(topic: Option<String>, correlation: Option<Bytes>) -> Option<Box<Response>> {
        (topic.is_some() || correlation.is_some())
            .then(|| Box::new(Response { topic, correlation }))
    }
}

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

// Unbounded: an answer is queued once its request is done, so what bounds this queue is how
// fast the connection publishes the answers against how fast requests come, on the same
// connection; a bound here would have to drop answers.
pub fn channel() -> (Replies, Replier) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Replies(tx), Replier(rx))
}

impl Replies {
    /// The way back to the sender of a request that came with `response` at `qos`.
    pub fn to(&self, response: Option<&Response>, qos: u8) -> Reply {
        let Some(to) = response.filter(|r| r.topic.is_some()).cloned() else {
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
                // An answer carries the request's correlation data, and no response topic.
                let topic = to.topic.unwrap_or_default();
                let back = Response {
                    topic: None,
                    correlation: to.correlation,
                };
                let published = client
                    .publish(topic, payload, qos, false, &headers, Some(back))
                    .await;
                if published.is_err() {
                    tracing::debug!("cannot answer a request: the client refused the publish");
                }
            }
        });
    }
}

/// The requests ferry made through this connection, waiting for their replies on its reply
/// topic, by correlation data.
pub struct Asked {
    topic: String,
    waiting: Mutex<HashMap<Bytes, oneshot::Sender<Message>>>,
    /// Replies no request waited for: late (after the route's timeout) or unknown.
    late: AtomicU64,
}

impl Asked {
    pub fn new(topic: String) -> Asked {
        Asked {
            topic,
            waiting: Mutex::default(),
            late: AtomicU64::new(0),
        }
    }

    /// A reply arrived on the reply topic: to the request waiting for its correlation data,
    /// or dropped.
    pub fn settle(&self, reply: Message, correlation: Option<&Bytes>) {
        let waiting = correlation.and_then(|c| self.waiting.lock().expect("asked").remove(c));
        let answered = waiting.is_some_and(|request| request.send(reply).is_ok());
        if !answered {
            let late = self.late.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(
                "a reply on {} no request waits for (late or unknown) was dropped ({late} so far)",
                self.topic
            );
        }
    }

    /// Publishes `message` as a request at `qos` and waits for its reply (the route's worker
    /// bounds the wait; dropped, the request stops waiting).
    pub async fn ask(
        &self,
        client: &Client,
        connection: &str,
        message: &Message,
        qos: u8,
    ) -> Result<Message, SinkError> {
        let correlation =
            Bytes::from(std::array::from_fn::<u8, 16, _>(|_| fastrand::u8(..)).to_vec());
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("asked")
            .insert(correlation.clone(), tx);
        let _waiting = Waiting {
            asked: self,
            correlation: correlation.clone(),
        };
        let published = client
            .publish(
                message.subject.clone(),
                message.payload.clone(),
                qos,
                false,
                &message.headers,
                Some(Response {
                    topic: Some(self.topic.clone()),
                    correlation: Some(correlation),
                }),
            )
            .await;
        match published {
            Ok(_) => {}
            Err(PublishError::Invalid) => {
                return Err(SinkError::Rejected(format!(
                    "connection {connection}: the MQTT client refused to publish to {:?}",
                    message.subject
                )));
            }
            Err(PublishError::Closed) => {
                return Err(SinkError::Unavailable(format!(
                    "connection {connection} is closed"
                )));
            }
        }
        rx.await.map_err(|_| {
            SinkError::Unavailable(format!("connection {connection} closed before the reply"))
        })
    }
}

/// A request waiting: however its wait ends, its correlation is forgotten, so a reply after
/// it counts as late.
struct Waiting<'a> {
    asked: &'a Asked,
    correlation: Bytes,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        (self.asked.waiting.lock().expect("asked")).remove(&self.correlation);
    }
}
