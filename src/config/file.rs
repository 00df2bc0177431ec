//! The file's top level as `bridges.yaml` writes it. Its admin listener, loop guard,
//! connections and routes are sections of their own, read on their own; here they are only
//! described, for the schema.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::admin_listener::AdminSection;
use super::connections::ConnectionSection;
use super::model::LoopGuard;
use super::route_section::RouteSection;
use super::values::{self, Text, Whole};

/// The sections of the file read on their own.
pub const READ_ON_THEIR_OWN: &[&str] = &["Admin", "LoopGuard", "Connections", "Routes"];

/// ferry's configuration: named connections, and routes that relay messages between them.
/// Keys starting with `x-` are free for YAML anchors (`x-defaults: &defaults ...`).
#[derive(Deserialize, JsonSchema)]
#[schemars(
    rename = "ConfigFile",
    title = "ferry bridges.yaml",
    deny_unknown_fields,
    extend("patternProperties" = { "^x-": {} })
)]
#[allow(
    dead_code,
    reason = "the sections described here are read on their own"
)]
pub struct ConfigFile {
    /// On SIGTERM, how long queued messages may take to reach their sinks before ferry exits.
    #[serde(default = "default_shutdown_timeout", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub shutdown_timeout: Duration,
    /// How long `ferry run` waits for every connection to be up before it reports ready anyway
    /// (to systemd), naming the routes that are not.
    #[serde(default = "default_startup_timeout", with = "values::duration")]
    #[schemars(with = "values::Duration")]
    pub startup_timeout: Duration,
    /// Threads that run the routes and connections. One suits a small box that also runs
    /// its brokers (no hand-offs between threads: less CPU per message, lower latency); more
    /// let many busy routes, or heavy jq transforms, use more cores.
    #[serde(default = "one")]
    #[schemars(with = "Whole<1, 64>")]
    pub threads: usize,
    /// Where ferry keeps SSE cursors, MQTT session state and spools. Default: the first
    /// directory of `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else `/var/lib/ferry`.
    #[schemars(with = "Option<Text>")]
    pub state_dir: Option<PathBuf>,
    /// ferry's own HTTP listener (health, `sse_server` streams). Off unless given.
    #[schemars(with = "Option<AdminSection>")]
    admin: Option<IgnoredAny>,
    /// Keeps two-way routes from relaying the same message back and forth.
    #[schemars(with = "Option<LoopGuard>")]
    loop_guard: Option<IgnoredAny>,
    /// Named endpoints, shared by any number of routes: `plant: {mqtt: {url: ...}}`.
    #[schemars(
        with = "Connections",
        extend(
            "x-missing" = "the configuration has no `connections:`",
            "x-hint" = "name at least one MQTT or NATS endpoint under `connections:`"
        )
    )]
    connections: IgnoredAny,
    /// The routes: each reads one source, maps each message, and publishes to its sinks.
    #[schemars(
        with = "Routes",
        extend(
            "x-missing" = "the configuration has no `routes:`",
            "x-hint" = "add a list of routes, each with `name`, `from` and `to`"
        )
    )]
    routes: IgnoredAny,
}

/// Named endpoints.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "only its schema is used")]
pub struct Connections(BTreeMap<String, ConnectionSection>);

/// The routes.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "only its schema is used")]
pub struct Routes(Vec<RouteSection>);

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_startup_timeout() -> Duration {
    Duration::from_secs(30)
}

fn one() -> usize {
    1
}
