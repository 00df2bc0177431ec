//! The HTTP endpoint URL of `ferry relay`: `https://HOST/PATH` (or `http://`), where ferry
//! POSTs each message, so TO only. Pure: the configuration's checks judge what it builds.

use crate::config::endpoint_url::{
    Built, EndpointOrigins, EndpointUrl, Given, Naming, Problem, Query, Side, UrlForm, basic_auth,
    map, text,
};

pub const FORM: UrlForm = UrlForm {
    naming: Naming {
        protocol: "http",
        target: "url",
        names: None,
    },
    schemes: &["http", "https"],
    usage: &[
        "https://HOST/PATH                                       POST each message there (TO only); http://",
    ],
    keys: None,
    read,
};

fn read(
    url: &EndpointUrl,
    _query: Query,
    given: &Given,
    at: &mut EndpointOrigins,
) -> Result<Built, Problem> {
    let tls = url.scheme == "https";
    if given.side == Side::From {
        return Err((
            format!(
                "an {}:// URL is where ferry POSTs: it can only be TO",
                url.scheme
            ),
            format!(
                "to read a server-sent-event stream, write sse+{}://...",
                url.scheme
            ),
        ));
    }
    let whole = at.whole();
    // The query is the server's, as written.
    let mut connection = vec![("url", text(whole, &url.http_url(tls, &url.query)))];
    if let Some(auth) = basic_auth(given.user.as_deref(), given.password.as_deref()) {
        let header = map(whole, [("authorization", text(whole, &auth))]);
        connection.push(("headers", header));
    }
    Ok(Built {
        connection: map(whole, [("http", map(whole, connection))]),
        keys: Vec::new(),
        name: None,
    })
}
