//! A `migratorydata:` connection, source and sink read from the file and checked beyond their
//! shape: the servers' URLs, the polling bounds, and subjects MigratoryData takes.

use super::config::{
    MigratoryDataConnection, MigratoryDataSection, MigratoryDataSink, MigratoryDataSinkKeys,
    MigratoryDataSource, MigratoryDataSourceKeys,
};
use super::protocol::subject;
use crate::config::diagnostics::Report;
use crate::config::reader::{Reader, item_positions};
use crate::config::redact_url;
use crate::config::yaml::{Node, Pos, Value};

impl Reader<'_> {
    /// The MigratoryData connection written at `node`.
    pub fn migratorydata_connection(&mut self, node: &Node) -> Option<MigratoryDataConnection> {
        let md: MigratoryDataSection = self.section(node)?;
        let servers_node = node.get("servers");
        if let Some(Node {
            value: Value::Seq(items),
            pos,
        }) = servers_node
            && items.is_empty()
        {
            self.errors.report(
                *pos,
                "`servers` is empty",
                "list at least one, e.g. `servers: [http://md1:8800]`",
            );
        }
        let positions = item_positions(servers_node);
        let servers = md
            .servers
            .0
            .iter()
            .enumerate()
            .filter_map(|(i, text)| {
                let pos = positions.get(i).copied().unwrap_or_default();
                self.migratorydata_server(text, pos)
            })
            .collect();
        let tls = self.tls(md.tls, node);
        if md.poll_interval.is_zero() {
            self.errors.report(
                node.pos,
                "`poll_interval` cannot be 0",
                "write e.g. `250ms` or `1s`",
            );
        }
        if md.max_response_size < 1024 {
            self.errors.report(
                node.pos,
                "`max_response_size` must be at least 1KiB",
                "a consume answer carries up to 1000 messages: write e.g. `16MiB`",
            );
        }
        Some(MigratoryDataConnection {
            servers,
            token: md.token,
            tls,
            timeout: md.timeout,
            poll_interval: md.poll_interval,
            max_response_size: usize::try_from(md.max_response_size).unwrap_or(usize::MAX),
        })
    }

    /// One of a MigratoryData connection's `servers`: an http:// or https:// base URL, without
    /// a query (the token goes in `token:`, where it is kept secret).
    fn migratorydata_server(&mut self, text: &str, pos: Pos) -> Option<String> {
        match url::Url::parse(text) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.has_host()
                    && u.query().is_none()
                    && u.username().is_empty()
                    && u.password().is_none() =>
            {
                Some(u.to_string())
            }
            _ => {
                self.errors.report(
                    pos,
                    format!(
                        "`{}` is not an http:// or https:// server URL",
                        // Without its query, which may hold the token.
                        redact_url(text.split(['?', '#']).next().unwrap_or_default())
                    ),
                    "write e.g. `http://md1.example.com:8800`, without credentials or a query (the token goes in `token:`)",
                );
                None
            }
        }
    }

    /// The MigratoryData source at `node`: a subject, polled.
    pub fn migratorydata_source(
        &mut self,
        keys: MigratoryDataSourceKeys,
        node: &Node,
    ) -> MigratoryDataSource {
        let at = node.get("subject").map_or(node.pos, |n| n.pos);
        self.errors.rule(at, subject(&keys.subject));
        MigratoryDataSource {
            subject: keys.subject,
            history: keys.history,
        }
    }

    /// The MigratoryData sink at `node`; its subject may use `captures`.
    pub fn migratorydata_sink(
        &mut self,
        keys: MigratoryDataSinkKeys,
        node: &Node,
        captures: &[String],
    ) -> MigratoryDataSink {
        MigratoryDataSink {
            subject: self.target(node, "subject", keys.subject, subject, captures),
            retained: keys.retained,
            qos: keys.qos,
        }
    }
}
