//! Binding a route to its durable pull consumer: use the one that exists when it can serve the
//! route (and say what differs when it cannot), create it from the route's settings otherwise.

use std::time::Duration;

use async_nats::jetstream::consumer::{
    AckPolicy, Consumer, DeliverPolicy, FromConsumer, PriorityPolicy, pull,
};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, consumer};

use super::JetStreamRoute;
use crate::config::{self, JetStreamDeliver};
use crate::connectors::nats::config::{PriorityGroup, PriorityPolicy as Policy};

/// The window when neither the consumer nor the route set a positive `max_ack_pending`.
const DEFAULT_WINDOW: usize = 1000;

/// The consumer ferry creates when the route's is absent.
fn consumer_config(route: &str, subject: &str, wanted: &config::JetStreamSource) -> pull::Config {
    pull::Config {
        durable_name: Some(wanted.consumer.clone()),
        description: Some(format!("ferry route {route}")),
        filter_subject: subject.to_string(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: wanted.ack_wait,
        max_ack_pending: wanted.max_ack_pending,
        deliver_policy: match wanted.deliver {
            JetStreamDeliver::All => DeliverPolicy::All,
            JetStreamDeliver::New => DeliverPolicy::New,
        },
        priority_policy: policy_of(wanted.priority_group.as_ref()),
        priority_groups: wanted
            .priority_group
            .iter()
            .map(|g| g.name.clone())
            .collect(),
        priority_timeout: match &wanted.priority_group {
            Some(g) if g.policy == Policy::PinnedClient => g.pinned_ttl,
            _ => Duration::ZERO,
        },
        ..Default::default()
    }
}

/// The server's priority policy for a route's `priority_group`.
fn policy_of(group: Option<&PriorityGroup>) -> PriorityPolicy {
    match group.map(|g| g.policy) {
        None => PriorityPolicy::None,
        Some(Policy::PinnedClient) => PriorityPolicy::PinnedClient,
        Some(Policy::Overflow) => PriorityPolicy::Overflow,
    }
}

/// A priority policy as the server and the route write it.
fn policy_name(policy: &PriorityPolicy) -> &'static str {
    match policy {
        PriorityPolicy::None => "none",
        PriorityPolicy::PinnedClient => "pinned_client",
        PriorityPolicy::Overflow => "overflow",
    }
}

/// How long a pinned consumer keeps the pin of an instance that stopped pulling, when it
/// leaves it to the server.
const SERVER_PINNED_TTL: Duration = Duration::from_secs(120);

/// Whether an existing consumer can serve a route.
#[derive(Debug, PartialEq)]
enum Fit {
    /// It can. Each note names a setting where the consumer differs from the route's config
    /// and the consumer's own applies.
    Usable(Vec<String>),
    /// It cannot: what differs, and what would fix it.
    Refused(String),
}

/// Checks an existing consumer against the route that wants to read through it: `subject` is
/// the consumer's filter the route needs, `prefix` the part of it the route's `subject` key
/// does not write (`$KV.<bucket>.` for a KV source, else nothing).
fn fit(
    existing: &consumer::Config,
    subject: &str,
    prefix: &str,
    wanted: &config::JetStreamSource,
) -> Fit {
    let mut differs = Vec::new();
    if let Some(deliver_subject) = &existing.deliver_subject {
        differs.push(format!(
            "it is a push consumer (it delivers to `{deliver_subject}`); ferry reads through a \
             pull consumer"
        ));
    }
    if existing.ack_policy != AckPolicy::Explicit {
        let policy = match existing.ack_policy {
            AckPolicy::None => "none",
            AckPolicy::All => "all",
            AckPolicy::Explicit => "explicit",
        };
        differs.push(format!(
            "its ack policy is `{policy}`; ferry acks each message once its sinks have it \
             (ack policy explicit)"
        ));
    }
    if existing.filter_subject != subject {
        let filter = if existing.filter_subject.is_empty() {
            "it has no filter subject (or several)".to_string()
        } else {
            format!("it filters `{}`", existing.filter_subject)
        };
        differs.push(format!("{filter}, the route reads `{subject}`"));
    }
    let group = wanted.priority_group.as_ref();
    let groups_fit = match group {
        None => existing.priority_groups.is_empty(),
        Some(g) => existing.priority_groups.contains(&g.name),
    };
    if existing.priority_policy != policy_of(group) || !groups_fit {
        let theirs = match existing.priority_groups.as_slice() {
            [] => "it has no priority group".to_string(),
            names => format!(
                "its priority groups are `{}` with policy `{}`",
                names.join("`, `"),
                policy_name(&existing.priority_policy)
            ),
        };
        let ours = match group {
            None => "the route names none".to_string(),
            Some(g) => format!(
                "the route's is `{}` with policy `{}`",
                g.name,
                g.policy.name()
            ),
        };
        differs.push(format!("{theirs}, {ours}"));
    }
    if !differs.is_empty() {
        return Fit::Refused(format!(
            "JetStream consumer `{consumer}` on stream `{stream}` cannot serve this route: {}. \
             Delete it (`nats consumer rm {stream} {consumer}`) and ferry creates it as the \
             route says, or name another `consumer:`{}",
            differs.join("; "),
            match existing.filter_subject.strip_prefix(prefix) {
                Some(filter) if !filter.is_empty() && existing.filter_subject != subject => {
                    format!(", or set the route's `subject: {filter}`")
                }
                _ => String::new(),
            },
            consumer = wanted.consumer,
            stream = wanted.stream,
        ));
    }
    let mut notes = Vec::new();
    if existing.ack_wait != wanted.ack_wait {
        notes.push(format!(
            "ack_wait {:?} (the route says {:?})",
            existing.ack_wait, wanted.ack_wait
        ));
    }
    if existing.max_ack_pending != wanted.max_ack_pending {
        notes.push(format!(
            "max_ack_pending {} (the route says {})",
            existing.max_ack_pending, wanted.max_ack_pending
        ));
    }
    if let Some(g) = group.filter(|g| g.policy == Policy::PinnedClient) {
        let theirs = pinned_ttl(existing);
        if theirs != g.pinned_ttl {
            notes.push(format!(
                "pinned_ttl {theirs:?} (the route says {:?})",
                g.pinned_ttl
            ));
        }
    }
    Fit::Usable(notes)
}

/// How long the server keeps a consumer's pin on an instance that stopped pulling.
fn pinned_ttl(consumer: &consumer::Config) -> Duration {
    match consumer.priority_timeout {
        Duration::ZERO => SERVER_PINNED_TTL,
        ttl => ttl,
    }
}

/// The messages ferry may hold at once: the consumer's `max_ack_pending`, or the route's when
/// smaller (a consumer may allow any number, -1).
pub(super) fn window(consumer: i64, route: i64) -> usize {
    [consumer, route]
        .into_iter()
        .filter(|n| *n > 0)
        .min()
        .map_or(DEFAULT_WINDOW, |n| n as usize)
}

/// A consumer's pinned TTL, if it pins.
fn pinned_of(consumer: &consumer::Config) -> Option<Duration> {
    (consumer.priority_policy == PriorityPolicy::PinnedClient).then(|| pinned_ttl(consumer))
}

/// Why a source cannot read now. Either way ferry tries again later; the difference is what
/// the log says.
#[derive(Debug, PartialEq)]
pub(super) enum Problem {
    /// The consumer exists and does not fit the route: someone must change it (an error).
    Refused(String),
    /// The stream, JetStream or the server cannot be reached, is not there (yet), or the pull
    /// stream failed (a warning).
    Unavailable(String),
}

impl Problem {
    pub(super) fn text(&self) -> &str {
        match self {
            Problem::Refused(text) | Problem::Unavailable(text) => text,
        }
    }
}

/// A consumer ferry can read through.
pub(super) struct Bound {
    pub(super) consumer: Consumer<pull::Config>,
    pub(super) created: bool,
    /// The consumer's own `ack_wait` and window, which apply whatever the route says.
    pub(super) ack_wait: Duration,
    pub(super) window: usize,
    /// For a `pinned_client` consumer: how long the server keeps the pin of an instance that
    /// stopped pulling but is still connected.
    pub(super) pinned_ttl: Option<Duration>,
    pub(super) notes: Vec<String>,
}

pub(super) async fn bind(
    js: &jetstream::Context,
    route: &JetStreamRoute,
) -> Result<Bound, Problem> {
    let wanted = &route.config;
    let stream = js
        .get_stream_no_info(&wanted.stream)
        .await
        .map_err(|e| Problem::Refused(format!("stream `{}`: {e}", wanted.stream)))?;
    let info = match stream.consumer_info(&wanted.consumer).await {
        Ok(info) => info,
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            let mut config = consumer_config(&route.route, &route.subject, wanted);
            if let Some(kv) = &route.kv {
                config.deliver_policy = kv.deliver_policy();
            }
            let consumer = stream.create_consumer(config).await.map_err(|e| {
                Problem::Unavailable(format!(
                    "cannot create JetStream consumer `{}` on stream `{}`: {e}",
                    wanted.consumer, wanted.stream
                ))
            })?;
            let info = consumer.cached_info();
            // A server before 2.11 creates the consumer without the fields it does not know,
            // and the instances would then share it as a plain durable.
            if let Some(group) = &wanted.priority_group
                && !info.config.priority_groups.contains(&group.name)
            {
                let removed = stream.delete_consumer(&wanted.consumer).await.is_ok();
                return Err(Problem::Refused(format!(
                    "the server ignored the priority group `{}` of JetStream consumer `{}` on \
                     stream `{}`: priority groups need nats-server 2.11 or later{}",
                    group.name,
                    wanted.consumer,
                    wanted.stream,
                    if removed {
                        "; ferry removed the consumer it had just created"
                    } else {
                        ""
                    }
                )));
            }
            return Ok(Bound {
                ack_wait: info.config.ack_wait,
                window: window(info.config.max_ack_pending, wanted.max_ack_pending),
                pinned_ttl: pinned_of(&info.config),
                consumer,
                created: true,
                notes: Vec::new(),
            });
        }
        Err(e) => {
            return Err(Problem::Unavailable(match e.kind() {
                ConsumerInfoErrorKind::StreamNotFound => match &route.kv {
                    Some(kv) => super::super::kv::missing(&kv.bucket),
                    None => format!(
                        "JetStream stream `{}` does not exist on the server: create it (e.g. \
                         `nats stream add {} --subjects '{}'`)",
                        wanted.stream, wanted.stream, route.subject
                    ),
                },
                ConsumerInfoErrorKind::NoResponders => {
                    "JetStream does not answer on this connection (not enabled on the server, \
                     or not for this account)"
                        .to_string()
                }
                _ => format!(
                    "cannot look up JetStream consumer `{}` on stream `{}`: {e}",
                    wanted.consumer, wanted.stream
                ),
            }));
        }
    };
    let prefix = route.kv.as_ref().map_or("", |kv| kv.prefix.as_str());
    let notes = match fit(&info.config, &route.subject, prefix, wanted) {
        Fit::Usable(notes) => notes,
        Fit::Refused(why) => return Err(Problem::Refused(why)),
    };
    let config = pull::Config::try_from_consumer_config(info.config.clone())
        .map_err(|e| Problem::Refused(e.to_string()))?;
    Ok(Bound {
        ack_wait: info.config.ack_wait,
        window: window(info.config.max_ack_pending, wanted.max_ack_pending),
        pinned_ttl: pinned_of(&info.config),
        consumer: Consumer::new(config, info, js.clone()),
        created: false,
        notes,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::connectors::nats::jetstream) fn wanted() -> config::JetStreamSource {
        config::JetStreamSource {
            stream: "IOT".into(),
            consumer: "ferry-iot".into(),
            max_ack_pending: 1000,
            ack_wait: Duration::from_secs(30),
            deliver: JetStreamDeliver::All,
            priority_group: None,
        }
    }

    /// The consumer ferry would create, as the server describes it.
    fn created(subject: &str) -> consumer::Config {
        use async_nats::jetstream::consumer::IntoConsumerConfig;
        consumer_config("iot", subject, &wanted()).into_consumer_config()
    }

    #[test]
    fn the_consumer_ferry_creates_fits_its_route() {
        let config = created("iot.>");
        assert_eq!(config.durable_name.as_deref(), Some("ferry-iot"));
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
        assert_eq!(config.deliver_policy, DeliverPolicy::All);
        assert!(config.deliver_subject.is_none());
        assert_eq!(fit(&config, "iot.>", "", &wanted()), Fit::Usable(vec![]));
        let new = config::JetStreamSource {
            deliver: JetStreamDeliver::New,
            ..wanted()
        };
        assert_eq!(
            consumer_config("iot", "iot.>", &new).deliver_policy,
            DeliverPolicy::New
        );
    }

    #[test]
    fn another_filter_subject_is_refused_with_both_fixes() {
        let Fit::Refused(why) = fit(&created("other.>"), "iot.>", "", &wanted()) else {
            panic!("accepted a consumer with another filter");
        };
        assert!(
            why.contains("it filters `other.>`, the route reads `iot.>`"),
            "{why}"
        );
        assert!(why.contains("nats consumer rm IOT ferry-iot"), "{why}");
        assert!(why.contains("set the route's `subject: other.>`"), "{why}");
    }

    #[test]
    fn a_kv_consumer_with_another_filter_names_the_keys_to_write() {
        let Fit::Refused(why) = fit(
            &created("$KV.state.other.>"),
            "$KV.state.devices.>",
            "$KV.state.",
            &wanted(),
        ) else {
            panic!("accepted a consumer with another filter");
        };
        assert!(why.contains("set the route's `subject: other.>`"), "{why}");
    }

    #[test]
    fn a_push_consumer_or_other_ack_policy_is_refused() {
        let mut push = created("iot.>");
        push.deliver_subject = Some("deliver.here".into());
        push.ack_policy = AckPolicy::None;
        push.filter_subject = String::new();
        let Fit::Refused(why) = fit(&push, "iot.>", "", &wanted()) else {
            panic!("accepted a push consumer");
        };
        assert!(
            why.contains("push consumer (it delivers to `deliver.here`)"),
            "{why}"
        );
        assert!(why.contains("ack policy is `none`"), "{why}");
        assert!(why.contains("no filter subject"), "{why}");
        assert!(!why.contains("set the route's `subject"), "{why}");
    }

    #[test]
    fn a_priority_group_is_created_and_must_match() {
        use async_nats::jetstream::consumer::IntoConsumerConfig;
        let pinned = config::JetStreamSource {
            priority_group: Some(PriorityGroup {
                name: "orders".into(),
                policy: Policy::PinnedClient,
                pinned_ttl: Duration::from_secs(10),
                min_pending: None,
            }),
            ..wanted()
        };
        let config = consumer_config("iot", "iot.>", &pinned).into_consumer_config();
        assert_eq!(config.priority_policy, PriorityPolicy::PinnedClient);
        assert_eq!(config.priority_groups, ["orders"]);
        assert_eq!(config.priority_timeout, Duration::from_secs(10));
        assert_eq!(pinned_of(&config), Some(Duration::from_secs(10)));
        assert_eq!(fit(&config, "iot.>", "", &pinned), Fit::Usable(vec![]));

        let Fit::Refused(why) = fit(&config, "iot.>", "", &wanted()) else {
            panic!("a route without a group accepted a pinned consumer");
        };
        assert!(
            why.contains(
                "its priority groups are `orders` with policy `pinned_client`, the route names none"
            ),
            "{why}"
        );
        let Fit::Refused(why) = fit(&created("iot.>"), "iot.>", "", &pinned) else {
            panic!("a pinned route accepted a consumer without a group");
        };
        assert!(
            why.contains(
                "it has no priority group, the route's is `orders` with policy `pinned_client`"
            ),
            "{why}"
        );

        let mut server_default = config.clone();
        server_default.priority_timeout = Duration::ZERO;
        assert_eq!(
            fit(&server_default, "iot.>", "", &pinned),
            Fit::Usable(vec!["pinned_ttl 120s (the route says 10s)".into()])
        );
        assert_eq!(pinned_of(&server_default), Some(SERVER_PINNED_TTL));
        assert_eq!(pinned_of(&created("iot.>")), None);
    }

    #[test]
    fn other_limits_are_used_as_the_consumer_has_them_and_noted() {
        let mut config = created("iot.>");
        config.ack_wait = Duration::from_secs(10);
        config.max_ack_pending = 20;
        let Fit::Usable(notes) = fit(&config, "iot.>", "", &wanted()) else {
            panic!("refused a usable consumer");
        };
        assert_eq!(
            notes,
            [
                "ack_wait 10s (the route says 30s)",
                "max_ack_pending 20 (the route says 1000)"
            ]
        );
        assert_eq!(window(20, 1000), 20);
        assert_eq!(
            window(-1, 1000),
            1000,
            "an unlimited consumer: the route's bound"
        );
        assert_eq!(window(5000, 1000), 1000);
        assert_eq!(window(0, 0), DEFAULT_WINDOW);
    }
}
