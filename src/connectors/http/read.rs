//! An `http:` connection and sink read from the file and checked beyond their shape: the URL,
//! the headers, and a sink's URL template.

use super::config::{HttpConnection, HttpSection, HttpSink, HttpSinkKeys, SinkMethod};
use crate::config::reader::Reader;
use crate::config::yaml::Node;
use crate::config::{HttpMethod, SecretUrl, Target};

impl Reader<'_> {
    /// The HTTP connection written at `node`.
    pub fn http_connection(&mut self, node: &Node) -> Option<HttpConnection> {
        let http: HttpSection = self.section(node)?;
        let url = self.http_url(&http.url, node.get("url"));
        let headers = self.headers(http.headers.0, node.get("headers"));
        let tls = self.tls(http.tls, node);
        Some(HttpConnection {
            url: SecretUrl::new(url?.to_string()),
            headers,
            tls,
            timeout: http.timeout,
            max_concurrent: http.max_concurrent,
        })
    }

    /// The HTTP sink at `node`; its URL may use `captures`.
    pub fn http_sink(&mut self, keys: HttpSinkKeys, node: &Node, captures: &[String]) -> HttpSink {
        let url = match keys.url {
            Some(url) => self.target(node, "url", url, |_| Ok(()), captures),
            None => Target::Auto,
        };
        let method = match keys.method {
            SinkMethod::Post => HttpMethod::Post,
            SinkMethod::Put => HttpMethod::Put,
        };
        HttpSink { url, method }
    }
}
