//! `ferry tap ROUTE`: the client side of `GET /routes/{route}/tap`, printing what a route of
//! the running daemon sees, live.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;

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
/// unspecified address such as `0.0.0.0` is reached on loopback).
fn base_url(address: &AdminAddress) -> Result<String, TapError> {
    match address {
        AdminAddress::Url(url) => {
            let url = url.trim_end_matches('/');
            if url.contains("://") {
                Ok(url.to_string())
            } else if let Ok(port) = url.parse::<u16>() {
                Ok(format!("http://127.0.0.1:{port}"))
            } else {
                Ok(format!("http://{url}"))
            }
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
            Ok(format!("http://{addr}"))
        }
    }
}

/// Taps `options.route` of the running daemon, printing each event to `out` until
/// `options.count` events were printed (or forever).
pub async fn tap(options: &TapOptions, out: &mut impl Write) -> Result<(), TapError> {
    crate::connectors::tls::install_crypto_provider();
    let base = base_url(&options.admin)?;
    let mut url = url::Url::parse(&base)
        .map_err(|e| TapError::Usage(format!("`{base}` is not a URL: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| TapError::Usage(format!("`{base}` is not an http URL")))?
        .pop_if_empty()
        .extend(["routes", &options.route, "tap"]);
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| TapError::Failed(format!("cannot make an HTTP client: {e}")))?;
    let unreachable = |e: reqwest::Error| TapError::Unreachable {
        url: base.clone(),
        reason: error_chain(&e),
    };
    let mut response = client.get(url).send().await.map_err(unreachable)?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        let body = response.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let known = body["routes"]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        return Err(TapError::UnknownRoute {
            route: options.route.clone(),
            known,
        });
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
                line.to_string()
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
fn human(event: &Value) -> String {
    let text = |key: &str| event[key].as_str().unwrap_or("").to_string();
    let stage = text("stage");
    let subject = text("subject");
    let payload = match event["payload_base64"].as_bool() {
        Some(true) => format!("(binary, base64) {}", text("payload")),
        _ => text("payload").replace('\n', "\\n").replace('\r', "\\r"),
    };
    let payload = if payload.chars().count() > MAX_SHOWN_CHARS {
        let mut cut: String = payload.chars().take(MAX_SHOWN_CHARS).collect();
        cut.push('…');
        cut
    } else {
        payload
    };
    match stage.as_str() {
        "after" => format!("after → {}  {subject}  {payload}", text("sink")),
        "failed" => format!("failed  {subject}  {}", text("reason")),
        _ => format!("{stage}  {subject}  {payload}"),
    }
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
    }

    #[test]
    fn the_admin_address_may_be_a_port_an_address_or_a_url() {
        let url = |s: &str| base_url(&AdminAddress::Url(s.into())).unwrap();
        assert_eq!(url("7439"), "http://127.0.0.1:7439");
        assert_eq!(url("10.0.0.5:7439"), "http://10.0.0.5:7439");
        assert_eq!(url("http://[::1]:7439/"), "http://[::1]:7439");
    }
}
