//! An endpoint URL of `ferry relay` (`mqtt://user@host/sensors/#?qos=1`), cut into the parts
//! every protocol's URL form reads, and the pieces of configuration document those forms build
//! from it. What each scheme means and which query keys it takes is the protocol's own
//! (`connectors/<protocol>/url.rs`); what is here is shared by all of them: cutting and
//! percent-decoding, the query keys taken one by one, where `--user` and the password go, how
//! a URL is shown (passwords as `***`), and the positions that tie each value of the built
//! document back to the argument it came from, so the configuration's own checks can speak in
//! terms of what the user typed.

use percent_encoding::percent_decode_str;

use super::diagnostics::did_you_mean;
use super::yaml::{Key, Node, Pos, Value};

/// FROM or TO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    From,
    To,
}

impl Side {
    /// How messages name it: `FROM`, `TO`.
    pub fn label(self) -> &'static str {
        match self {
            Side::From => "FROM",
            Side::To => "TO",
        }
    }

    /// Its connection's name (`from`, `to`), in logs and metrics.
    pub fn connection(self) -> &'static str {
        match self {
            Side::From => "from",
            Side::To => "to",
        }
    }
}

/// What is wrong, and what would be right.
pub type Problem = (String, String);

/// What a protocol's endpoints are in a route, for the relay's TO names.
pub struct Naming {
    /// The connection's protocol key in bridges.yaml (`mqtt`).
    pub protocol: &'static str,
    /// The sink's key saying where a message goes (`topic`, `url`).
    pub target: &'static str,
    /// How names are written, for protocols with wildcards.
    pub names: Option<Names>,
}

/// How a protocol writes names: levels, wildcards, the template variable holding one.
pub struct Names {
    /// Between levels: `/`, `.`.
    pub separator: char,
    /// The multi-level wildcard, last: `#`, `>`.
    pub every: &'static str,
    /// Every wildcard character: `+#`, `*>`.
    pub wildcards: &'static str,
    /// The template variable holding a message's name as levels: `topic`, `subject`.
    pub variable: &'static str,
}

/// One protocol's URL form: its schemes, and what an endpoint URL becomes.
pub struct UrlForm {
    pub naming: Naming,
    /// The schemes it reads (`ws://...?protocol=mqtt` arrives as `ws+mqtt`).
    pub schemes: &'static [&'static str],
    /// Its lines in `ferry relay`'s accepted forms: the URLs, then the query keys.
    pub usage: &'static [&'static str],
    pub keys: Option<&'static str>,
    pub read: fn(&EndpointUrl, Query, &Given, &mut EndpointOrigins) -> Result<Built, Problem>,
}

/// What the relay's options and its other URL decide for one endpoint.
#[derive(Clone, Debug)]
pub struct Given {
    pub side: Side,
    /// `--delivery at-least-once`.
    pub at_least_once: bool,
    /// `--qos`.
    pub qos: Option<u8>,
    /// Its user and password, by [`credentials`].
    pub user: Option<String>,
    pub password: Option<String>,
    /// The relay's process id, which keeps the client ids of two relays apart.
    pub instance: u32,
    /// The machine's host name, which keeps the persistent sessions of the instances of a
    /// shared subscription apart.
    pub machine: String,
}

/// An endpoint as configuration: its connection, and the keys of the route's source or sink.
#[derive(Debug)]
pub struct Built {
    /// The connection's settings, under its protocol's key.
    pub connection: Node,
    /// The source's or sink's keys besides `connection` (and, as TO, the target).
    pub keys: Vec<(&'static str, Node)>,
    /// The topic or subject the URL names, decoded, and where it came from.
    pub name: Option<(String, Pos)>,
}

/// A URL cut into the parts the relay reads, before any protocol is decided. Cut by hand
/// rather than by `url::Url`, because `#` belongs to the topic, not to a fragment.
#[derive(Debug)]
pub struct EndpointUrl {
    /// Lower case.
    pub scheme: String,
    /// `host[:port]`, without credentials.
    pub host_port: String,
    pub host: String,
    pub port: Option<u16>,
    /// Percent-decoded; `None` when empty.
    pub user: Option<String>,
    /// Percent-decoded.
    pub password: Option<String>,
    /// The path after the authority, raw (still percent-encoded), with its leading `/`.
    pub path: String,
    /// The query as written (without `?`), for URLs that pass it on (HTTP, SSE).
    pub query: String,
}

/// Percent-decodes `s` as UTF-8 (`+` stays `+`: it is an MQTT wildcard, not a space).
pub fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "a percent-escape does not decode to UTF-8 text".to_string())
}

/// Cuts `text` into its parts; the error says what is wrong (without the password).
pub fn split(text: &str) -> Result<EndpointUrl, String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err("not a URL (no `://`), and not `-`".into());
    };
    let scheme = scheme.to_ascii_lowercase();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
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
    Ok(EndpointUrl {
        scheme,
        host_port: host_port.to_string(),
        host,
        port: parsed.port(),
        user: user.filter(|u| !u.is_empty()),
        password,
        path: path.to_string(),
        query: query.to_string(),
    })
}

impl EndpointUrl {
    /// The query's keys and values, percent-decoded, to be taken one by one.
    pub fn query_keys(&self) -> Result<Query, String> {
        let mut pairs = Vec::new();
        for pair in self.query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((decode(key)?, decode(value)?));
        }
        Ok(Query { pairs })
    }

    /// The decoded name in the path (without its leading `/`); `None` when empty.
    pub fn path_name(&self) -> Result<Option<String>, String> {
        let name = decode(self.path.strip_prefix('/').unwrap_or(&self.path))?;
        Ok((!name.is_empty()).then_some(name))
    }

    /// The topic (`key` = "topic") or subject of an MQTT or NATS URL: the path, or over
    /// WebSocket (whose path is the WebSocket's) the `?topic=`/`?subject=` key, which the
    /// others also take when the path is empty.
    pub fn name(&self, query: &mut Query, key: &str, ws: bool) -> Result<Option<String>, Problem> {
        let from_query = query.one(key)?.filter(|n| !n.is_empty());
        if ws {
            return Ok(from_query);
        }
        let from_path = self
            .path_name()
            .map_err(|e| (e, "percent-encode as UTF-8".to_string()))?;
        match (from_path, from_query) {
            (Some(_), Some(_)) => Err((
                format!("the {key} is both in the path and in `?{key}=`"),
                format!("keep one: the path is the {key}"),
            )),
            (path, query) => Ok(path.or(query)),
        }
    }

    /// The http(s):// URL without credentials, with `query` (as written).
    pub fn http_url(&self, tls: bool, query: &str) -> String {
        let scheme = if tls { "https" } else { "http" };
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{scheme}://{}{path}{query}", self.host_port)
    }
}

/// The query keys of one URL, taken one by one; what is left over is unknown.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// The value of `key`; an error when it is given twice.
    pub fn one(&mut self, key: &str) -> Result<Option<String>, Problem> {
        let mut values = self.all(key);
        match values.len() {
            0 => Ok(None),
            1 => Ok(values.pop()),
            _ => Err((format!("`{key}` is given twice"), "give it once".into())),
        }
    }

    /// Every value of `key`, in order.
    pub fn all(&mut self, key: &str) -> Vec<String> {
        let (taken, rest) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|(k, _)| k == key);
        self.pairs = rest;
        taken.into_iter().map(|(_, v)| v).collect()
    }

    /// An error for the first key nobody took, with a did-you-mean among `known`.
    pub fn finish(self, known: &[&str]) -> Result<(), Problem> {
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

/// The user and password one endpoint authenticates with. `user:password@` in its URL is its
/// own. `--user` and the password (`--password-file` or `FERRY_PASSWORD`) fill in where the URL
/// has none: a URL with a user but no password takes the password; a URL without credentials
/// takes `--user` and the password, but the password only goes there when `--user` is given or
/// no URL of the relay names a user (`any_user`). So naming the user in one side's URL keeps
/// the password to that side.
pub fn credentials(
    url: &EndpointUrl,
    user: Option<&str>,
    password: Option<&str>,
    any_user: bool,
) -> (Option<String>, Option<String>) {
    let password = password.map(str::to_string);
    match (&url.user, &url.password) {
        (Some(own), Some(own_password)) => (Some(own.clone()), Some(own_password.clone())),
        (Some(own), None) => (Some(own.clone()), password),
        (None, _) => {
            let password = (user.is_some() || !any_user).then_some(password).flatten();
            (user.map(str::to_string), password)
        }
    }
}

/// `Basic ...` for an `Authorization` header, when there is a user.
pub fn basic_auth(user: Option<&str>, password: Option<&str>) -> Option<String> {
    use base64::Engine as _;
    let pair = format!("{}:{}", user?, password.unwrap_or(""));
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
}

/// A URL as it may be shown: credentials replaced by `***` (a password, a user alone, which on
/// NATS is a token, and secret-looking query values), even when the URL does not parse.
pub fn shown(text: &str) -> String {
    if !text.contains("://") {
        // Not a URL at all; still hide anything that looks like credentials.
        return match text.rfind('@') {
            Some(at) => format!("***{}", &text[at..]),
            None => text.to_string(),
        };
    }
    super::redact_url(text)
}

/// Where a value of a built document came from: `FROM mqtt://h/x: topic`, `--transform`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub what: String,
    /// Whether it is FROM or TO (so the accepted forms are worth showing with an error).
    pub endpoint: bool,
}

/// The origins of a built document's values, each behind a position of its own: line 1,
/// column N for the Nth, so the errors the configuration's checks sort by position come in the
/// order the origins were made.
#[derive(Debug, Default)]
pub struct Origins(Vec<Origin>);

impl Origins {
    /// A position standing for `what`.
    pub fn mark(&mut self, what: impl Into<String>, endpoint: bool) -> Pos {
        self.0.push(Origin {
            what: what.into(),
            endpoint,
        });
        Pos {
            line: 1,
            col: self.0.len() as u64,
        }
    }

    /// What `pos` stands for.
    pub fn of(&self, pos: Pos) -> Option<&Origin> {
        let index = usize::try_from(pos.col).ok()?.checked_sub(1)?;
        self.0.get(index).filter(|_| pos.line == 1)
    }
}

/// Positions for the values taken from one endpoint.
pub struct EndpointOrigins<'a> {
    origins: &'a mut Origins,
    /// `FROM mqtt://h/x` (the URL shown).
    label: String,
    whole: Pos,
}

impl<'a> EndpointOrigins<'a> {
    pub fn new(origins: &'a mut Origins, side: Side, shown: &str) -> EndpointOrigins<'a> {
        let label = format!("{} {shown}", side.label());
        let whole = origins.mark(label.clone(), true);
        EndpointOrigins {
            origins,
            label,
            whole,
        }
    }

    /// The endpoint as a whole, for what it implies rather than says.
    pub fn whole(&self) -> Pos {
        self.whole
    }

    /// One part of it: `topic`, `` `event` ``, a query key.
    pub fn part(&mut self, part: &str) -> Pos {
        self.origins.mark(format!("{}: {part}", self.label), true)
    }
}

/// A string of the built document, as the user meant it: `$` is doubled, since the
/// configuration reads `${...}` in strings and `$$` as `$`.
pub fn text(pos: Pos, s: &str) -> Node {
    node(pos, Value::Str(s.replace('$', "$$")))
}

/// A boolean of the built document.
pub fn flag(pos: Pos, b: bool) -> Node {
    node(pos, Value::Bool(b))
}

/// A mapping of the built document, its keys at `pos` too.
pub fn map<K: Into<String>>(pos: Pos, entries: impl IntoIterator<Item = (K, Node)>) -> Node {
    let entries = entries
        .into_iter()
        .map(|(name, value)| {
            let key = Key {
                name: name.into(),
                pos: value.pos,
            };
            (key, value)
        })
        .collect();
    node(pos, Value::Map(entries))
}

/// A list of the built document.
pub fn list(pos: Pos, items: Vec<Node>) -> Node {
    node(pos, Value::Seq(items))
}

fn node(pos: Pos, value: Value) -> Node {
    Node { value, pos }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Percent-encodes every byte outside unreserved URL characters.
    fn encode(s: &str) -> String {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn cuts_a_url_into_its_parts() {
        let url = split("MQTT://u:p%40ss@broker:1884/$SYS/#?qos=1&x").unwrap();
        assert_eq!(url.scheme, "mqtt");
        assert_eq!((url.host.as_str(), url.port), ("broker", Some(1884)));
        assert_eq!(url.host_port, "broker:1884");
        assert_eq!(url.user.as_deref(), Some("u"));
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        assert_eq!(url.path, "/$SYS/#");
        assert_eq!(url.path_name().unwrap().as_deref(), Some("$SYS/#"));
        let mut query = url.query_keys().unwrap();
        assert_eq!(query.one("qos").unwrap().as_deref(), Some("1"));
        assert_eq!(query.all("x"), [""]);
        query.finish(&[]).unwrap();

        assert_eq!(split("h").unwrap_err(), "not a URL (no `://`), and not `-`");
        assert!(split("mqtt://h:0/x").unwrap_err().contains("port"));
        assert!(split("mqtt:///x").unwrap_err().contains("no host"));
        assert!(split("mqtt://%ff@h/x").unwrap_err().contains("UTF-8"));
        let url = split("mqtt://[::1]:1883").unwrap();
        assert_eq!((url.host.as_str(), url.path.as_str()), ("[::1]", ""));
    }

    #[test]
    fn credentials_fill_in_only_where_meant() {
        let url = |s: &str| split(s).unwrap();
        let both = credentials(&url("mqtt://a:b@h"), Some("u"), Some("pw"), true);
        assert_eq!(both, (Some("a".into()), Some("b".into())));
        let user = credentials(&url("mqtt://a@h"), None, Some("pw"), true);
        assert_eq!(user, (Some("a".into()), Some("pw".into())));
        // The other URL names a user: the password stays there.
        let none = credentials(&url("mqtt://h"), None, Some("pw"), true);
        assert_eq!(none, (None, None));
        let none = credentials(&url("mqtt://h"), None, Some("pw"), false);
        assert_eq!(none, (None, Some("pw".into())));
        let given = credentials(&url("mqtt://h"), Some("u"), Some("pw"), true);
        assert_eq!(given, (Some("u".into()), Some("pw".into())));
        assert_eq!(
            basic_auth(Some("me"), Some("pw")).unwrap(),
            "Basic bWU6cHc="
        );
        assert_eq!(basic_auth(None, Some("pw")), None);
    }

    #[test]
    fn origins_come_back_from_positions() {
        let mut origins = Origins::default();
        let mut from = EndpointOrigins::new(&mut origins, Side::From, "mqtt://h/x");
        let whole = from.whole();
        let topic = from.part("topic");
        let option = origins.mark("--transform", false);
        assert_eq!(origins.of(whole).unwrap().what, "FROM mqtt://h/x");
        assert_eq!(origins.of(topic).unwrap().what, "FROM mqtt://h/x: topic");
        assert!(!origins.of(option).unwrap().endpoint);
        assert!(whole.col < topic.col && topic.col < option.col);
        assert_eq!(origins.of(Pos { line: 1, col: 0 }), None);
        assert_eq!(origins.of(Pos { line: 2, col: 1 }), None);
    }

    proptest! {
        /// Any text written percent-encoded in the path, a query value and the userinfo comes
        /// back decoded, whole, and splitting never panics on what a shell may pass.
        #[test]
        fn any_text_survives_percent_encoding(
            name in any::<String>(),
            value in any::<String>(),
            user in any::<String>(),
            password in any::<String>(),
        ) {
            let text = format!(
                "nats://{}:{}@host:4222/{}?key={}",
                encode(&user), encode(&password), encode(&name), encode(&value)
            );
            let url = split(&text).unwrap();
            prop_assert_eq!(url.host.as_str(), "host");
            prop_assert_eq!(url.port, Some(4222));
            prop_assert_eq!(url.user.clone(), (!user.is_empty()).then_some(user));
            prop_assert_eq!(url.password.clone(), Some(password));
            prop_assert_eq!(url.path_name().unwrap(), (!name.is_empty()).then_some(name));
            let mut query = url.query_keys().unwrap();
            prop_assert_eq!(query.one("key").unwrap(), Some(value));
            prop_assert!(query.finish(&[]).is_ok());
        }

        #[test]
        fn splitting_any_text_never_panics(text in any::<String>()) {
            if let Ok(url) = split(&text) {
                let _ = url.query_keys();
                let _ = url.path_name();
                prop_assert!(!url.host.is_empty());
            }
            let _ = shown(&text);
        }

        /// Whatever the URL holds, the password never shows.
        #[test]
        fn a_password_never_shows(
            user in "[a-z]{1,8}",
            password in "[a-zA-Z0-9]{6,12}",
            rest in any::<String>(),
        ) {
            let text = format!("mqtt://{user}:{password}@{rest}");
            prop_assume!(!user.contains(&password) && !rest.contains(&password));
            prop_assert!(!shown(&text).contains(&password));
        }

        /// The configuration reads back exactly the string the built document was given,
        /// `${...}` and all.
        #[test]
        fn text_reads_back_as_written(s in any::<String>()) {
            let Value::Str(written) = text(Pos::default(), &s).value else {
                panic!("a string");
            };
            let lookup = super::super::Lookup {
                var: &|_| Some("looked up".into()),
                file: &|_| Ok("read".into()),
            };
            prop_assert_eq!(super::super::interpolate::interpolate(&written, &lookup), Ok(s));
        }
    }
}
