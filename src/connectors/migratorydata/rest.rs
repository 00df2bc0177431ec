//! MigratoryData's REST API as its public documentation describes it (enabled on the server by
//! `Rest.Enable = true`):
//!
//! - produce: `POST /rest/produce?token=T&subject=/a/b[&closure=C&retained=true|false&qos=standard|guaranteed]`,
//!   the body is the content; the answer is `{"subject", "closure", "status"}` with status
//!   `OK`, `FAILED`, `DENY` or `MESSAGE_SIZE_LIMIT_EXCEEDED`;
//! - consume: `GET /rest/consume?token=T&subject=/a/b[&history=N | &epoch=E&seq=S]`; the answer is
//!   `{"subject", "messages": [{"message_type", "content", "closure", "retained", "compressed",
//!   "epoch", "seq"}]}`, `message_type` one of `SNAPSHOT`, `HISTORICAL`, `RECOVERED`.
//!
//! The URLs built here carry the token in their query: they are never logged or put in an
//! error (see [`super::super::http_client::describe`], which drops reqwest's URL).

use serde::Deserialize;
use url::Url;

use crate::config::MigratoryDataQos;

/// The answer to a produce.
#[derive(Debug, Deserialize)]
pub struct ProduceAnswer {
    #[serde(default)]
    pub closure: Option<String>,
    pub status: String,
}

/// The answer to a consume.
#[derive(Debug, Deserialize)]
pub struct ConsumeAnswer {
    #[serde(default)]
    pub messages: Vec<ConsumedMessage>,
}

/// One message of a consume answer. Fields the documentation lists but a server left out take
/// their empty value.
#[derive(Debug, Deserialize)]
pub struct ConsumedMessage {
    #[serde(default)]
    pub message_type: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub closure: Option<String>,
    #[serde(default)]
    pub retained: bool,
    #[serde(default)]
    pub compressed: bool,
    pub epoch: u64,
    pub seq: u64,
}

/// Where a subject's reading stands: the epoch and sequence number of the last message
/// received. Saved as `E:S` in the cursor file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: u64,
    pub seq: u64,
}

impl Cursor {
    /// `E:S`, as saved.
    pub fn to_text(self) -> String {
        format!("{}:{}", self.epoch, self.seq)
    }

    /// The cursor saved as `E:S`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (epoch, seq) = text.split_once(':')?;
        Some(Cursor {
            epoch: epoch.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// Whether a message at (`epoch`, `seq`) was already received: same epoch, not after the
    /// cursor. A message of another epoch (the server's history started over) is new.
    pub fn covers(self, epoch: u64, seq: u64) -> bool {
        epoch == self.epoch && seq <= self.seq
    }
}

/// `base/rest/produce?token=..&subject=..&closure=..&retained=..&qos=..`
pub fn produce_url(
    base: &Url,
    token: &str,
    subject: &str,
    closure: &str,
    retained: bool,
    qos: MigratoryDataQos,
) -> Url {
    let mut url = endpoint(base, "produce");
    url.query_pairs_mut()
        .append_pair("token", token)
        .append_pair("subject", subject)
        .append_pair("closure", closure)
        .append_pair("retained", if retained { "true" } else { "false" })
        .append_pair("qos", qos.as_str());
    url
}

/// `base/rest/consume?token=..&subject=..` and `&epoch=E&seq=S` when there is a cursor, else
/// `&history=N` when one is asked for.
pub fn consume_url(
    base: &Url,
    token: &str,
    subject: &str,
    cursor: Option<Cursor>,
    history: Option<u32>,
) -> Url {
    let mut url = endpoint(base, "consume");
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("token", token)
            .append_pair("subject", subject);
        match (cursor, history) {
            (Some(c), _) => {
                q.append_pair("epoch", &c.epoch.to_string())
                    .append_pair("seq", &c.seq.to_string());
            }
            (None, Some(n)) => {
                q.append_pair("history", &n.to_string());
            }
            (None, None) => {}
        }
    }
    url
}

/// `rest/<what>` below the server's base URL (whose path may end with `/` or not).
fn endpoint(base: &Url, what: &str) -> Url {
    let mut url = base.clone();
    let path = format!("{}/rest/{what}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_documentation() {
        let base = Url::parse("http://md:8800").unwrap();
        let u = produce_url(
            &base,
            "t k",
            "/a/b",
            "7",
            true,
            MigratoryDataQos::Guaranteed,
        );
        assert_eq!(
            u.as_str(),
            "http://md:8800/rest/produce?token=t+k&subject=%2Fa%2Fb&closure=7&retained=true&qos=guaranteed"
        );
        let base = Url::parse("https://md/prefix/").unwrap();
        let c = Cursor { epoch: 3, seq: 41 };
        assert_eq!(
            consume_url(&base, "t", "/a", Some(c), Some(5)).as_str(),
            "https://md/prefix/rest/consume?token=t&subject=%2Fa&epoch=3&seq=41"
        );
        assert_eq!(
            consume_url(&base, "t", "/a", None, Some(5)).as_str(),
            "https://md/prefix/rest/consume?token=t&subject=%2Fa&history=5"
        );
        assert_eq!(
            consume_url(&base, "t", "/a", None, None).as_str(),
            "https://md/prefix/rest/consume?token=t&subject=%2Fa"
        );
    }

    #[test]
    fn cursors_round_trip_and_cover_what_was_received() {
        let c = Cursor { epoch: 9, seq: 12 };
        assert_eq!(Cursor::parse(&c.to_text()), Some(c));
        assert_eq!(Cursor::parse("9"), None);
        assert_eq!(Cursor::parse("a:1"), None);
        assert!(c.covers(9, 12) && c.covers(9, 1));
        assert!(!c.covers(9, 13) && !c.covers(10, 1));
    }

    #[test]
    fn answers_parse() {
        let a: ConsumeAnswer = serde_json::from_str(
            r#"{"subject":"/a","messages":[{"message_type":"RECOVERED","content":"hi","closure":"c","retained":false,"compressed":false,"epoch":1,"seq":2}]}"#,
        )
        .unwrap();
        assert_eq!(a.messages[0].content, "hi");
        let p: ProduceAnswer =
            serde_json::from_str(r#"{"subject":"/a","closure":"7","status":"OK"}"#).unwrap();
        assert_eq!((p.closure.as_deref(), p.status.as_str()), (Some("7"), "OK"));
    }
}
