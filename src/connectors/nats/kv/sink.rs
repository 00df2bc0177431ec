//! A KV sink: each message is an entry put into the bucket under the key its subject names, or
//! a delete; confirmed by the stream's ack, as a JetStream sink's publish is.

use async_nats::HeaderMap;

use super::super::{Handles, header_name, jetstream, names};
use super::{OPERATION, REVISION, is_entry_header};
use crate::connectors::nats::config::KvSink;
use crate::contracts::{Confirmation, SinkError};
use crate::mapping::marker;
use crate::message::Message;

/// Puts `message` into the bucket under its subject (a delete for an empty payload when the
/// route says so), and waits for the stream's ack. A key the bucket cannot hold, and a stale
/// `KV-Revision` under `check_revision`, are refused: they would not pass on a retry.
pub(in crate::connectors::nats) async fn put(
    kv: &KvSink,
    handles: &Handles,
    message: &Message,
) -> Result<Confirmation, SinkError> {
    let key = &message.subject;
    if let Err((what, hint)) = names::kv_key(key) {
        return Err(SinkError::Rejected(format!(
            "no key of KV bucket `{}`: {what} ({hint})",
            kv.bucket
        )));
    }
    let mut headers = HeaderMap::new();
    for (k, v) in &message.headers {
        if !jetstream::is_publish_control(k) && !is_entry_header(k) {
            headers.append(header_name(k), v.as_str());
        }
    }
    if kv.delete_on_empty && message.payload.is_empty() {
        headers.insert(OPERATION, "DEL");
    }
    if kv.check_revision
        && let Some(revision) = marker::header(&message.headers, REVISION)
    {
        if revision.trim().parse::<u64>().is_err() {
            return Err(SinkError::Rejected(format!(
                "header {REVISION} `{revision}` is not a revision (a whole number)"
            )));
        }
        // The server refuses the put unless the key's last message is at that sequence.
        headers.insert("Nats-Expected-Last-Subject-Sequence", revision.trim());
    }
    jetstream::publish(
        &handles.jetstream,
        format!("$KV.{}.{key}", kv.bucket),
        message,
        headers,
        handles.disconnects.clone(),
    )
    .await
}
