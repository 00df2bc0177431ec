//! A `nats:` connection, source and sink read from the file and checked beyond their shape:
//! the URLs' schemes, the credentials they may carry, one way to authenticate; subjects and
//! JetStream names that NATS takes.

use super::config::{
    NatsConnection, NatsSection, NatsSink, NatsSinkKeys, NatsSource, NatsSourceKeys,
};
use super::names;
use crate::config::diagnostics::Report;
use crate::config::reader::{Reader, item_positions};
use crate::config::redact_url;
use crate::config::url_credentials::{self, UrlCredentials};
use crate::config::yaml::Node;

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
        let (urls, in_url, conflicts) = url_credentials::split_nats_urls(urls);
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
        self.errors
            .rule(at("subject"), names::subscription(&keys.subject));
        if let Some(js) = &keys.jetstream {
            let js_node = node.get("jetstream").unwrap_or(node);
            for (key, name) in [("stream", &js.stream), ("consumer", &js.consumer)] {
                // JetStream names become subject tokens: no dots, wildcards or spaces.
                if name.is_empty() || name.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
                    self.errors.report(
                        js_node.get(key).map_or(js_node.pos, |n| n.pos),
                        format!("`{name}` is not a valid JetStream {key} name"),
                        "use letters, digits, `-` and `_`",
                    );
                }
            }
            if keys.queue.is_some() {
                self.errors.report(
                    node.pos,
                    "a JetStream source takes no `queue`",
                    "instances that bind the same durable `consumer` share its messages",
                );
            }
        }
        NatsSource {
            subject: keys.subject,
            queue_group: keys.queue,
            jetstream: keys.jetstream,
        }
    }

    /// The NATS sink at `node`; its subject may use `captures`.
    pub fn nats_sink(&mut self, keys: NatsSinkKeys, node: &Node, captures: &[String]) -> NatsSink {
        NatsSink {
            subject: self.target(node, "subject", keys.subject, names::subject, captures),
            jetstream: keys.jetstream,
        }
    }
}
