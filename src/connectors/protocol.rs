//! What a protocol is, said without connecting to anything: the facts about it that the
//! configuration checks, `ferry check`, the delivery guarantee and the loop analysis need.
//!
//! Each connector describes its own protocol in its folder (`connectors/<protocol>/protocol.rs`)
//! by implementing [`Descriptor`]; [`PROTOCOLS`] is the one list of them. Code that works over
//! every protocol asks a descriptor rather than matching on the protocol, so adding a protocol
//! does not mean visiting every such place.
//!
//! Pure: no I/O, only the typed configuration.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{
    ConnectionKind, Protocol, Secret, SinkSpec, SourceSpec, Tls, is_secret_query_key,
};

use super::{http, http_server, migratorydata, mqtt, nats, sse, sse_server, stdio};

/// Every protocol ferry speaks, one line each, in the order hints list them.
pub static PROTOCOLS: [&dyn Descriptor; 8] = [
    &mqtt::protocol::Mqtt,
    &nats::protocol::Nats,
    &sse::protocol::Sse,
    &http::protocol::Http,
    &sse_server::protocol::SseServer,
    &http_server::protocol::HttpServer,
    &migratorydata::protocol::MigratoryData,
    &stdio::protocol::Stdio,
];

/// The descriptor of `protocol`.
pub fn descriptor(protocol: Protocol) -> &'static dyn Descriptor {
    PROTOCOLS
        .iter()
        .copied()
        .find(|d| d.protocol() == protocol)
        .expect("every protocol is in PROTOCOLS")
}

/// `protocol.descriptor()`: the model's [`Protocol`] names no descriptor (it sits below
/// them), so the method comes with this trait.
pub trait Described {
    fn descriptor(self) -> &'static dyn Descriptor;
}

impl Described for Protocol {
    fn descriptor(self) -> &'static dyn Descriptor {
        descriptor(self)
    }
}

/// `source.names()`, for the same reason as [`Described`].
pub trait Subscribes {
    /// The names it subscribes to, as the user wrote them (filters, a subject, event types).
    fn names(&self) -> Vec<String>;
}

impl Subscribes for SourceSpec {
    fn names(&self) -> Vec<String> {
        descriptor(self.protocol()).source_names(self)
    }
}

/// A problem with a name: (what is wrong, hint).
pub type Problem = (String, String);

/// A rule a name (topic, subject, event type) must follow on some protocol.
pub type NameRule = fn(&str) -> Result<(), Problem>;

/// A rule a header (name, value) must follow on some protocol.
pub type HeaderRule = fn(&str, &str) -> Result<(), Problem>;

/// Which ends of a route a protocol can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directions {
    /// A route can read from it.
    pub source: bool,
    /// A route can write to it.
    pub sink: bool,
}

/// One end of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Source,
    Sink,
}

/// Why a side of a route cannot be at-least-once, and what would fix it.
#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    pub what: String,
    pub fix: String,
}

impl Limit {
    pub fn new(what: String, fix: &str) -> Limit {
        Limit {
            what,
            fix: fix.to_string(),
        }
    }
}

/// What one side of a route (its source, or one sink) does for delivery.
#[derive(Clone, Debug, PartialEq)]
pub enum Keeps {
    /// It keeps at-least-once: how it confirms, one line for `ferry check`.
    AtLeastOnce(String),
    /// It cannot.
    AtMostOnce(Limit),
}

/// How a protocol's names nest and where they take wildcards, for brokers whose sources
/// subscribe by pattern. The loop analysis reads names through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wildcards {
    /// Between levels: `/` (MQTT), `.` (NATS).
    pub separator: char,
    /// One whole level: `+`, `*`.
    pub one_level: &'static str,
    /// The last level and any after it: `#`, `>`.
    pub rest: &'static str,
    /// How many levels `rest` stands for at least: MQTT `a/#` also matches `a` (0), NATS
    /// `a.>` does not (1).
    pub rest_at_least: usize,
    /// Filters that start with a wildcard do not match names whose first level starts with
    /// `$` (MQTT 4.7.2).
    pub hides_dollar_names: bool,
}

/// A credential a connection sends, and where it sends it.
pub struct Credentials<'a> {
    /// What it is, as the warning says it: `a password`, `a token`, `credentials`.
    pub what: &'static str,
    /// The URLs it goes to.
    pub urls: Vec<&'a str>,
}

/// What `ferry check` says about a connection beyond the connection itself.
pub struct Surroundings<'a> {
    /// Where ferry keeps what must survive a restart.
    pub state_dir: &'a Path,
    /// The admin listener's address, when there is one.
    pub admin: Option<SocketAddr>,
}

/// What ferry knows about one protocol. Methods that take a connection, source or sink are
/// only given this protocol's own; given another's, they answer as for nothing.
pub trait Descriptor: Sync {
    fn protocol(&self) -> Protocol;

    /// Its name as written in the configuration (the key of a connection: `mqtt:`).
    fn name(&self) -> &'static str {
        self.protocol().name()
    }

    /// Which ends of a route it can be.
    fn directions(&self) -> Directions;

    /// Its name after an article, as messages call an end of a route on it: `an MQTT` (an
    /// MQTT source), `an HTTP` (an HTTP sink). `None`: "a source or sink".
    fn with_article(&self) -> Option<&'static str> {
        None
    }

    /// Whether a `bridges.yaml` can name it (`ferry relay` alone builds standard input and
    /// output).
    fn in_config_files(&self) -> bool {
        true
    }

    /// Why connection `connection` cannot be `end` of a route: (what is wrong, hint); `None`
    /// when it can.
    fn refusal(&self, connection: &str, end: End) -> Option<Problem> {
        match end {
            End::Source if !self.directions().source => Some((
                format!(
                    "connection `{connection}` is {}, which ferry writes to: it cannot be a source",
                    self.name()
                ),
                // The first name is mqtt, hence `an`.
                format!("read from an {} connection", or_list(End::Source)),
            )),
            End::Sink if !self.directions().sink => Some((
                format!(
                    "connection `{connection}` is {}, which ferry reads: it cannot be a sink",
                    self.name()
                ),
                format!("write to an {} connection", or_list(End::Sink)),
            )),
            _ => None,
        }
    }

    /// Whether a connection of it serves on the admin listener rather than a socket of its
    /// own: it needs the listener on, and a reload cannot move it to a new one.
    fn serves_on_admin_listener(&self) -> bool {
        false
    }

    /// Whether the name of a message read from it is its SSE event type, which templates also
    /// see as `event`.
    fn names_are_event_types(&self) -> bool {
        false
    }

    /// The rule a name published here follows (the topic, subject or event type); `None`:
    /// any name is taken (a URL is the sink's to refuse, a line takes any subject).
    fn name_rule(&self) -> Option<NameRule> {
        None
    }

    /// What a sink's name is called in a reason: `topic`, `subject`, `URL`, `event type`.
    fn noun(&self) -> &'static str {
        "subject"
    }

    /// The rule headers follow, where it has one (MQTT 5 user properties take any UTF-8; a
    /// protocol without headers does not send them).
    fn header_rule(&self) -> Option<HeaderRule> {
        None
    }

    /// Its names' wildcards, for a broker a route can publish to and another read back from:
    /// the loop analysis and the run-time loop marker cover these protocols only.
    fn wildcards(&self) -> Option<Wildcards> {
        None
    }

    /// The servers a connection reaches, as (host, port): two connections of one protocol
    /// that share one reach the same server (the same broker, for the loop analysis). Empty
    /// for a connection that cannot close a loop.
    fn servers(&self, _connection: &ConnectionKind) -> Vec<(String, u16)> {
        Vec::new()
    }

    /// Whether a message published through this connection carries ferry's loop marker.
    fn carries_marker(&self, _connection: &ConnectionKind) -> bool {
        false
    }

    /// Whether a source on this connection can ask the server not to send back what the
    /// connection itself published (MQTT 5 `no_local`).
    fn has_no_local(&self, _connection: &ConnectionKind) -> bool {
        false
    }

    /// `source` asking the server not to send back what its own connection publishes, for a
    /// source on a connection that [`has_no_local`](Descriptor::has_no_local).
    fn with_no_local(&self, source: &SourceSpec) -> SourceSpec {
        source.clone()
    }

    /// The names a source subscribes to, as the user wrote them (filters, a subject, event
    /// types).
    fn source_names(&self, _source: &SourceSpec) -> Vec<String> {
        Vec::new()
    }

    /// For protocols without wildcards: whether a source takes a message named `name`.
    fn takes(&self, source: &SourceSpec, name: &str) -> bool {
        self.source_names(source).iter().any(|n| n == name)
    }

    /// What a source on connection `from` (`connection`, when it is defined) does for
    /// delivery; `None`: nothing to say.
    fn source_delivery(
        &self,
        _from: &str,
        _source: &SourceSpec,
        _connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        None
    }

    /// What a sink on connection `to` does for delivery; `role` is `sink` or
    /// `dead-letter sink`.
    fn sink_delivery(
        &self,
        _role: &str,
        _to: &str,
        _sink: &SinkSpec,
        _connection: Option<&ConnectionKind>,
    ) -> Option<Keeps> {
        None
    }

    /// The connection's TLS settings, for a protocol that connects to a server: `ferry check`
    /// and the log warn when they turn certificate verification off.
    fn tls<'a>(&self, _connection: &'a ConnectionKind) -> Option<&'a Tls> {
        None
    }

    /// The credential the connection sends and the URLs it sends it to, unless its own
    /// settings encrypt it whatever a URL's scheme says (a NATS `tls:` block): `ferry check`
    /// and the log warn about the URLs among these that are plaintext to another host.
    fn credentials<'a>(&self, _connection: &'a ConnectionKind) -> Option<Credentials<'a>> {
        None
    }

    /// `ferry check`'s account of a connection, after `connection NAME: `. No secret in it.
    fn explain_connection(&self, connection: &ConnectionKind, around: &Surroundings) -> String;

    /// `ferry check`'s account of a source on `connection`.
    fn explain_source(&self, _connection: &str, _source: &SourceSpec) -> String {
        String::new()
    }

    /// `ferry check`'s account of a sink on `connection` whose name is `target` (`auto` or
    /// the template).
    fn explain_sink(&self, _connection: &str, _target: &str, _sink: &SinkSpec) -> String {
        String::new()
    }
}

/// A URL for `ferry check`: without its query string, which often carries an API key, nor the
/// password of `https://user:pw@host`.
pub fn without_query(url: &str) -> String {
    let url = crate::config::redact_url(url);
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

/// Whether a request to `url` with `headers` carries a credential: in a header named like one,
/// or in the URL's user, password or query.
pub fn carries_credentials(url: &str, headers: &[(String, Secret)]) -> bool {
    headers.iter().any(|(name, _)| is_secret_header(name)) || url_carries_credentials(url)
}

/// A header whose value is a credential by its name (`Authorization`, `Cookie`, `X-Api-Key`,
/// `X-Auth-Token`, ...).
pub fn is_secret_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["authorization", "proxy-authorization", "cookie"].contains(&lower.as_str())
        || lower.contains("auth")
        || is_secret_query_key(&lower)
}

fn url_carries_credentials(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) => {
            !u.username().is_empty()
                || u.password().is_some()
                || u.query_pairs().any(|(k, _)| is_secret_query_key(&k))
        }
        Err(_) => crate::config::redact_url(url) != url,
    }
}

/// The names of the protocols a file can use at `end`: `mqtt, nats, sse or migratorydata`.
fn or_list(end: End) -> String {
    let names: Vec<&str> = PROTOCOLS
        .iter()
        .filter(|d| d.in_config_files())
        .filter(|d| match end {
            End::Source => d.directions().source,
            End::Sink => d.directions().sink,
        })
        .map(|d| d.name())
        .collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_is_listed_once() {
        for d in PROTOCOLS {
            assert_eq!(descriptor(d.protocol()).name(), d.name());
        }
        let mut names: Vec<&str> = PROTOCOLS.iter().map(|d| d.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PROTOCOLS.len());
    }

    #[test]
    fn refusals_name_what_can_serve() {
        let http = descriptor(Protocol::Http);
        let (what, hint) = http.refusal("hook", End::Source).unwrap();
        assert_eq!(
            what,
            "connection `hook` is http, which ferry writes to: it cannot be a source"
        );
        assert_eq!(
            hint,
            "read from an mqtt, nats, sse, http_server or migratorydata connection"
        );
        assert!(http.refusal("hook", End::Sink).is_none());
    }

    #[test]
    fn credentials_by_header_name_and_url() {
        assert!(is_secret_header("X-Api-Key"));
        assert!(is_secret_header("Authorization"));
        assert!(is_secret_header("cookie"));
        assert!(!is_secret_header("Content-Type"));
        assert!(carries_credentials("http://u:pw@h/x", &[]));
        assert!(carries_credentials("http://h/x?api_key=k", &[]));
        assert!(carries_credentials(
            "http://h/x",
            &[("Authorization".into(), Secret::new("Bearer x"))]
        ));
        assert!(!carries_credentials("http://h/x?page=2", &[]));
    }
}
