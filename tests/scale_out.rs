//! Past one box: three ferry instances share one route through the broker's own distribution
//! (an MQTT 5 shared subscription, a core NATS queue group, a shared JetStream durable, a
//! JetStream priority group with a pinned instance), under a numbered load of 20,000 messages,
//! and one instance is killed with SIGKILL mid-stream. Each test counts what the arrangement
//! promises ([Scaling out](../docs/scale-out.md)): nothing lost, duplicates within what the
//! killed instance held, order where it is promised; and for the queue group, what it loses.
//! Two last tests show the `overflow` policy holding an instance back until there is a
//! backlog, and a server too old for priority groups refused rather than used without them.
//!
//! Every instance relays to its own subject (`out.1`, `out.2`, `out.3`), so the counting
//! subscriber sees which instance relayed each message. The publisher is held to a window
//! ([`Load`]): what ferry holds at any moment, and so what the killed instance can lose or
//! relay twice, is bounded by it.

mod support;

use support::*;

/// Messages in each load.
const TOTAL: usize = 20_000;
/// Messages relayed before an instance is killed: mid-stream.
const KILL_AT: usize = 4_000;
/// The JetStream consumer's `max_ack_pending`: what one instance holds at most, and so what
/// it can relay again after it is killed.
const MAX_ACK_PENDING: usize = 500;
/// Each MQTT 5 connection's Receive Maximum: what the broker sends one instance before it
/// acknowledged anything (the connector's own bound).
const MQTT_RECEIVE_MAXIMUM: usize = 1_000;

/// Three ferry instances on one configuration, `INSTANCE` in it replaced by each one's number
/// (its sink subject, its MQTT client id).
struct Instances {
    config: String,
    running: Vec<Option<Ferry>>,
}

impl Instances {
    fn new(config: &str) -> Instances {
        Instances {
            config: config.to_string(),
            running: (0..3).map(|_| None).collect(),
        }
    }

    /// Starts instance `i` (1 to 3), again if it was killed, and waits until it is ready.
    async fn start(&mut self, i: usize) {
        let config = self.config.replace("INSTANCE", &i.to_string());
        self.running[i - 1] = Some(Ferry::start_ready(&config).await);
    }

    async fn start_all(&mut self) {
        for i in 1..=3 {
            self.start(i).await;
        }
    }

    /// Kills instance `i` with SIGKILL, as a crash would, and waits until it is gone.
    async fn kill(&mut self, i: usize) {
        let ferry = self.running[i - 1].as_mut().expect("instance running");
        ferry.kill9().await;
    }

    /// Stops instance `i` with SIGTERM, as `systemctl stop` does, and checks it exited cleanly.
    async fn stop(&mut self, i: usize) {
        let ferry = self.running[i - 1].as_mut().expect("instance running");
        let status = ferry.terminate().await;
        assert!(status.success(), "instance {i} stopped with {status}");
    }
}

/// Prints the tally and how many each instance relayed.
fn report(load: &Load, label: &str) -> Tally {
    let tally = load.tally().report(label);
    println!("{label}: by instance {:?}", load.by_subject());
    tally
}

/// How often consecutive arrivals came from different instances.
fn switches(load: &Load) -> usize {
    (load.arrivals.windows(2))
        .filter(|pair| pair[0].via != pair[1].via)
        .count()
}

// ---------------------------------------------------------------------------------------------
// MQTT 5 shared subscription

/// mosquitto gives each member of a shared subscription its share, and keeps the share of a
/// member whose persistent session is away (in flight or queued) for that session only: the
/// other members never get it. Restarted with the same client id, the member gets it all:
/// nothing lost, and what it had relayed without acknowledging comes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_shared_subscription_keeps_a_killed_members_share_for_its_restart() {
    let brokers = Scenario::new()
        .mosquitto_with(
            "plant",
            MosquittoOptions {
                max_queued_messages: Some(0),
                ..MosquittoOptions::default()
            },
        )
        .nats("core")
        .keys("plant", "client_id: ferry-share-INSTANCE")
        .routes(
            r#"
  - name: shared
    from: { connection: plant, topic: "load/#", qos: 1, share: ferries }
    to: { connection: core, subject: out.INSTANCE }
    delivery: at-least-once
"#,
        )
        .start_brokers();
    let (_subscriber, inbox) = brokers.nats_subscriber("core", "out.>").await;
    let mut ferries = Instances::new(&brokers.config);
    ferries.start_all().await;
    let publisher = brokers.mqtt_peer("plant").await;
    let mut load = Load::new(LoadInput::Mqtt(&publisher), "load/a", "mqtt", TOTAL, inbox);

    load.run_until("4,000 relayed", |l| l.unique() >= KILL_AT, secs(60))
        .await;
    ferries.kill(1).await;
    let killed_at = load.arrivals.len();
    load.run_until(
        "every message published",
        |l| l.published == l.total,
        secs(120),
    )
    .await;
    // The survivors relay their shares; what is missing then waits for the dead session.
    load.settle(secs(2), secs(60)).await;
    let held = TOTAL - load.unique();
    let survivors = load.count_via("out.2", killed_at) + load.count_via("out.3", killed_at);
    eprintln!(
        "mqtt shared subscription: {held} messages held for the killed member's session, \
         {survivors} relayed by the others after the kill"
    );
    assert!(
        survivors > 0,
        "the other members stopped: {:?}",
        load.by_subject()
    );
    assert!(
        held > 0,
        "mosquitto gave the killed member's share to the others: {}",
        load.tally()
    );

    let restarted_at = load.arrivals.len();
    ferries.start(1).await;
    load.run_until("every message relayed", Load::complete, secs(60))
        .await;
    load.collect_for(secs(1)).await;
    let tally = report(&load, "mqtt shared subscription");
    tally.assert_none_lost("mqtt shared subscription");
    assert!(
        load.count_via("out.1", restarted_at) >= held,
        "the held messages came from another member: {:?}",
        load.by_subject()
    );
    assert!(
        tally.duplicates <= MQTT_RECEIVE_MAXIMUM,
        "more duplicates than the killed member can have held: {tally}"
    );
}

// ---------------------------------------------------------------------------------------------
// core NATS queue group

/// A queue group hands each message to one member and never again: what the killed member
/// held is lost, and the survivors carry on with everything published after it died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_queue_group_loses_only_what_the_killed_member_held() {
    let brokers = Scenario::new()
        .nats("core")
        .routes(
            r#"
  - name: shared
    from: { connection: core, subject: "load.>", queue: ferries }
    to: { connection: core, subject: out.INSTANCE }
"#,
        )
        .start_brokers();
    let (_subscriber, inbox) = brokers.nats_subscriber("core", "out.>").await;
    let mut ferries = Instances::new(&brokers.config);
    ferries.start_all().await;
    let publisher = brokers.nats_peer("core").await;
    let mut load = Load::new(LoadInput::Nats(&publisher), "load.a", "nats", TOTAL, inbox);

    load.run_until("4,000 relayed", |l| l.unique() >= KILL_AT, secs(60))
        .await;
    ferries.kill(1).await;
    let published_at_kill = load.published;
    let killed_at = load.arrivals.len();
    load.run_until(
        "every message published and the last one relayed",
        |l| l.published == l.total && l.arrivals.iter().any(|a| a.seq == TOTAL - 1),
        secs(120),
    )
    .await;
    load.settle(secs(2), secs(60)).await;
    let tally = report(&load, "nats queue group");
    let in_flight = load.window + load.chunk;
    eprintln!(
        "nats queue group: sent {} = relayed {} + lost {} in flight to the killed member \
         (at most {in_flight} can be in flight)",
        tally.sent,
        tally.sent - tally.lost,
        tally.lost
    );
    assert_eq!(tally.sent, load.unique() + tally.lost);
    assert_eq!(
        tally.duplicates, 0,
        "core NATS never delivers twice: {tally}"
    );
    assert!(
        tally.lost <= in_flight,
        "more lost than was in flight: {tally}"
    );
    // The server drops the dead member at once: nothing published after the kill (beyond the
    // chunk that may have raced with it) is lost.
    let lost_late = (0..TOTAL)
        .filter(|seq| *seq >= published_at_kill + load.chunk)
        .filter(|seq| !load.arrived(*seq))
        .count();
    assert_eq!(
        lost_late, 0,
        "messages published after the kill were lost: {tally}"
    );
    let survivors = load.count_via("out.2", killed_at) + load.count_via("out.3", killed_at);
    assert!(
        survivors > 0,
        "the survivors stopped: {:?}",
        load.by_subject()
    );
}

// ---------------------------------------------------------------------------------------------
// JetStream

/// A JetStream server and the routes of three instances reading `jetstream` (the keys of the
/// source's `jetstream:` map) from stream LOAD into `out.INSTANCE`.
async fn jetstream_instances(
    nats: NatsOptions,
    jetstream: &str,
) -> (Brokers, NatsPeer, Inbox, Instances) {
    let brokers = Scenario::new()
        .nats_with(
            "core",
            NatsOptions {
                jetstream: true,
                ..nats
            },
        )
        .routes(&format!(
            r#"
  - name: shared
    from:
      connection: core
      subject: "load.>"
      jetstream: {{ stream: LOAD, consumer: ferries, {jetstream} }}
    to: {{ connection: core, subject: out.INSTANCE }}
    delivery: at-least-once
"#
        ))
        .start_brokers();
    let publisher = brokers.nats_peer("core").await;
    publisher.create_stream("LOAD", &["load.>"]).await;
    let inbox = publisher.subscribe("out.>").await;
    let instances = Instances::new(&brokers.config);
    (brokers, publisher, inbox, instances)
}

/// Instances bound to one durable consumer share its messages; what the killed one held
/// comes back to the others after `ack_wait`: nothing lost, duplicates within its window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_shared_durable_redelivers_what_the_killed_instance_held() {
    let shared = format!("max_ack_pending: {MAX_ACK_PENDING}, ack_wait: 3s");
    let (_brokers, publisher, inbox, mut ferries) =
        jetstream_instances(NatsOptions::default(), &shared).await;
    ferries.start_all().await;
    let mut load = Load::new(
        LoadInput::JetStream(&publisher),
        "load.a",
        "js",
        TOTAL,
        inbox,
    );

    load.run_until("4,000 relayed", |l| l.unique() >= KILL_AT, secs(60))
        .await;
    ferries.kill(1).await;
    let killed_at = load.arrivals.len();
    load.run_until("every message relayed", Load::complete, secs(120))
        .await;
    load.collect_for(secs(1)).await;
    let tally = report(&load, "jetstream shared durable");
    tally.assert_none_lost("jetstream shared durable");
    assert!(
        tally.duplicates <= MAX_ACK_PENDING,
        "more duplicates than the killed instance held: {tally}"
    );
    let survivors = load.count_via("out.2", killed_at) + load.count_via("out.3", killed_at);
    assert!(
        survivors > 0,
        "the survivors stopped: {:?}",
        load.by_subject()
    );
}

/// A nats-server 2.15 and three instances of a route whose consumer has a `pinned_client`
/// priority group, `max_ack_pending` and `ack_wait: 2s`; instance 1 is started.
async fn pinned_instances(max_ack_pending: usize) -> (Brokers, NatsPeer, Inbox, Instances) {
    let nats = NatsOptions {
        binary: Some(nats_server_2_15()),
        ..NatsOptions::default()
    };
    let group = format!(
        "ack_wait: 2s, max_ack_pending: {max_ack_pending}, \
         priority_group: {{ name: ferries, policy: pinned_client, pinned_ttl: 10s }}"
    );
    let (brokers, publisher, inbox, mut ferries) = jetstream_instances(nats, &group).await;
    ferries.start(1).await;
    (brokers, publisher, inbox, ferries)
}

/// Instance 1 relays 1,000 messages alone, so it is the one pinned; then the standbys start.
async fn pin_instance_1(load: &mut Load<'_>, ferries: &mut Instances) {
    load.run_until("1,000 relayed", |l| l.unique() >= 1_000, secs(60))
        .await;
    ferries.start(2).await;
    ferries.start(3).await;
}

/// A priority group with `pinned_client`: one instance relays at a time, the others wait on
/// standby. When the pinned one crashes (its connection closes), the server pins a standby at
/// once; what the dead one held comes back after `ack_wait`, behind newer messages: nothing
/// lost, and at most `max_ack_pending` messages relayed twice or out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_pinned_priority_group_fails_over_to_one_standby() {
    let (_brokers, publisher, inbox, mut ferries) = pinned_instances(MAX_ACK_PENDING).await;
    let mut load = Load::new(
        LoadInput::JetStream(&publisher),
        "load.a",
        "pin",
        TOTAL,
        inbox,
    );
    pin_instance_1(&mut load, &mut ferries).await;
    load.run_until("4,000 relayed", |l| l.unique() >= KILL_AT, secs(60))
        .await;
    assert_eq!(
        load.senders(),
        ["out.1"],
        "the standbys relayed while instance 1 was pinned"
    );
    ferries.kill(1).await;
    load.run_until("every message relayed", Load::complete, secs(120))
        .await;
    load.collect_for(secs(1)).await;
    let tally = report(&load, "jetstream pinned priority group");
    tally.assert_none_lost("jetstream pinned priority group");
    eprintln!(
        "pinned priority group: {} messages came back out of order after the crash",
        tally.reordered
    );
    assert!(
        tally.reordered <= MAX_ACK_PENDING && tally.duplicates <= MAX_ACK_PENDING,
        "more out of order or twice than the crashed instance held: {tally}"
    );
    assert_eq!(load.senders().len(), 2, "{:?}", load.by_subject());
    assert_eq!(
        switches(&load),
        1,
        "two instances relayed at once: {:?}",
        load.by_subject()
    );
}

/// With `max_ack_pending: 1` the server hands out nothing new while the crashed instance's
/// one message is unacknowledged: the standby starts with it, and the order is kept across the
/// takeover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_pinned_priority_group_with_one_pending_keeps_the_order() {
    let (_brokers, publisher, inbox, mut ferries) = pinned_instances(1).await;
    let mut load = Load::new(
        LoadInput::JetStream(&publisher),
        "load.a",
        "one",
        3_000,
        inbox,
    );
    pin_instance_1(&mut load, &mut ferries).await;
    load.run_until("1,500 relayed", |l| l.unique() >= 1_500, secs(60))
        .await;
    ferries.kill(1).await;
    load.run_until("every message relayed", Load::complete, secs(120))
        .await;
    load.collect_for(secs(1)).await;
    let tally = report(&load, "jetstream pinned, one pending");
    tally.assert_none_lost("jetstream pinned, one pending");
    assert_eq!(
        tally.reordered, 0,
        "out of order across the takeover: {tally}"
    );
    assert!(
        tally.duplicates <= 1,
        "more than the one held came twice: {tally}"
    );
    assert_eq!(switches(&load), 1, "{:?}", load.by_subject());
}

/// `systemctl stop` on the pinned instance: it stops pulling, relays and acks what it holds,
/// gives back what the server had sent it but it had not read, then disconnects, and the
/// server pins a standby. Nothing lost, nothing twice, and the instances take turns exactly
/// once. What was still on its way to the stopping instance when it stopped pulling comes back
/// after `ack_wait`, behind newer messages (at most the window; printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_pinned_priority_group_hands_over_on_a_clean_stop() {
    let (_brokers, publisher, inbox, mut ferries) = pinned_instances(MAX_ACK_PENDING).await;
    let mut load = Load::new(
        LoadInput::JetStream(&publisher),
        "load.a",
        "term",
        TOTAL,
        inbox,
    );
    pin_instance_1(&mut load, &mut ferries).await;
    load.run_until("4,000 relayed", |l| l.unique() >= KILL_AT, secs(60))
        .await;
    ferries.stop(1).await;
    load.run_until("every message relayed", Load::complete, secs(120))
        .await;
    load.collect_for(secs(1)).await;
    let tally = report(&load, "jetstream pinned, clean stop");
    tally.assert_none_lost("jetstream pinned, clean stop");
    assert_eq!(
        tally.duplicates, 0,
        "a clean stop relayed messages twice: {tally}"
    );
    assert!(
        tally.reordered <= MAX_ACK_PENDING,
        "more out of order than the stopped instance could hold: {tally}"
    );
    assert_eq!(switches(&load), 1, "{:?}", load.by_subject());
}

/// A priority group with `overflow`: an instance with `min_pending` pulls only while the
/// consumer holds at least that many messages waiting, and stops once it holds fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_overflow_instance_pulls_only_past_a_backlog() {
    let nats = NatsOptions {
        binary: Some(nats_server_2_15()),
        ..NatsOptions::default()
    };
    let group = "priority_group: { name: ferries, policy: overflow, min_pending: 1000 }";
    let (_brokers, publisher, mut inbox, mut ferries) = jetstream_instances(nats, group).await;
    ferries.start(1).await;
    let numbered = |seqs: std::ops::Range<usize>| {
        seqs.map(|i| ("load.a".to_string(), seq_payload("overflow", i, 0)))
    };
    publisher.jetstream_publish_all(numbered(0..500)).await;
    inbox.expect_nothing(secs(2)).await;
    publisher.jetstream_publish_all(numbered(500..1_500)).await;
    let mut relayed = vec![
        inbox
            .recv(secs(30))
            .await
            .expect("nothing relayed past the backlog"),
    ];
    relayed.extend(inbox.collect_for(secs(2)).await);
    // Pulled while 1,500 down to 1,000 were waiting: 501 messages, then it stops.
    let tally = Tally::of_msgs(1_500, "overflow", &relayed).report("jetstream overflow");
    assert!(
        tally.received <= 501,
        "pulled below the backlog of 1,000: {tally}"
    );
    assert_eq!(tally.duplicates + tally.reordered, 0, "{tally}");
}

/// A nats-server before 2.11 creates a consumer without the priority group it does not know:
/// ferry says so, and does not read through it as a plain shared durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_priority_groups_is_refused_loudly() {
    let group = "priority_group: { name: ferries, policy: pinned_client }";
    let (_brokers, publisher, mut inbox, ferries) =
        jetstream_instances(NatsOptions::default(), group).await;
    let mut ferry = Ferry::start(&ferries.config.replace("INSTANCE", "1"));
    let needle = "priority groups need nats-server 2.11 or later";
    ferry.wait_for_line(needle, secs(15)).await;
    publisher
        .jetstream_publish_all([("load.a".to_string(), seq_payload("old", 0, 0))])
        .await;
    inbox.expect_nothing(secs(2)).await;
}
