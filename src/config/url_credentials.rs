//! Credentials written in the userinfo of NATS URLs (`nats://user:password@host`,
//! `nats://TOKEN@host`), taken out of them when the configuration is read: the URLs are then
//! safe to show anywhere (async-nats itself logs the server URL at debug level), and the
//! credentials live only in [`Secret`]s.

use super::model::Secret;
use super::yaml::Pos;

/// Credentials found in the userinfo of a NATS URL.
#[derive(PartialEq)]
pub enum UrlCredentials {
    UserPassword(String, Secret),
    /// A user alone is a token, as the nats tools read it.
    Token(Secret),
}

/// The URLs without their userinfo, the credentials they carried, and where a URL carries
/// credentials other than an earlier one's (one connection authenticates one way).
pub fn split_nats_urls(
    urls: Vec<(Pos, String)>,
) -> (Vec<String>, Option<UrlCredentials>, Vec<Pos>) {
    let mut found: Option<UrlCredentials> = None;
    let mut conflicts = Vec::new();
    let mut bare = Vec::with_capacity(urls.len());
    for (pos, url) in urls {
        let Some((scheme, rest)) = url.split_once("://") else {
            bare.push(url);
            continue;
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let Some(at) = rest[..end].rfind('@') else {
            bare.push(url);
            continue;
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let these = match rest[..at].split_once(':') {
            Some((user, password)) => {
                UrlCredentials::UserPassword(decode(user), Secret::new(decode(password)))
            }
            None => UrlCredentials::Token(Secret::new(decode(&rest[..at]))),
        };
        match &found {
            Some(other) if *other != these => conflicts.push(pos),
            _ => found = Some(these),
        }
        bare.push(format!("{scheme}://{}", &rest[at + 1..]));
    }
    (bare, found, conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(url: &str) -> Vec<(Pos, String)> {
        vec![(Pos { line: 1, col: 1 }, url.to_string())]
    }

    #[test]
    fn takes_user_password_or_token_out_of_the_url() {
        let (urls, found, conflicts) = split_nats_urls(at("nats://fe%40rry:p%3Aw@h:4222"));
        assert_eq!(urls, ["nats://h:4222"]);
        assert!(conflicts.is_empty());
        match found {
            Some(UrlCredentials::UserPassword(user, password)) => {
                assert_eq!((user.as_str(), password.expose()), ("fe@rry", "p:w"));
            }
            _ => panic!("user and password expected"),
        }
        let (urls, found, _) = split_nats_urls(at("tls://T0ken@h"));
        assert_eq!(urls, ["tls://h"]);
        assert!(matches!(found, Some(UrlCredentials::Token(t)) if t.expose() == "T0ken"));
        let (urls, found, _) = split_nats_urls(at("nats://h:4222"));
        assert_eq!(urls, ["nats://h:4222"]);
        assert!(found.is_none());
    }

    proptest! {
        /// Any text as the userinfo (URL text is the user's, and may be any Unicode): no
        /// panic, and the URL kept never holds it.
        #[test]
        fn the_kept_url_never_holds_the_credentials(
            user in "[^@/?#:]{1,20}",
            password in "[^@/?#]{0,20}",
            host in "[a-z][a-z0-9.]{0,20}",
        ) {
            let secret = format!("{user}:{password}X");
            let (urls, found, _) = split_nats_urls(at(&format!("nats://{secret}@{host}:4222")));
            prop_assert_eq!(&urls[0], &format!("nats://{host}:4222"));
            prop_assert!(found.is_some());
            let _ = split_nats_urls(at(&format!("{user}://{password}@")));
        }
    }
}
