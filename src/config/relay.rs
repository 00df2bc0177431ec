//! `ferry relay FROM TO`: two endpoint URLs (or `-`) to a [`Config`] of two connections, named
//! [`FROM`] and [`TO`], and one route, [`ROUTE`]. The relay runs on the same engine as
//! `ferry run`, so what is built here passes the checks bridges.yaml passes: names by the
//! protocols' rules, templates and jq programs compiled, at-least-once only where both sides
//! can keep it, no endless loop.
//!
//! The endpoint forms are listed in [`ACCEPTED_FORMS`] (also printed with every endpoint error)
//! and in docs/relay.md, "Endpoint URLs". Decisions an operator of `mosquitto_sub`/`nats sub`
//! would expect:
//! - The topic or subject is the URL's path without its leading `/`, percent-decoded; `#` is
//!   part of it (not a URL fragment), so `mqtt://host/sensors/#` subscribes `sensors/#`. `?`,
//!   `%` and spaces in a name are written `%3F`, `%25`, `%20`.
//! - Over WebSocket (`ws+mqtt://`, `wss+nats://`, or `ws://...?protocol=mqtt`) the path is the
//!   WebSocket's path, and the name comes from `?topic=` (MQTT) or `?subject=` (NATS).
//! - An empty name is every topic (`#`) or subject (`>`) as FROM, and the source's own name
//!   (`auto`) as TO. A TO name ending in `#`/`>` maps what FROM's trailing wildcard matched
//!   under its prefix (`sensors/#` → `iot.>`: `sensors/kitchen/temp` → `iot.kitchen.temp`),
//!   converted by ferry's MQTT⇄NATS codec as `auto` converts; a FROM without such a wildcard
//!   (a fixed topic, standard input, an SSE stream) puts its whole name under the prefix. This
//!   is an ordinary subject template, not a special case in the engine. `--subject` overrides
//!   all of it.
//!
//! Credentials: `user:password@` in a URL is used for that endpoint. `--user` and the password
//! (`--password-file` or `FERRY_PASSWORD`, read by main) fill in for endpoints whose URL has
//! none: a URL with a user but no password (`mqtt://ferry@host/...`) takes the password; a URL
//! without credentials takes `--user` and the password, but the password only goes there when
//! `--user` is given or neither URL names a user. So naming the user in one side's URL keeps the
//! password to that side. MQTT and NATS get user and password (NATS: a password without any user
//! is a token, as in `nats://TOKEN@host`); HTTP and SSE endpoints get HTTP Basic authentication,
//! only when there is a user. Passwords are never shown: messages show URLs with `***`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use percent_encoding::percent_decode_str;

use super::delivery;
use super::diagnostics::did_you_mean;
use super::model::*;
use crate::mapping::{jq, loops, names, template};

/// The name of the connection built from FROM, in logs and metrics.
pub const FROM: &str = "from";
/// The name of the connection built from TO.
pub const TO: &str = "to";
/// The name of the relay's one route.
pub const ROUTE: &str = "relay";

/// What `ferry relay` accepts as FROM and TO, shown after every endpoint error.
pub const ACCEPTED_FORMS: &str = "\
accepted FROM and TO:
  mqtt://[USER[:PASS]@]HOST[:PORT]/TOPIC[?KEY=VALUE&...]   MQTT, port 1883; mqtts:// over TLS, 8883
  ws+mqtt://HOST[:PORT]/PATH?topic=TOPIC                  MQTT over WebSocket, 80; wss+mqtt://, 443
  nats://[USER[:PASS]@]HOST[:PORT]/SUBJECT[?KEY=VALUE&...] NATS, port 4222; tls:// over TLS
  ws+nats://HOST[:PORT]/PATH?subject=SUBJECT              NATS over WebSocket; wss+nats://
  sse+https://HOST/PATH[?event=TYPE&...]                  read a server-sent-event stream (FROM only); sse+http://
  https://HOST/PATH                                       POST each message there (TO only); http://
  -                                                       standard input (FROM) or output (TO), JSON lines
keys: MQTT qos=0|1|2 version=5|3.1.1 client_id=ID share=GROUP (FROM) retain=true|false|source (TO)
      NATS queue=GROUP (FROM), stream=NAME&consumer=NAME[&deliver=all|new] (JetStream, FROM), jetstream=true (TO)
      ws:// and wss:// take protocol=mqtt|nats instead of the +mqtt/+nats suffix
names: `#` is part of the topic (mqtt://host/sensors/#); write `?`, `%` and spaces as %3F, %25, %20.
  Empty: every topic/subject as FROM, the source's own name as TO. A TO name ending in `#` or `>`
  takes what FROM's wildcard matched: mqtt://h/sensors/# to nats://h/iot.> relays sensors/a/b to iot.a.b";

/// What `ferry relay` was given, minus I/O (main reads --password-file and the environment).
#[derive(Clone, Default)]
pub struct RelayArgs {
    /// A URL or `-` (standard input).
    pub from: String,
    /// A URL or `-` (standard output).
    pub to: String,
    /// jq program applied to JSON payloads (`--transform`).
    pub transform: Option<String>,
    /// jq program selecting messages (`--filter`).
    pub filter: Option<String>,
    /// Template for the sink's subject, topic or URL (`--subject`); overrides TO's name.
    pub subject: Option<String>,
    /// Stop after this many messages (`--count`): the route's `stop_after`.
    pub count: Option<u64>,
    /// QoS on both MQTT sides unless a URL says `?qos=` (`--qos`).
    pub qos: Option<u8>,
    /// `--delivery at-least-once`.
    pub at_least_once: bool,
    /// Standard input/output: raw lines instead of JSON lines (`--raw`).
    pub raw: bool,
    /// Standard output JSON lines: the payload always base64 (`--base64`).
    pub base64: bool,
    /// `--user`, for endpoints whose URL names none.
    pub user: Option<String>,
    /// From `--password-file` or `FERRY_PASSWORD`; see the module doc for where it goes.
    pub password: Option<String>,
}

impl fmt::Debug for RelayArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayArgs")
            .field("from", &shown(&self.from))
            .field("to", &shown(&self.to))
            .field("transform", &self.transform)
            .field("filter", &self.filter)
            .field("subject", &self.subject)
            .field("count", &self.count)
            .field("qos", &self.qos)
            .field("at_least_once", &self.at_least_once)
            .field("raw", &self.raw)
            .field("base64", &self.base64)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A bad URL or option (exit code 2): what is wrong, what would be right and, for endpoint
/// errors, the accepted forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayError {
    /// What is wrong, naming the option or the URL (`--qos: ...`, `FROM mqtt://...: ...`).
    pub what: String,
    /// What would be right.
    pub hint: Option<String>,
    /// Whether the error is about FROM or TO, so the accepted forms are worth showing.
    pub endpoint: bool,
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        if self.endpoint {
            write!(f, "\n\n{ACCEPTED_FORMS}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RelayError {}

/// An error about an option (not an endpoint).
fn option_error(what: impl Into<String>, hint: impl Into<String>) -> RelayError {
    RelayError {
        what: what.into(),
        hint: Some(hint.into()),
        endpoint: false,
    }
}

/// Builds the one-route configuration `ferry relay` runs.
pub fn relay_config(args: &RelayArgs) -> Result<Config, RelayError> {
    if let Some(qos) = args.qos
        && qos > 2
    {
        return Err(option_error(
            format!("--qos: `{qos}` is not an MQTT QoS"),
            "write --qos 0, 1 or 2",
        ));
    }
    if args.count == Some(0) {
        return Err(option_error(
            "--count: 0 would relay nothing",
            "give a count of 1 or more, or leave --count out to relay until stopped",
        ));
    }
    if args.from == "-" && args.to == "-" {
        return Err(RelayError {
            what: "FROM and TO are both `-`".into(),
            hint: Some("one side must be a broker or a URL; `cat` copies standard input to standard output".into()),
            endpoint: true,
        });
    }
    if (args.raw || args.base64) && args.from != "-" && args.to != "-" {
        let flag = if args.raw { "--raw" } else { "--base64" };
        return Err(option_error(
            format!("{flag}: neither FROM nor TO is `-`"),
            format!(
                "{flag} says how lines of standard input/output are read or written; leave it out"
            ),
        ));
    }
    if args.raw && args.base64 {
        return Err(option_error(
            "--base64 with --raw: raw lines are the payload itself",
            "leave out one of them (--base64 writes JSON lines with base64 payloads)",
        ));
    }
    if args.base64 && args.to != "-" {
        return Err(option_error(
            "--base64: TO is not `-`",
            "--base64 is how standard output writes payloads; standard input reads either form by itself",
        ));
    }

    // Where credentials go depends on both URLs (see the module doc).
    let from_url = (args.from != "-").then(|| split(&args.from));
    let to_url = (args.to != "-").then(|| split(&args.to));
    let names_user =
        |u: &Option<Result<RawUrl, String>>| matches!(u, Some(Ok(raw)) if raw.user.is_some());
    let any_user = names_user(&from_url) || names_user(&to_url);

    let mut from = endpoint(Side::From, &args.from, from_url, args, any_user)?;
    let mut to = endpoint(Side::To, &args.to, to_url, args, any_user)?;
    // JSON lines name their subjects in the other side's syntax (see LineFormat::Json).
    let (from_protocol, to_protocol) = (from.kind.protocol(), to.kind.protocol());
    name_lines(&mut from.kind, to_protocol);
    name_lines(&mut to.kind, from_protocol);

    let source = source(&from, args)?;
    let sink = sink(&from, &to, args)?;

    let transform = jq_option("--transform", &args.transform)?;
    let filter = jq_option("--filter", &args.filter)?;

    let mut connections = BTreeMap::new();
    for (name, end) in [(FROM, from), (TO, to)] {
        connections.insert(
            name.to_string(),
            Connection {
                name: name.to_string(),
                kind: end.kind,
                reconnect: Reconnect::default(),
            },
        );
    }
    let route = Route {
        name: ROUTE.to_string(),
        from: source,
        to: vec![sink],
        transform,
        filter,
        headers: HeaderRules::default(),
        queue: Queue::default(),
        dead_letter: None,
        delivery: args.at_least_once.then_some(Delivery::AtLeastOnce),
        spool: None,
        stop_after: args.count,
        transform_budget: Default::default(),
    };
    if args.at_least_once {
        // The relay's own words first (its fixes are URL keys and options, not YAML) ...
        at_least_once(&route, args)?;
        // ... and whatever else the engine would refuse, in its words.
        if let Some(limit) = delivery::guarantee(&route, &connections).limits.first() {
            return Err(option_error(
                format!("--delivery at-least-once: {}", limit.what),
                limit.fix.clone(),
            ));
        }
    }
    let config = Config {
        connections,
        routes: vec![route],
        shutdown_timeout: Duration::from_secs(10),
        startup_timeout: Duration::from_secs(30),
        threads: 1,
        loop_guard: LoopGuard::default(),
        state_dir: None,
        admin: None,
    };
    refuse_endless_loop(&config)?;
    Ok(config)
}

/// FROM or TO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    From,
    To,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::From => "FROM",
            Side::To => "TO",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Side::From => "from",
            Side::To => "to",
        }
    }
}

/// A URL cut into the parts the relay reads, before any protocol is decided. Cut by hand
/// rather than by `url::Url`, because `#` belongs to the topic, not to a fragment.
#[derive(Debug)]
struct RawUrl {
    scheme: String,
    /// `host[:port]`, without credentials.
    host_port: String,
    host: String,
    port: Option<u16>,
    /// Percent-decoded.
    user: Option<String>,
    /// Percent-decoded.
    password: Option<String>,
    /// The path after the authority, raw (still percent-encoded), with its leading `/`.
    path: String,
    /// The query as written (without `?`), for URLs that keep it (HTTP, SSE).
    query: String,
    /// The query, percent-decoded (`+` stays `+`: it is an MQTT wildcard, not a space).
    pairs: Vec<(String, String)>,
}

/// A URL as it may be shown: credentials replaced by `***` (a password, a user alone, which on
/// NATS is a token, and secret-looking query values), even when the URL does not parse.
fn shown(text: &str) -> String {
    if !text.contains("://") {
        // Not a URL at all; still hide anything that looks like credentials.
        return match text.rfind('@') {
            Some(at) => format!("***{}", &text[at..]),
            None => text.to_string(),
        };
    }
    super::redact_url(text)
}

fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "a percent-escape does not decode to UTF-8 text".to_string())
}

/// Cuts `text` into its parts; the error says what is wrong (without the password).
fn split(text: &str) -> Result<RawUrl, String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err("not a URL (no `://`), and not `-`".into());
    };
    let scheme = scheme.to_ascii_lowercase();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, query),
        None => (rest, ""),
    };
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    // url::Url checks the host and port; a scheme without defaults keeps every port explicit.
    let parsed = url::Url::parse(&format!("ferry://{host_port}/")).map_err(|e| match e {
        url::ParseError::InvalidPort => "the port is not a number from 1 to 65535".to_string(),
        url::ParseError::EmptyHost => "the URL has no host".to_string(),
        e => format!("the host `{host_port}` is not valid: {e}"),
    })?;
    let host = parsed.host_str().unwrap_or("").to_string();
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if parsed.port() == Some(0) {
        return Err("the port is not a number from 1 to 65535".into());
    }
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (Some(decode(user)?), Some(decode(password)?)),
            None => (Some(decode(info)?), None),
        },
    };
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        pairs.push((decode(key)?, decode(value)?));
    }
    Ok(RawUrl {
        scheme,
        host_port: host_port.to_string(),
        host,
        port: parsed.port(),
        user: user.filter(|u| !u.is_empty()),
        password,
        path: path.to_string(),
        query: query.to_string(),
        pairs,
    })
}

/// The query keys of one URL, taken one by one; what is left over is unknown.
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// The value of `key`; an error when it is given twice.
    fn one(&mut self, key: &str) -> Result<Option<String>, String> {
        let mut values = self.all(key);
        match values.len() {
            0 => Ok(None),
            1 => Ok(values.pop()),
            _ => Err(format!("`{key}` is given twice")),
        }
    }

    /// Every value of `key`, in order.
    fn all(&mut self, key: &str) -> Vec<String> {
        let (taken, rest) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|(k, _)| k == key);
        self.pairs = rest;
        taken.into_iter().map(|(_, v)| v).collect()
    }

    /// An error for the first key nobody took, with a did-you-mean among `known`.
    fn finish(self, known: &[&str]) -> Result<(), (String, String)> {
        let Some((key, _)) = self.pairs.first() else {
            return Ok(());
        };
        let hint = match did_you_mean(key, known.iter().copied()) {
            Some(close) => format!("did you mean `{close}`? keys here: {}", known.join(", ")),
            None => format!("keys here: {}", known.join(", ")),
        };
        Err((format!("unknown query key `{key}`"), hint))
    }
}

/// One side, decided: its connection and what the route reads or writes there.
struct Endpoint {
    side: Side,
    /// The URL as it may be shown.
    shown: String,
    kind: ConnectionKind,
    /// The topic or subject named in the URL (decoded); `None` when empty.
    name: Option<String>,
    /// `?qos=`.
    qos: Option<u8>,
    share: Option<String>,
    retain: Retain,
    queue: Option<String>,
    jetstream_source: Option<JetStreamSource>,
    jetstream_sink: bool,
    events: Vec<String>,
}

impl Endpoint {
    fn new(side: Side, shown: String, kind: ConnectionKind) -> Endpoint {
        Endpoint {
            side,
            shown,
            kind,
            name: None,
            qos: None,
            share: None,
            retain: Retain::Fixed(false),
            queue: None,
            jetstream_source: None,
            jetstream_sink: false,
            events: Vec::new(),
        }
    }

    /// An error about this endpoint.
    fn error(&self, what: impl fmt::Display, hint: impl Into<String>) -> RelayError {
        endpoint_error(self.side, &self.shown, what, hint)
    }

    fn protocol(&self) -> Protocol {
        self.kind.protocol()
    }
}

fn endpoint_error(
    side: Side,
    shown: &str,
    what: impl fmt::Display,
    hint: impl Into<String>,
) -> RelayError {
    RelayError {
        what: format!("{} {shown}: {what}", side.label()),
        hint: Some(hint.into()),
        endpoint: true,
    }
}

/// What each scheme speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Mqtt(MqttTransport),
    /// `tls` over TLS, `ws` over WebSocket.
    Nats {
        tls: bool,
        ws: bool,
    },
    Sse {
        tls: bool,
    },
    Http {
        tls: bool,
    },
}

const SCHEMES: &[&str] = &[
    "mqtt",
    "mqtts",
    "ws+mqtt",
    "wss+mqtt",
    "nats",
    "tls",
    "ws+nats",
    "wss+nats",
    "sse+http",
    "sse+https",
    "http",
    "https",
    "ws",
    "wss",
];

/// Standard input/output as JSON lines names subjects as `other` does.
fn name_lines(kind: &mut ConnectionKind, other: Protocol) {
    if let ConnectionKind::Stdio(StdioConnection {
        lines: LineFormat::Json { names, .. },
    }) = kind
    {
        *names = other;
    }
}

/// Decides one side from its text (`-` or a URL already cut by [`split`]).
fn endpoint(
    side: Side,
    text: &str,
    raw: Option<Result<RawUrl, String>>,
    args: &RelayArgs,
    any_user: bool,
) -> Result<Endpoint, RelayError> {
    let shown = shown(text);
    let Some(raw) = raw else {
        let lines = if args.raw {
            LineFormat::Raw
        } else {
            LineFormat::Json {
                base64: args.base64,
                // The other side's, filled in by `relay_config` once both are known.
                names: Protocol::Stdio,
            }
        };
        return Ok(Endpoint::new(
            side,
            "-".into(),
            ConnectionKind::Stdio(StdioConnection { lines }),
        ));
    };
    let mut raw = raw.map_err(|what| {
        endpoint_error(
            side,
            &shown,
            what,
            "write e.g. mqtt://localhost/sensors/#, nats://localhost:4222/iot.> or -",
        )
    })?;
    let fail = |what: String, hint: String| endpoint_error(side, &shown, what, hint);
    let mut query = Query {
        pairs: std::mem::take(&mut raw.pairs),
    };
    let scheme = match raw.scheme.as_str() {
        "mqtt" => Scheme::Mqtt(MqttTransport::Tcp),
        "mqtts" => Scheme::Mqtt(MqttTransport::Tls),
        "ws+mqtt" => Scheme::Mqtt(MqttTransport::Ws),
        "wss+mqtt" => Scheme::Mqtt(MqttTransport::Wss),
        "nats" => Scheme::Nats {
            tls: false,
            ws: false,
        },
        "tls" => Scheme::Nats {
            tls: true,
            ws: false,
        },
        "ws+nats" => Scheme::Nats {
            tls: false,
            ws: true,
        },
        "wss+nats" => Scheme::Nats {
            tls: true,
            ws: true,
        },
        "sse+http" => Scheme::Sse { tls: false },
        "sse+https" => Scheme::Sse { tls: true },
        "http" => Scheme::Http { tls: false },
        "https" => Scheme::Http { tls: true },
        "ws" | "wss" => {
            let tls = raw.scheme == "wss";
            match query
                .one("protocol")
                .map_err(|e| fail(e, "give it once".into()))?
                .as_deref()
            {
                Some("mqtt") if tls => Scheme::Mqtt(MqttTransport::Wss),
                Some("mqtt") => Scheme::Mqtt(MqttTransport::Ws),
                Some("nats") => Scheme::Nats { tls, ws: true },
                other => {
                    let what = match other {
                        Some(p) => format!("`protocol={p}` is not mqtt or nats"),
                        None => format!(
                            "a {}:// URL does not say which protocol it carries",
                            raw.scheme
                        ),
                    };
                    return Err(fail(
                        what,
                        format!(
                            "write {0}+mqtt://... or {0}+nats://..., or add ?protocol=mqtt or ?protocol=nats",
                            raw.scheme
                        ),
                    ));
                }
            }
        }
        other => {
            let hint = match did_you_mean(other, SCHEMES.iter().copied()) {
                Some(close) => format!(
                    "did you mean {close}://? the schemes: {}",
                    SCHEMES.join(", ")
                ),
                None => format!(
                    "the schemes: {}, or - for standard input/output",
                    SCHEMES.join(", ")
                ),
            };
            return Err(fail(
                format!("`{other}://` is not a scheme ferry relays"),
                hint,
            ));
        }
    };
    let mut end = match scheme {
        Scheme::Mqtt(transport) => mqtt(side, &shown, &raw, &mut query, transport, args, any_user)?,
        Scheme::Nats { tls, ws } => nats(side, &shown, &raw, &mut query, tls, ws, args, any_user)?,
        Scheme::Sse { tls } => {
            if side == Side::To {
                return Err(fail(
                    format!(
                        "{}:// is a stream ferry reads: it can only be FROM",
                        raw.scheme
                    ),
                    format!(
                        "to POST each message, write the {}:// URL itself",
                        if tls { "https" } else { "http" }
                    ),
                ));
            }
            let events = query.all("event");
            let mut end = Endpoint::new(
                side,
                shown.clone(),
                ConnectionKind::Sse(sse(&raw, tls, args, any_user)),
            );
            for e in &events {
                if let Err((what, hint)) = names::sse_event(e) {
                    return Err(end.error(format!("`event`: {what}"), hint));
                }
            }
            end.events = events;
            // Every other key belongs to the stream's own URL.
            return Ok(end);
        }
        Scheme::Http { tls } => {
            if side == Side::From {
                return Err(fail(
                    format!(
                        "an {}:// URL is where ferry POSTs: it can only be TO",
                        raw.scheme
                    ),
                    format!(
                        "to read a server-sent-event stream, write sse+{}://...",
                        if tls { "https" } else { "http" }
                    ),
                ));
            }
            let url = http_url(&raw, tls, &raw.query);
            let headers = basic_auth(&raw, args, any_user);
            return Ok(Endpoint::new(
                side,
                shown,
                ConnectionKind::Http(HttpConnection {
                    url: SecretUrl::new(url),
                    headers,
                    tls: Tls::default(),
                    timeout: Duration::from_secs(30),
                    max_concurrent: 8,
                }),
            ));
        }
    };
    end.shown = shown;
    Ok(end)
}

/// Credentials for one endpoint: (user, password), per the rule in the module doc.
fn credentials(raw: &RawUrl, args: &RelayArgs, any_user: bool) -> (Option<String>, Option<Secret>) {
    match (&raw.user, &raw.password) {
        (Some(user), Some(password)) => (Some(user.clone()), Some(Secret::new(password.clone()))),
        (Some(user), None) => (Some(user.clone()), args.password.clone().map(Secret::new)),
        (None, _) => {
            let password = (args.user.is_some() || !any_user)
                .then(|| args.password.clone().map(Secret::new))
                .flatten();
            (args.user.clone(), password)
        }
    }
}

/// The decoded name in a URL's path (without its leading `/`).
fn path_name(raw: &RawUrl) -> Result<Option<String>, String> {
    let name = decode(raw.path.strip_prefix('/').unwrap_or(&raw.path))?;
    Ok((!name.is_empty()).then_some(name))
}

/// The topic (`key` = "topic") or subject of an MQTT or NATS URL: the path, or over WebSocket
/// the `?topic=`/`?subject=` key (also accepted on the others, when the path is empty).
fn name_of(
    raw: &RawUrl,
    query: &mut Query,
    key: &str,
    ws: bool,
) -> Result<Option<String>, (String, String)> {
    let from_query = query
        .one(key)
        .map_err(|e| (e, "give it once".to_string()))?
        .filter(|n| !n.is_empty());
    if ws {
        return Ok(from_query);
    }
    let from_path = path_name(raw).map_err(|e| (e, "percent-encode as UTF-8".to_string()))?;
    match (from_path, from_query) {
        (Some(_), Some(_)) => Err((
            format!("the {key} is both in the path and in `?{key}=`"),
            format!("keep one: the path is the {key}"),
        )),
        (path, query) => Ok(path.or(query)),
    }
}

fn qos_key(query: &mut Query) -> Result<Option<u8>, (String, String)> {
    match query
        .one("qos")
        .map_err(|e| (e, "give it once".to_string()))?
    {
        None => Ok(None),
        Some(q) => match q.as_str() {
            "0" => Ok(Some(0)),
            "1" => Ok(Some(1)),
            "2" => Ok(Some(2)),
            _ => Err((
                format!("`qos={q}` is not an MQTT QoS"),
                "write qos=0, qos=1 or qos=2".into(),
            )),
        },
    }
}

fn mqtt(
    side: Side,
    shown: &str,
    raw: &RawUrl,
    query: &mut Query,
    transport: MqttTransport,
    args: &RelayArgs,
    any_user: bool,
) -> Result<Endpoint, RelayError> {
    let fail = |(what, hint): (String, String)| endpoint_error(side, shown, what, hint);
    let ws = matches!(transport, MqttTransport::Ws | MqttTransport::Wss);
    let name = name_of(raw, query, "topic", ws).map_err(fail)?;
    let qos = qos_key(query).map_err(fail)?;
    let version = match query
        .one("version")
        .map_err(|e| fail((e, "give it once".into())))?
        .as_deref()
    {
        None | Some("5" | "5.0") => MqttVersion::V5,
        Some("3.1.1" | "311" | "3" | "4") => MqttVersion::V311,
        Some(v) => {
            return Err(fail((
                format!("MQTT version `{v}` is not supported"),
                "write version=5 or version=3.1.1".into(),
            )));
        }
    };
    let client_id = query
        .one("client_id")
        .map_err(|e| fail((e, "give it once".into())))?;
    let share = query
        .one("share")
        .map_err(|e| fail((e, "give it once".into())))?;
    let retain = query
        .one("retain")
        .map_err(|e| fail((e, "give it once".into())))?;
    if ws {
        query.all("protocol");
    }
    let known: &[&str] = if ws {
        &[
            "topic",
            "qos",
            "version",
            "client_id",
            "share",
            "retain",
            "protocol",
        ]
    } else {
        &["qos", "version", "client_id", "share", "retain", "topic"]
    };
    std::mem::replace(query, Query { pairs: Vec::new() })
        .finish(known)
        .map_err(fail)?;

    if let Some(name) = &name {
        let check = match side {
            Side::From => names::mqtt_filter(name),
            Side::To => wildcard_prefix(name, '/', "#").map_or_else(
                || names::mqtt_topic(name),
                |prefix| sink_prefix_check(prefix, names::mqtt_topic, "+#", name),
            ),
        };
        check.map_err(|(what, hint)| fail((format!("topic: {what}"), hint)))?;
    }
    let share = match (side, share) {
        (_, None) => None,
        (Side::To, Some(_)) => {
            return Err(fail((
                "`share` applies to FROM: a shared subscription spreads what is read".into(),
                "leave it out of TO".into(),
            )));
        }
        (Side::From, Some(g)) if g.is_empty() || g.contains(['/', '+', '#']) => {
            return Err(fail((
                format!("`share={g}` is not a shared-subscription group"),
                "a group name is one level: no `/`, `+` or `#`".into(),
            )));
        }
        (Side::From, Some(g)) => Some(g),
    };
    let retain = match (side, retain.as_deref()) {
        (_, None) => Retain::Fixed(false),
        (Side::From, Some(_)) => {
            return Err(fail((
                "`retain` applies to TO: it is how ferry publishes".into(),
                "leave it out of FROM".into(),
            )));
        }
        (Side::To, Some("true")) => Retain::Fixed(true),
        (Side::To, Some("false")) => Retain::Fixed(false),
        (Side::To, Some("source")) => Retain::FromSource,
        (Side::To, Some(r)) => {
            return Err(fail((
                format!("`retain={r}` is not a retain setting"),
                "write retain=true, retain=false or retain=source (as each message came)".into(),
            )));
        }
    };
    if let Some(id) = &client_id
        && (id.is_empty() || id.len() > 65_535)
    {
        return Err(fail((
            "`client_id` is empty".into(),
            "leave it out for ferry's own id, or name one".into(),
        )));
    }

    let port = raw.port.unwrap_or(transport.default_port());
    let plain = transport.scheme();
    let ws_url = ws.then(|| {
        let path = if raw.path.is_empty() { "/" } else { &raw.path };
        format!("{plain}://{}:{port}{path}", raw.host)
    });
    let url = ws_url
        .clone()
        .unwrap_or_else(|| format!("{plain}://{}:{port}", raw.host));
    // A persistent session only where at-least-once needs it, under an id that stays the same
    // from one run to the next (and differs between FROM and TO on the same broker).
    let client_id = client_id.unwrap_or_else(|| {
        if args.at_least_once {
            let key = format!(
                "{}|{url}|{}|{}",
                side.suffix(),
                name.as_deref().unwrap_or(""),
                share.as_deref().unwrap_or("")
            );
            format!("ferry-relay-{:08x}", crc32fast::hash(key.as_bytes()))
        } else {
            format!("ferry-relay-{}-{}", std::process::id(), side.suffix())
        }
    });
    let clean_start = !args.at_least_once;
    let session_expiry = (version == MqttVersion::V5 && args.at_least_once)
        .then_some(Duration::from_secs(24 * 60 * 60));
    let (username, password) = credentials(raw, args, any_user);
    let mut end = Endpoint::new(
        side,
        shown.to_string(),
        ConnectionKind::Mqtt(MqttConnection {
            url,
            transport,
            host: raw.host.clone(),
            port,
            ws_url: ws_url.map(SecretUrl::new),
            version,
            client_id,
            clean_start,
            session_expiry,
            keep_alive: Duration::from_secs(30),
            username,
            password,
            tls: Tls::default(),
            max_packet_size: 16 * 1024 * 1024,
            max_outgoing_packet_size: DEFAULT_MAX_OUTGOING_PACKET_SIZE as u32,
            last_will: None,
            probe: None,
        }),
    );
    end.name = name;
    end.qos = qos;
    end.share = share;
    end.retain = retain;
    Ok(end)
}

/// The prefix of a sink name ending in the multi-level wildcard (`out/#` → `out`, `#` → ``).
fn wildcard_prefix<'a>(name: &'a str, separator: char, wildcard: &str) -> Option<&'a str> {
    if name == wildcard {
        return Some("");
    }
    name.strip_suffix(wildcard)?.strip_suffix(separator)
}

/// A protocol's rule for names (`names::mqtt_topic`, `names::nats_subject`, ...).
type NameRule = fn(&str) -> Result<(), names::Problem>;

/// Checks the prefix of a wildcard sink name: a valid name, with no other wildcard.
fn sink_prefix_check(
    prefix: &str,
    rule: NameRule,
    wildcards: &str,
    whole: &str,
) -> Result<(), names::Problem> {
    if prefix.contains(|c| wildcards.contains(c)) {
        return Err((
            format!("a TO name can only end in a multi-level wildcard, with none before it: `{whole}`"),
            "write e.g. mqtt://host/out/# or nats://host/iot.>: what FROM's wildcard matched goes under the prefix".into(),
        ));
    }
    if prefix.is_empty() {
        return Ok(());
    }
    rule(prefix)
}

#[allow(clippy::too_many_arguments)]
fn nats(
    side: Side,
    shown: &str,
    raw: &RawUrl,
    query: &mut Query,
    tls: bool,
    ws: bool,
    args: &RelayArgs,
    any_user: bool,
) -> Result<Endpoint, RelayError> {
    let fail = |(what, hint): (String, String)| endpoint_error(side, shown, what, hint);
    let once = |q: &mut Query, key: &str| q.one(key).map_err(|e| fail((e, "give it once".into())));
    let name = name_of(raw, query, "subject", ws).map_err(fail)?;
    let queue = once(query, "queue")?;
    let stream = once(query, "stream")?;
    let consumer = once(query, "consumer")?;
    let deliver = once(query, "deliver")?;
    let jetstream = once(query, "jetstream")?;
    if ws {
        query.all("protocol");
    }
    let known: &[&str] = if ws {
        &[
            "subject",
            "queue",
            "stream",
            "consumer",
            "deliver",
            "jetstream",
            "protocol",
        ]
    } else {
        &[
            "queue",
            "stream",
            "consumer",
            "deliver",
            "jetstream",
            "subject",
        ]
    };
    std::mem::replace(query, Query { pairs: Vec::new() })
        .finish(known)
        .map_err(fail)?;

    if let Some(name) = &name {
        let check = match side {
            Side::From => names::nats_subscription(name),
            Side::To => wildcard_prefix(name, '.', ">").map_or_else(
                || names::nats_subject(name),
                |prefix| sink_prefix_check(prefix, names::nats_subject, "*>", name),
            ),
        };
        check.map_err(|(what, hint)| fail((format!("subject: {what}"), hint)))?;
    }
    let source_only = |key: &str, given: bool| -> Result<(), RelayError> {
        if side == Side::To && given {
            return Err(fail((
                format!("`{key}` applies to FROM: it is how ferry reads"),
                "leave it out of TO (jetstream=true publishes to JetStream)".into(),
            )));
        }
        Ok(())
    };
    source_only("queue", queue.is_some())?;
    source_only("stream", stream.is_some())?;
    source_only("consumer", consumer.is_some())?;
    source_only("deliver", deliver.is_some())?;
    let jetstream_sink = match (side, jetstream.as_deref()) {
        (_, None) | (Side::To, Some("false")) => false,
        (Side::To, Some("true")) => true,
        (Side::From, Some(_)) => {
            return Err(fail((
                "`jetstream` applies to TO; FROM reads JetStream through a consumer".into(),
                "write ?stream=NAME&consumer=NAME on FROM".into(),
            )));
        }
        (Side::To, Some(j)) => {
            return Err(fail((
                format!("`jetstream={j}` is not true or false"),
                "write jetstream=true".into(),
            )));
        }
    };
    let js_name = |key: &str, value: &str| -> Result<(), RelayError> {
        if value.is_empty() || value.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
            return Err(fail((
                format!("`{key}={value}` is not a JetStream {key} name"),
                "use letters, digits, `-` and `_`".into(),
            )));
        }
        Ok(())
    };
    let jetstream_source = match (stream, consumer) {
        (None, None) => {
            if deliver.is_some() {
                return Err(fail((
                    "`deliver` needs a JetStream consumer".into(),
                    "add ?stream=NAME&consumer=NAME".into(),
                )));
            }
            None
        }
        (Some(stream), Some(consumer)) => {
            js_name("stream", &stream)?;
            js_name("consumer", &consumer)?;
            if queue.is_some() {
                return Err(fail((
                    "a JetStream consumer takes no `queue`".into(),
                    "relays that bind the same durable consumer share its messages".into(),
                )));
            }
            let deliver = match deliver.as_deref() {
                None | Some("all") => JetStreamDeliver::All,
                Some("new") => JetStreamDeliver::New,
                Some(d) => {
                    return Err(fail((
                        format!("`deliver={d}` is not all or new"),
                        "write deliver=all or deliver=new".into(),
                    )));
                }
            };
            Some(JetStreamSource {
                stream,
                consumer,
                max_ack_pending: 1000,
                ack_wait: Duration::from_secs(30),
                deliver,
            })
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(fail((
                "JetStream needs both `stream` and `consumer`".into(),
                "write ?stream=NAME&consumer=NAME (the durable consumer is created when absent)"
                    .into(),
            )));
        }
    };
    if let Some(q) = &queue
        && (q.is_empty() || q.chars().any(char::is_whitespace))
    {
        return Err(fail((
            format!("`queue={q}` is not a queue group"),
            "name the group without spaces".into(),
        )));
    }

    let plain = match (tls, ws) {
        (false, false) => "nats",
        (true, false) => "tls",
        (false, true) => "ws",
        (true, true) => "wss",
    };
    let url = match (ws, raw.port) {
        (true, _) => {
            let path = if raw.path.is_empty() { "" } else { &raw.path };
            format!("{plain}://{}{path}", raw.host_port)
        }
        (false, port) => format!("{plain}://{}:{}", raw.host, port.unwrap_or(4222)),
    };
    let (user, password) = credentials(raw, args, any_user);
    // `nats://TOKEN@host`, and a password with no user anywhere, is a token.
    let (user, password, token) = match (user, password) {
        (Some(user), None) if raw.user.is_some() && args.password.is_none() => {
            (None, None, Some(Secret::new(user)))
        }
        (None, Some(token)) => (None, None, Some(token)),
        (user, password) => (user, password, None),
    };
    let mut end = Endpoint::new(
        side,
        shown.to_string(),
        ConnectionKind::Nats(NatsConnection {
            urls: vec![url],
            name: Some("ferry-relay".into()),
            user,
            password,
            token,
            nkey: None,
            creds: None,
            tls: Tls::default(),
            ping_interval: Duration::from_secs(20),
            probe: None,
        }),
    );
    end.name = name;
    end.queue = queue;
    end.jetstream_source = jetstream_source;
    end.jetstream_sink = jetstream_sink;
    Ok(end)
}

/// `Authorization: Basic ...` when there is a user.
fn basic_auth(raw: &RawUrl, args: &RelayArgs, any_user: bool) -> Vec<(String, Secret)> {
    let (user, password) = credentials(raw, args, any_user);
    let Some(user) = user else {
        return Vec::new();
    };
    let pair = format!(
        "{user}:{}",
        password.as_ref().map(Secret::expose).unwrap_or("")
    );
    vec![(
        "authorization".into(),
        Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )),
    )]
}

/// The http(s):// URL without credentials, with the query as given.
fn http_url(raw: &RawUrl, tls: bool, query: &str) -> String {
    let scheme = if tls { "https" } else { "http" };
    let path = if raw.path.is_empty() { "/" } else { &raw.path };
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{scheme}://{}{path}{query}", raw.host_port)
}

fn sse(raw: &RawUrl, tls: bool, args: &RelayArgs, any_user: bool) -> SseConnection {
    // `event=` is the relay's; every other key goes to the server, as written.
    let query = raw
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| p.split_once('=').map_or(*p, |(k, _)| k) != "event")
        .collect::<Vec<_>>()
        .join("&");
    SseConnection {
        url: SecretUrl::new(http_url(raw, tls, &query)),
        method: HttpMethod::Get,
        body: None,
        headers: basic_auth(raw, args, any_user),
        tls: Tls::default(),
        idle_timeout: Duration::from_secs(60),
        // Resuming keeps a cursor in the state directory: only worth it (and only asked for)
        // when nothing may be lost.
        resume: args.at_least_once,
        handshake: None,
        max_line_size: SseConnection::DEFAULT_MAX_LINE_SIZE,
        max_event_size: SseConnection::DEFAULT_MAX_EVENT_SIZE,
        max_response_body: SseConnection::DEFAULT_MAX_RESPONSE_BODY,
    }
}

/// The route's source, from FROM.
fn source(from: &Endpoint, args: &RelayArgs) -> Result<Source, RelayError> {
    let default_qos = args.qos.unwrap_or(if args.at_least_once { 1 } else { 0 });
    let spec = match &from.kind {
        ConnectionKind::Mqtt(_) => SourceSpec::Mqtt(MqttSource {
            topics: vec![from.name.clone().unwrap_or_else(|| "#".into())],
            qos: from.qos.unwrap_or(default_qos),
            share: from.share.clone(),
            no_local: false,
        }),
        ConnectionKind::Nats(_) => SourceSpec::Nats(NatsSource {
            subject: from.name.clone().unwrap_or_else(|| ">".into()),
            queue_group: from.queue.clone(),
            jetstream: from.jetstream_source.clone(),
        }),
        ConnectionKind::Sse(_) => SourceSpec::Sse(SseSource {
            events: from.events.clone(),
        }),
        ConnectionKind::Stdio(_) => SourceSpec::Stdio,
        ConnectionKind::Http(_)
        | ConnectionKind::SseServer(_)
        | ConnectionKind::MigratoryData(_) => {
            unreachable!("endpoint() refuses sink-only schemes as FROM, and has no migratorydata")
        }
    };
    Ok(Source {
        connection: FROM.into(),
        spec,
        pattern: None,
        format: PayloadFormat::Json,
        envelope: false,
    })
}

/// The route's sink, from TO (and FROM, whose wildcard a TO prefix maps).
fn sink(from: &Endpoint, to: &Endpoint, args: &RelayArgs) -> Result<Sink, RelayError> {
    let target = match &args.subject {
        Some(text) => subject_option(text, to.protocol())?,
        None => sink_name(from, to)?,
    };
    // Raw lines have no name of their own: `auto` and a wildcard TO would publish under an
    // empty one.
    let raw_input = matches!(
        from.kind,
        ConnectionKind::Stdio(StdioConnection {
            lines: LineFormat::Raw
        })
    );
    let named_by_source = match to.name.as_deref() {
        None => true,
        Some(name) => name == "#" || name == ">" || name.ends_with("/#") || name.ends_with(".>"),
    };
    if raw_input
        && args.subject.is_none()
        && matches!(to.protocol(), Protocol::Mqtt | Protocol::Nats)
        && named_by_source
    {
        return Err(to.error(
            "raw lines from standard input carry no subject to publish under",
            "name the topic or subject in TO (e.g. nats://host/replay), or give --subject",
        ));
    }
    let default_qos = args.qos.unwrap_or(if args.at_least_once { 1 } else { 0 });
    let spec = match &to.kind {
        ConnectionKind::Mqtt(_) => SinkSpec::Mqtt(MqttSink {
            topic: target,
            qos: to.qos.unwrap_or(default_qos),
            retain: to.retain,
        }),
        ConnectionKind::Nats(_) => SinkSpec::Nats(NatsSink {
            subject: target,
            jetstream: to.jetstream_sink,
        }),
        ConnectionKind::Http(_) => SinkSpec::Http(HttpSink {
            url: target,
            method: HttpMethod::Post,
        }),
        ConnectionKind::Stdio(_) => SinkSpec::Stdio(StdioSink { subject: target }),
        ConnectionKind::Sse(_)
        | ConnectionKind::SseServer(_)
        | ConnectionKind::MigratoryData(_) => {
            unreachable!("endpoint() refuses source-only schemes as TO, and has no migratorydata")
        }
    };
    Ok(Sink {
        connection: TO.into(),
        spec,
        format: PayloadFormat::Json,
        envelope: false,
    })
}

/// `--subject`: a template, checked as a sink's `subject:`/`topic:`/`url:` in bridges.yaml.
fn subject_option(text: &str, protocol: Protocol) -> Result<Target, RelayError> {
    let t = template::Template::compile(text).map_err(|e| {
        option_error(
            format!("--subject: the template does not compile: {e}"),
            "templates use {{ ... }}, e.g. --subject 'iot.{{ topic[1] }}.temperature'",
        )
    })?;
    if let Some(name) = t.unknown_capture(&[]) {
        return Err(option_error(
            format!("--subject: `{name}` is not available in a relay"),
            "a relay has no `match:` regex; use topic[N], subject[N], payload.FIELD or headers.NAME",
        ));
    }
    if !text.contains("{{") && !text.contains("{%") {
        let rule: Option<NameRule> = match protocol {
            Protocol::Mqtt => Some(names::mqtt_topic),
            Protocol::Nats => Some(names::nats_subject),
            _ => None,
        };
        if let Some(Err((what, hint))) = rule.map(|r| r(text)) {
            return Err(option_error(format!("--subject: {what}"), hint));
        }
    }
    Ok(Target::Template(text.to_string()))
}

/// A literal in a template: as it is, or inside `{% raw %}` when it holds template syntax.
fn literal(text: &str) -> Result<String, String> {
    if !text.contains('{') {
        return Ok(text.to_string());
    }
    if text.contains("endraw") {
        return Err("the name holds both `{` and `endraw`, which ferry cannot quote".into());
    }
    Ok(format!("{{% raw %}}{text}{{% endraw %}}"))
}

/// TO's name as a target: none is `auto`; one ending in `#`/`>` maps FROM's wildcard match
/// under its prefix (see the module doc); any other is fixed.
fn sink_name(from: &Endpoint, to: &Endpoint) -> Result<Target, RelayError> {
    let Some(name) = &to.name else {
        return Ok(Target::Auto);
    };
    let (prefix, separator, variable) = match to.protocol() {
        Protocol::Mqtt => (wildcard_prefix(name, '/', "#"), '/', "topic"),
        Protocol::Nats => (wildcard_prefix(name, '.', ">"), '.', "subject"),
        _ => (None, '.', "subject"),
    };
    let quoted = |t: &str| literal(t).map_err(|e| to.error(e, "name it with --subject"));
    let Some(prefix) = prefix else {
        return Ok(Target::Template(quoted(name)?));
    };
    // How many leading levels of a source name FROM's filter fixes: they are dropped.
    let fixed = match (&from.kind, from.name.as_deref()) {
        (ConnectionKind::Mqtt(_), Some(filter)) => filter
            .strip_suffix("#")
            .map_or(0, |p| p.split('/').count() - 1),
        (ConnectionKind::Nats(_), Some(filter)) => filter
            .strip_suffix(">")
            .map_or(0, |p| p.split('.').count() - 1),
        _ => 0,
    };
    let rest = if fixed == 0 {
        variable.to_string()
    } else {
        format!("{variable}[{fixed}:]")
    };
    let text = if prefix.is_empty() {
        format!("{{{{ {rest} | join('{separator}') }}}}")
    } else {
        // A loop, not `join`, so a message named by the prefix alone (`sensors` under
        // `sensors/#`) goes to the prefix alone, not to `iot.`.
        format!(
            "{}{{% for level in {rest} %}}{separator}{{{{ level }}}}{{% endfor %}}",
            quoted(prefix)?
        )
    };
    Ok(Target::Template(text))
}

fn jq_option(option: &str, code: &Option<String>) -> Result<Option<String>, RelayError> {
    let Some(code) = code else {
        return Ok(None);
    };
    match jq::Program::compile(code) {
        Ok(_) => Ok(Some(code.clone())),
        Err(e) => Err(option_error(
            format!("{option}: the jq program does not compile: {e}"),
            "check it with `jq` on a sample payload, e.g. '{room: .room}'",
        )),
    }
}

/// `--delivery at-least-once` where a side cannot keep it, with the relay's fix.
fn at_least_once(route: &Route, args: &RelayArgs) -> Result<(), RelayError> {
    let refuse = |what: String, fix: String| {
        Err(option_error(
            format!("--delivery at-least-once: {what}"),
            fix,
        ))
    };
    let qos_fix = |side: &str| match args.qos {
        Some(0) => "leave out --qos 0 (at-least-once reads and publishes at QoS 1)".to_string(),
        _ => format!("drop qos=0 from {side}, or set qos=1"),
    };
    match &route.from.spec {
        SourceSpec::Mqtt(mqtt) if mqtt.qos == 0 => {
            return refuse(
                "FROM subscribes at QoS 0, which the broker never redelivers".into(),
                qos_fix("FROM"),
            );
        }
        SourceSpec::Nats(nats) if nats.jetstream.is_none() => {
            return refuse(
                format!(
                    "FROM is a core NATS subscription (`{}`), which nothing redelivers",
                    nats.subject
                ),
                "read through a JetStream consumer: add ?stream=NAME&consumer=NAME to FROM".into(),
            );
        }
        _ => {}
    }
    if let SinkSpec::Mqtt(mqtt) = &route.to[0].spec
        && mqtt.qos == 0
    {
        return refuse(
            "TO publishes at QoS 0, which nothing confirms".into(),
            qos_fix("TO"),
        );
    }
    Ok(())
}

/// A relay that feeds itself over MQTT 3.1.1 (where ferry's loop marker cannot travel) would
/// run forever: refuse it, as `ferry run` does.
fn refuse_endless_loop(config: &Config) -> Result<(), RelayError> {
    let analysis = loops::analyse(config);
    for cycle in &analysis.cycles {
        if let loops::Verdict::Unguarded { .. } = cycle.verdict {
            return Err(option_error(
                "TO publishes where FROM reads, over MQTT 3.1.1: the relay would relay its own messages forever".to_string(),
                "use version=5 (ferry's loop marker travels there), or make TO's topics not match FROM's",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::mapping::payload::Payload;
    use crate::mapping::template::{Scope, Template};
    use crate::message::Message;

    fn args(from: &str, to: &str) -> RelayArgs {
        RelayArgs {
            from: from.into(),
            to: to.into(),
            ..RelayArgs::default()
        }
    }

    fn ok(a: &RelayArgs) -> Config {
        relay_config(a).unwrap_or_else(|e| panic!("{a:?} was refused: {e}"))
    }

    fn relay(from: &str, to: &str) -> Config {
        ok(&args(from, to))
    }

    /// The error's whole text, as main prints it.
    fn refused(a: &RelayArgs) -> String {
        match relay_config(a) {
            Ok(c) => panic!("{a:?} was accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn kind<'a>(c: &'a Config, name: &str) -> &'a ConnectionKind {
        &c.connections[name].kind
    }

    fn mqtt_of<'a>(c: &'a Config, name: &str) -> &'a MqttConnection {
        match kind(c, name) {
            ConnectionKind::Mqtt(m) => m,
            other => panic!("{name} is {other:?}"),
        }
    }

    fn nats_of<'a>(c: &'a Config, name: &str) -> &'a NatsConnection {
        match kind(c, name) {
            ConnectionKind::Nats(n) => n,
            other => panic!("{name} is {other:?}"),
        }
    }

    fn route(c: &Config) -> &Route {
        assert_eq!(c.routes.len(), 1);
        &c.routes[0]
    }

    fn mqtt_source(c: &Config) -> &MqttSource {
        match &route(c).from.spec {
            SourceSpec::Mqtt(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn nats_source(c: &Config) -> &NatsSource {
        match &route(c).from.spec {
            SourceSpec::Nats(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn target(c: &Config) -> &Target {
        route(c).to[0].spec.target()
    }

    /// What TO's name renders to for a message named `name` from FROM.
    fn published(c: &Config, name: &str) -> Result<String, String> {
        let Target::Template(text) = target(c) else {
            return Err("auto".into());
        };
        let protocol = c.connections[FROM].kind.protocol();
        let message = Message::new(Arc::from(FROM), name, b"{}".to_vec());
        let payload = Payload::Raw(message.payload.clone());
        let scope = Scope {
            route: ROUTE,
            message: &message,
            protocol,
            captures: &[],
            payload: &payload,
            format: PayloadFormat::Json,
        };
        Template::compile(text).unwrap().render(&scope)
    }

    #[test]
    fn mqtt_urls() {
        let c = relay("mqtt://localhost/sensors/#", "-");
        let m = mqtt_of(&c, FROM);
        assert_eq!((m.host.as_str(), m.port), ("localhost", 1883));
        assert_eq!(m.transport, MqttTransport::Tcp);
        assert_eq!(m.version, MqttVersion::V5);
        assert!(m.clean_start && m.session_expiry.is_none() && m.probe.is_none());
        assert_eq!(
            m.client_id,
            format!("ferry-relay-{}-from", std::process::id())
        );
        assert_eq!(mqtt_source(&c).topics, ["sensors/#"]);
        assert_eq!(mqtt_source(&c).qos, 0);
        assert_eq!(route(&c).name, ROUTE);
        assert_eq!(route(&c).delivery, None);

        let c = relay(
            "mqtt://u:p%40ss@broker:1884/$SYS/#?version=3.1.1&qos=1&share=g&client_id=me",
            "-",
        );
        let m = mqtt_of(&c, FROM);
        assert_eq!((m.host.as_str(), m.port), ("broker", 1884));
        assert_eq!(m.version, MqttVersion::V311);
        assert_eq!(m.client_id, "me");
        assert_eq!(m.username.as_deref(), Some("u"));
        assert_eq!(m.password.as_ref().map(Secret::expose), Some("p@ss"));
        assert_eq!(m.url, "mqtt://broker:1884");
        let s = mqtt_source(&c);
        assert_eq!((s.topics[0].as_str(), s.qos), ("$SYS/#", 1));
        assert_eq!(s.subscriptions(), ["$share/g/$SYS/#"]);

        // Spaces (percent-encoded), dots, `+` (not a space) and a fragment-looking `#`.
        let c = relay("mqtt://h/living%20room/v1.2/+/#?qos=2", "-");
        assert_eq!(mqtt_source(&c).topics, ["living room/v1.2/+/#"]);
        assert_eq!(mqtt_source(&c).qos, 2);
        // An empty topic is every topic.
        assert_eq!(mqtt_source(&relay("mqtt://h", "-")).topics, ["#"]);
        assert_eq!(mqtt_source(&relay("mqtt://h/", "-")).topics, ["#"]);
        assert_eq!(mqtt_source(&relay("mqtt://h#", "-")).topics, ["#"]);

        let m = mqtt_of(&relay("mqtts://h/t", "-"), FROM).clone();
        assert_eq!((m.transport, m.port), (MqttTransport::Tls, 8883));

        let c = relay("wss+mqtt://h/mqtt?topic=a/%23&qos=1", "-");
        let m = mqtt_of(&c, FROM);
        assert_eq!((m.transport, m.port), (MqttTransport::Wss, 443));
        assert_eq!(
            m.ws_url.as_ref().map(|u| u.expose()),
            Some("wss://h:443/mqtt")
        );
        assert_eq!(mqtt_source(&c).topics, ["a/#"]);
        let c = relay("ws://h:9001/mqtt?protocol=mqtt&topic=x/+", "-");
        let m = mqtt_of(&c, FROM);
        assert_eq!((m.transport, m.port), (MqttTransport::Ws, 9001));
        assert_eq!(
            m.ws_url.as_ref().map(|u| u.expose()),
            Some("ws://h:9001/mqtt")
        );
        assert_eq!(mqtt_source(&c).topics, ["x/+"]);
        // Over TCP the topic may come from `?topic=` too.
        assert_eq!(
            mqtt_source(&relay("mqtt://h?topic=a/b", "-")).topics,
            ["a/b"]
        );

        // As TO: QoS, retain, its own client id.
        let c = relay("-", "mqtt://h:1883/out/x?qos=1&retain=source");
        let MqttSink { topic, qos, retain } = match &route(&c).to[0].spec {
            SinkSpec::Mqtt(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(topic, Target::Template("out/x".into()));
        assert_eq!((qos, retain), (1, Retain::FromSource));
        assert!(mqtt_of(&c, TO).client_id.ends_with("-to"));
    }

    #[test]
    fn the_same_broker_on_both_sides_gets_two_client_ids() {
        let c = relay("mqtt://h/a/#", "mqtt://h/b/#");
        assert_ne!(mqtt_of(&c, FROM).client_id, mqtt_of(&c, TO).client_id);
        let mut a = args("mqtt://h/a/#", "mqtt://h/b/#");
        a.at_least_once = true;
        let c = ok(&a);
        assert_ne!(mqtt_of(&c, FROM).client_id, mqtt_of(&c, TO).client_id);
    }

    #[test]
    fn nats_urls() {
        let c = relay("nats://localhost/iot.>?queue=q", "-");
        let n = nats_of(&c, FROM);
        assert_eq!(n.urls, ["nats://localhost:4222"]);
        assert_eq!(n.name.as_deref(), Some("ferry-relay"));
        assert!(n.probe.is_none() && n.user.is_none() && n.token.is_none());
        let s = nats_source(&c);
        assert_eq!(s.subject, "iot.>");
        assert_eq!(s.queue_group.as_deref(), Some("q"));
        assert!(s.jetstream.is_none());

        let c = relay("tls://u:pw@n1:4443/a.*.b", "-");
        let n = nats_of(&c, FROM);
        assert_eq!(n.urls, ["tls://n1:4443"]);
        assert_eq!(n.user.as_deref(), Some("u"));
        assert_eq!(n.password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(nats_source(&c).subject, "a.*.b");

        // A user alone in a NATS URL is a token, as in the nats CLI.
        let c = relay("nats://s3cret@h/x", "-");
        let n = nats_of(&c, FROM);
        assert_eq!(n.token.as_ref().map(Secret::expose), Some("s3cret"));
        assert!(n.user.is_none());

        assert_eq!(nats_source(&relay("nats://h", "-")).subject, ">");
        let c = relay("wss+nats://h:8443/?subject=a.b", "-");
        assert_eq!(nats_of(&c, FROM).urls, ["wss://h:8443/"]);
        assert_eq!(nats_source(&c).subject, "a.b");
        let c = relay("ws://h:8080?protocol=nats&subject=a", "-");
        assert_eq!(nats_of(&c, FROM).urls, ["ws://h:8080"]);

        let c = relay(
            "nats://h/orders.>?stream=ORDERS&consumer=relay&deliver=new",
            "-",
        );
        let js = nats_source(&c).jetstream.clone().unwrap();
        assert_eq!(
            (js.stream.as_str(), js.consumer.as_str()),
            ("ORDERS", "relay")
        );
        assert_eq!(js.deliver, JetStreamDeliver::New);

        let c = relay("-", "nats://h/out.x?jetstream=true");
        match &route(&c).to[0].spec {
            SinkSpec::Nats(s) => {
                assert!(s.jetstream);
                assert_eq!(s.subject, Target::Template("out.x".into()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sse_http_and_stdio() {
        let c = relay(
            "sse+https://db.example.com/realtime?event=post&apiKey=k&event=put",
            "-",
        );
        match kind(&c, FROM) {
            ConnectionKind::Sse(s) => {
                assert_eq!(s.url.expose(), "https://db.example.com/realtime?apiKey=k");
                assert!(s.headers.is_empty() && !s.resume);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            route(&c).from.spec,
            SourceSpec::Sse(SseSource {
                events: vec!["post".into(), "put".into()]
            })
        );
        match kind(&relay("sse+http://h:8080/s", "-"), FROM) {
            ConnectionKind::Sse(s) => assert_eq!(s.url.expose(), "http://h:8080/s"),
            other => panic!("{other:?}"),
        }

        let mut a = args("mqtt://h/t", "https://hooks.example.com/in?x=1");
        a.user = Some("me".into());
        a.password = Some("pw".into());
        let c = ok(&a);
        match kind(&c, TO) {
            ConnectionKind::Http(h) => {
                assert_eq!(h.url.expose(), "https://hooks.example.com/in?x=1");
                assert_eq!(h.headers.len(), 1);
                assert_eq!(h.headers[0].0, "authorization");
                assert_eq!(h.headers[0].1.expose(), "Basic bWU6cHc=");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            route(&c).to[0].spec,
            SinkSpec::Http(HttpSink {
                url: Target::Auto,
                method: HttpMethod::Post
            })
        );

        let c = relay("-", "mqtt://h/t");
        assert_eq!(
            *kind(&c, FROM),
            ConnectionKind::Stdio(StdioConnection {
                lines: LineFormat::Json {
                    base64: false,
                    names: Protocol::Mqtt
                }
            })
        );
        assert_eq!(route(&c).from.spec, SourceSpec::Stdio);
        let mut a = args("mqtt://h/#", "-");
        a.base64 = true;
        let c = ok(&a);
        assert_eq!(
            *kind(&c, TO),
            ConnectionKind::Stdio(StdioConnection {
                lines: LineFormat::Json {
                    base64: true,
                    names: Protocol::Mqtt
                }
            })
        );
        assert_eq!(
            route(&c).to[0].spec,
            SinkSpec::Stdio(StdioSink {
                subject: Target::Auto
            })
        );
        let mut a = args("-", "nats://h/in");
        a.raw = true;
        a.count = Some(5);
        let c = ok(&a);
        assert_eq!(
            *kind(&c, FROM),
            ConnectionKind::Stdio(StdioConnection {
                lines: LineFormat::Raw
            })
        );
        assert_eq!(route(&c).stop_after, Some(5));
    }

    #[test]
    fn to_without_a_name_is_auto_and_a_plain_name_is_fixed() {
        assert_eq!(*target(&relay("mqtt://h/a/#", "nats://h")), Target::Auto);
        assert_eq!(*target(&relay("mqtt://h/a/#", "nats://h/")), Target::Auto);
        let c = relay("mqtt://h/a/#", "nats://h/all.in.one");
        assert_eq!(published(&c, "a/b/c").unwrap(), "all.in.one");
        // A name holding template syntax is taken literally.
        let c = relay("nats://h/x", "mqtt://h/%7B%7B%20topic%20%7D%7D");
        assert_eq!(published(&c, "x").unwrap(), "{{ topic }}");
    }

    #[test]
    fn a_wildcard_to_maps_what_the_wildcard_from_matched() {
        let c = relay("mqtt://h/sensors/#", "nats://h/iot.>");
        assert_eq!(
            published(&c, "sensors/kitchen/temp").unwrap(),
            "iot.kitchen.temp"
        );
        // Names through the codec, as `auto` converts them.
        assert_eq!(
            published(&c, "sensors/living room/v1.2").unwrap(),
            "iot.living/x20room.v1//2"
        );
        assert_eq!(published(&c, "sensors/$x/a").unwrap(), "iot.$x.a");
        // `sensors/#` also matches `sensors` itself: the prefix alone.
        assert_eq!(published(&c, "sensors").unwrap(), "iot");

        let c = relay("mqtt://h/$SYS/#", "nats://h/sys.>");
        assert_eq!(
            published(&c, "$SYS/broker/load").unwrap(),
            "sys.broker.load"
        );
        let c = relay("mqtt://h/#", "nats://h/m.>");
        assert_eq!(published(&c, "$SYS/broker").unwrap(), "m./$SYS.broker");
        let c = relay("mqtt://h/+/temp/#", "mqtt://h2/out/#");
        assert_eq!(published(&c, "a/temp/x/y").unwrap(), "out/x/y");

        let c = relay("nats://h/iot.>", "mqtt://h/copy/#");
        assert_eq!(
            published(&c, "iot.living/x20room.v1//2").unwrap(),
            "copy/living room/v1.2"
        );
        let c = relay("nats://h/a.b.>", "nats://h2/c.>");
        assert_eq!(published(&c, "a.b.x.y").unwrap(), "c.x.y");
        let c = relay("nats://h/a.>", "nats://h2/>");
        assert_eq!(published(&c, "a.x.y").unwrap(), "x.y");

        // Without a wildcard in FROM, the whole name goes under the prefix.
        let c = relay("-", "nats://h/replay.>");
        assert_eq!(
            published(&c, "sensors.kitchen").unwrap(),
            "replay.sensors.kitchen"
        );
        let c = relay("mqtt://h/a/b", "nats://h/in.>");
        assert_eq!(published(&c, "a/b").unwrap(), "in.a.b");
        let c = relay("sse+https://h/s", "mqtt://h/db/#");
        assert_eq!(published(&c, "post").unwrap(), "db/post");

        // --subject overrides all of it.
        let mut a = args("mqtt://h/sensors/#", "nats://h/iot.>");
        a.subject = Some("t.{{ topic[1] }}".into());
        let c = ok(&a);
        assert_eq!(published(&c, "sensors/k/temp").unwrap(), "t.k");
    }

    #[test]
    fn at_least_once() {
        let mut a = args("mqtt://h/a/#", "nats://h/b.>?jetstream=true");
        a.at_least_once = true;
        let c = ok(&a);
        let m = mqtt_of(&c, FROM);
        assert!(!m.clean_start);
        assert_eq!(m.session_expiry, Some(Duration::from_secs(86_400)));
        assert!(m.client_id.starts_with("ferry-relay-"));
        // Stable from one run to the next.
        assert_eq!(ok(&a).connections, c.connections);
        assert_eq!(mqtt_source(&c).qos, 1);
        assert_eq!(route(&c).delivery, Some(Delivery::AtLeastOnce));

        let mut a = args("nats://h/orders.>", "-");
        a.at_least_once = true;
        let e = refused(&a);
        assert!(
            e.contains("--delivery at-least-once: FROM is a core NATS subscription"),
            "{e}"
        );
        assert!(e.contains("?stream=NAME&consumer=NAME"), "{e}");
        a.from = "nats://h/orders.>?stream=S&consumer=C".into();
        ok(&a);

        let mut a = args("mqtt://h/a?qos=0", "-");
        a.at_least_once = true;
        assert!(refused(&a).contains("QoS 0"));
        let mut a = args("-", "mqtt://h/a");
        a.at_least_once = true;
        a.qos = Some(0);
        let e = refused(&a);
        assert!(
            e.contains("TO publishes at QoS 0") && e.contains("--qos 0"),
            "{e}"
        );
        let mut a = args("sse+https://h/s", "-");
        a.at_least_once = true;
        assert!(matches!(kind(&ok(&a), FROM), ConnectionKind::Sse(s) if s.resume));
    }

    #[test]
    fn credentials_fill_in_only_where_meant() {
        let mut a = args("mqtt://h/t", "nats://h/x");
        a.user = Some("u".into());
        a.password = Some("pw".into());
        let c = ok(&a);
        assert_eq!(mqtt_of(&c, FROM).username.as_deref(), Some("u"));
        assert_eq!(
            mqtt_of(&c, FROM).password.as_ref().map(Secret::expose),
            Some("pw")
        );
        assert_eq!(nats_of(&c, TO).user.as_deref(), Some("u"));

        // A user named in one URL keeps the password to that side.
        let mut a = args("mqtt://ferry@h/t", "https://hooks.example.com/x");
        a.password = Some("pw".into());
        let c = ok(&a);
        assert_eq!(mqtt_of(&c, FROM).username.as_deref(), Some("ferry"));
        assert_eq!(
            mqtt_of(&c, FROM).password.as_ref().map(Secret::expose),
            Some("pw")
        );
        assert!(matches!(kind(&c, TO), ConnectionKind::Http(h) if h.headers.is_empty()));

        // A NATS URL naming a user takes the password (user + password, not a token).
        let mut a = args("nats://ferry@h/x", "-");
        a.password = Some("pw".into());
        let n = nats_of(&ok(&a), FROM).clone();
        assert_eq!(n.user.as_deref(), Some("ferry"));
        assert!(n.token.is_none());
        // A password and no user anywhere: a NATS token.
        let mut a = args("nats://h/x", "-");
        a.password = Some("tok".into());
        let n = nats_of(&ok(&a), FROM).clone();
        assert_eq!(n.token.as_ref().map(Secret::expose), Some("tok"));

        // The URL's credentials win over --user.
        let mut a = args("mqtt://a:b@h/t", "-");
        a.user = Some("u".into());
        a.password = Some("pw".into());
        let m = mqtt_of(&ok(&a), FROM).clone();
        assert_eq!(m.username.as_deref(), Some("a"));
        assert_eq!(m.password.as_ref().map(Secret::expose), Some("b"));
        // And nothing of them shows in the Debug of the args.
        assert!(!format!("{a:?}").contains("pw") && !format!("{a:?}").contains(":b@"));
    }

    /// Each bad input: its message names the side or option, and endpoint errors list the
    /// accepted forms.
    #[test]
    fn bad_input() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "https://h/x",
                "-",
                "FROM https://h/x: an https:// URL is where ferry POSTs: it can only be TO",
            ),
            (
                "-",
                "sse+https://h/x",
                "TO sse+https://h/x: sse+https:// is a stream ferry reads: it can only be FROM",
            ),
            ("nat://h/x", "-", "did you mean nats://?"),
            (
                "kafka://h/x",
                "-",
                "`kafka://` is not a scheme ferry relays",
            ),
            (
                "mqtt://h:99999/x",
                "-",
                "FROM mqtt://h:99999/x: the port is not a number",
            ),
            ("mqtt://h:abc/x", "-", "the port is not a number"),
            ("mqtt:///x", "-", "no host"),
            ("localhost", "-", "not a URL"),
            ("mqtt://h/a/#/b", "-", "`#` must be the last level"),
            (
                "-",
                "mqtt://h/out/+",
                "TO mqtt://h/out/+: topic: an MQTT topic to publish to cannot contain",
            ),
            (
                "-",
                "mqtt://h/a/+/#",
                "can only end in a multi-level wildcard",
            ),
            (
                "-",
                "nats://h/a.*.>",
                "can only end in a multi-level wildcard",
            ),
            ("nats://h/a..b", "-", "empty token"),
            ("-", "nats://h/a%20b", "contains whitespace"),
            ("mqtt://h/x?qso=1", "-", "unknown query key `qso`"),
            ("mqtt://h/x?qso=1", "-", "did you mean `qos`?"),
            ("nats://h/x?qeue=g", "-", "did you mean `queue`?"),
            ("mqtt://h/x?qos=3", "-", "`qos=3` is not an MQTT QoS"),
            (
                "mqtt://h/x?version=6",
                "-",
                "MQTT version `6` is not supported",
            ),
            ("mqtt://h/x?qos=1&qos=2", "-", "`qos` is given twice"),
            ("-", "mqtt://h/x?share=g", "`share` applies to FROM"),
            ("mqtt://h/x?retain=true", "-", "`retain` applies to TO"),
            ("-", "nats://h/x?queue=q", "`queue` applies to FROM"),
            (
                "nats://h/x?jetstream=true",
                "-",
                "`jetstream` applies to TO",
            ),
            (
                "nats://h/x?stream=S",
                "-",
                "needs both `stream` and `consumer`",
            ),
            (
                "nats://h/x?stream=S.1&consumer=C",
                "-",
                "not a JetStream stream name",
            ),
            ("ws://h/x", "-", "does not say which protocol"),
            (
                "ws://h/x?protocol=amqp",
                "-",
                "`protocol=amqp` is not mqtt or nats",
            ),
            (
                "mqtt://h/a?topic=b",
                "-",
                "both in the path and in `?topic=`",
            ),
            ("-", "-", "FROM and TO are both `-`"),
        ];
        for (from, to, expected) in cases {
            let e = refused(&args(from, to));
            assert!(e.contains(expected), "{from} {to}: {e}");
            assert!(e.contains("accepted FROM and TO:"), "{from} {to}: {e}");
            assert!(e.contains("\n  hint: "), "{from} {to}: {e}");
        }

        let option_cases: Vec<(RelayArgs, &str)> = vec![
            (
                RelayArgs {
                    qos: Some(3),
                    ..args("mqtt://h/a", "-")
                },
                "--qos: `3` is not an MQTT QoS",
            ),
            (
                RelayArgs {
                    count: Some(0),
                    ..args("mqtt://h/a", "-")
                },
                "--count: 0",
            ),
            (
                RelayArgs {
                    transform: Some("{a:".into()),
                    ..args("mqtt://h/a", "-")
                },
                "--transform: the jq program does not compile",
            ),
            (
                RelayArgs {
                    filter: Some(".a ==".into()),
                    ..args("mqtt://h/a", "-")
                },
                "--filter: the jq program does not compile",
            ),
            (
                RelayArgs {
                    subject: Some("{{ topic[1 }}".into()),
                    ..args("mqtt://h/a", "-")
                },
                "--subject: the template does not compile",
            ),
            (
                RelayArgs {
                    subject: Some("a.{{ match.x }}".into()),
                    ..args("mqtt://h/a", "-")
                },
                "--subject: `match.x`",
            ),
            (
                RelayArgs {
                    subject: Some("a b".into()),
                    ..args("mqtt://h/a", "nats://h")
                },
                "--subject: NATS subject `a b` contains whitespace",
            ),
            (
                RelayArgs {
                    raw: true,
                    ..args("mqtt://h/a", "nats://h")
                },
                "--raw: neither FROM nor TO is `-`",
            ),
            (
                RelayArgs {
                    base64: true,
                    ..args("-", "nats://h")
                },
                "--base64: TO is not `-`",
            ),
            (
                RelayArgs {
                    raw: true,
                    base64: true,
                    ..args("mqtt://h/a", "-")
                },
                "--base64 with --raw",
            ),
        ];
        for (a, expected) in option_cases {
            let e = refused(&a);
            assert!(e.contains(expected), "{a:?}: {e}");
            assert!(e.contains("\n  hint: "), "{a:?}: {e}");
        }

        // Raw input has no names: auto or a wildcard TO needs --subject or a fixed name.
        for to in ["nats://h", "nats://h/replay.>", "mqtt://h/#"] {
            let a = RelayArgs {
                raw: true,
                ..args("-", to)
            };
            assert!(
                refused(&a).contains("raw lines from standard input carry no subject"),
                "{to}"
            );
            ok(&RelayArgs {
                subject: Some("in".into()),
                ..a
            });
        }
    }

    #[test]
    fn a_relay_that_feeds_itself_over_mqtt_3_1_1_is_refused() {
        let a = args("mqtt://h/a/#?version=3.1.1", "mqtt://h/a/b?version=3.1.1");
        let e = refused(&a);
        assert!(e.contains("forever"), "{e}");
        // Over MQTT 5 ferry's marker stops it.
        ok(&args("mqtt://h/a/#", "mqtt://h/a/b"));
    }

    #[test]
    fn passwords_never_show() {
        let bad = [
            ("mqtt://u:hunter2@h:99999/x", "-"),
            ("mqtt://u:hunter2@h/x?qso=1", "-"),
            ("kafka://u:hunter2@h/x", "-"),
            ("https://u:hunter2@h/x", "-"),
            ("-", "sse+https://u:hunter2@h/x"),
            ("u:hunter2@h", "-"),
            ("mqtt://u:hunter2@/x", "-"),
            ("nats://u:hunter2@h/a..b", "-"),
        ];
        for (from, to) in bad {
            let mut a = args(from, to);
            a.password = Some("hunter2".into());
            let e = refused(&a);
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("***"), "{e}");
        }
        let mut a = args("nats://h/x", "-");
        a.password = Some("hunter2".into());
        a.at_least_once = true;
        assert!(!refused(&a).contains("hunter2"));
        // Nor in the built config's Debug (connectors log it).
        let mut a = args("mqtt://u:hunter2@h/x", "https://v:hunter2@h/y");
        a.password = Some("hunter2".into());
        let c = ok(&a);
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{c:?}").contains("aHVudGVyMg"));
    }
}
