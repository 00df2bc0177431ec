//! A `nats:` connection, source and sink read from the file and checked beyond their shape:
//! the URLs' schemes, the credentials they may carry, one way to authenticate; subjects and
//! JetStream names that NATS takes.
//!
//! Credentials written in the userinfo of NATS URLs (`nats://user:password@host`,
//! `nats://TOKEN@host`) are taken out of them here: the URLs are then safe to show anywhere
//! (async-nats itself logs the server URL at debug level), and the credentials live only in
//! [`Secret`]s.

use std::time::Duration;

use super::config::{
    NatsConnection, NatsSection, NatsSink, NatsSinkKeys, NatsSource, NatsSourceKeys, PriorityGroup,
    PriorityPolicy,
};
use super::names;
use crate::config::Secret;
use crate::config::diagnostics::Report;
use crate::config::reader::{Reader, item_positions};
use crate::config::redact_url;
use crate::config::yaml::{Node, Pos};

impl Reader<'_> {
    /// The NATS connection written at `node`.
    pub fn nats_connection(&mut self, node: &Node) -> Option<NatsConnection> {
        let nats: NatsSection = self.section(node)?;
        let positions = item_positions(node.get("url"));
        let urls: Vec<_> = (nats.url.0.into_iter().enumerate())
            .map(|(i, url)| (positions.get(i).copied().unwrap_or(node.pos), url))
            .collect();
        for (pos, url) in &urls {
            let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
            if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                self.errors.report(
                    *pos,
                    format!("`{}` is not a NATS url", redact_url(url)),
                    "write e.g. `nats://server:4222`, `tls://server:4222` or `ws://server:8080`",
                );
            }
        }
        let (urls, in_url, conflicts) = split_nats_urls(urls);
        for pos in conflicts {
            self.errors.report(
                pos,
                "the NATS urls carry different credentials",
                "write them once, in `user`/`password` or `token`, and the urls without",
            );
        }
        let (mut user, mut password, mut token) = (nats.user, nats.password, nats.token);
        // Credentials written in the URL, when the fields name none (the fields win, as for
        // MQTT).
        if user.is_none() && token.is_none() {
            match in_url {
                Some(UrlCredentials::UserPassword(u, p)) => (user, password) = (Some(u), Some(p)),
                Some(UrlCredentials::Token(t)) => token = Some(t),
                None => {}
            }
        }
        let nats = NatsConnection {
            urls,
            name: nats.name,
            user,
            password,
            token,
            nkey: nats.nkey,
            creds: nats.creds,
            tls: self.tls(nats.tls, node),
            ping_interval: nats.ping_interval,
            probe: nats
                .probe
                .check(node.get("probe"), names::subject, self.errors),
        };
        if nats.tls.required && nats.urls.iter().any(|u| u.starts_with("ws://")) {
            // The client never puts TLS inside a plain WebSocket: the block would be ignored.
            self.errors.report(
                node.pos,
                "`tls` is set but a url is ws://, which never uses TLS",
                "use wss:// (or tls:// / nats:// for plain TCP)",
            );
        }
        let auths = [
            nats.user.is_some(),
            nats.token.is_some(),
            nats.nkey.is_some(),
            nats.creds.is_some(),
        ];
        if auths.iter().filter(|a| **a).count() > 1 {
            self.errors.report(
                node.pos,
                "a NATS connection takes one way to authenticate",
                "use either user/password, token, nkey, or creds",
            );
        }
        if nats.password.is_some() && nats.user.is_none() {
            self.errors
                .report(node.pos, "`password` without `user`", "add `user: ...`");
        }
        Some(nats)
    }

    /// The NATS source at `node`: a core subscription, or a JetStream consumer.
    pub fn nats_source(&mut self, keys: NatsSourceKeys, node: &Node) -> NatsSource {
        let at = |key: &str| node.get(key).map_or(node.pos, |n| n.pos);
        let rule = match keys.kv {
            Some(_) => names::kv_keys,
            None => names::subscription,
        };
        self.errors.rule(at("subject"), rule(&keys.subject));
        if let Some(js) = &keys.jetstream {
            let js_node = node.get("jetstream").unwrap_or(node);
            for (key, name) in [("stream", &js.stream), ("consumer", &js.consumer)] {
                self.jetstream_name(js_node, key, name);
            }
            if let Some(group) = &js.priority_group {
                let group_node = js_node.get("priority_group").unwrap_or(js_node);
                self.priority_group(group, group_node);
            }
            if keys.queue.is_some() {
                self.errors.report(
                    node.pos,
                    "a JetStream source takes no `queue`",
                    "instances that bind the same durable `consumer` share its messages",
                );
            }
        }
        if let Some(kv) = &keys.kv {
            let kv_node = node.get("kv").unwrap_or(node);
            let at = |key: &str| kv_node.get(key).map_or(kv_node.pos, |n| n.pos);
            self.errors.rule(at("bucket"), names::kv_bucket(&kv.bucket));
            self.jetstream_name(kv_node, "consumer", &kv.consumer);
            if keys.jetstream.is_some() {
                self.errors.report(
                    node.pos,
                    "a NATS source reads either a JetStream stream or a KV bucket",
                    "keep `jetstream` or `kv`",
                );
            }
            if keys.queue.is_some() {
                self.errors.report(
                    node.pos,
                    "a KV source takes no `queue`",
                    "instances that bind the same durable `consumer` share its entries",
                );
            }
        }
        NatsSource {
            subject: keys.subject,
            queue_group: keys.queue,
            jetstream: keys.jetstream,
            kv: keys.kv.map(Box::new),
            replies: false,
        }
    }

    /// A JetStream stream's or consumer's name at `node`'s `key`: names become subject
    /// tokens, so no dots, wildcards or spaces.
    fn jetstream_name(&mut self, node: &Node, key: &str, name: &str) {
        if name.is_empty() || name.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
            self.errors.report(
                node.get(key).map_or(node.pos, |n| n.pos),
                format!("`{name}` is not a valid JetStream {key} name"),
                "use letters, digits, `-` and `_`",
            );
        }
    }

    /// A JetStream source's `priority_group` at `node`.
    fn priority_group(&mut self, group: &PriorityGroup, node: &Node) {
        let at = |key: &str| node.get(key).map_or(node.pos, |n| n.pos);
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '=');
        if group.name.is_empty() || group.name.len() > 16 || !group.name.chars().all(valid) {
            self.errors.report(
                at("name"),
                format!("`{}` is not a valid priority group name", group.name),
                "use up to 16 letters, digits, `-`, `_`, `/` or `=`",
            );
        }
        match group.policy {
            PriorityPolicy::PinnedClient => {
                if group.min_pending.is_some() {
                    self.errors.report(
                        at("min_pending"),
                        "`min_pending` applies to the `overflow` policy only",
                        "remove it, or write `policy: overflow`",
                    );
                }
                if group.pinned_ttl < Duration::from_secs(1) {
                    self.errors.report(
                        at("pinned_ttl"),
                        "`pinned_ttl` must be at least 1s",
                        "ferry renews its pull requests three times per `pinned_ttl`",
                    );
                }
            }
            PriorityPolicy::Overflow => {
                if node.get("pinned_ttl").is_some() {
                    self.errors.report(
                        at("pinned_ttl"),
                        "`pinned_ttl` applies to the `pinned_client` policy only",
                        "remove it, or write `policy: pinned_client`",
                    );
                }
            }
        }
    }

    /// The NATS sink at `node`; its subject may use `captures`.
    pub fn nats_sink(&mut self, keys: NatsSinkKeys, node: &Node, captures: &[String]) -> NatsSink {
        let rule = match keys.kv {
            Some(_) => names::kv_key,
            None => names::subject,
        };
        if let Some(kv) = &keys.kv {
            let kv_node = node.get("kv").unwrap_or(node);
            let bucket = kv_node.get("bucket").map_or(kv_node.pos, |n| n.pos);
            self.errors.rule(bucket, names::kv_bucket(&kv.bucket));
            if keys.jetstream {
                self.errors.report(
                    node.get("jetstream").map_or(node.pos, |n| n.pos),
                    "a KV sink always waits for the bucket's ack: `jetstream` says nothing more",
                    "remove `jetstream`",
                );
            }
        }
        NatsSink {
            subject: self.target(node, "subject", keys.subject, rule, captures),
            jetstream: keys.jetstream,
            kv: keys.kv.map(Box::new),
        }
    }
}

/// Credentials found in the userinfo of a NATS URL.
#[derive(PartialEq)]
pub enum UrlCredentials {
    UserPassword(String, Secret),
    /// A user alone is a token, as the nats tools read it.
    Token(Secret),
}

/// The URLs without their userinfo, the credentials they carried, and where a URL carries
/// credentials other than an earlier one's (one connection authenticates one way).
pub fn split_nats_urls(
    urls: Vec<(Pos, String)>,
) -> (Vec<String>, Option<UrlCredentials>, Vec<Pos>) {
    let mut found: Option<UrlCredentials> = None;
    let mut conflicts = Vec::new();
    let mut bare = Vec::with_capacity(urls.len());
    for (pos, url) in urls {
        let Some((scheme, rest)) = url.split_once("://") else {
            bare.push(url);
            continue;
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let Some(at) = rest[..end].rfind('@') else {
            bare.push(url);
            continue;
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let these = match rest[..at].split_once(':') {
            Some((user, password)) => {
                UrlCredentials::UserPassword(decode(user), Secret::new(decode(password)))
            }
            None => UrlCredentials::Token(Secret::new(decode(&rest[..at]))),
        };
        match &found {
            Some(other) if *other != these => conflicts.push(pos),
            _ => found = Some(these),
        }
        bare.push(format!("{scheme}://{}", &rest[at + 1..]));
    }
    (bare, found, conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(url: &str) -> Vec<(Pos, String)> {
        vec![(Pos { line: 1, col: 1 }, url.to_string())]
    }

    #[test]
    fn takes_user_password_or_token_out_of_the_url() {
        let (urls, found, conflicts) = split_nats_urls(at("nats://fe%40rry:p%3Aw@h:4222"));
        assert_eq!(urls, ["nats://h:4222"]);
        assert!(conflicts.is_empty());
        match found {
            Some(UrlCredentials::UserPassword(user, password)) => {
                assert_eq!((user.as_str(), password.expose()), ("fe@rry", "p:w"));
            }
            _ => panic!("user and password expected"),
        }
        let (urls, found, _) = split_nats_urls(at("tls://T0ken@h"));
        assert_eq!(urls, ["tls://h"]);
        assert!(matches!(found, Some(UrlCredentials::Token(t)) if t.expose() == "T0ken"));
        let (urls, found, _) = split_nats_urls(at("nats://h:4222"));
        assert_eq!(urls, ["nats://h:4222"]);
        assert!(found.is_none());
    }

    /// The configuration of one JetStream route whose consumer has `group`, or its errors.
    fn with_priority_group(group: &str, ack_wait: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "connections:\n  core: {{ nats: {{ url: nats://n }} }}\nroutes:\n  - name: r\n    \
             from:\n      connection: core\n      subject: orders.>\n      jetstream:\n        \
             stream: ORDERS\n        consumer: ferry\n        ack_wait: {ack_wait}\n        \
             priority_group: {group}\n    to: {{ connection: core, subject: out }}\n"
        );
        let lookup = crate::config::Lookup {
            var: &|_| None,
            file: &|_| Err(std::io::Error::other("none")),
        };
        crate::config::parse(&text, "b.yaml", &lookup).map_err(|e| e.to_string())
    }

    #[test]
    fn a_priority_group_is_read_with_its_defaults() {
        let config = with_priority_group("{ name: orders, policy: pinned_client }", "30s")
            .unwrap_or_else(|e| panic!("{e}"));
        let crate::config::SourceSpec::Nats(source) = &config.routes[0].from.spec else {
            panic!("not a NATS source")
        };
        let group = source.jetstream.as_ref().unwrap().priority_group.as_ref();
        assert_eq!(
            group,
            Some(&PriorityGroup {
                name: "orders".into(),
                policy: PriorityPolicy::PinnedClient,
                pinned_ttl: std::time::Duration::from_secs(120),
                min_pending: None,
            })
        );
        with_priority_group("{ name: o, policy: overflow, min_pending: 500 }", "30s")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_priority_group_is_refused_where_it_cannot_work() {
        let cases = [
            (
                "{ name: a.b, policy: pinned_client }",
                "30s",
                "b.yaml:12:33: error: `a.b` is not a valid priority group name",
            ),
            (
                "{ name: orders-and-more-orders, policy: overflow }",
                "30s",
                "not a valid priority group name",
            ),
            (
                "{ name: o, policy: pinned_client, pinned_ttl: 500ms }",
                "30s",
                "b.yaml:12:71: error: `pinned_ttl` must be at least 1s",
            ),
            (
                "{ name: o, policy: pinned_client, min_pending: 5 }",
                "5s",
                "`min_pending` applies to the `overflow` policy only",
            ),
            (
                "{ name: o, policy: overflow, pinned_ttl: 10s }",
                "5s",
                "`pinned_ttl` applies to the `pinned_client` policy only",
            ),
            (
                "{ name: o, policy: pinned }",
                "5s",
                "`pinned` is not a valid priority `policy`",
            ),
        ];
        for (group, ack_wait, error) in cases {
            let errors = with_priority_group(group, ack_wait).unwrap_err();
            assert!(errors.contains(error), "{group}: {error:?} not in {errors}");
        }
    }

    /// The errors of a configuration with `route` (YAML lines at a route's indentation).
    fn errors_of(route: &str) -> String {
        let text = format!(
            "connections:\n  core: {{ nats: {{ url: nats://n }} }}\nroutes:\n  - name: r\n{route}"
        );
        let lookup = crate::config::Lookup {
            var: &|_| None,
            file: &|_| Err(std::io::Error::other("none")),
        };
        crate::config::parse(&text, "b.yaml", &lookup)
            .map_or_else(|e| e.to_string(), |_| String::new())
    }

    #[test]
    fn kv_sources_and_sinks_are_checked_beyond_their_shape() {
        let good = "    from: { connection: core, subject: \"devices.*.state\", kv: { bucket: \
                    state, consumer: ferry } }\n    to: { connection: core, kv: { bucket: b2, \
                    delete_on_empty: true } }\n";
        assert_eq!(errors_of(good), "");
        let cases = [
            (
                "    from: { connection: core, subject: \"a.b@c\", kv: { bucket: s, consumer: c } }\n    to: { connection: core, subject: x }\n",
                "b.yaml:5:40: error: `a.b@c` is not a KV key pattern",
            ),
            (
                "    from: { connection: core, subject: x, kv: { bucket: s.t, consumer: c } }\n    to: { connection: core, subject: x }\n",
                "`s.t` is not a valid KV bucket name",
            ),
            (
                "    from: { connection: core, subject: x, queue: q, kv: { bucket: s, consumer: c } }\n    to: { connection: core, subject: x }\n",
                "a KV source takes no `queue`",
            ),
            (
                "    from: { connection: core, subject: x, jetstream: { stream: S, consumer: c }, kv: { bucket: s, consumer: c } }\n    to: { connection: core, subject: x }\n",
                "reads either a JetStream stream or a KV bucket",
            ),
            (
                "    from: { connection: core, subject: x }\n    to: { connection: core, subject: \"a:b\", kv: { bucket: s } }\n",
                "`a:b` is not a KV key",
            ),
            (
                "    from: { connection: core, subject: x }\n    to: { connection: core, subject: y, jetstream: true, kv: { bucket: s } }\n",
                "a KV sink always waits for the bucket's ack",
            ),
            (
                "    from: { connection: core, subject: x, kv: { bucket: s, consumer: c, deliver: last } }\n    to: { connection: core, subject: y }\n",
                "`last` is not a valid KV `deliver` policy",
            ),
        ];
        for (route, error) in cases {
            let errors = errors_of(route);
            assert!(errors.contains(error), "{error:?} not in {errors}");
        }
    }

    proptest! {
        /// Any text as the userinfo (URL text is the user's, and may be any Unicode): no
        /// panic, and the URL kept never holds it.
        #[test]
        fn the_kept_url_never_holds_the_credentials(
            user in "[^@/?#:]{1,20}",
            password in "[^@/?#]{0,20}",
            host in "[a-z][a-z0-9.]{0,20}",
        ) {
            let secret = format!("{user}:{password}X");
            let (urls, found, _) = split_nats_urls(at(&format!("nats://{secret}@{host}:4222")));
            prop_assert_eq!(&urls[0], &format!("nats://{host}:4222"));
            prop_assert!(found.is_some());
            let _ = split_nats_urls(at(&format!("{user}://{password}@")));
        }
    }
}
