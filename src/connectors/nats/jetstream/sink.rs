//! A JetStream sink: publish with a `Nats-Msg-Id` (so the stream drops a copy sent again) and
//! wait for the stream's ack; what a refusal means for the route.

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use tokio::sync::watch;

use super::super::kv;
use super::REQUEST_TIMEOUT;
use crate::contracts::{Confirmation, SinkError};
use crate::message::Message;

/// The `Nats-Msg-Id` of a message: its origin connection and the origin's id for it, so the
/// stream drops a message sent again (within its duplicate window) however it came back.
fn message_id(message: &Message) -> Option<String> {
    message
        .id
        .as_ref()
        .map(|id| format!("{}/{id}", message.origin))
}

/// Headers of the original publish that would change what this one means: its id (ferry sets
/// its own) and its expectations of the stream it went to (`Nats-Expected-Stream`, ...).
pub(in crate::connectors::nats) fn is_publish_control(header: &str) -> bool {
    const EXPECTED: &str = "nats-expected-";
    header.eq_ignore_ascii_case("nats-msg-id")
        || header
            .get(..EXPECTED.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(EXPECTED))
}

/// Publishes to JetStream (to `subject`: the message's own, or the KV subject of its key) and
/// waits for the stream's ack. `headers` are the message's own, without [`is_publish_control`]
/// ones (a KV put adds its own); `Nats-Msg-Id` is set here.
///
/// A disconnect while the ack is awaited ends the wait at once (the request went down with
/// the connection, or its answer did): the route sends the message again, and the stream
/// drops the copy if the first one was stored.
pub(in crate::connectors::nats) async fn publish(
    jetstream: &jetstream::Context,
    subject: String,
    message: &Message,
    mut headers: HeaderMap,
    mut disconnects: watch::Receiver<u64>,
) -> Result<Confirmation, SinkError> {
    if let Some(id) = message_id(message) {
        headers.insert("Nats-Msg-Id", id.as_str());
    }
    disconnects.borrow_and_update();
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT * 2;
    let lost = |subject: &str| {
        SinkError::Unavailable(format!(
            "the connection was lost before JetStream acknowledged the message to `{subject}`"
        ))
    };
    let timed_out = |subject: &str| {
        SinkError::Unavailable(format!(
            "no ack from JetStream for `{subject}` within {:?}",
            REQUEST_TIMEOUT * 2
        ))
    };
    let sent = jetstream.publish_with_headers(subject.clone(), headers, message.payload.clone());
    let ack = tokio::select! {
        sent = tokio::time::timeout_at(deadline, sent) => match sent {
            Ok(Ok(ack)) => ack,
            Ok(Err(e)) => return Err(publish_error(&subject, &e)),
            Err(_) => return Err(timed_out(&subject)),
        },
        _ = disconnects.changed() => return Err(lost(&subject)),
    };
    Ok(Confirmation::Pending(Box::pin(async move {
        tokio::select! {
            acked = tokio::time::timeout_at(deadline, ack) => match acked {
                Ok(Ok(_ack)) => Ok(()),
                Ok(Err(e)) => Err(publish_error(&subject, &e)),
                Err(_) => Err(timed_out(&subject)),
            },
            _ = disconnects.changed() => Err(lost(&subject)),
        }
    })))
}

/// Server refusals that may pass: its resources, its cluster, a full stream that discards new
/// messages.
const TRANSIENT: &[ErrorCode] = &[
    ErrorCode::STREAM_STORE_FAILED,
    ErrorCode::INSUFFICIENT_RESOURCES,
    ErrorCode::STORAGE_RESOURCES_EXCEEDED,
    ErrorCode::MEMORY_RESOURCES_EXCEEDED,
    ErrorCode::ACCOUNT_RESOURCES_EXCEEDED,
    ErrorCode::CLUSTER_NOT_AVAILABLE,
    ErrorCode::STREAM_OFFLINE,
    ErrorCode::JETSTREAM_NOT_ENABLED,
    ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT,
];

/// What a failed JetStream publish means for the route: try again later (the server, the
/// stream or the connection is not there now), or give up on the message (it is too large, or
/// the stream refuses it for what it is).
fn publish_error(subject: &str, error: &PublishError) -> SinkError {
    match error.kind() {
        PublishErrorKind::StreamNotFound => SinkError::Unavailable(match kv::bucket_of(subject) {
            Some(bucket) => kv::missing(bucket),
            None => format!(
                "no JetStream stream captures subject `{subject}` (no responders): create one, \
                 check the sink's subject, or wait for JetStream if the server is starting"
            ),
        }),
        PublishErrorKind::MaxPayloadExceeded => {
            SinkError::Rejected(format!("message to `{subject}`: {error}"))
        }
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            SinkError::Rejected(format!(
                "JetStream refused the message to `{subject}`: {error}"
            ))
        }
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => {
            SinkError::Unavailable(format!("JetStream publish to `{subject}`: {error}"))
        }
        PublishErrorKind::Other => {
            let server = std::error::Error::source(error)
                .and_then(|source| source.downcast_ref::<jetstream::Error>());
            let text = format!("JetStream refused the message to `{subject}`: {error}");
            match server {
                Some(e)
                    if e.code() < 500
                        && e.code() != 429
                        && !TRANSIENT.contains(&e.error_code()) =>
                {
                    SinkError::Rejected(text)
                }
                _ => SinkError::Unavailable(text),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_name_the_origin_and_publish_controls_are_dropped() {
        let mut message = Message::new("plant".into(), "s", "p");
        assert_eq!(message_id(&message), None);
        message.id = Some("IN:42#2".into());
        assert_eq!(message_id(&message).as_deref(), Some("plant/IN:42#2"));
        assert!(is_publish_control("Nats-Msg-Id"));
        assert!(is_publish_control("nats-expected-stream"));
        assert!(!is_publish_control("Nats-Sequence"));
        assert!(!is_publish_control("content-type"));
    }

    #[test]
    fn publish_errors_say_whether_to_retry() {
        let server = |code: usize, err_code: u64, text: &str| -> PublishError {
            let error: jetstream::Error = serde_json::from_value(serde_json::json!({
                "code": code, "err_code": err_code, "description": text
            }))
            .unwrap();
            PublishError::with_source(PublishErrorKind::Other, error)
        };
        let retry = |e: &SinkError| matches!(e, SinkError::Unavailable(_));
        let no_stream = publish_error(
            "out.x",
            &PublishError::new(PublishErrorKind::StreamNotFound),
        );
        assert!(retry(&no_stream));
        assert!(
            no_stream
                .to_string()
                .contains("no JetStream stream captures subject `out.x`")
        );
        let no_bucket = publish_error(
            "$KV.state.devices.a",
            &PublishError::new(PublishErrorKind::StreamNotFound),
        );
        assert!(retry(&no_bucket));
        assert!(
            (no_bucket.to_string()).contains("KV bucket `state` does not exist"),
            "{no_bucket}"
        );
        assert!(retry(&publish_error(
            "out.x",
            &PublishError::new(PublishErrorKind::TimedOut)
        )));
        assert!(!retry(&publish_error(
            "out.x",
            &PublishError::new(PublishErrorKind::MaxPayloadExceeded)
        )));
        let too_large = server(400, 10054, "message size exceeds maximum allowed");
        assert!(!retry(&publish_error("out.x", &too_large)));
        let full = server(503, 10077, "maximum messages exceeded");
        assert!(retry(&publish_error("out.x", &full)));
        let storage = server(500, 10047, "insufficient storage resources available");
        assert!(retry(&publish_error("out.x", &storage)));
    }
}
