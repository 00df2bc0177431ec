//! The handshake: an HTTP request some servers need after the stream opened, built from one
//! of its events. PocketBase, for one, starts every stream with `PB_CONNECT`, whose
//! `clientId` must be POSTed back with the subscriptions before any change is sent.

use std::time::Duration;

use anyhow::Context;

use crate::config::{self, PayloadFormat, Protocol};
use crate::connectors::http_client;
use crate::mapping::payload::Payload;
use crate::mapping::template::{Scope, Template};
use crate::message::Message;

/// A handshake with its templates compiled.
pub(super) struct Handshake {
    /// The event type that fires it.
    pub on: String,
    method: reqwest::Method,
    url: Template,
    headers: Vec<(String, Template)>,
    body: Option<Template>,
    /// Sets `Content-Type: application/json` when there is a body and no such header.
    json_body: bool,
}

impl Handshake {
    pub(super) fn compile(config: &config::Handshake) -> anyhow::Result<Handshake> {
        let compile = |what: &str, source: &str| {
            Template::compile(source).map_err(|e| anyhow::anyhow!("handshake {what}: {e}"))
        };
        let headers = config
            .headers
            .iter()
            .map(|(name, value)| Ok((name.clone(), compile(name, value.expose())?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let json_body = config.body.is_some()
            && !config
                .headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        Ok(Handshake {
            on: config.on.clone(),
            method: reqwest::Method::from_bytes(config.method.as_str().as_bytes())
                .expect("GET, POST or PUT"),
            url: compile("url", config.url.expose())?,
            headers,
            body: config
                .body
                .as_deref()
                .map(|b| compile("body", b))
                .transpose()?,
            json_body,
        })
    }

    /// Renders the request for `event` (its data is `payload`, read as JSON) and sends it with
    /// the stream's own client. Errors say what failed, with the status and the start of the
    /// server's answer (at most `max_answer` bytes of it are read), never a header value.
    pub(super) async fn send(
        &self,
        client: &reqwest::Client,
        connection: &str,
        stream_url: &url::Url,
        event: &Message,
        timeout: Duration,
        max_answer: usize,
    ) -> anyhow::Result<()> {
        let payload = Payload::Raw(event.payload.clone());
        let scope = Scope {
            route: connection,
            message: event,
            protocol: Protocol::Sse,
            captures: &[],
            payload: &payload,
            format: PayloadFormat::Json,
        };
        let render = |what: &str, template: &Template| {
            template
                .render(&scope)
                .map_err(|e| anyhow::anyhow!("cannot render the handshake {what}: {e}"))
        };
        let target = render("url", &self.url)?;
        let url = stream_url.join(target.trim()).with_context(|| {
            // Rendered from the config and the event: its query may hold a key.
            let target = crate::config::redact_url(&target);
            format!("the handshake url `{target}` is not a URL")
        })?;
        let shown = super::cursor::stream_url(url.as_str());
        let mut request = client.request(self.method.clone(), url).timeout(timeout);
        for (name, template) in &self.headers {
            request = request.header(name.as_str(), render(name, template)?);
        }
        if let Some(body) = &self.body {
            request = request.body(render("body", body)?);
            if self.json_body {
                request = request.header("content-type", "application/json");
            }
        }
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "handshake {} {shown} failed: {}",
                self.method,
                http_client::describe(e)
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // Read only up to `max_response_body`: the answer comes from the network.
        let excerpt = super::transport::excerpt(response, max_answer).await;
        anyhow::bail!(
            "handshake {} {shown} answered {status}{}",
            self.method,
            if excerpt.is_empty() {
                String::new()
            } else {
                format!(": {excerpt}")
            }
        )
    }
}
