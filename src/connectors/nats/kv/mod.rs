//! NATS KV, on ferry's JetStream code: a bucket is the stream `KV_<bucket>`, whose subjects
//! are `$KV.<bucket>.<key>`. A put is a message there; a delete is an empty message with the
//! header `KV-Operation: DEL`, a purge one with `KV-Operation: PURGE` (and `Nats-Rollup: sub`,
//! which drops the key's history). So nothing here speaks to the server itself:
//! - **Source** (`kv:` on a NATS source): the JetStream source's durable pull consumer, on the
//!   bucket's stream, filtered on `$KV.<bucket>.<subject>`, and by default delivering the last
//!   message of each key first (`last_per_subject`: the current value of every key, then each
//!   change, as a KV watcher sees them). Each message is acked once the route's sinks
//!   confirmed it, so a restart resumes after the last revision acked (at-least-once). Each is
//!   read as an entry of the bucket ([`Watch::read`]).
//! - **Sink** (`kv:` on a NATS sink): a JetStream publish to the key's subject, waiting for
//!   the stream's ack ([`sink::put`]).
//!
//! The headers a message carries are stored with the entry and read back with it: ferry's loop
//! marker among them, so a route that mirrors a bucket into MQTT and one that mirrors MQTT
//! into the bucket recognise each other's messages.

mod sink;

use async_nats::jetstream::consumer::DeliverPolicy;

use super::config::{JetStreamDeliver, JetStreamSource, KvDeliver, KvSource};
use super::jetstream::JetStreamRoute;
use crate::contracts::queue::RouteInput;
use crate::message::Message;

pub(super) use sink::put;

/// The header that says what an entry is: `PUT`, `DEL` or `PURGE`.
pub const OPERATION: &str = "KV-Operation";
/// The entry's revision: its sequence in the bucket's stream.
pub const REVISION: &str = "KV-Revision";
/// The bucket the entry is in.
pub const BUCKET: &str = "KV-Bucket";
/// Why the server itself wrote an entry (nats-server 2.11+: `MaxAge`, `Purge`, `Remove`).
const MARKER_REASON: &str = "Nats-Marker-Reason";

/// Whether `header` is one a KV source sets on each entry: about where the message was read,
/// not what it says, so a KV sink does not store it with a new entry.
fn is_entry_header(header: &str) -> bool {
    [OPERATION, REVISION, BUCKET, "Nats-Rollup", MARKER_REASON]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(header))
}

/// A route watching a bucket: what the JetStream source needs to read its stream as entries.
#[derive(Debug)]
pub(super) struct Watch {
    pub bucket: String,
    pub deliver: KvDeliver,
    /// What the bucket's subjects have before the key: `$KV.<bucket>.`.
    pub prefix: String,
}

/// The JetStream source of a route that watches `keys` of a bucket.
pub(super) fn watch(route: &str, keys: &str, kv: &KvSource, input: RouteInput) -> JetStreamRoute {
    JetStreamRoute {
        route: route.to_string(),
        subject: format!("$KV.{}.{keys}", kv.bucket),
        config: JetStreamSource {
            stream: format!("KV_{}", kv.bucket),
            consumer: kv.consumer.clone(),
            max_ack_pending: kv.max_ack_pending,
            ack_wait: kv.ack_wait,
            // Not read: the watch's own `deliver` applies (`Watch::deliver_policy`).
            deliver: JetStreamDeliver::All,
            priority_group: None,
        },
        input,
        kv: Some(Watch {
            bucket: kv.bucket.clone(),
            deliver: kv.deliver,
            prefix: format!("$KV.{}.", kv.bucket),
        }),
    }
}

impl Watch {
    /// Where a new consumer starts.
    pub fn deliver_policy(&self) -> DeliverPolicy {
        match self.deliver {
            KvDeliver::LastPerSubject => DeliverPolicy::LastPerSubject,
            KvDeliver::All => DeliverPolicy::All,
            KvDeliver::New => DeliverPolicy::New,
        }
    }

    /// A message of the bucket's stream, at stream sequence `revision`, as an entry: its
    /// subject is the key, and headers say the operation, the revision and the bucket (set
    /// here, whatever the stored message claimed). A delete or purge has an empty payload.
    pub fn read(&self, message: &mut Message, revision: u64) {
        if let Some(key) = message.subject.strip_prefix(&self.prefix) {
            message.subject = key.to_string();
        }
        let header = |name| crate::mapping::marker::header(&message.headers, name);
        // nats-server 2.11+ writes its own markers (a key's TTL ran out, a purge or removal by
        // the server) with `Nats-Marker-Reason` instead of `KV-Operation`.
        let operation = match (header(OPERATION), header(MARKER_REASON)) {
            (Some(op), _) if op.eq_ignore_ascii_case("DEL") => "DEL",
            (Some(op), _) if op.eq_ignore_ascii_case("PURGE") => "PURGE",
            (None, Some("MaxAge" | "Purge")) => "PURGE",
            (None, Some("Remove")) => "DEL",
            _ => "PUT",
        };
        message.headers.retain(|(name, _)| !is_entry_header(name));
        message.headers.extend([
            (OPERATION.to_string(), operation.to_string()),
            (REVISION.to_string(), revision.to_string()),
            (BUCKET.to_string(), self.bucket.clone()),
        ]);
    }
}

/// What to do when `bucket` is missing.
pub(super) fn missing(bucket: &str) -> String {
    format!(
        "KV bucket `{bucket}` does not exist on the server: create it (e.g. `nats kv add \
         {bucket}`)"
    )
}

/// The bucket a KV subject (`$KV.<bucket>.<key>`) is in.
pub(super) fn bucket_of(subject: &str) -> Option<&str> {
    let (bucket, _key) = subject.strip_prefix("$KV.")?.split_once('.')?;
    Some(bucket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Headers;

    fn entry(subject: &str, headers: Headers) -> Message {
        let watch = Watch {
            bucket: "state".into(),
            deliver: KvDeliver::LastPerSubject,
            prefix: "$KV.state.".into(),
        };
        let mut m = Message::new("core".into(), subject, "");
        m.headers = headers;
        watch.read(&mut m, 7);
        m
    }

    #[test]
    fn an_entry_is_named_by_its_key_and_says_what_it_is() {
        let put = entry(
            "$KV.state.devices.a.state",
            vec![("Ferry-Via".into(), "1;edge;a,b".into())],
        );
        assert_eq!(put.subject, "devices.a.state");
        assert_eq!(
            put.headers,
            [
                ("Ferry-Via", "1;edge;a,b"),
                (OPERATION, "PUT"),
                (REVISION, "7"),
                (BUCKET, "state")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let purge = entry(
            "$KV.state.k",
            vec![
                ("KV-Operation".into(), "PURGE".into()),
                ("Nats-Rollup".into(), "sub".into()),
                ("KV-Revision".into(), "2".into()),
            ],
        );
        assert_eq!(purge.subject, "k");
        assert_eq!(
            purge.headers,
            [(OPERATION, "PURGE"), (REVISION, "7"), (BUCKET, "state")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(bucket_of("$KV.state.devices.a"), Some("state"));
        assert_eq!(bucket_of("kv.state.devices.a"), None);
        let delete = entry("$KV.state.k", vec![("kv-operation".into(), "DEL".into())]);
        assert_eq!(
            crate::mapping::marker::header(&delete.headers, OPERATION),
            Some("DEL")
        );
    }

    #[test]
    fn the_servers_own_markers_are_deletes_and_purges() {
        for (reason, operation) in [("MaxAge", "PURGE"), ("Purge", "PURGE"), ("Remove", "DEL")] {
            let marker = entry(
                "$KV.state.k",
                vec![("Nats-Marker-Reason".into(), reason.into())],
            );
            assert_eq!(
                marker.headers,
                [(OPERATION, operation), (REVISION, "7"), (BUCKET, "state")]
                    .map(|(k, v)| (k.to_string(), v.to_string())),
                "{reason}"
            );
        }
    }
}
