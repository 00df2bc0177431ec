//! What a route's sink promises: how it takes a message, how it confirms it, and why it may
//! not. Connectors implement [`Sink`]; the route worker (in the pipeline) drives it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::message::Message;

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a sink did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The connection is down or the broker is busy: the same message may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// The message itself cannot be published here (bad topic, too large): retrying is futile.
    #[error("{0}")]
    Rejected(String),
    /// The server asked to be left alone for a while (HTTP 429/503 with `Retry-After`): try
    /// the same message again after `retry_after`.
    #[error("{reason}")]
    Busy {
        reason: String,
        retry_after: Duration,
    },
}

/// What confirms a message a sink has taken: resolves once the message is as far as the
/// protocol can confirm (a PUBACK, a JetStream ack, the socket write).
pub enum Confirmation {
    /// Confirmed already (the sink's protocol had nothing more to wait for).
    Done,
    Pending(BoxFuture<'static, Result<(), SinkError>>),
}

impl Confirmation {
    /// Waits for the confirmation.
    pub async fn wait(self) -> Result<(), SinkError> {
        match self {
            Confirmation::Done => Ok(()),
            Confirmation::Pending(pending) => pending.await,
        }
    }
}

/// Publishes a route's mapped messages on one connection.
pub trait Sink: Send + Sync {
    /// Publishes `message` (its `subject` already rendered for this sink). Resolves once the
    /// message is as far as this protocol can confirm.
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Hands `message` to the protocol client and resolves as soon as it is on its way, in the
    /// order of the calls, with what will confirm it. A route keeps several messages in flight
    /// this way, so it is not held to one broker round trip per message. Sinks whose protocol
    /// gives nothing to wait on separately keep the default: the whole send, then a done
    /// confirmation.
    fn queue<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<Confirmation, SinkError>> {
        Box::pin(async move {
            self.send(message).await?;
            Ok(Confirmation::Done)
        })
    }

    /// Makes `message` a request (its `subject` already rendered for this sink) and resolves
    /// with the reply. A request route's worker bounds the wait by the route's
    /// `request.timeout`, which comes as `timeout` for sinks that keep their own books on
    /// waiting requests. Only sinks whose protocol can ask (core NATS, MQTT 5) make requests;
    /// the configuration check keeps request routes to those, so the default is unreachable.
    fn request<'a>(
        &'a self,
        message: &'a Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, SinkError>> {
        let _ = (message, timeout);
        Box::pin(async { Err(SinkError::Rejected("this sink cannot make requests".into())) })
    }
}
