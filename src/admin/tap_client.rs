//! `ferry tap ROUTE`: the client side of `GET /routes/{route}/tap`, printing what a route of
//! the running daemon sees, live.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;

use crate::config::Secret;

/// The longest payload `ferry tap` prints in its human form (`--json` prints it whole).
const MAX_SHOWN_CHARS: usize = 1000;

/// Where to find the daemon's admin listener.
#[derive(Clone, Debug)]
pub enum AdminAddress {
    /// `--admin URL` (`http://HOST:PORT`, `HOST:PORT` or a bare port on 127.0.0.1).
    Url(String),
    /// The `admin.listen` of this configuration file.
    Config(PathBuf),
}

/// What `ferry tap` was asked to do.
#[derive(Clone, Debug)]
pub struct TapOptions {
    /// The route to watch, by name.
    pub route: String,
    /// Exit after this many events (each `before`, `after`, `filtered` or `failed` line is
    /// one); `None` runs until interrupted.
    pub count: Option<u64>,
    /// Where the daemon's admin listener is.
    pub admin: AdminAddress,
    /// Print the NDJSON lines as the daemon sends them.
    pub json: bool,
    /// `--token-file`: where the admin token is; without it, the config's `admin.token`.
    pub token_file: Option<PathBuf>,
    /// `--ca`: the CA(s) to trust for an HTTPS admin listener, instead of the system's.
    pub ca: Option<PathBuf>,
}

/// Why `ferry tap` stopped early; [`TapError::exit_code`] says how it exits.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The configuration could not be read: its errors, as `ferry check` prints them.
    #[error("{0}")]
    Config(crate::config::ConfigErrors),
    /// Bad usage: no admin listener in the config, a bad `--admin`.
    #[error("{0}")]
    Usage(String),
    /// The daemon has no route of that name.
    #[error("the running ferry has no route `{route}`; its routes: {}", known.join(", "))]
    UnknownRoute {
        /// The route asked for.
        route: String,
        /// The routes the daemon has.
        known: Vec<String>,
    },
    /// The admin listener did not answer.
    #[error(
        "cannot reach ferry's admin listener at {url}: {reason}. Is `ferry run` running with the admin listener on (`admin: {{listen: 127.0.0.1:{port}}}` in its config)?",
        port = crate::config::DEFAULT_ADMIN_PORT
    )]
    Unreachable {
        /// The admin listener's URL tried.
        url: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The tap ended or broke before `--count` events.
    #[error("{0}")]
    Failed(String),
}

impl TapError {
    /// 2 for bad configuration or usage (a route that does not exist included), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            TapError::Config(_) | TapError::Usage(_) | TapError::UnknownRoute { .. } => 2,
            TapError::Unreachable { .. } | TapError::Failed(_) => 1,
        }
    }
}

/// The admin listener's base URL, from `--admin` or the config's `admin.listen` (an
/// unspecified address such as `0.0.0.0` is reached on loopback), and the config's token.
fn base_url(address: &AdminAddress) -> Result<(String, Option<Secret>), TapError> {
    match address {
        AdminAddress::Url(url) => {
            let url = url.trim_end_matches('/');
            let url = if url.contains("://") {
                url.to_string()
            } else if let Ok(port) = url.parse::<u16>() {
                format!("http://127.0.0.1:{port}")
            } else {
                format!("http://{url}")
            };
            Ok((url, None))
        }
        AdminAddress::Config(path) => {
            let config = crate::config::load(path).map_err(TapError::Config)?;
            let Some(admin) = config.admin else {
                return Err(TapError::Usage(format!(
                    "the admin listener is off in {}: add `admin: {{listen: 127.0.0.1:{}}}` (or `admin: {{}}`) and restart ferry, or pass --admin URL",
                    path.display(),
                    crate::config::DEFAULT_ADMIN_PORT
                )));
            };
            let mut addr: SocketAddr = admin.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let scheme = if admin.tls.is_some() { "https" } else { "http" };
            Ok((format!("{scheme}://{addr}"), admin.token))
        }
    }
}

/// The token `--token-file` names (its first line), else the config's.
fn token(options: &TapOptions, from_config: Option<Secret>) -> Result<Option<Secret>, TapError> {
    let Some(path) = &options.token_file else {
        return Ok(from_config);
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        TapError::Usage(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    Ok(Some(Secret::new(text.lines().next().unwrap_or("").trim())))
}

/// Taps `options.route` of the running daemon, printing each event to `out` until
/// `options.count` events were printed (or forever).
pub async fn tap(options: &TapOptions, out: &mut impl Write) -> Result<(), TapError> {
    crate::connectors::tls::install_crypto_provider();
    let (base, config_token) = base_url(&options.admin)?;
    let token = token(options, config_token)?;
    let mut url = url::Url::parse(&base)
        .map_err(|e| TapError::Usage(format!("`{base}` is not a URL: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| TapError::Usage(format!("`{base}` is not an http URL")))?
        .pop_if_empty()
        .extend(["routes", &options.route, "tap"]);
    let mut builder = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5));
    if let Some(ca) = &options.ca {
        let pem = std::fs::read(ca)
            .map_err(|e| TapError::Usage(format!("cannot read --ca {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            TapError::Usage(format!("--ca {}: not PEM certificates: {e}", ca.display()))
        })?;
        builder = builder.tls_certs_only(certs);
    }
    let client = builder
        .build()
        .map_err(|e| TapError::Failed(format!("cannot make an HTTP client: {e}")))?;
    let unreachable = |e: reqwest::Error| TapError::Unreachable {
        url: base.clone(),
        reason: error_chain(&e),
    };
    let get = |url: url::Url| {
        let request = client.get(url);
        match &token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    };
    let mut response = get(url).send().await.map_err(unreachable)?;
    match response.status() {
        reqwest::StatusCode::NOT_FOUND => {
            // The tap does not list the routes; /routes does, to whoever holds the token.
            let mut routes = url::Url::parse(&base).expect("parsed above");
            routes
                .path_segments_mut()
                .map_err(|_| TapError::Usage(format!("`{base}` is not an http URL")))?
                .pop_if_empty()
                .push("routes");
            let listed = match get(routes).send().await {
                Ok(r) if r.status().is_success() => {
                    let body = r.bytes().await.unwrap_or_default();
                    serde_json::from_slice(&body).unwrap_or_default()
                }
                _ => Value::Null,
            };
            let known = listed["routes"]
                .as_array()
                .map(|routes| {
                    routes
                        .iter()
                        .filter_map(|r| r["name"].as_str().map(escape_controls))
                        .collect()
                })
                .unwrap_or_default();
            return Err(TapError::UnknownRoute {
                route: options.route.clone(),
                known,
            });
        }
        reqwest::StatusCode::UNAUTHORIZED => {
            return Err(TapError::Usage(format!(
                "the admin listener at {base} {} the admin token: give it with --token-file FILE, or -c with the config that sets admin.token",
                if token.is_some() {
                    "refused"
                } else {
                    "asks for"
                }
            )));
        }
        reqwest::StatusCode::FORBIDDEN => {
            return Err(TapError::Usage(format!(
                "the running ferry at {base} has taps turned off: set `admin: {{taps: true}}` in its config and restart it"
            )));
        }
        _ => {}
    }
    if !response.status().is_success() {
        return Err(TapError::Failed(format!(
            "the admin listener at {base} answered {}",
            response.status()
        )));
    }
    eprintln!(
        "ferry: tapping route `{}` at {base} (Ctrl-C to stop)",
        options.route
    );
    let mut seen = 0u64;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if options.count.is_some_and(|count| seen >= count) {
            return Ok(());
        }
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                return Err(TapError::Failed(format!(
                    "the tap broke: {}",
                    error_chain(&e)
                )));
            }
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if options.count.is_some_and(|count| seen >= count) {
                break;
            }
            let event: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            if let Some(skipped) = event.get("skipped") {
                eprintln!("ferry: {skipped} event(s) skipped: this tap read too slowly");
                if !options.json {
                    continue;
                }
            } else {
                seen += 1;
            }
            let shown = if options.json {
                json_escape_controls(line)
            } else {
                human(&event)
            };
            let written = writeln!(out, "{shown}").and_then(|_| out.flush());
            if written.is_err() {
                // The reader went away (`ferry tap ... | head`): nothing left to do.
                return Ok(());
            }
        }
    }
    match options.count {
        Some(count) => Err(TapError::Failed(format!(
            "the daemon ended the tap after {seen} of {count} event(s) (the route stopped, or ferry is shutting down)"
        ))),
        None => {
            eprintln!(
                "ferry: the daemon ended the tap (the route stopped, or ferry is shutting down)"
            );
            Ok(())
        }
    }
}

/// An error with its sources, which is where reqwest says what really happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

/// One tap event as `ferry tap` prints it:
/// `before  sensors/kitchen  {"t":21.5}`, `after → nats  iot.sensors.kitchen  {...}`,
/// `filtered  SUBJECT  PAYLOAD`, `failed  SUBJECT  REASON`.
/// Every field is remote text: its control characters are escaped (see [`escape_controls`]).
fn human(event: &Value) -> String {
    let text = |key: &str| escape_controls(event[key].as_str().unwrap_or(""));
    let stage = text("stage");
    let subject = text("subject");
    let payload = match event["payload_base64"].as_bool() {
        Some(true) => format!("(binary, base64) {}", text("payload")),
        _ => text("payload"),
    };
    let payload = if payload.chars().count() > MAX_SHOWN_CHARS {
        let mut cut: String = payload.chars().take(MAX_SHOWN_CHARS).collect();
        cut.push('…');
        cut
    } else {
        payload
    };
    // The trace id last, so that grepping a tap for one message's trace finds each stage.
    let trace = match event["trace_id"].as_str() {
        Some(id) => format!("  trace={}", escape_controls(id)),
        None => String::new(),
    };
    match stage.as_str() {
        "after" => format!("after → {}  {subject}  {payload}{trace}", text("sink")),
        "failed" => format!("failed  {subject}  {}{trace}", text("reason")),
        _ => format!("{stage}  {subject}  {payload}{trace}"),
    }
}

/// `text` with every control character (C0 with ESC, DEL, C1) written as an escape, so that
/// what a route carries cannot move the cursor, retitle or recolour the operator's terminal,
/// or hide a line: `\n`, `\r`, `\t` as such, the rest as `\u{..}`. `\` itself stays.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A JSON line with DEL and the C1 controls (which JSON lets through raw inside strings) as
/// `\uXXXX`: the same JSON, nothing a terminal acts on.
fn json_escape_controls(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_print_as_the_readme_shows() {
        assert_eq!(
            human(
                &json!({"stage": "before", "subject": "sensors/kitchen", "payload": "{\"t\":21.5}"})
            ),
            "before  sensors/kitchen  {\"t\":21.5}"
        );
        assert_eq!(
            human(
                &json!({"stage": "after", "sink": "nats", "subject": "iot.sensors.kitchen", "payload": "a\nb"})
            ),
            "after → nats  iot.sensors.kitchen  a\\nb"
        );
        assert_eq!(
            human(
                &json!({"stage": "before", "subject": "s", "payload": "/wA=", "payload_base64": true})
            ),
            "before  s  (binary, base64) /wA="
        );
        assert_eq!(
            human(&json!({"stage": "failed", "subject": "s", "reason": "r", "trace_id": "4bf9"})),
            "failed  s  r  trace=4bf9"
        );
    }

    proptest::proptest! {
        /// Tap events carry remote subjects and payloads: any text prints without a panic, on
        /// one line, the payload cut to its limit.
        #[test]
        fn any_event_prints_on_one_line(
            stage in "(before|after|filtered|failed|\\PC*)",
            subject in "\\PC*",
            payload in "(\\PC|\n|\r){0,300}",
            reason in "\\PC*",
        ) {
            let line = human(&json!({
                "stage": stage, "subject": subject, "payload": payload, "reason": reason,
                "sink": "s",
            }));
            proptest::prop_assert!(!line.contains('\n') || subject.contains('\n') || reason.contains('\n'));
        }

        /// Whatever a route carries (any character, controls included) reaches the terminal
        /// with no control character at all, in every field `ferry tap` prints.
        #[test]
        fn no_control_character_reaches_the_terminal(
            stage in "(before|after|filtered|failed|\\PC*)",
            subject in "(\\PC|\\p{Cc}|\u{1b}\\[31m|\u{1b}\\]0;x\u{7}){0,20}",
            payload in "(\\PC|\\p{Cc}|\u{1b}\\[2J|\u{9b}){0,50}",
            reason in "(\\PC|\\p{Cc}|\u{1b}){0,20}",
            sink in "(\\PC|\\p{Cc}){0,10}",
        ) {
            let line = human(&json!({
                "stage": stage, "subject": subject, "payload": payload, "reason": reason,
                "sink": sink,
            }));
            proptest::prop_assert!(!line.chars().any(char::is_control), "{line:?}");
            let failed = human(&json!({"stage": "failed", "subject": subject, "reason": reason}));
            proptest::prop_assert!(!failed.chars().any(char::is_control), "{failed:?}");
        }
    }

    proptest::proptest! {
        /// `--json` lines stay the same JSON, with no control character left raw.
        #[test]
        fn json_lines_keep_their_meaning_without_controls(payload in "(\\PC|\\p{Cc}){0,40}") {
            let line = json!({"payload": payload}).to_string();
            let shown = json_escape_controls(&line);
            proptest::prop_assert!(!shown.chars().any(char::is_control));
            let back: Value = serde_json::from_str(&shown).unwrap();
            proptest::prop_assert_eq!(back["payload"].as_str(), Some(payload.as_str()));
        }
    }

    #[test]
    fn controls_are_written_as_escapes() {
        assert_eq!(
            escape_controls("a\u{1b}[31mb\n\u{7f}\u{9b}\t\u{0}é"),
            "a\\u{1b}[31mb\\n\\u{7f}\\u{9b}\\t\\u{0}é"
        );
    }

    #[test]
    fn the_admin_address_may_be_a_port_an_address_or_a_url() {
        let url = |s: &str| base_url(&AdminAddress::Url(s.into())).unwrap().0;
        assert_eq!(url("7439"), "http://127.0.0.1:7439");
        assert_eq!(url("10.0.0.5:7439"), "http://10.0.0.5:7439");
        assert_eq!(url("http://[::1]:7439/"), "http://[::1]:7439");
    }
}
