//! A spooled relay through a NATS outage, as the spool and hostile-file tests run it: MQTT
//! QoS 1 into ferry, core NATS out through the route's spool, and nats-server killed so that
//! what ferry takes goes to the spool.
//!
//! A JetStream stream on the nats-server ([`CAPTURE`], file storage, kept across its restart)
//! records everything ferry publishes under `spooled.>`, so every message that reached NATS
//! is counted, whenever it arrived, without racing a subscriber against ferry's reconnect.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use super::*;

/// The stream that records everything ferry publishes under `spooled.>`.
pub const CAPTURE: &str = "CAPTURE";

/// Route `up`: `spool/#` on MQTT connection `mq` (client id `client_id`) to
/// `spooled.<level 1>` on NATS connection `nc` (reconnecting within half a second), spooled in
/// `spool_dir`, then `spool_keys` (`, max_bytes: 1MiB`).
pub fn spooled_route(
    mqtt: &str,
    nats: &str,
    spool_dir: &Path,
    client_id: &str,
    spool_keys: &str,
) -> String {
    fill(
        r#"
shutdown_timeout: 10s
connections:
  mq:
    mqtt: { url: "@MQTT@", client_id: @ID@ }
  nc:
    nats: { url: "@NATS@" }
    reconnect: { initial_delay: 50ms, max_delay: 500ms }
routes:
  - name: up
    from: { connection: mq, topic: "spool/#", qos: 1 }
    to: { connection: nc, subject: "spooled.{{ topic[1] }}" }
    spool: { dir: "@SPOOL@"@KEYS@ }
"#,
        &[
            ("@MQTT@", mqtt.to_string()),
            ("@ID@", client_id.to_string()),
            ("@NATS@", nats.to_string()),
            ("@SPOOL@", spool_dir.display().to_string()),
            ("@KEYS@", spool_keys.to_string()),
        ],
    )
}

/// mosquitto, a nats-server whose [`CAPTURE`] stream records what ferry publishes, and an
/// MQTT publisher.
pub struct NatsOutage {
    pub mosquitto: Mosquitto,
    pub nats: NatsServer,
    pub publisher: MqttPeer,
}

impl NatsOutage {
    pub async fn start() -> NatsOutage {
        let mosquitto = Mosquitto::start(MosquittoOptions::default());
        let nats = NatsServer::start(NatsOptions {
            jetstream: true,
            ..Default::default()
        });
        (NatsPeer::connect(&nats.url()).await)
            .create_stream(CAPTURE, &["spooled.>"])
            .await;
        let publisher = MqttPeer::connect(&mosquitto.url()).await;
        NatsOutage {
            mosquitto,
            nats,
            publisher,
        }
    }

    /// [`spooled_route`] between these brokers.
    pub fn route(&self, spool_dir: &Path, client_id: &str, spool_keys: &str) -> String {
        let (mqtt, nats) = (self.mosquitto.url(), self.nats.url());
        spooled_route(&mqtt, &nats, spool_dir, client_id, spool_keys)
    }

    /// Publishes `seq:from..to` (padded to `pad_to` bytes) on `spool/seq` at QoS 1; returns
    /// once mosquitto acknowledged every one.
    pub async fn publish(&self, from: usize, to: usize, pad_to: usize) {
        let messages = (from..to).map(|i| ("spool/seq".to_string(), seq_payload("seq", i, pad_to)));
        self.publisher.publish_all(messages, 1).await;
    }

    /// Starts ferry on `yaml` and relays `seq:0..before` (padded to `pad_to` bytes) to NATS;
    /// then NATS goes away, and once ferry knows, everything it takes goes to the spool.
    pub async fn ferry_until_nats_is_down(
        &mut self,
        yaml: &str,
        before: usize,
        pad_to: usize,
    ) -> Ferry {
        let mut ferry = Ferry::start_ready(yaml).await;
        self.publish(0, before, pad_to).await;
        self.wait_captured(before as u64, secs(30)).await;
        let mark = ferry.mark();
        self.nats.kill9();
        ferry
            .wait_for_line_since(mark, "connection down", secs(30))
            .await;
        ferry
    }

    /// [`Self::ferry_until_nats_is_down`], then `seq:before..before + n` into the spool;
    /// returns with ferry stopped, its summary saying the spool holds all `n`.
    pub async fn spool_while_nats_is_down(
        &mut self,
        yaml: &str,
        before: usize,
        n: usize,
        pad_to: usize,
    ) {
        let mut ferry = self.ferry_until_nats_is_down(yaml, before, pad_to).await;
        self.publish(before, before + n, pad_to).await;
        ferry
            .wait_for_line(&format!("({n} spooled so far)"), secs(60))
            .await;
        let stopped = stop_for_summary(&mut ferry).await;
        assert!(
            stopped.contains(&format!("spool: {n} spooled, 0 forwarded")),
            "{stopped}"
        );
    }

    /// Starts ferry again on `yaml` while NATS is still down (it finds what the spool kept and
    /// forwards that first), brings NATS back, and waits (up to `timeout`) until ferry says
    /// the `n` spooled messages went out.
    pub async fn ferry_forwarding_the_spool(
        &mut self,
        yaml: &str,
        n: usize,
        timeout: Duration,
    ) -> Ferry {
        let mut ferry = Ferry::start(yaml);
        ferry
            .wait_for_line("before this start; forwarding them first", secs(30))
            .await;
        self.nats.restart();
        let forwarded = format!("sink nc is back: {n} spooled message(s) forwarded");
        ferry.wait_for_line(&forwarded, timeout).await;
        ferry
    }

    /// Waits (bounded) until the capture stream holds at least `n` messages; returns its count.
    pub async fn wait_captured(&self, n: u64, timeout: Duration) -> u64 {
        let peer = NatsPeer::connect(&self.nats.url()).await;
        peer.wait_stream_len(CAPTURE, n, timeout).await
    }

    /// Every payload in the capture stream, in stream order.
    pub async fn captured(&self) -> Vec<Bytes> {
        let peer = NatsPeer::connect(&self.nats.url()).await;
        let stored = peer.read_stream(CAPTURE).await;
        stored.into_iter().map(|m| m.payload).collect()
    }
}

/// Stops ferry (it must exit cleanly) and returns its route's summary, the `route stopped`
/// line.
pub async fn stop_for_summary(ferry: &mut Ferry) -> String {
    assert!(ferry.terminate().await.success());
    ferry.wait_for_line("route stopped", secs(1)).await
}
