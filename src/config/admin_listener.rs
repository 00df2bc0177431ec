//! The `admin:` section: ferry's own HTTP listener as the file writes it, and the [`Admin`]
//! listener it configures (whose `listen` and `allowed_hosts` depend on each other).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;

use super::decode;
use super::diagnostics::Diagnostic;
use super::interpolate::Lookup;
use super::model::{Admin, AdminTls, DEFAULT_ADMIN_PORT, Secret};
use super::values::{self, Flag, Interpolated, Text, Whole};
use super::yaml::{Node, Pos};

/// ferry's own HTTP listener.
#[derive(Deserialize, JsonSchema)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Admin")]
pub struct AdminSection {
    /// Where to listen: a port (on 127.0.0.1) or `ADDRESS:PORT`, e.g. `127.0.0.1:9090`.
    /// `admin: {}` listens on 127.0.0.1:7439.
    #[serde(default = "default_listen")]
    #[schemars(with = "Interpolated<Listen>")]
    listen: String,
    /// The bearer token `/metrics`, `/routes` and the taps ask for (`Authorization: Bearer
    /// ...`), e.g. `${file:/etc/ferry/admin-token}`. `/healthz` and `/readyz` stay open.
    #[schemars(with = "Option<Text>")]
    token: Option<Secret>,
    /// Serve `/routes/{route}/tap`, which shows every message of a route live.
    #[serde(default)]
    #[schemars(with = "Flag")]
    taps: bool,
    /// The `Host` names requests may carry (any port); `*` allows any. Default: `localhost`,
    /// `127.0.0.1` and `[::1]` on a loopback listener, any elsewhere.
    #[schemars(with = "Option<Vec<Text>>", example = ["ferry.example.com", "10.0.0.5"])]
    allowed_hosts: Option<Vec<String>>,
    /// Connections served at once; past it the one idle the longest is closed. Also held
    /// under half of the process's open-file limit.
    #[serde(default = "default_max_connections")]
    #[schemars(with = "Whole<1, 1000000>")]
    max_connections: usize,
    /// How long a client has to send a request's headers, and may stay idle between requests.
    #[serde(default = "default_header_read_timeout", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    header_read_timeout: Duration,
    /// A connection on which nothing moved either way for this long is closed.
    #[serde(default = "default_idle_timeout", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    idle_timeout: Duration,
    /// Serve HTTPS instead of plain HTTP.
    tls: Option<AdminTls>,
}

fn default_listen() -> String {
    format!("127.0.0.1:{DEFAULT_ADMIN_PORT}")
}

fn default_max_connections() -> usize {
    Admin::DEFAULT_MAX_CONNECTIONS
}

fn default_header_read_timeout() -> Duration {
    Admin::DEFAULT_HEADER_READ_TIMEOUT
}

fn default_idle_timeout() -> Duration {
    Admin::DEFAULT_IDLE_TIMEOUT
}

/// A port, or `ADDRESS:PORT`.
pub struct Listen;

impl JsonSchema for Listen {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Listen".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": 65535 },
                { "type": "string", "pattern": r"^([0-9]+|.+:[0-9]+)$" }
            ]
        })
    }
}

/// The listener the `admin:` section at `node` configures; `None` when it has an error, each
/// pushed to `errors`.
pub fn read(node: &Node, lookup: &Lookup, errors: &mut Vec<Diagnostic>) -> Option<Admin> {
    let read = decode::section::<AdminSection>(node, lookup);
    let clean = read.errors.is_empty();
    errors.extend(read.errors);
    let section = read.value?;
    let at = |key: &str| node.get(key).map_or(node.pos, |n| n.pos);
    let mut error = |pos: Pos, message: String, hint: &str| {
        errors.push(Diagnostic {
            pos,
            message,
            hint: Some(hint.into()),
        })
    };
    let text = &section.listen;
    let listen = match text.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => text.parse::<SocketAddr>(),
    };
    let Ok(listen) = listen else {
        error(
            at("listen"),
            format!("`{text}` is not an address to listen on"),
            &format!(
                "write a port (`{DEFAULT_ADMIN_PORT}`, on 127.0.0.1) or `ADDRESS:PORT`, e.g. `127.0.0.1:{DEFAULT_ADMIN_PORT}`; without `listen`, ferry listens on 127.0.0.1:{DEFAULT_ADMIN_PORT}"
            ),
        );
        return None;
    };
    let mut admin = Admin::on(listen);
    admin.token = section.token;
    admin.taps = section.taps;
    if let Some(hosts) = section.allowed_hosts {
        let positions = match node.get("allowed_hosts").map(|n| &n.value) {
            Some(super::yaml::Value::Seq(items)) => items.iter().map(|n| n.pos).collect(),
            _ => Vec::new(),
        };
        admin.allowed_hosts = allowed_hosts(hosts, &positions, &mut error).unwrap_or_default();
    }
    admin.max_connections = section.max_connections;
    admin.header_read_timeout = section.header_read_timeout;
    admin.idle_timeout = section.idle_timeout;
    for (key, value) in [
        ("header_read_timeout", admin.header_read_timeout),
        ("idle_timeout", admin.idle_timeout),
    ] {
        if value.is_zero() {
            error(
                at(key),
                format!("`{key}` cannot be 0"),
                "a connection needs some time: write e.g. `5s` or `1m`",
            );
        }
    }
    admin.tls = section.tls;
    clean.then_some(admin)
}

/// `allowed_hosts`: host names or addresses, lower case; `*` allows any (an empty list).
fn allowed_hosts(
    hosts: Vec<String>,
    positions: &[Pos],
    error: &mut impl FnMut(Pos, String, &str),
) -> Option<Vec<String>> {
    let mut allowed = Vec::new();
    for (i, host) in hosts.into_iter().enumerate() {
        let host = host.to_ascii_lowercase();
        if host == "*" {
            return Some(Vec::new());
        }
        if crate::contracts::admin_listener::host_name(&host) != Some(host.as_str()) {
            error(
                positions.get(i).copied().unwrap_or_default(),
                format!("`{host}` is not a host name"),
                "write a name or address without scheme or port, such as `ferry.example.com`, `10.0.0.5` or `[::1]`; `*` allows any",
            );
            return None;
        }
        allowed.push(host);
    }
    Some(allowed)
}
