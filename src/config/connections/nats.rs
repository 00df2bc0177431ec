//! A NATS connection's checks: its URLs' schemes, the credentials they may carry, and one
//! way to authenticate.

use super::{Reader, item_positions};
use crate::config::diagnostics::Report;
use crate::config::model::NatsConnection;
use crate::config::redact::redact_url;
use crate::config::url_credentials::{self, UrlCredentials};
use crate::config::yaml::Node;
use crate::connectors::nats::config::NatsSection;

impl Reader<'_> {
    pub fn nats(&mut self, node: &Node) -> Option<NatsConnection> {
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
            probe: nats.probe.check(
                node.get("probe"),
                crate::connectors::nats::names::subject,
                self.errors,
            ),
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
}
