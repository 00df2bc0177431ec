//! Request/reply on core NATS, both ends of a request route.
//!
//! As a source, a request is a message with a reply inbox; its answer is published to that
//! inbox by the connection's replier task (an answer is given from any task, a publish has
//! to wait for the client). With no reply, the requester gets an empty message with the NATS
//! services framework's error headers (`mapping/answer.rs`), so it fails at once instead of
//! at its own timeout.
//!
//! As a sink, a request is the client's own `request`: a NATS service in a queue group works
//! unchanged, and "no responders" fails the request at once. The request waits for as long
//! as the route's worker keeps it (past its timeout, to count a late reply); a reply after
//! that is dropped by the client unseen.

use async_nats::{HeaderMap, RequestErrorKind, Subject};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{NatsSink, header_name, headers_of, names};
use crate::contracts::{ConnectionContext, SinkError};
use crate::mapping::answer;
use crate::message::{Headers, Message, Reply};

/// An answer on its way to a requester's inbox.
struct Answered {
    inbox: Subject,
    payload: Bytes,
    headers: Headers,
}

/// Hands answers to the connection's replier task.
#[derive(Clone)]
pub(super) struct Replies(mpsc::UnboundedSender<Answered>);

impl Replies {
    /// Starts the task that publishes the answers of this connection's request routes.
    // Unbounded: an answer is queued once its request is done, so what bounds this queue is
    // how fast the connection publishes the answers against how fast requests come, on the
    // same connection; a bound here would have to drop answers.
    pub(super) fn start(client: async_nats::Client, runtime: &ConnectionContext) -> Replies {
        let (tx, mut answers) = mpsc::unbounded_channel::<Answered>();
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
                let published = client
                    .publish_with_headers(
                        answered.inbox,
                        nats_headers(&answered.headers),
                        answered.payload,
                    )
                    .await;
                if let Err(e) = published {
                    tracing::debug!("cannot answer a request: {e}");
                }
            }
        });
        Replies(tx)
    }

    /// The way back to the sender of `request`: its reply inbox, if it has one.
    pub(super) fn to(&self, request: &async_nats::Message) -> Reply {
        let Some(inbox) = request.reply.clone() else {
            return Reply::nowhere("a request without a reply inbox");
        };
        let replies = self.0.clone();
        Reply::new(move |answered| {
            let (payload, headers) = answer::sent(answered);
            let _ = replies.send(Answered {
                inbox,
                payload,
                headers,
            });
        })
    }
}

/// The headers a NATS message can carry: a reply from an MQTT 5 service may have user
/// properties NATS cannot write (async-nats would panic on them), which are left out.
fn nats_headers(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if names::header(name, value).is_ok() {
            map.append(header_name(name), value.as_str());
        }
    }
    map
}

/// Makes `message` a request on `sink`'s connection and waits for the reply; the route's
/// worker bounds the wait.
pub(super) async fn make(sink: &NatsSink, message: &Message) -> Result<Message, SinkError> {
    let handles = sink.handles().await?;
    // An inbox of its own, subscribed for this request and unsubscribed when the wait ends:
    // async-nats's shared inbox forgets a request only when its reply comes, so every request
    // a silent service never answered would stay in the client for good.
    let request = async_nats::Request::new()
        .payload(message.payload.clone())
        .headers(nats_headers(&message.headers))
        .inbox(handles.client.new_inbox())
        .timeout(None);
    let subject = &message.subject;
    match handles.client.send_request(subject.clone(), request).await {
        Ok(reply) => {
            let mut answered = Message::new(
                sink.connection.clone(),
                reply.subject.as_str(),
                reply.payload,
            );
            answered.headers = headers_of(reply.headers.as_ref());
            Ok(answered)
        }
        Err(e) => Err(match e.kind() {
            RequestErrorKind::NoResponders => {
                SinkError::Unavailable(format!("no responders on `{subject}`"))
            }
            RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
                SinkError::Rejected(format!("connection {}: {e}", sink.connection))
            }
            RequestErrorKind::TimedOut | RequestErrorKind::Other => {
                SinkError::Unavailable(format!("connection {}: {e}", sink.connection))
            }
        }),
    }
}
