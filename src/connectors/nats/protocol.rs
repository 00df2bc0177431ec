//! NATS as ferry describes it: both ends of a route, subjects with `*` and `>`, headers that
//! carry ferry's loop marker; at-least-once through JetStream only (a consumer to read, the
//! stream's ack to publish), since core NATS never redelivers.

use super::config::{KvDeliver, PriorityGroup, PriorityPolicy};
use super::names;
use crate::config::{ConnectionKind, Protocol, SinkSpec, SourceSpec, Tls};
use crate::connectors::protocol::{
    Credentials, Descriptor, Directions, HeaderRule, Keeps, Limit, NameRule, Surroundings,
    Wildcards,
};

pub struct Nats;

impl Descriptor for Nats {
    fn protocol(&self) -> Protocol {
        Protocol::Nats
    }

    fn directions(&self) -> Directions {
        Directions {
            source: true,
            sink: true,
        }
    }

    fn with_article(&self) -> Option<&'static str> {
        Some("a NATS")
    }

    fn name_rule(&self) -> Option<NameRule> {
        Some(names::subject)
    }

    fn header_rule(&self) -> Option<HeaderRule> {
        Some(names::header)
    }

    fn wildcards(&self) -> Option<Wildcards> {
        Some(Wildcards {
            separator: '.',
            one_level: "*",
            rest: ">",
            rest_at_least: 1,
            hides_dollar_names: false,
        })
    }

    /// Every URL's server: the URLs of one cluster fail over to each other, so a connection
    /// sharing any of them reaches the same cluster.
    fn servers(&self, connection: &ConnectionKind) -> Vec<(String, u16)> {
        match connection {
            ConnectionKind::Nats(n) => n.urls.iter().filter_map(|u| server(u)).collect(),
            _ => Vec::new(),
        }
    }

    fn carries_marker(&self, connection: &ConnectionKind) -> bool {
        matches!(connection, ConnectionKind::Nats(_))
    }

    fn source_names(&self, source: &SourceSpec) -> Vec<String> {
        match source {
            SourceSpec::Nats(s) => vec![s.subject.clone()],
            _ => Vec::new(),
        }
    }

    fn source_delivery(
        &self,
        from: &str,
        source: &SourceSpec,
        _connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        let SourceSpec::Nats(source) = source else {
            return None;
        };
        if let Some(kv) = &source.kv {
            return Some(Keeps::AtLeastOnce(format!(
                "source: KV bucket `{}` (keys `{}`) through durable consumer `{}`, from {}; each entry acknowledged after every sink confirmed, so a restart resumes after the last revision acknowledged; unacknowledged entries come back after {}",
                kv.bucket,
                source.subject,
                kv.consumer,
                match kv.deliver {
                    KvDeliver::LastPerSubject => "the current value of each key, then every change",
                    KvDeliver::All => "every revision the bucket holds, then every change",
                    KvDeliver::New => "the changes made after it was created",
                },
                humantime::format_duration(kv.ack_wait),
            )));
        }
        Some(match &source.jetstream {
            None => Keeps::AtMostOnce(Limit::new(
                format!(
                    "core NATS subscription `{}` on `{from}` has no redelivery",
                    source.subject
                ),
                "read through a JetStream consumer: `jetstream: { stream: NAME, consumer: NAME }` on the source",
            )),
            Some(js) => Keeps::AtLeastOnce(format!(
                "source: JetStream consumer `{}` on stream `{}`, acknowledged after every sink confirmed; unacknowledged messages come back after {}{}",
                js.consumer,
                js.stream,
                humantime::format_duration(js.ack_wait),
                match &js.priority_group {
                    Some(PriorityGroup {
                        name,
                        policy: PriorityPolicy::PinnedClient,
                        pinned_ttl,
                        ..
                    }) => format!(
                        "; priority group `{name}` pins one instance at a time: a standby takes over once it disconnects, or {} after it stops pulling",
                        humantime::format_duration(*pinned_ttl)
                    ),
                    Some(_) | None => String::new(),
                }
            )),
        })
    }

    fn sink_delivery(
        &self,
        role: &str,
        to: &str,
        sink: &SinkSpec,
        _connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        let SinkSpec::Nats(nats) = sink else {
            return None;
        };
        if let Some(kv) = &nats.kv {
            return Some(Keeps::AtLeastOnce(format!(
                "{role}: KV bucket `{}` via `{to}`, the subject as the key, confirmed by the stream's ack; Nats-Msg-Id lets the stream drop a re-send{}{}",
                kv.bucket,
                if kv.delete_on_empty {
                    "; an empty payload deletes the key"
                } else {
                    ""
                },
                if kv.check_revision {
                    "; a message with a KV-Revision header is put only if the key is still at that revision, or dead-lettered"
                } else {
                    ""
                },
            )));
        }
        Some(Keeps::AtLeastOnce(if nats.jetstream {
            format!(
                "{role}: JetStream via `{to}`, confirmed by the stream's ack; Nats-Msg-Id lets the stream drop a re-send"
            )
        } else {
            format!(
                "{role}: core NATS via `{to}`, confirmed once the server has it (flush); subscribers not connected at that moment miss it"
            )
        }))
    }

    fn tls<'a>(&self, connection: &'a ConnectionKind) -> Option<&'a Tls> {
        match connection {
            ConnectionKind::Nats(n) => Some(&n.tls),
            _ => None,
        }
    }

    /// A `tls:` block makes every URL TLS, `nats://` ones too.
    fn credentials<'a>(&self, connection: &'a ConnectionKind) -> Option<Credentials<'a>> {
        let ConnectionKind::Nats(n) = connection else {
            return None;
        };
        if n.tls.required {
            return None;
        }
        let what = match (&n.password, &n.token) {
            (Some(_), _) => "a password",
            (None, Some(_)) => "a token",
            (None, None) => return None,
        };
        Some(Credentials {
            what,
            urls: n.urls.iter().map(String::as_str).collect(),
        })
    }

    fn explain_connection(&self, connection: &ConnectionKind, _around: &Surroundings) -> String {
        let ConnectionKind::Nats(n) = connection else {
            return String::new();
        };
        // The urls hold no credentials: they were moved out when the config was read.
        format!(
            "NATS at {}{}",
            n.urls.join(", "),
            if n.tls.required {
                " (TLS required)"
            } else {
                ""
            }
        )
    }

    fn explain_source(&self, connection: &str, source: &SourceSpec) -> String {
        let SourceSpec::Nats(s) = source else {
            return String::new();
        };
        format!(
            "nats {connection} [{}]{}",
            s.subject,
            match (&s.queue_group, &s.jetstream, &s.kv) {
                (_, _, Some(kv)) =>
                    format!(" kv {}/{} ({})", kv.bucket, kv.consumer, kv.deliver.name()),
                (_, Some(js), None) => format!(
                    " jetstream {}/{}{}",
                    js.stream,
                    js.consumer,
                    js.priority_group
                        .as_ref()
                        .map_or(String::new(), |g| format!(
                            " priority group {} ({}{})",
                            g.name,
                            g.policy.name(),
                            g.min_pending
                                .map_or(String::new(), |n| format!(", min_pending {n}"))
                        ))
                ),
                (Some(q), None, None) => format!(" queue {q}"),
                (None, None, None) => String::new(),
            }
        )
    }

    fn explain_sink(&self, connection: &str, target: &str, sink: &SinkSpec) -> String {
        let SinkSpec::Nats(n) = sink else {
            return String::new();
        };
        if let Some(kv) = &n.kv {
            return format!("nats {connection} kv {} key {target}", kv.bucket);
        }
        format!(
            "nats {connection} subject {target}{}",
            if n.jetstream { " (jetstream)" } else { "" }
        )
    }
}

/// The (host, port) of a NATS URL, with the scheme's default port.
fn server(url: &str) -> Option<(String, u16)> {
    let parsed = url::Url::parse(url).ok()?;
    let default = match parsed.scheme() {
        "ws" => 80,
        "wss" => 443,
        _ => 4222,
    };
    Some((
        parsed.host_str()?.to_string(),
        parsed.port().unwrap_or(default),
    ))
}
