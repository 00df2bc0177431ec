//! A route's NATS sink: core publishes confirmed by a group flush, JetStream publishes by
//! their PubAck, KV puts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use futures_util::FutureExt;
use tokio::sync::watch;

use super::{Handles, config, jetstream, kv, request};
use crate::contracts::{BoxFuture, Confirmation, Sink, SinkError};
use crate::message::Message;

/// How long a publish may wait for room in the client's outgoing channel, and then for the
/// socket write (core NATS), before the sink reports the connection unavailable.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a sink waits for its connection's first connect before it reports it unavailable:
/// a route that starts with its connection (`ferry relay`, a restart) has its first messages
/// wait for it instead of failing them with a warning. Once the connection was up, a sink
/// whose connection is down says so at once (a spool takes over without delay).
const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// Group flushes: one socket flush confirms every core publish queued before it, so a route
/// with many messages in flight pays one flush per batch, not one per message. The flush is
/// asked for by the first confirmation awaited while none is under way, on the route
/// worker's own task: no task of its own to wake per message, no timer.
pub(super) struct Flushes {
    /// Core publishes queued with the client so far.
    pub(super) queued: AtomicU64,
    /// A confirmation is flushing for everyone: the others wait for `written`.
    pub(super) flushing: AtomicBool,
    /// How many of the queued publishes the flushes so far have written. Also sent, unchanged,
    /// when a flush ends without writing, so that a waiting confirmation takes over.
    pub(super) written: watch::Sender<u64>,
}

impl Flushes {
    /// Resolves once the publish numbered `queued` was written to the socket (`Ok`), or the
    /// flush failed or the client is gone (`Err`).
    async fn written(&self, client: &async_nats::Client, queued: u64) -> Result<(), ()> {
        let mut written = self.written.subscribe();
        loop {
            if *written.borrow_and_update() >= queued {
                return Ok(());
            }
            if self.flushing.swap(true, Ordering::AcqRel) {
                written.changed().await.map_err(|_| ())?;
                continue;
            }
            // This confirmation flushes, for every publish queued so far; dropped half-way,
            // it hands the flush on (see `Flushing`).
            let mut flushing = Flushing {
                flushes: self,
                wrote: 0,
            };
            let target = self.queued.load(Ordering::Acquire);
            let flushed = client.flush().await;
            if flushed.is_ok() {
                flushing.wrote = target;
            }
            drop(flushing);
            // The connection broke: the route hears it from the disconnect watch, or from this.
            if let Err(error) = flushed {
                tracing::debug!("flush failed: {error}");
                return Err(());
            }
        }
    }
}

/// A flush under way. When it ends, however it ends, the next confirmation may flush, and
/// those waiting look again: one notification says both what it wrote and that it ended.
struct Flushing<'a> {
    flushes: &'a Flushes,
    /// The publishes queued before it, once it succeeded (until then 0: `written` stays).
    wrote: u64,
}

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        self.flushes.flushing.store(false, Ordering::Release);
        let wrote = self.wrote;
        self.flushes
            .written
            .send_modify(|written| *written = (*written).max(wrote));
    }
}

/// The NATS header name for `name`: ferry's loop marker, on every message, is made once, not
/// parsed again for each.
pub(super) fn header_name(name: &str) -> async_nats::HeaderName {
    use crate::mapping::marker::VIA;
    const MARKER: async_nats::HeaderName = async_nats::HeaderName::from_static(VIA);
    match name == VIA {
        true => MARKER,
        false => async_nats::header::IntoHeaderName::into_header_name(name),
    }
}

/// A route's NATS sink: core NATS, or JetStream with `jetstream: true`.
pub(super) struct NatsSink {
    pub(super) connection: Arc<str>,
    pub(super) handles: Arc<tokio::sync::OnceCell<Handles>>,
    pub(super) connected: Arc<watch::Sender<Option<bool>>>,
    pub(super) jetstream: bool,
    pub(super) kv: Option<Box<config::KvSink>>,
}

impl Sink for NatsSink {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { self.queue_publish(message).await?.wait().await })
    }

    fn queue<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<Confirmation, SinkError>> {
        // The publish that may wait (`queue_publish`) is a future of kilobytes, which glibc's
        // allocator serves slowly when many are in flight: it is boxed on its own, only when
        // the quick way did not do.
        Box::pin(async move {
            if let Some(queued) = self.try_queue_core(message) {
                return queued;
            }
            let confirmation = Box::pin(self.queue_publish(message)).await?;
            if self.jetstream {
                // One at a time: publishes still in the client's channel when the connection
                // drops go out after the reconnect, ahead of the ones lost in its write buffer
                // and sent again, and a stream must keep the route's order.
                confirmation.wait().await?;
                return Ok(Confirmation::Done);
            }
            Ok(confirmation)
        })
    }

    fn request<'a>(
        &'a self,
        message: &'a Message,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, SinkError>> {
        Box::pin(request::make(self, message))
    }
}

impl NatsSink {
    async fn queue_publish(&self, message: &Message) -> Result<Confirmation, SinkError> {
        let handles = self.handles().await?;
        // The subject and headers follow NATS's rules (`names::subject`, `names::header`;
        // async-nats panics on a header it cannot write): the route's mapping checked them
        // for every publish and dead letter, and the spool's forwarder checks what it kept
        // from an earlier run, so they are not checked again here.
        if let Some(kv) = &self.kv {
            return kv::put(kv, handles, message).await;
        }
        let headers = self.headers(message);
        if self.jetstream {
            return jetstream::publish(
                &handles.jetstream,
                message.subject.clone(),
                message,
                headers,
                handles.disconnects.clone(),
            )
            .await;
        }
        self.publish_core(handles, message, headers).await
    }

    /// The client, once the connection is up; unavailable while it is not.
    pub(super) async fn handles(&self) -> Result<&Handles, SinkError> {
        if self.connected.borrow().is_none() {
            let mut connected = self.connected.subscribe();
            tokio::time::timeout(CONNECTION_WAIT, connected.wait_for(Option::is_some))
                .await
                .map_err(|_| {
                    SinkError::Unavailable(format!("connection {} is not up yet", self.connection))
                })?
                .map_err(|_| {
                    SinkError::Unavailable(format!("connection {} is closed", self.connection))
                })?;
        }
        let Some(handles) = self.handles.get() else {
            return Err(SinkError::Unavailable(format!(
                "connection {} is not started yet",
                self.connection
            )));
        };
        // Published while disconnected, a message would wait in the client and go out at
        // the reconnect, after the route (or its spool) had already taken it back as
        // unavailable: a duplicate. Say so at once instead.
        if handles.client.connection_state() != async_nats::connection::State::Connected {
            return Err(SinkError::Unavailable(format!(
                "connection {} is down",
                self.connection
            )));
        }
        Ok(handles)
    }

    /// The core publish when it need not wait: the connection is up and the client's channel
    /// has room. `None`: the waiting way must do (`queue_publish`), nothing was sent.
    fn try_queue_core(&self, message: &Message) -> Option<Result<Confirmation, SinkError>> {
        if self.jetstream || self.connected.borrow().is_none() {
            return None;
        }
        let handles = self.handles.get()?;
        if handles.client.connection_state() != async_nats::connection::State::Connected {
            return None;
        }
        let queued_on = QueuedOn::now(handles);
        // Polled once: the client's channel sends nothing unless it completes.
        let published = core_publish(&handles.client, message, self.headers(message))
            .now_or_never()?
            .map_err(|e| publish_error(&self.connection, &message.subject, &e));
        Some(published.map(|()| self.confirmation(handles, queued_on)))
    }

    /// The message's headers as the client takes them (a JetStream publish's own controls
    /// left out: the client sets them).
    fn headers(&self, message: &Message) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in &message.headers {
            if !(self.jetstream && jetstream::is_publish_control(k)) {
                headers.append(header_name(k), v.as_str());
            }
        }
        headers
    }

    /// Publishes on core NATS and waits until the message has left ferry: the client wrote it
    /// to the socket (a flush), on the same connection it was queued for.
    ///
    /// Once queued, a message is never reported unavailable while that connection lives, or
    /// the route's retry would send it twice: a sink that is merely slow (a paused server, a
    /// full socket) holds the route until the write completes or the client gives the
    /// connection up (missed pings). async-nats drops what it had not written when a
    /// connection dies, yet a flush waiting across the reconnect then succeeds: so a
    /// reconnect in between means "unavailable", and the route sends the message again.
    async fn publish_core(
        &self,
        handles: &Handles,
        message: &Message,
        headers: HeaderMap,
    ) -> Result<Confirmation, SinkError> {
        let queued_on = QueuedOn::now(handles);
        let publish = core_publish(&handles.client, message, headers);
        // Almost always the client's channel has room: only a publish that must wait pays
        // for a timer.
        let mut publish = std::pin::pin!(publish);
        let published = match futures_util::poll!(publish.as_mut()) {
            std::task::Poll::Ready(published) => Ok(published),
            std::task::Poll::Pending => tokio::time::timeout(PUBLISH_TIMEOUT, publish).await,
        };
        match published {
            Ok(Ok(())) => Ok(self.confirmation(handles, queued_on)),
            Ok(Err(e)) => Err(publish_error(&self.connection, &message.subject, &e)),
            Err(_) => Err(SinkError::Unavailable(format!(
                "connection {}: publish timed out: the client's buffer is full (the server is \
                 slow or away)",
                self.connection
            ))),
        }
    }

    /// What confirms a core publish the client took: the flush that writes it, on the
    /// connection it was queued on.
    fn confirmation(&self, handles: &Handles, queued_on: QueuedOn) -> Confirmation {
        let ticket = Ticket {
            queued: handles.flushes.queued.fetch_add(1, Ordering::AcqRel) + 1,
            queued_on,
        };
        // The confirmation reaches the client through the connection's handles, which it
        // shares: one reference count, not a clone of the client (its channels, watches and
        // counters) for every message.
        let shared = self.handles.clone();
        let name = self.connection.clone();
        // A group flush writes many publishes at once, so a confirmation is often settled by
        // the time the route asks: only one that must wait for a flush makes the future that
        // waits (hundreds of bytes, with the flush's).
        Confirmation::Pending(Box::pin(async move {
            // Set before the publish this confirms.
            let Some(handles) = shared.get() else {
                return Err(lost(&name));
            };
            match ticket.settled(handles, &name) {
                Some(settled) => settled,
                None => Box::pin(ticket.wait(handles, &name)).await,
            }
        }))
    }
}

/// Which connection a core publish went out on, taken before the publish: the client's count
/// of connects, and of disconnects (the watch's) so far.
struct QueuedOn {
    connection: u64,
    disconnects: u64,
}

impl QueuedOn {
    fn now(handles: &Handles) -> QueuedOn {
        QueuedOn {
            connection: connects(handles),
            disconnects: *handles.disconnects.borrow(),
        }
    }
}

/// A core publish the client took, numbered in the order of the connection's publishes.
struct Ticket {
    queued: u64,
    queued_on: QueuedOn,
}

impl Ticket {
    /// How the publish ended, if it did: written by a flush on the connection it was queued
    /// on, or lost with that connection.
    fn settled(&self, handles: &Handles, name: &str) -> Option<Result<(), SinkError>> {
        if *handles.disconnects.borrow() != self.queued_on.disconnects {
            return Some(Err(lost(name)));
        }
        (*handles.flushes.written.borrow() >= self.queued)
            .then(|| self.on_its_connection(handles, name))
    }

    fn on_its_connection(&self, handles: &Handles, name: &str) -> Result<(), SinkError> {
        match connects(handles) == self.queued_on.connection {
            true => Ok(()),
            false => Err(lost(name)),
        }
    }

    /// Waits for the flush that writes the publish (making it if none is under way), or for
    /// its connection to be lost.
    async fn wait(self, handles: &Handles, name: &str) -> Result<(), SinkError> {
        let mut disconnects = handles.disconnects.clone();
        if *disconnects.borrow_and_update() != self.queued_on.disconnects {
            return Err(lost(name));
        }
        tokio::select! {
            flushed = handles.flushes.written(&handles.client, self.queued) => match flushed {
                Ok(()) => self.on_its_connection(handles, name),
                Err(()) if connects(handles) != self.queued_on.connection => Err(lost(name)),
                Err(()) => Err(SinkError::Unavailable(format!("connection {name} is closed"))),
            },
            _ = disconnects.changed() => Err(lost(name)),
        }
    }
}

/// A publish lost with its connection before it was written: the route sends it again.
fn lost(name: &str) -> SinkError {
    SinkError::Unavailable(format!(
        "connection {name}: the connection was lost before the message was written"
    ))
}

/// How many times the client connected so far.
fn connects(handles: &Handles) -> u64 {
    handles.client.statistics().connects.load(Ordering::SeqCst)
}

/// The client's core publish of `message`.
fn core_publish<'a>(
    client: &'a async_nats::Client,
    message: &Message,
    headers: HeaderMap,
) -> impl Future<Output = Result<(), async_nats::PublishError>> + 'a {
    // The client takes a subject it may copy; one made from the owned name is not copied
    // again (a `String` would be).
    let subject = async_nats::Subject::from(message.subject.clone());
    let payload = message.payload.clone();
    async move {
        if headers.is_empty() {
            client.publish(subject, payload).await
        } else {
            client.publish_with_headers(subject, headers, payload).await
        }
    }
}

/// What a failed core publish means for the route. The client checks a message against the
/// server's `max_payload` (from its INFO, renewed at each reconnect; payload and headers
/// counted as the server counts them) and the subject before it sends anything: neither
/// passes on a retry, so the message is refused and the route goes on with the next. Only a
/// client that can no longer send (its connection task gone) is worth another try.
fn publish_error(connection: &str, subject: &str, error: &async_nats::PublishError) -> SinkError {
    use async_nats::PublishErrorKind;
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => SinkError::Rejected(format!(
            "connection {connection}: message to `{subject}` is larger than the server's \
             max_payload: {}",
            std::error::Error::source(error).map_or_else(String::new, |e| e.to_string())
        )),
        PublishErrorKind::InvalidSubject => SinkError::Rejected(format!(
            "connection {connection}: `{subject}` is not a subject NATS can publish to"
        )),
        PublishErrorKind::Send => {
            SinkError::Unavailable(format!("connection {connection}: {error}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::PublishErrorKind;

    #[test]
    fn publish_errors_say_whether_to_retry() {
        let too_large = async_nats::PublishError::with_source(
            PublishErrorKind::MaxPayloadExceeded,
            "Payload size limit of 1024 exceeded by message size of 2048",
        );
        let refused = publish_error("nats", "out.x", &too_large);
        assert!(matches!(refused, SinkError::Rejected(_)), "{refused:?}");
        assert!(refused.to_string().contains("limit of 1024"), "{refused}");
        let bad = async_nats::PublishError::new(PublishErrorKind::InvalidSubject);
        assert!(matches!(
            publish_error("nats", "a b", &bad),
            SinkError::Rejected(_)
        ));
        let gone = async_nats::PublishError::new(PublishErrorKind::Send);
        assert!(matches!(
            publish_error("nats", "out.x", &gone),
            SinkError::Unavailable(_)
        ));
    }
}
