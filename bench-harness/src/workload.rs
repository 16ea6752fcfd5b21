//! A workload file: what to produce and consume, how fast, for how long, against which broker
//! settings. Fields follow the OpenMessaging Benchmark's workload files where they have an
//! equivalent. Unknown keys are errors, so a typo in a checked-in workload is reported instead
//! of silently measuring something else.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Bytes at the start of every message body: intended send time, producer, key, sequences
/// (see [`crate::payload`]). Messages must be at least this big.
pub const MIN_MESSAGE_BYTES: usize = crate::payload::PREFIX_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    /// No key; messages are spread over the queues round-robin.
    None,
    /// Keys `k0..k{key_count}` in turn.
    RoundRobin,
    /// Keys drawn uniformly from `k0..k{key_count}`.
    Random,
}

/// Which client code drives the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// The client library's `Producer` and `PullConsumer`: what applications get.
    Library,
    /// Pre-built batches over the library's connections and in-place fetch decoding
    /// ([`crate::raw`]): what the broker can take when the client is not the limit.
    Raw,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Topics created for the run (names get a run-unique suffix).
    pub topics: u32,
    pub queues_per_topic: u32,
    pub message_size_bytes: usize,
    /// The producer's `max_batch_bytes` (a batch is sealed when it reaches this).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// The producer's `linger`: how long an idle queue's open batch waits for more messages.
    #[serde(default)]
    pub linger_ms: u64,
    #[serde(default = "default_client")]
    pub client: ClientKind,
    /// Producer threads (one `Client` and one `Producer` each).
    pub producers: u32,
    /// Consumer threads; queues are split among them. 0 = produce only.
    pub consumers: u32,
    #[serde(default = "default_key_distribution")]
    pub key_distribution: KeyDistribution,
    #[serde(default)]
    pub key_count: u32,
    /// Messages per second, all producers together. 0 = as fast as possible.
    #[serde(default)]
    pub target_rate: u64,
    /// Measured time after the warm-up.
    pub duration_s: u64,
    #[serde(default)]
    pub warmup_s: u64,
    /// Messages one producer may have sent and not yet acknowledged.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Before consuming, produce this many bytes of messages (consumers wait); then measure
    /// how fast consumers catch up. Producers then keep going at `target_rate` (0: they stop).
    #[serde(default)]
    pub backlog_bytes: u64,
    /// Consumers check that each (producer, key)'s messages arrive in send order.
    #[serde(default)]
    pub verify_order: bool,
    /// Consumers are members of one consumer group (the library's `PushConsumer`, orderly
    /// listeners when `verify_order`) and share the queues by the group's rebalancing, instead
    /// of each pulling a fixed set of queues. Library client only.
    #[serde(default)]
    pub consumer_group: bool,
    /// Library producers send batches of this many messages with `Producer::send_batch_async`
    /// (one handle per batch: RocketMQ's batch send) instead of one `send_async` handle per
    /// message. 0 (default): per message. Unkeyed max-rate workloads only; the raw client
    /// ignores it.
    #[serde(default)]
    pub send_batch_messages: u32,
    /// Library producers build a new `Message` for every `send_async` (its topic and body
    /// allocated per message, as an application that hands messages over does) instead of
    /// refilling one `Message` per topic and sending it with `Producer::send_async_ref`.
    /// Default false (reused). The raw client ignores it.
    #[serde(default)]
    pub send_owned_messages: bool,
    /// Every message is a transaction of its own: a half, then its commit
    /// (`TransactionProducer::send_in_transaction`, one at a time per producer thread, so
    /// `producers` sets the concurrency). Library client, unkeyed, max rate, no batch sends.
    #[serde(default)]
    pub transactional: bool,
    /// Library producers of unkeyed messages stick to a queue for this many consecutive
    /// messages (`QueueSelector::Sticky`) instead of going round-robin per batch (the
    /// library's default, `QueueSelector::RoundRobinPerBatch`). 0: off.
    #[serde(default)]
    pub sticky_messages: u32,
    /// Library producers of unkeyed messages go round-robin per message
    /// (`QueueSelector::RoundRobin`) instead of per batch (the library's default).
    #[serde(default)]
    pub round_robin_per_message: bool,
    /// Library producers' `ProducerConfig::max_buffer_bytes`: the bytes of open, waiting and
    /// unanswered batches one producer may hold. With round-robin over many queues a queue's
    /// batch holds at most about this divided by the queue count. 0 (default): the library's
    /// default (32 MiB). The raw client ignores it.
    #[serde(default)]
    pub producer_buffer_bytes: usize,
    /// Library producers' `ProducerConfig::buffer_messages`: the messages callers may stage
    /// (in open batches and sealed ones the worker has not taken). With round-robin over many
    /// queues an open batch holds at most about this divided by the queue count. 0 (default):
    /// the library's default (100,000). The raw client ignores it.
    #[serde(default)]
    pub producer_buffer_messages: usize,
    /// Library producers' `ProducerConfig::small_batches_in_flight_bytes`: while a producer
    /// holds this many bytes of unanswered batches, its small open batches keep gathering
    /// messages. Unset: the library's default (4 MiB); 0: off. The raw client ignores it.
    #[serde(default)]
    pub producer_small_batches_in_flight_bytes: Option<usize>,
    /// Library producers' `ProducerConfig::max_in_flight_per_queue` (1 up to the broker's
    /// idempotence window: 16, 5 before round 45). 0 (default): the library's default, the
    /// broker's window. The raw client ignores it.
    #[serde(default)]
    pub producer_max_in_flight_per_queue: usize,
    /// Library producers' `ProducerConfig::send_timeout` in ms: how long a message may take
    /// from the send to its acknowledgement, time in the producer's buffer included. 0
    /// (default): the library's default (3 s). Raise it with `producer_buffer_bytes`: a full
    /// buffer takes its size divided by the broker's rate to drain. The raw client ignores it.
    #[serde(default)]
    pub producer_send_timeout_ms: u64,
    /// Library consumers read their queues with FETCH_MULTI (`MultiQueueReader`: each
    /// shard's queues in two requests at a time, the broker picking their batches in log
    /// order) instead of one pipelined FETCH per queue (`QueueReader`). Unset: when a
    /// consumer reads more than 64 queues. The raw client ignores it.
    #[serde(default)]
    pub consumer_fetch_multi: Option<bool>,
    /// Library consumers' queue readers keep a FETCH_NEXT behind each queue's current fetch
    /// (`QueueReader::with_fetch_next`; default true): two fetches of a queue in flight.
    /// False: one at a time. The raw client ignores it.
    #[serde(default = "default_true")]
    pub consumer_fetch_next: bool,
    /// Bytes one pull asks for (one FETCH_MULTI, with `consumer_fetch_multi`).
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: u32,
    /// How long consumers may take to catch up once producers stop.
    #[serde(default = "default_drain_timeout_s")]
    pub drain_timeout_s: u64,
    /// Broker settings for `--spawn-broker`: copied into the broker's `[broker]`,
    /// `[storage]` and `[key_index]` tables (ports, data dir and CPUs are set by the harness).
    #[serde(default)]
    pub broker: toml::Table,
    #[serde(default)]
    pub storage: toml::Table,
    #[serde(default)]
    pub key_index: toml::Table,
}

fn default_batch_max_bytes() -> usize {
    1 << 20
}
fn default_client() -> ClientKind {
    ClientKind::Library
}
fn default_key_distribution() -> KeyDistribution {
    KeyDistribution::None
}
fn default_max_in_flight() -> usize {
    20_000
}
fn default_fetch_max_bytes() -> u32 {
    4 << 20
}
fn default_true() -> bool {
    true
}
fn default_drain_timeout_s() -> u64 {
    60
}

impl Workload {
    /// Reads `path`, applies `overrides` (`key=value`, value in TOML syntax, dotted keys for
    /// nested tables: `storage.flush_mode="sync"`), and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Workload, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read workload {}: {e}", path.display()))?;
        Workload::parse(&text, overrides).map_err(|e| format!("workload {}: {e}", path.display()))
    }

    pub fn parse(text: &str, overrides: &[String]) -> Result<Workload, String> {
        let mut table: toml::Table = text.parse().map_err(|e| format!("invalid TOML: {e}"))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let w: Workload =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| e.to_string())?;
        w.validate()?;
        Ok(w)
    }

    pub fn validate(&self) -> Result<(), String> {
        let fail = |m: String| Err(m);
        if self.topics == 0 || self.queues_per_topic == 0 {
            return fail("topics and queues_per_topic must be at least 1".into());
        }
        if self.producers == 0 {
            return fail("producers must be at least 1".into());
        }
        if self.message_size_bytes < MIN_MESSAGE_BYTES {
            return fail(format!(
                "message_size_bytes = {} is below the {MIN_MESSAGE_BYTES}-byte header the harness \
                 puts in every message",
                self.message_size_bytes
            ));
        }
        if self.batch_max_bytes < self.message_size_bytes + 128 {
            return fail("batch_max_bytes must hold at least one message".into());
        }
        if self.key_distribution != KeyDistribution::None && self.key_count == 0 {
            return fail("key_count must be at least 1 with a key distribution".into());
        }
        if self.sticky_messages > 0 && self.key_distribution != KeyDistribution::None {
            return fail(
                "sticky_messages is for unkeyed messages (keys choose their queue)".into(),
            );
        }
        if self.round_robin_per_message
            && (self.sticky_messages > 0 || self.key_distribution != KeyDistribution::None)
        {
            return fail(
                "round_robin_per_message is for unkeyed messages without sticky_messages".into(),
            );
        }
        if self.verify_order && self.key_distribution == KeyDistribution::None {
            return fail("verify_order needs keys (key_distribution and key_count)".into());
        }
        if self.duration_s == 0 && self.backlog_bytes == 0 {
            return fail("duration_s must be at least 1".into());
        }
        if self.consumer_group && self.client != ClientKind::Library {
            return fail("consumer_group = true needs client = \"library\"".into());
        }
        if self.backlog_bytes > 0 && self.consumers == 0 {
            return fail("backlog_bytes needs consumers to drain it".into());
        }
        if self.client == ClientKind::Raw
            && (self.key_distribution != KeyDistribution::None || self.target_rate > 0)
        {
            return fail(
                "client = \"raw\" is for unkeyed max-rate workloads (no keys, target_rate = 0)"
                    .into(),
            );
        }
        if self.send_batch_messages > 0
            && (self.key_distribution != KeyDistribution::None || self.target_rate > 0)
        {
            // (The raw client ignores it: it always sends pre-built batches.)
            return fail("send_batch_messages is for unkeyed max-rate workloads".into());
        }
        if self.transactional
            && (self.client != ClientKind::Library
                || self.key_distribution != KeyDistribution::None
                || self.target_rate > 0
                || self.send_batch_messages > 0
                || self.backlog_bytes > 0)
        {
            return fail(
                "transactional = true is for unkeyed max-rate library workloads (no batch sends, \
                 no backlog)"
                    .into(),
            );
        }
        if self.max_in_flight == 0 {
            return fail("max_in_flight must be at least 1".into());
        }
        if self.target_rate > 0 && self.target_rate < self.producers as u64 {
            return fail("target_rate must give every producer at least 1 message/s".into());
        }
        Ok(())
    }
}

fn apply_override(table: &mut toml::Table, o: &str) -> Result<(), String> {
    let (key, value) =
        o.split_once('=').ok_or_else(|| format!("override {o:?} is not key=value"))?;
    let value: toml::Value = match format!("v = {value}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").expect("parsed one key"),
        // A bare word (sync, random) is taken as a string.
        Err(_) => toml::Value::String(value.trim().to_owned()),
    };
    let mut parts: Vec<&str> = key.trim().split('.').collect();
    let last = parts.pop().expect("split yields one part");
    let mut t = table;
    for p in parts {
        t = t
            .entry(p)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("override {o:?}: {p} is not a table"))?;
    }
    t.insert(last.to_owned(), value);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The smallest valid workload (tests here and in the other modules).
    pub(crate) const MIN: &str =
        "name = \"t\"\ntopics = 1\nqueues_per_topic = 4\nmessage_size_bytes = 1024\n\
                       producers = 1\nconsumers = 1\nduration_s = 5\n";

    #[test]
    fn parses_with_defaults_and_overrides() {
        let w = Workload::parse(MIN, &[]).unwrap();
        assert_eq!(w.batch_max_bytes, 1 << 20);
        assert_eq!(w.key_distribution, KeyDistribution::None);
        assert_eq!(w.target_rate, 0);
        let w = Workload::parse(
            MIN,
            &[
                "duration_s=1".into(),
                "storage.flush_mode=sync".into(),
                "key_count = 7".into(),
                "key_index.enabled=false".into(),
            ],
        )
        .unwrap();
        assert_eq!(w.duration_s, 1);
        assert_eq!(w.key_count, 7);
        assert_eq!(w.storage["flush_mode"].as_str(), Some("sync"));
        assert_eq!(w.key_index["enabled"].as_bool(), Some(false));
    }

    #[test]
    fn every_shipped_workload_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let w = Workload::load(&p, &[]).unwrap();
                assert_eq!(Some(w.name.as_str()), p.file_stem().and_then(|s| s.to_str()));
                n += 1;
            }
        }
        assert!(n >= 7, "only {n} workloads");
    }

    #[test]
    fn rejects_bad_files_with_a_clear_message() {
        let e = Workload::parse(&format!("{MIN}colour = 1\n"), &[]).unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = Workload::parse(MIN, &["message_size_bytes=8".into()]).unwrap_err();
        assert!(e.contains("message_size_bytes"), "{e}");
        let e = Workload::parse(MIN, &["verify_order=true".into()]).unwrap_err();
        assert!(e.contains("verify_order"), "{e}");
        let keyed_txn = ["transactional=true".into(), "target_rate=1000".into()];
        let e = Workload::parse(MIN, &keyed_txn).unwrap_err();
        assert!(e.contains("transactional"), "{e}");
        let e = Workload::parse("name = 1", &[]).unwrap_err();
        assert!(e.contains("invalid type") || e.contains("name"), "{e}");
        assert!(Workload::parse("topics = ", &[]).unwrap_err().contains("invalid TOML"));
        assert!(Workload::parse(MIN, &["nonsense".into()]).unwrap_err().contains("key=value"));
    }
}
