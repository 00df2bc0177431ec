//! The SSE endpoint URL of `ferry relay`: `sse+https://HOST/PATH[?event=TYPE&...]` (or
//! `sse+http://`), a stream ferry reads, so FROM only. `event=` picks the event types; every
//! other query key is the server's, passed on as written. Pure: the configuration's checks
//! judge what it builds.

use crate::config::endpoint_url::{
    Built, EndpointOrigins, EndpointUrl, Given, Naming, Problem, Query, Side, UrlForm, basic_auth,
    flag, list, map, text,
};

pub const FORM: UrlForm = UrlForm {
    naming: Naming {
        protocol: "sse",
        target: "event",
        names: None,
    },
    schemes: &["sse+http", "sse+https"],
    usage: &[
        "sse+https://HOST/PATH[?event=TYPE&...]                  read a server-sent-event stream (FROM only); sse+http://",
    ],
    keys: None,
    read,
};

fn read(
    url: &EndpointUrl,
    mut query: Query,
    given: &Given,
    at: &mut EndpointOrigins,
) -> Result<Built, Problem> {
    let tls = url.scheme == "sse+https";
    if given.side == Side::To {
        return Err((
            format!(
                "{}:// is a stream ferry reads: it can only be FROM",
                url.scheme
            ),
            format!(
                "to POST each message, write the {}:// URL itself",
                if tls { "https" } else { "http" }
            ),
        ));
    }
    let events = query.all("event");
    // `event=` is the relay's; every other key goes to the server, as written.
    let server_query = (url.query.split('&'))
        .filter(|p| !p.is_empty())
        .filter(|p| p.split_once('=').map_or(*p, |(k, _)| k) != "event")
        .collect::<Vec<_>>()
        .join("&");
    let whole = at.whole();
    let mut connection = vec![
        ("url", text(whole, &url.http_url(tls, &server_query))),
        // Resuming keeps a cursor in the state directory: only worth it (and only asked
        // for) when nothing may be lost.
        ("resume", flag(whole, given.at_least_once)),
    ];
    if let Some(auth) = basic_auth(given.user.as_deref(), given.password.as_deref()) {
        let header = map(whole, [("authorization", text(whole, &auth))]);
        connection.push(("headers", header));
    }
    let mut keys = Vec::new();
    if !events.is_empty() {
        let pos = at.part("`event`");
        let events = events.iter().map(|e| text(pos, e)).collect();
        keys.push(("events", list(pos, events)));
    }
    Ok(Built {
        connection: map(whole, [("sse", map(whole, connection))]),
        keys,
        name: None,
    })
}
