//! The route worker over in-memory sources and scripted sinks: order, the in-flight window,
//! when the source is confirmed, retries, dead letters, panics and shutdown, each without a
//! server. Every wait is bounded and woken by the event it waits for.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::loops;
use crate::config::{self, Config, Lookup};
use crate::mapping::marker;
use crate::message::Incoming;
use crate::pipeline::WorkerHandle;
use crate::pipeline::queue::{self, RouteInput};
use crate::pipeline::supervisor::{Owner, Supervisor};
use crate::pipeline::testing::{
    Attempt, MemorySource, ScriptedSink, Settled, numbered, payload, within,
};

/// The connections the test routes name; nothing connects to them.
const CONNECTIONS: &str = r#"
connections:
  plant: { mqtt: { url: "mqtt://127.0.0.1:1883", version: 5 } }
  core: { nats: { url: "nats://127.0.0.1:4222" } }
  archive: { nats: { url: "nats://127.0.0.2:4222" } }
  dead: { nats: { url: "nats://127.0.0.3:4222" } }
"#;

/// One route: MQTT `sensors/#` to NATS `core` as is, failures to `dead.telemetry`.
const ONE_SINK: &str = r#"
  - name: telemetry
    from: { connection: plant, topic: "sensors/#", qos: 1 }
    to: { connection: core, subject: auto }
    dead_letter: { connection: dead, subject: dead.telemetry }
"#;

/// The same route fanned out to a second sink.
const TWO_SINKS: &str = r#"
  - name: telemetry
    from: { connection: plant, topic: "sensors/#", qos: 1 }
    to:
      - { connection: core, subject: auto }
      - { connection: archive, subject: "archive.{{ topic[1] }}" }
    dead_letter: { connection: dead, subject: dead.telemetry }
"#;

/// The topic the tests' messages arrive on.
const TOPIC: &str = "sensors/kitchen";

/// The test connections with `routes`, parsed and checked as `ferry run` would.
fn parse_routes(routes: &str) -> Config {
    let lookup = Lookup {
        var: &|_| None,
        file: &|_| Ok(String::new()),
    };
    let text = format!("{CONNECTIONS}routes:{routes}");
    config::parse(&text, "test.yaml", &lookup).unwrap_or_else(|e| panic!("{e}"))
}

/// A route of [`parse_routes`] whose worker publishes through scripted sinks (one per `to:`,
/// in order) and dead-letters through `dead_letter`, fed by an in-memory source. Its queue
/// exists from the start; its worker runs from [`TestedRoute::start`], so a test can fill the
/// queue first.
struct TestedRoute {
    config: Config,
    sinks: Vec<ScriptedSink>,
    dead_letter: ScriptedSink,
    source: MemorySource,
    input: RouteInput,
    output: RouteOutput,
    counters: Arc<RouteCounters>,
    /// Kept across the worker's restarts, as the pipeline keeps them.
    suspects: Arc<Suspects>,
    supervisor: Supervisor,
    /// Where each sink's spool is, for a route with spools ([`TestedRoute::with_spools`]).
    spools: Option<tempfile::TempDir>,
    worker: Option<WorkerHandle>,
}

impl TestedRoute {
    fn new(routes: &str, sinks: &[&ScriptedSink], dead_letter: &ScriptedSink) -> TestedRoute {
        let config = parse_routes(routes);
        let route = &config.routes[0];
        assert_eq!(route.to.len(), sinks.len(), "a scripted sink per `to:`");
        let (input, output) = queue::bounded(&route.name, route.queue.clone());
        TestedRoute {
            sinks: sinks.iter().map(|s| (*s).clone()).collect(),
            dead_letter: dead_letter.clone(),
            source: MemorySource::new(&route.from.connection),
            input,
            output,
            counters: Default::default(),
            suspects: Default::default(),
            supervisor: Supervisor::new(),
            spools: None,
            worker: None,
            config,
        }
    }

    /// Gives every sink a spool (in a temporary directory), as `spool:` on the route does.
    fn with_spools(mut self) -> TestedRoute {
        self.spools = Some(tempfile::tempdir().expect("a temporary directory"));
        self
    }

    /// Starts a worker on the route's queue (again, after a restart or a stop).
    fn start(&mut self) {
        let worker = self.build();
        self.worker = Some(WorkerHandle::spawn(&self.supervisor, Box::new(worker)));
    }

    /// The worker of the route, not started.
    fn build(&self) -> RouteWorker {
        let route = &self.config.routes[0];
        let sink = |connection: &str, sink: &ScriptedSink| RouteSink {
            connection: connection.to_string(),
            sink: Arc::new(sink.clone()),
            spool: None,
        };
        let mut sinks: Vec<RouteSink> = (route.to.iter().zip(&self.sinks))
            .map(|(to, s)| sink(&to.connection, s))
            .collect();
        if let Some(dir) = &self.spools {
            // One spool per sink, named as the pipeline names them.
            for (index, sink) in sinks.iter_mut().enumerate() {
                let dir = dir.path().join(format!("{index}-{}", sink.connection));
                let bytes = self.counters.spool_bytes.clone();
                sink.spool = Some(Box::new(
                    Spool::open(&dir, 1 << 20, bytes).expect("the spool opens"),
                ));
            }
        }
        let analysis = loops::analyse(&self.config);
        RouteWorker {
            name: route.name.as_str().into(),
            queue: self.output.clone(),
            mapping: Mapping::new(
                &analysis
                    .resolve(&self.config, 0)
                    .expect("the route resolves"),
                "edge",
            )
            .expect("the route maps"),
            sinks,
            dead_letter: (route.dead_letter.as_ref())
                .map(|d| sink(&d.connection, &self.dead_letter)),
            counters: self.counters.clone(),
            abandon: CancellationToken::new(),
            stop: CancellationToken::new(),
            tap: Default::default(),
            stop_after: route.stop_after,
            warnings: Default::default(),
            at_most_once: route.delivery == Some(config::Delivery::AtMostOnce),
            ids: Default::default(),
            suspects: self.suspects.clone(),
            jq: None,
            request: None,
        }
    }

    fn worker(&self) -> &WorkerHandle {
        self.worker.as_ref().expect("the worker was started")
    }

    /// Feeds messages with these payloads on [`TOPIC`].
    async fn feed<P: AsRef<str>>(&self, payloads: impl IntoIterator<Item = P>) {
        self.source.feed(&self.input, TOPIC, payloads).await;
    }

    /// Feeds one message (built by the test, with headers, say).
    async fn push(&self, incoming: Incoming) {
        let pushed = within("room in the queue", self.input.push(incoming));
        assert!(pushed.await, "the queue is closed");
    }

    /// Waits (bounded) until the worker's task ended.
    async fn ended(&self) {
        within("the end of the route worker", self.worker().done.wait()).await;
    }

    /// Shutdown as the pipeline does it once the sources stopped: the queue closes, the worker
    /// delivers what is left and ends.
    async fn shut_down(&self) {
        self.output.close();
        self.ended().await;
    }

    /// The shutdown deadline passed: the worker stops retrying and ends; what is left in the
    /// queue is dropped unconfirmed, as the pipeline does.
    async fn give_up(&self) {
        self.output.close();
        self.worker().abandon.cancel();
        self.ended().await;
        self.output.discard();
    }

    /// Waits until the supervisor saw the worker fail; returns why.
    async fn failure(&self) -> String {
        let owners = within("a failure of the route worker", self.supervisor.due()).await;
        assert_eq!(owners, [Owner::Route("telemetry".into())]);
        let down = self.supervisor.down();
        down[0].1.why.clone()
    }

    fn count(&self, counter: impl Fn(&RouteCounters) -> &AtomicU64) -> u64 {
        counter(&self.counters).load(Ordering::Relaxed)
    }
}

/// Every message the source handed over was settled exactly once, and `confirmed` (in this
/// order) are the ones confirmed.
fn assert_settled_once(source: &MemorySource, confirmed: &[String]) {
    let settled = source.settled();
    let mut payloads: Vec<&str> = settled.iter().map(|s| s.payload.as_str()).collect();
    payloads.sort();
    let before = payloads.len();
    payloads.dedup();
    assert_eq!(
        before,
        payloads.len(),
        "a message settled twice: {settled:?}"
    );
    assert_eq!(source.confirmed(), confirmed);
}

fn header<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    marker::header(&message.headers, name)
}

#[tokio::test]
async fn messages_reach_every_sink_in_order() {
    let (core, archive, dead) = (
        ScriptedSink::new(),
        ScriptedSink::new(),
        ScriptedSink::new(),
    );
    let mut route = TestedRoute::new(TWO_SINKS, &[&core, &archive], &dead);
    route.start();
    let sent = numbered("m", 100);
    route.feed(&sent).await;
    route.source.wait_confirmed(100).await;

    assert_eq!(core.confirmed(), sent);
    assert_eq!(archive.confirmed(), sent);
    let subjects = |sink: &ScriptedSink| {
        sink.log(|l| {
            (l.tries.iter())
                .map(|t| t.message.subject.clone())
                .collect::<Vec<_>>()
        })
    };
    assert!(subjects(&core).iter().all(|s| s == "sensors.kitchen"));
    assert!(subjects(&archive).iter().all(|s| s == "archive.kitchen"));
    assert_settled_once(&route.source, &sent);
    assert_eq!(route.count(|c| &c.sent), 200);
    assert_eq!(route.count(|c| &c.received), 100);
    assert_eq!(route.count(|c| &c.unconfirmed), 0);
    assert!(dead.confirmed().is_empty());
    route.shut_down().await;
}

/// A route that never sees a message holds little more than its worker: the state of
/// delivering is allocated with the first message.
#[tokio::test]
async fn an_idle_worker_holds_no_delivery_state() {
    let (core, dead) = (ScriptedSink::new(), ScriptedSink::new());
    let route = TestedRoute::new(ONE_SINK, &[&core], &dead);
    let run = route
        .supervisor
        .run_of(Owner::Route("telemetry".into()), &Default::default());
    let delivering = std::mem::size_of_val(&Box::new(route.build()).deliver_all(run.clone()));
    let idle = std::mem::size_of_val(&Box::new(route.build()).run(run));
    assert!(
        idle + 1024 < delivering,
        "an idle worker's future takes {idle} bytes, delivering {delivering}"
    );
}

/// A route whose sink holds every confirmation until the test releases it, fed a full
/// in-flight window and `more` messages, and waiting for the oldest confirmation: the window
/// is full. Returns it, its sink and what was sent.
async fn with_a_full_window(more: usize) -> (TestedRoute, ScriptedSink, Vec<String>) {
    let core = ScriptedSink::new().otherwise(Attempt::ConfirmLater);
    let mut route = TestedRoute::new(ONE_SINK, &[&core], &ScriptedSink::new());
    let sent = numbered("m", IN_FLIGHT + more);
    // Queued before the worker starts, so it never finds the queue empty (then it would wait
    // for the oldest confirmation before taking more).
    route.feed(&sent).await;
    route.start();
    core.wait_until("the wait for confirmation 0", |l| l.waited_on == [0])
        .await;
    (route, core, sent)
}

#[tokio::test]
async fn the_in_flight_window_bounds_what_is_outstanding() {
    let (route, core, sent) = with_a_full_window(44).await;
    assert_eq!(core.log(|l| l.tries.len()), IN_FLIGHT);
    assert_eq!(core.log(|l| l.outstanding()), IN_FLIGHT);
    assert!(route.source.settled().is_empty());

    // One confirmation makes room for exactly one more message.
    core.release(1);
    core.wait_until("the wait for confirmation 1", |l| l.waited_on == [0, 1])
        .await;
    assert_eq!(core.log(|l| l.tries.len()), IN_FLIGHT + 1);
    assert_eq!(core.log(|l| l.outstanding()), IN_FLIGHT);
    route.source.wait_confirmed(1).await;
    assert_eq!(route.source.confirmed(), ["m-0"]);

    core.release(sent.len());
    route.source.wait_confirmed(sent.len()).await;
    assert_eq!(core.confirmed(), sent);
    assert_settled_once(&route.source, &sent);
    route.shut_down().await;
}

#[tokio::test]
async fn the_source_is_confirmed_only_once_every_sink_confirmed() {
    let core = ScriptedSink::new();
    let archive = ScriptedSink::new().otherwise(Attempt::ConfirmLater);
    let mut route = TestedRoute::new(TWO_SINKS, &[&core, &archive], &ScriptedSink::new());
    route.start();
    route.feed(["m-0", "m-1"]).await;

    archive
        .wait_until("the wait for confirmation 0", |l| l.waited_on == [0])
        .await;
    core.wait_until("both messages", |l| l.confirmed.len() == 2)
        .await;
    assert!(
        route.source.settled().is_empty(),
        "confirmed before archive"
    );
    assert_eq!(route.count(|c| &c.unconfirmed), 2);

    archive.release(1);
    route.source.wait_confirmed(1).await;
    assert_eq!(route.source.confirmed(), ["m-0"]);
    archive.release(1);
    route.source.wait_confirmed(2).await;
    assert_settled_once(&route.source, &numbered("m", 2));
    route.shut_down().await;
}

#[tokio::test]
async fn an_unavailable_sink_is_retried_with_backoff_then_delivered() {
    let core = ScriptedSink::new().then(Attempt::Unavailable, 3);
    let mut route = TestedRoute::new(ONE_SINK, &[&core], &ScriptedSink::new());
    route.start();
    let sent = numbered("m", 3);
    route.feed(&sent).await;
    route.source.wait_confirmed(3).await;

    let tries = core.log(|l| l.tries.clone());
    let first: Vec<&str> = tries[..4]
        .iter()
        .map(|t| t.message.subject.as_str())
        .collect();
    assert_eq!(first, ["sensors.kitchen"; 4]);
    assert!(tries[..4].iter().all(|t| payload(&t.message) == "m-0"));
    let attempts: Vec<&Attempt> = tries[..4].iter().map(|t| &t.attempt).collect();
    assert_eq!(attempts[3], &Attempt::Confirm);
    // Each retry waits (the default backoff starts at 100ms, jittered down to half), and the
    // waits grow rather than hammer the sink.
    let gaps: Vec<Duration> = tries[..4].windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(50)),
        "retried without waiting: {gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_millis(100),
        "no backoff: {gaps:?}"
    );
    assert_eq!(core.confirmed(), sent);
    assert_settled_once(&route.source, &sent);
    assert_eq!(route.count(|c| &c.failed), 0);
    assert_eq!(
        route.count(|c| &c.retried),
        3,
        "each try after a failure counted"
    );
    route.shut_down().await;
}

#[tokio::test]
async fn a_lost_confirmation_is_sent_again() {
    let core = ScriptedSink::new().then(Attempt::LoseConfirmation, 1);
    let mut route = TestedRoute::new(ONE_SINK, &[&core], &ScriptedSink::new());
    route.start();
    // One at a time: m-1 sent while m-0 waits for its confirmation would go out first.
    route.feed(["m-0"]).await;
    route.source.wait_confirmed(1).await;
    route.feed(["m-1"]).await;
    route.source.wait_confirmed(2).await;

    let tried: Vec<String> = core.log(|l| l.tries.iter().map(|t| payload(&t.message)).collect());
    assert_eq!(tried, ["m-0", "m-0", "m-1"]);
    assert_eq!(core.confirmed(), ["m-0", "m-1"]);
    // The lost confirmation's publish may have reached the far side: the second is counted.
    assert_eq!(route.count(|c| &c.retried), 1);
    assert_settled_once(&route.source, &numbered("m", 2));
    route.shut_down().await;
}

#[tokio::test]
async fn a_rejected_message_is_dead_lettered_and_does_not_block_the_next() {
    let core = ScriptedSink::new().then(Attempt::Reject("payload too large"), 1);
    let dead = ScriptedSink::new();
    let mut route = TestedRoute::new(ONE_SINK, &[&core], &dead);
    route.start();
    let mut first = route.source.message(TOPIC, "m-0");
    first.message.headers.push(("trace".into(), "abc".into()));
    route.push(first).await;
    route.feed(["m-1", "m-2"]).await;
    route.source.wait_confirmed(3).await;

    assert_eq!(core.confirmed(), ["m-1", "m-2"]);
    // A rejected message is dealt with: its source is confirmed, in order.
    assert_settled_once(&route.source, &numbered("m", 3));
    let letters = dead.log(|l| l.confirmed.clone());
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.subject, "dead.telemetry");
    assert_eq!(payload(letter), "m-0");
    // The headers docs/mapping.md documents for a dead letter, and the message's own.
    assert_eq!(header(letter, "Ferry-Route"), Some("telemetry"));
    assert_eq!(header(letter, "Ferry-Stage"), Some("sink"));
    assert_eq!(
        header(letter, "Ferry-Error"),
        Some("core rejected it: payload too large")
    );
    assert_eq!(header(letter, "trace"), Some("abc"));
    assert_eq!(route.count(|c| &c.failed), 1);
    assert_eq!(route.count(|c| &c.dead_lettered), 1);
    assert_eq!(route.count(|c| &c.sent), 2);
    route.shut_down().await;
}

#[tokio::test]
async fn a_rejected_message_without_a_dead_letter_sink_is_counted_and_confirmed() {
    let routes = ONE_SINK.replace(
        "    dead_letter: { connection: dead, subject: dead.telemetry }\n",
        "",
    );
    let core = ScriptedSink::new().then(Attempt::Reject("bad topic"), 1);
    let mut route = TestedRoute::new(&routes, &[&core], &ScriptedSink::new());
    route.start();
    route.feed(["m-0", "m-1"]).await;
    route.source.wait_confirmed(2).await;

    assert_eq!(core.confirmed(), ["m-1"]);
    assert_settled_once(&route.source, &numbered("m", 2));
    assert_eq!(route.count(|c| &c.failed), 1);
    assert_eq!(route.count(|c| &c.dead_lettered), 0);
    route.shut_down().await;
}

#[tokio::test]
async fn a_message_that_panics_the_worker_twice_is_dead_lettered() {
    let core = ScriptedSink::new().then(Attempt::Panic, 2);
    let dead = ScriptedSink::new();
    let mut route = TestedRoute::new(ONE_SINK, &[&core], &dead);
    route.start();
    route.feed(["m-0"]).await;

    // The first panic ends the worker: the supervisor restarts it, the message is not
    // confirmed, and its source sends it again.
    let why = route.failure().await;
    assert!(why.contains("scripted sink panic"), "{why}");
    route.source.wait_until("the nack", |s| !s.is_empty()).await;
    assert_eq!(route.source.nacked(), ["m-0"]);
    route
        .supervisor
        .restarted(&Owner::Route("telemetry".into()));
    route.start();
    route.feed(["m-0", "m-1"]).await;

    // The second time, it is dead-lettered and the route goes on.
    route.source.wait_confirmed(2).await;
    assert_eq!(route.source.confirmed(), ["m-0", "m-1"]);
    assert_eq!(core.confirmed(), ["m-1"]);
    let letters = dead.log(|l| l.confirmed.clone());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(header(&letters[0], "Ferry-Stage"), Some("worker"));
    assert!(
        header(&letters[0], "Ferry-Error")
            .is_some_and(|e| e.contains("panicked the route worker twice")),
        "{letters:?}"
    );
    assert!(route.supervisor.down().is_empty());
    route.shut_down().await;
}

#[tokio::test]
async fn at_most_once_confirms_the_source_when_the_message_is_taken() {
    let routes = ONE_SINK.replace(
        "    dead_letter:",
        "    delivery: at-most-once\n    dead_letter:",
    );
    let core = ScriptedSink::new().otherwise(Attempt::Hang);
    let mut route = TestedRoute::new(&routes, &[&core], &ScriptedSink::new());
    route.start();
    route.feed(["m-0"]).await;

    route.source.wait_confirmed(1).await;
    assert!(core.confirmed().is_empty());
    route.give_up().await;
    assert_settled_once(&route.source, &["m-0".to_string()]);
}

#[tokio::test]
async fn shutdown_delivers_what_was_queued() {
    let (route, core, sent) = with_a_full_window(20).await;
    assert_eq!(route.output.len(), 20);

    // The sources stopped: the queue closes, and what is in flight or queued still goes out.
    route.output.close();
    let late = route.input.push(route.source.message(TOPIC, "late"));
    assert!(!within("a push", late).await);
    core.release(sent.len());
    route.ended().await;
    assert_eq!(core.confirmed(), sent);
    assert_settled_once(&route.source, &sent);
    assert_eq!(route.source.nacked(), ["late"]);
}

#[tokio::test]
async fn at_the_deadline_what_is_undelivered_is_left_unconfirmed_for_redelivery() {
    // m-0 is delivered; then the sink goes away for good.
    let core = ScriptedSink::new()
        .then(Attempt::Confirm, 1)
        .otherwise(Attempt::Unavailable);
    let mut route = TestedRoute::new(ONE_SINK, &[&core], &ScriptedSink::new());
    route.start();
    route.feed(numbered("m", 5)).await;
    core.wait_until("a retry of m-1", |l| l.tries.len() >= 3)
        .await;

    route.give_up().await;
    // Each message settled once: m-0 confirmed; the one in hand and the queued ones nacked,
    // so the source sends them again.
    assert_settled_once(&route.source, &["m-0".to_string()]);
    let mut nacked = route.source.nacked();
    nacked.sort();
    assert_eq!(nacked, ["m-1", "m-2", "m-3", "m-4"]);
    assert_eq!(route.count(|c| &c.unconfirmed), 0);
}

#[tokio::test]
async fn a_hanging_sink_is_abandoned_at_the_deadline() {
    let core = ScriptedSink::new().otherwise(Attempt::Hang);
    let mut route = TestedRoute::new(ONE_SINK, &[&core], &ScriptedSink::new());
    route.start();
    route.feed(["m-0", "m-1"]).await;
    core.wait_until("the first try", |l| !l.tries.is_empty())
        .await;

    route.give_up().await;
    assert_settled_once(&route.source, &[]);
    let mut nacked = route.source.nacked();
    nacked.sort();
    assert_eq!(nacked, ["m-0", "m-1"]);
}

#[tokio::test]
async fn a_stopped_worker_leaves_the_rest_of_the_queue_to_the_next() {
    let (mut route, core, sent) = with_a_full_window(44).await;

    // A reload replaces the worker: it finishes what it has in hand and leaves the rest.
    route.worker().stop.cancel();
    core.release(sent.len());
    route.ended().await;
    assert_eq!(route.source.confirmed(), sent[..IN_FLIGHT]);
    assert_eq!(route.output.len(), 44);

    route.start();
    route.source.wait_confirmed(sent.len()).await;
    assert_eq!(core.confirmed(), sent);
    assert_settled_once(&route.source, &sent);
    assert!(route.source.settled().iter().all(|s: &Settled| s.confirmed));
    route.shut_down().await;
}

#[tokio::test]
async fn a_busy_sink_is_tried_again_after_the_delay_it_asked_for() {
    let retry_after = Duration::from_millis(300);
    let core = ScriptedSink::new().then(Attempt::Busy(retry_after), 1);
    let mut route = TestedRoute::new(ONE_SINK, &[&core], &ScriptedSink::new());
    route.start();
    route.feed(["m-0"]).await;
    route.source.wait_confirmed(1).await;

    let tries = core.log(|l| l.tries.clone());
    assert_eq!(tries.len(), 2, "{tries:?}");
    let waited = tries[1].at - tries[0].at;
    assert!(waited >= retry_after, "tried again after {waited:?}");
    assert_eq!(core.confirmed(), ["m-0"]);
    route.shut_down().await;
}

#[tokio::test]
async fn a_sink_away_gets_its_spooled_messages_in_order_once_back() {
    let core = ScriptedSink::new().then(Attempt::Unavailable, 3);
    let mut route = TestedRoute::new(ONE_SINK, &[&core], &ScriptedSink::new()).with_spools();
    route.start();
    let sent = numbered("m", 20);
    route.feed(&sent).await;

    // The source hears of each message once the spool made it durable, sink or no sink.
    route.source.wait_confirmed(sent.len()).await;
    core.wait_until("every message", |l| l.confirmed.len() >= sent.len())
        .await;
    assert_eq!(core.confirmed(), sent);
    assert_settled_once(&route.source, &sent);
    let spooled = route.count(|c| &c.spooled);
    assert!(spooled >= 1, "nothing went through the spool");
    assert_eq!(route.count(|c| &c.forwarded), spooled);
    assert_eq!(route.count(|c| &c.sent), sent.len() as u64);
    route.shut_down().await;
}
