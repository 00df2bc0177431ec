//! `ferry relay FROM TO`: two endpoint URLs (or `-`) to the configuration document a user would
//! write in bridges.yaml (two connections, named [`FROM`] and [`TO`], and one route,
//! [`ROUTE`]), then through the same parser and checks as bridges.yaml ([`parse_document`]):
//! names by the protocols' rules, templates and jq programs compiled, at-least-once only where
//! both sides can keep it, no endless loop. Nothing of that policy is decided here. Every value
//! of the document has a position that stands for the argument it came from, so an error reads
//! `TO mqtt://h/out/+: topic: ...` or `--delivery at-least-once: ...`.
//!
//! What each URL says is its protocol's URL form (`connectors/<protocol>/url_form.rs`); the
//! endpoint forms are listed by [`accepted_forms`] (also printed with every endpoint error) and
//! in docs/relay.md, "Endpoint URLs". Decisions an operator of `mosquitto_sub`/`nats sub` would
//! expect:
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
//! Credentials: see [`credentials`]. MQTT and NATS get user and password (NATS: a password
//! without any user is a token, as in `nats://TOKEN@host`); HTTP and SSE endpoints get HTTP
//! Basic authentication, only when there is a user. Passwords are never shown: messages show
//! URLs with `***`.

use std::fmt;

use super::endpoint_url::{
    self, Built, EndpointOrigins, EndpointUrl, Given, Naming, Origins, Problem, Side, UrlForm,
    credentials, list, map, shown, text,
};
use super::model::Config;
use super::yaml::{Node, Pos};
use super::{ConfigErrors, Front, Lookup, parse_document};
use crate::connectors::protocol::{NameRule, PROTOCOLS};
use crate::connectors::{http, mqtt, nats, sse, stdio};
use crate::mapping::{jq, template};

/// The name of the connection built from FROM, in logs and metrics.
pub const FROM: &str = "from";
/// The name of the connection built from TO.
pub const TO: &str = "to";
/// The name of the relay's one route.
pub const ROUTE: &str = "relay";

/// Every URL form, one per protocol a relay can reach: a protocol joins `ferry relay` with a
/// `url_form.rs` in its connector's folder and a line here.
const FORMS: &[&UrlForm] = &[
    &mqtt::url_form::FORM,
    &nats::url_form::FORM,
    &sse::url_form::FORM,
    &http::url_form::FORM,
];

/// What `ferry relay` accepts as FROM and TO, shown after every endpoint error and in
/// `ferry relay --help`: each protocol's forms and keys, then what all share.
pub fn accepted_forms() -> String {
    let mut text = String::from("accepted FROM and TO:\n");
    for line in FORMS
        .iter()
        .flat_map(|f| f.usage)
        .chain([&stdio::url_form::USAGE])
    {
        text.push_str(&format!("  {line}\n"));
    }
    for (i, keys) in FORMS.iter().filter_map(|f| f.keys).enumerate() {
        text.push_str(if i == 0 { "keys: " } else { "      " });
        text.push_str(keys);
        text.push('\n');
    }
    text.push_str(
        "      ws:// and wss:// take protocol=mqtt|nats instead of the +mqtt/+nats suffix
names: `#` is part of the topic (mqtt://host/sensors/#); write `?`, `%` and spaces as %3F, %25, %20.
  Empty: every topic/subject as FROM, the source's own name as TO. A TO name ending in `#` or `>`
  takes what FROM's wildcard matched: mqtt://h/sensors/# to nats://h/iot.> relays sensors/a/b to iot.a.b",
    );
    text
}

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
    /// From `--password-file` or `FERRY_PASSWORD`; see [`credentials`] for where it goes.
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
            write!(f, "\n\n{}", accepted_forms())?;
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
    check_options(args)?;
    let mut origins = Origins::default();
    // Where credentials go depends on both URLs (see `credentials`).
    let from_url = (args.from != "-").then(|| endpoint_url::split(&args.from));
    let to_url = (args.to != "-").then(|| endpoint_url::split(&args.to));
    let names_user =
        |u: &Option<Result<EndpointUrl, String>>| matches!(u, Some(Ok(url)) if url.user.is_some());
    let any_user = names_user(&from_url) || names_user(&to_url);
    let mut from = from_url
        .map(|url| endpoint(Side::From, url, args, any_user, &mut origins))
        .transpose()?;
    let mut to = to_url
        .map(|url| endpoint(Side::To, url, args, any_user, &mut origins))
        .transpose()?;
    // JSON lines name their subjects in the other side's syntax (see LineFormat::Json).
    if from.is_none() {
        let other = to.as_ref().map_or("stdio", |e| e.naming.protocol);
        from = Some(standard_io(Side::From, args, other, &mut origins));
    }
    if to.is_none() {
        let other = from.as_ref().map_or("stdio", |e| e.naming.protocol);
        to = Some(standard_io(Side::To, args, other, &mut origins));
    }
    let (from, to) = (from.expect("built above"), to.expect("built above"));

    let target = match &args.subject {
        Some(subject) => {
            check_subject(subject)?;
            Some(text(origins.mark("--subject", false), subject))
        }
        None => sink_name(&from, &to, &origins)?,
    };
    refuse_raw_input_without_names(&from, &to, args, &origins)?;

    let route = origins.mark(format!("FROM {} TO {}", from.shown, to.shown), false);
    let mut source = vec![("connection", text(from.whole, FROM))];
    source.extend(from.built.keys);
    let mut sink = vec![("connection", text(to.whole, TO))];
    sink.extend(target.map(|t| (to.naming.target, t)));
    sink.extend(to.built.keys);
    let mut route_keys = vec![
        ("name", text(route, ROUTE)),
        ("from", map(from.whole, source)),
        ("to", map(to.whole, sink)),
    ];
    for (key, option, code) in [
        ("transform", "--transform", &args.transform),
        ("filter", "--filter", &args.filter),
    ] {
        if let Some(code) = code {
            check_jq(option, code)?;
            route_keys.push((key, text(origins.mark(option, false), code)));
        }
    }
    if args.at_least_once {
        let pos = origins.mark("--delivery at-least-once", false);
        route_keys.push(("delivery", text(pos, "at-least-once")));
    }
    if let Some(count) = args.count {
        let pos = origins.mark("--count", false);
        route_keys.push(("stop_after", text(pos, &count.to_string())));
    }
    let connections = map(
        route,
        [(FROM, from.built.connection), (TO, to.built.connection)],
    );
    let document = map(
        route,
        [
            ("connections", connections),
            ("routes", list(route, vec![map(route, route_keys)])),
        ],
    );
    // The document holds no `${...}` to look up: every `$` in it is the user's.
    let nothing = Lookup {
        var: &|_| None,
        file: &|_| Err(std::io::Error::other("ferry relay reads no files")),
    };
    parse_document(&document, "ferry relay", &nothing, Front::Relay)
        .map_err(|errors| in_relay_terms(&errors, &origins))
}

/// The options' own rules, before any endpoint is read.
fn check_options(args: &RelayArgs) -> Result<(), RelayError> {
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
    Ok(())
}

/// One side, as configuration.
struct Endpoint {
    /// The URL as it may be shown, or `-`.
    shown: String,
    naming: &'static Naming,
    built: Built,
    /// Where the endpoint as a whole came from.
    whole: Pos,
    /// Raw lines of standard input, which carry no names.
    raw_lines: bool,
}

/// One side from its URL, by its protocol's URL form.
fn endpoint(
    side: Side,
    url: Result<EndpointUrl, String>,
    args: &RelayArgs,
    any_user: bool,
    origins: &mut Origins,
) -> Result<Endpoint, RelayError> {
    let text = match side {
        Side::From => &args.from,
        Side::To => &args.to,
    };
    let shown = shown(text);
    let fail = |(what, hint): Problem| RelayError {
        what: format!("{} {shown}: {what}", side.label()),
        hint: Some(hint),
        endpoint: true,
    };
    let mut url = url.map_err(|what| {
        fail((
            what,
            "write e.g. mqtt://localhost/sensors/#, nats://localhost:4222/iot.> or -".into(),
        ))
    })?;
    let mut query = url
        .query_keys()
        .map_err(|e| fail((e, "percent-encode as UTF-8".into())))?;
    if url.scheme == "ws" || url.scheme == "wss" {
        // `ws://...?protocol=mqtt` is `ws+mqtt://...`.
        let protocol = query.one("protocol").map_err(fail)?;
        let carried: Vec<_> = FORMS
            .iter()
            .filter(|f| {
                f.schemes
                    .contains(&format!("ws+{}", f.naming.protocol).as_str())
            })
            .map(|f| f.naming.protocol)
            .collect();
        url.scheme = match protocol {
            Some(p) if carried.contains(&p.as_str()) => format!("{}+{p}", url.scheme),
            other => {
                let what = match other {
                    Some(p) => format!("`protocol={p}` is not {}", carried.join(" or ")),
                    None => format!(
                        "a {}:// URL does not say which protocol it carries",
                        url.scheme
                    ),
                };
                let scheme = &url.scheme;
                let forms: Vec<_> = carried
                    .iter()
                    .map(|p| format!("{scheme}+{p}://..."))
                    .collect();
                let keys: Vec<_> = carried.iter().map(|p| format!("?protocol={p}")).collect();
                let hint = format!("write {}, or add {}", forms.join(" or "), keys.join(" or "));
                return Err(fail((what, hint)));
            }
        };
    }
    // `ws+mqtt://...?protocol=mqtt` says its protocol twice: taken here, so no form sees it.
    if url.scheme.starts_with("ws") {
        query.all("protocol");
    }
    let Some(form) = FORMS
        .iter()
        .find(|f| f.schemes.contains(&url.scheme.as_str()))
    else {
        let schemes: Vec<&str> = (FORMS.iter().flat_map(|f| f.schemes.iter().copied()))
            .chain(["ws", "wss"])
            .collect();
        let hint = match super::diagnostics::did_you_mean(&url.scheme, schemes.iter().copied()) {
            Some(close) => format!(
                "did you mean {close}://? the schemes: {}",
                schemes.join(", ")
            ),
            None => format!(
                "the schemes: {}, or - for standard input/output",
                schemes.join(", ")
            ),
        };
        let what = format!("`{}://` is not a scheme ferry relays", url.scheme);
        return Err(fail((what, hint)));
    };
    let (user, password) = credentials(
        &url,
        args.user.as_deref(),
        args.password.as_deref(),
        any_user,
    );
    let given = Given {
        side,
        at_least_once: args.at_least_once,
        qos: args.qos,
        user,
        password,
        instance: std::process::id(),
        machine: super::values::host_name(),
    };
    let mut at = EndpointOrigins::new(origins, side, &shown);
    let whole = at.whole();
    let built = (form.read)(&url, query, &given, &mut at).map_err(fail)?;
    Ok(Endpoint {
        shown,
        naming: &form.naming,
        built,
        whole,
        raw_lines: false,
    })
}

/// `-`: standard input or output, naming subjects as `other` (the other side's protocol).
fn standard_io(side: Side, args: &RelayArgs, other: &str, origins: &mut Origins) -> Endpoint {
    let whole = EndpointOrigins::new(origins, side, "-").whole();
    Endpoint {
        shown: "-".into(),
        naming: &stdio::url_form::NAMING,
        built: stdio::url_form::lines(args.raw, args.base64, other, whole),
        whole,
        raw_lines: args.raw,
    }
}

/// An error at one of the relay's positions, in its terms.
fn at(origins: &Origins, pos: Pos, what: String, hint: Option<String>) -> RelayError {
    match origins.of(pos) {
        Some(origin) => RelayError {
            what: format!("{}: {what}", origin.what),
            hint,
            endpoint: origin.endpoint,
        },
        None => RelayError {
            what,
            hint,
            endpoint: false,
        },
    }
}

/// The configuration's first error, said of the URL or option its value came from.
fn in_relay_terms(errors: &ConfigErrors, origins: &Origins) -> RelayError {
    match errors.errors.first() {
        Some(first) => at(
            origins,
            first.pos,
            first.message.clone(),
            first.hint.clone(),
        ),
        None => option_error("the relay's configuration was refused", "see the log"),
    }
}

/// `--subject` compiles, and names only what a relay has (it has no `match:` regex). Checked
/// here, before it is the sink's `topic:` or `subject:`, to say so in the option's terms.
fn check_subject(text: &str) -> Result<(), RelayError> {
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
    Ok(())
}

/// `--transform` and `--filter` compile, said in the option's terms.
fn check_jq(option: &str, code: &str) -> Result<(), RelayError> {
    jq::Program::compile(code).map(|_| ()).map_err(|e| {
        option_error(
            format!("{option}: the jq program does not compile: {e}"),
            "check it with `jq` on a sample payload, e.g. '{room: .room}'",
        )
    })
}

/// Raw lines have no name of their own: `auto` and a wildcard TO would publish under an empty
/// one.
fn refuse_raw_input_without_names(
    from: &Endpoint,
    to: &Endpoint,
    args: &RelayArgs,
    origins: &Origins,
) -> Result<(), RelayError> {
    let Some(names) = &to.naming.names else {
        return Ok(());
    };
    let named_by_source = match &to.built.name {
        None => true,
        Some((name, _)) => {
            name == names.every || name.ends_with(&format!("{}{}", names.separator, names.every))
        }
    };
    if from.raw_lines && args.subject.is_none() && named_by_source {
        return Err(at(
            origins,
            to.whole,
            "raw lines from standard input carry no subject to publish under".into(),
            Some(
                "name the topic or subject in TO (e.g. nats://host/replay), or give --subject"
                    .into(),
            ),
        ));
    }
    Ok(())
}

/// The prefix of a sink name ending in the multi-level wildcard (`out/#` → `out`, `#` → ``).
fn wildcard_prefix<'a>(name: &'a str, separator: char, every: &str) -> Option<&'a str> {
    if name == every {
        return Some("");
    }
    name.strip_suffix(every)?.strip_suffix(separator)
}

/// The rule for names a protocol publishes to, for the names this module turns into templates
/// (which the configuration's checks then no longer see as names): the protocol's own.
fn publish_rule(protocol: &str) -> Option<NameRule> {
    PROTOCOLS.iter().find(|d| d.name() == protocol)?.name_rule()
}

/// A literal in a template: as it is, or inside `{% raw %}` when it holds template syntax.
fn literal(text: &str) -> Result<String, Problem> {
    if !text.contains('{') {
        return Ok(text.to_string());
    }
    if text.contains("endraw") {
        return Err((
            "the name holds both `{` and `endraw`, which ferry cannot quote".into(),
            "name it with --subject".into(),
        ));
    }
    Ok(format!("{{% raw %}}{text}{{% endraw %}}"))
}

/// TO's name as the sink's target: none is `auto`; one ending in `#`/`>` maps FROM's wildcard
/// match under its prefix (see the module doc); any other is that name.
fn sink_name(
    from: &Endpoint,
    to: &Endpoint,
    origins: &Origins,
) -> Result<Option<Node>, RelayError> {
    let Some((name, pos)) = &to.built.name else {
        return Ok(None);
    };
    let fail = |(what, hint): Problem| at(origins, *pos, what, Some(hint));
    let rule = publish_rule(to.naming.protocol);
    let wildcard = (to.naming.names.as_ref())
        .and_then(|n| Some((n, wildcard_prefix(name, n.separator, n.every)?)));
    let Some((names, prefix)) = wildcard else {
        if name.contains('{')
            && let Some(rule) = rule
        {
            rule(name).map_err(fail)?;
        }
        return Ok(Some(text(*pos, &literal(name).map_err(fail)?)));
    };
    if prefix.contains(|c| names.wildcards.contains(c)) {
        return Err(fail((
            format!("a TO name can only end in a multi-level wildcard, with none before it: `{name}`"),
            "write e.g. mqtt://host/out/# or nats://host/iot.>: what FROM's wildcard matched goes under the prefix".into(),
        )));
    }
    if !prefix.is_empty()
        && let Some(rule) = rule
    {
        rule(prefix).map_err(fail)?;
    }
    // How many leading levels of a source name FROM's filter fixes: they are dropped.
    let fixed = match (&from.naming.names, &from.built.name) {
        (Some(n), Some((filter, _))) => filter
            .strip_suffix(n.every)
            .map_or(0, |p| p.split(n.separator).count() - 1),
        _ => 0,
    };
    let (separator, variable) = (names.separator, names.variable);
    let rest = if fixed == 0 {
        variable.to_string()
    } else {
        format!("{variable}[{fixed}:]")
    };
    let template = if prefix.is_empty() {
        format!("{{{{ {rest} | join('{separator}') }}}}")
    } else {
        // A loop, not `join`, so a message named by the prefix alone (`sensors` under
        // `sensors/#`) goes to the prefix alone, not to `iot.`.
        format!(
            "{}{{% for level in {rest} %}}{separator}{{{{ level }}}}{{% endfor %}}",
            literal(prefix).map_err(fail)?
        )
    };
    Ok(Some(text(*pos, &template)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::*;
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
        // The configuration writes the WebSocket URL without its scheme's default port.
        assert_eq!(m.ws_url.as_ref().map(|u| u.expose()), Some("wss://h/mqtt"));
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
        // The protocol said twice, by the scheme and the query.
        let c = relay("ws+nats://h:8080?protocol=nats&subject=a", "-");
        assert_eq!(nats_source(&c).subject, "a");

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

        let c = relay(
            "nats://h/orders.>?stream=ORDERS&consumer=relay&max_ack_pending=1&ack_wait=5s\
             &priority_group=orders&policy=pinned_client&pinned_ttl=30s",
            "-",
        );
        let js = nats_source(&c).jetstream.clone().unwrap();
        assert_eq!(
            (js.max_ack_pending, js.ack_wait),
            (1, Duration::from_secs(5))
        );
        let group = js.priority_group.unwrap();
        assert_eq!(group.name, "orders");
        assert_eq!(group.policy, PriorityPolicy::PinnedClient);
        assert_eq!(group.pinned_ttl, Duration::from_secs(30));
        let c = relay(
            "nats://h/orders.>?stream=ORDERS&consumer=relay&priority_group=g&policy=overflow&min_pending=500",
            "-",
        );
        let group = nats_source(&c).jetstream.clone().unwrap().priority_group;
        assert_eq!(group.unwrap().min_pending, Some(500));

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
        // Refused by the configuration's delivery check, in its words, at the option.
        assert!(
            e.contains("--delivery at-least-once: ")
                && e.contains("core NATS subscription `orders.>` on `from` has no redelivery"),
            "{e}"
        );
        assert!(e.contains("JetStream consumer"), "{e}");
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
            e.contains("--delivery at-least-once: ")
                && e.contains("the sink publishes to `to` at QoS 0"),
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
                "not a valid JetStream stream name",
            ),
            (
                "nats://h/x?policy=overflow",
                "-",
                "`policy` is a setting of a priority group",
            ),
            (
                "nats://h/x?priority_group=g",
                "-",
                "`priority_group` needs a JetStream consumer",
            ),
            ("-", "nats://h/x?priority_group=g", "applies to FROM"),
            (
                "nats://h/x?stream=S&consumer=C&priority_group=g&policy=sticky",
                "-",
                "not a valid priority `policy`",
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
    fn every_scheme_is_one_protocols_and_listed() {
        let schemes: Vec<&str> = FORMS
            .iter()
            .flat_map(|f| f.schemes.iter().copied())
            .collect();
        let unique: std::collections::BTreeSet<_> = schemes.iter().collect();
        assert_eq!(unique.len(), schemes.len(), "{schemes:?}");
        let forms = accepted_forms();
        for scheme in schemes {
            assert!(forms.contains(&format!("{scheme}://")), "{scheme}");
        }
    }

    /// Standard input/output and `stop_after` are the relay's: bridges.yaml may not name them.
    #[test]
    fn a_file_may_not_build_what_only_the_relay_builds() {
        let text = "connections:
  input: {stdio: {lines: raw}}
  core: {nats: {url: 'nats://h'}}
routes:
  - {name: r, from: {connection: core, subject: a}, to: {connection: core, subject: b}, stop_after: 3}
";
        let lookup = Lookup {
            var: &|_| None,
            file: &|_| Err(std::io::Error::other("no files")),
        };
        let e = crate::config::parse(text, "b.yaml", &lookup)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key `stdio` in a connection"), "{e}");
        assert!(e.contains("unknown key `stop_after` in a route"), "{e}");
    }

    #[test]
    fn a_relay_that_feeds_itself_over_mqtt_3_1_1_is_refused() {
        let a = args("mqtt://h/a/#?version=3.1.1", "mqtt://h/a/b?version=3.1.1");
        let e = refused(&a);
        assert!(e.contains("endless loop"), "{e}");
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
