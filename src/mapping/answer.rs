//! What a request route's requester is sent: the reply's payload and headers without ferry's
//! loop marker (a reply goes back to whoever asked, it is not relayed on), or, when there is
//! no reply, an empty message whose headers (NATS) or user properties (MQTT 5) carry the NATS
//! services framework's error pair, `Nats-Service-Error-Code` and `Nats-Service-Error`: 504
//! when no reply came in time, 503 when the request failed. One rule for every requester, and
//! the one a NATS services client already reads.

use crate::config::values::duration;
use crate::mapping::marker::is_ferry_header;
use crate::message::{Answer, Headers, Message};

pub const ERROR_CODE: &str = "Nats-Service-Error-Code";
pub const ERROR: &str = "Nats-Service-Error";

/// What the requester is sent: a payload and its headers.
pub fn sent(answer: Answer) -> (bytes::Bytes, Headers) {
    match answer {
        Answer::Reply(reply) => (reply.payload.clone(), reply_headers(&reply)),
        Answer::TimedOut(after) => (
            bytes::Bytes::new(),
            error("504", format!("no reply within {}", duration::text(after))),
        ),
        Answer::Failed(why) => (bytes::Bytes::new(), error("503", why)),
    }
}

/// The reply's headers as the requester gets them: ferry's own left out.
pub fn reply_headers(reply: &Message) -> Headers {
    (reply.headers.iter())
        .filter(|(name, _)| !is_ferry_header(name))
        .cloned()
        .collect()
}

fn error(code: &str, why: String) -> Headers {
    vec![(ERROR_CODE.into(), code.into()), (ERROR.into(), why)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn no_reply_is_an_empty_message_with_the_services_error_pair() {
        let (payload, headers) = sent(Answer::TimedOut(Duration::from_secs(5)));
        assert!(payload.is_empty());
        assert_eq!(
            headers,
            vec![
                (ERROR_CODE.into(), "504".into()),
                (ERROR.into(), "no reply within 5s".into())
            ]
        );
        let (_, headers) = sent(Answer::Failed("no responders".into()));
        assert_eq!(headers[0].1, "503");
        assert_eq!(headers[1].1, "no responders");
    }

    #[test]
    fn a_reply_goes_back_without_ferrys_marker() {
        let mut reply = Message::new("n".into(), "_INBOX.x", "42");
        reply.headers = vec![
            ("Ferry-Via".into(), "1;edge;a,b".into()),
            ("Content-Type".into(), "text/plain".into()),
        ];
        let (payload, headers) = sent(Answer::Reply(reply));
        assert_eq!(payload, "42");
        assert_eq!(headers, vec![("Content-Type".into(), "text/plain".into())]);
    }
}
