//! The `ringmq` command: the broker and the tools that talk to it.
//!
//! `ringmq broker` runs the broker in the foreground until SIGINT/SIGTERM. The other
//! subcommands are clients of a running broker (`--broker host:port`, its shared port).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringmq::broker::Config;
use ringmq::client::{Client, ClientError, Message, ProducerConfig, QueueSelector};

/// `ringmq --version`: the package version and the git revision it was built from.
const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("RINGMQ_GIT_REVISION"), ")");

#[derive(Parser)]
#[command(name = "ringmq", version = VERSION, about = "A thread-per-core message broker on io_uring")]
struct Cli {
    /// Log filter: error, warn, info, debug, trace, or a tracing EnvFilter directive.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the broker.
    Broker {
        /// TOML config with [broker] and [storage] (see tuning/broker.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Shared port; shard n also listens on port+1+n. 0 picks free ports.
        #[arg(long)]
        port: Option<u16>,
        #[arg(long)]
        shards: Option<usize>,
        /// Writes the bound ports here once the broker accepts connections.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Address of the /metrics endpoint (`[metrics] listen`), e.g. 127.0.0.1:0 for a free
        /// port; the ready line prints the URL.
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Serves RocketMQ 4.x clients too: a name server (`[rocketmq] namesrv_port`, 9876)
        /// and a broker port (`[rocketmq] broker_port`, 10911; the native port then moves
        /// from its default 10911 to 10811). See docs/rocketmq-compat.md.
        #[arg(long)]
        rocketmq: bool,
    },
    /// Runs a RocketMQ name server alone, in front of running brokers (`broker --rocketmq`
    /// runs one in-process instead).
    Namesrv {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:9876")]
        listen: String,
        /// A broker as NATIVE=FRONT: its native shared port and its RocketMQ front port
        /// (host:port each); repeat for more brokers.
        #[arg(long, default_value = "127.0.0.1:10811=127.0.0.1:10911")]
        broker: Vec<String>,
        /// Broker name in routes (brokers after the first get -1, -2, ...).
        #[arg(long, default_value = "ringmq")]
        broker_name: String,
        #[arg(long, default_value = "DefaultCluster")]
        cluster_name: String,
        /// Answer TOPIC_NOT_EXIST for unknown topics instead of creating them on first use.
        #[arg(long)]
        no_auto_create: bool,
        /// Queues of a topic created on first use.
        #[arg(long, default_value_t = 8)]
        queues: u32,
    },
    /// Creates, lists or deletes topics; prints their queues' offsets (by time with --at).
    Topic {
        #[command(subcommand)]
        action: TopicAction,
        #[arg(long, global = true, default_value = "127.0.0.1:10911")]
        broker: String,
    },
    /// Sends the given messages, or one message per stdin line when none are given.
    Produce {
        #[arg(long)]
        topic: String,
        /// Message key; with a key, messages go to the queue the key hashes to (ordered).
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        /// Send to this queue instead.
        #[arg(long)]
        queue: Option<u32>,
        /// Deliver this long from now (scheduled message), e.g. 8s, 10m, 1h 30m.
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "deliver_at")]
        delay: Option<std::time::Duration>,
        /// Deliver at this time (scheduled message), RFC 3339, e.g. 2026-12-24T18:00:00Z.
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        deliver_at: Option<std::time::SystemTime>,
        #[arg(long, default_value = "127.0.0.1:10911")]
        broker: String,
        messages: Vec<String>,
    },
    /// Prints messages: `queue offset key tag body`, tab-separated, one per line.
    Consume {
        #[arg(long)]
        topic: String,
        /// Only this queue (default: all).
        #[arg(long)]
        queue: Option<u32>,
        /// First offset (per queue); below a queue's start means its start.
        #[arg(long, default_value_t = 0)]
        from_offset: u64,
        /// Keep waiting for new messages instead of stopping at the end.
        #[arg(long)]
        follow: bool,
        /// Stop after this many messages.
        #[arg(long)]
        max_messages: Option<u64>,
        /// Only messages with this tag (repeat for several; RocketMQ's "A || B").
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Skip stored batches that are damaged (their records are lost): each skip is reported
        /// on stderr with the offsets it skipped. Without it, consume stops at such a batch.
        #[arg(long)]
        skip_corrupt: bool,
        /// Consume as a member of this consumer group (clustering): the group's members share
        /// the topic's queues, each starts at the group's committed offset (else at the queue's
        /// first offset) and commits what it printed. With --follow it stays a member, follows
        /// rebalances and commits on SIGINT/SIGTERM before leaving.
        #[arg(long)]
        group: Option<String>,
        #[arg(long, default_value = "127.0.0.1:10911")]
        broker: String,
    },
    /// Lists, describes or resets consumer groups.
    Group {
        #[command(subcommand)]
        action: GroupAction,
        #[arg(long, global = true, default_value = "127.0.0.1:10911")]
        broker: String,
    },
    /// Lists a consumer group's dead letters (`%DLQ%<group>`) or resends them to their topics.
    Dlq {
        #[command(subcommand)]
        action: dlq_cli::DlqAction,
        #[arg(long, global = true, default_value = "127.0.0.1:10911")]
        broker: String,
    },
    /// Finds stored messages by key (the key index) or by message id. A message id is 32 hex
    /// digits: topic id (8) + queue id (8) + queue offset (16), as `ringmq produce` prints it.
    Message {
        #[command(subcommand)]
        action: message_cli::MessageAction,
        #[arg(long, global = true, default_value = "127.0.0.1:10911")]
        broker: String,
    },
    /// Transactional messages: the undecided halves.
    Txn {
        #[command(subcommand)]
        action: TxnAction,
        #[arg(long, global = true, default_value = "127.0.0.1:10911")]
        broker: String,
    },
    /// Master/replica groups: promote a replica to master.
    Cluster {
        #[command(subcommand)]
        action: cluster_cli::ClusterAction,
        /// The broker to act on (its shared port).
        #[arg(long, global = true, default_value = "127.0.0.1:10911")]
        broker: String,
    },
    /// Prints per-shard counters.
    Stats {
        #[arg(long, default_value = "127.0.0.1:10911")]
        broker: String,
    },
    /// Checks the OS settings that matter to the broker, or applies a tuning profile.
    Tune {
        #[command(subcommand)]
        action: ringmq::tune::TuneCommand,
    },
}

#[derive(Subcommand)]
enum TxnAction {
    /// Undecided halves on every shard, oldest first: age and check-backs so far.
    List {
        /// At most this many per shard.
        #[arg(long, default_value_t = 1000)]
        max: u32,
    },
}

#[derive(Subcommand)]
enum GroupAction {
    /// Groups with members or committed offsets.
    List,
    /// Members, queue assignment, committed offset, end and lag per queue, total lag.
    Describe { group: String },
    /// Moves the group's committed offsets on every queue of a topic.
    Reset {
        group: String,
        #[arg(long)]
        topic: String,
        /// earliest, latest, an RFC 3339 time (2026-12-01T10:00:00Z) or an offset.
        #[arg(long)]
        to: String,
    },
    /// Forgets a group without members: its committed offsets on every queue. Refused while
    /// the group has live members (stop its consumers first).
    Delete { group: String },
}

#[derive(Subcommand)]
enum TopicAction {
    Create {
        name: String,
        #[arg(long, default_value_t = 8)]
        queues: u32,
    },
    List,
    Delete {
        name: String,
    },
    /// Prints each queue's offsets: `queue=Q min=M next=N`, and with `--at`, `at=O`, the first
    /// offset stored at or after that time (`next` when nothing is).
    Offsets {
        name: String,
        /// An RFC 3339 time (`2026-12-01T10:00:00Z`; without a zone it is UTC).
        #[arg(long)]
        at: Option<String>,
    },
}

fn init_logging(level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("invalid --log-level {level:?}: {e}"))?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Broker { .. }) { "info" } else { "warn" };
    if let Err(e) = init_logging(cli.log_level.as_deref().unwrap_or(default_level)) {
        eprintln!("ringmq: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Broker {
            config,
            data_dir,
            port,
            shards,
            ready_file,
            metrics_listen,
            rocketmq,
        } => {
            let flags =
                BrokerFlags { data_dir, port, shards, ready_file, metrics_listen, rocketmq };
            run_broker(config, flags)
        }
        Command::Namesrv { listen, broker, broker_name, cluster_name, no_auto_create, queues } => {
            ringmq::compat::rocketmq::standalone::run(
                &listen,
                &broker,
                &broker_name,
                &cluster_name,
                !no_auto_create,
                queues,
            )
        }
        Command::Topic { action, broker } => topic(&broker, action),
        Command::Produce { topic, key, tag, queue, delay, deliver_at, broker, messages } => {
            let at = delay.map(|d| std::time::SystemTime::now() + d).or(deliver_at);
            produce(&broker, &topic, key, tag, queue, at, messages)
        }
        Command::Consume {
            topic,
            queue,
            from_offset,
            follow,
            max_messages,
            tags,
            skip_corrupt,
            group,
            broker,
        } => {
            let opts = consume_cli::ConsumeOptions {
                from_offset,
                follow,
                max_messages,
                tags,
                skip_corrupt,
            };
            match group {
                Some(g) if queue.is_none() => group_consume::run(&broker, &topic, &g, opts),
                Some(_) => {
                    Err("--group and --queue exclude each other: the group assigns queues".into())
                }
                None => consume_cli::consume(&broker, &topic, queue, opts),
            }
        }
        Command::Group { action, broker } => group(&broker, action),
        Command::Dlq { action, broker } => dlq_cli::run(&broker, action),
        Command::Message { action, broker } => message_cli::run(&broker, action),
        Command::Txn { action: TxnAction::List { max }, broker } => txn_list(&broker, max),
        Command::Cluster { action, broker } => cluster_cli::run(&broker, action),
        Command::Stats { broker } => stats(&broker),
        Command::Tune { action } => return ringmq::tune::run(action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmq: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `ringmq broker` flags that override the config file.
struct BrokerFlags {
    data_dir: Option<PathBuf>,
    port: Option<u16>,
    shards: Option<usize>,
    ready_file: Option<PathBuf>,
    metrics_listen: Option<String>,
    rocketmq: bool,
}

fn run_broker(config: Option<PathBuf>, flags: BrokerFlags) -> Result<(), String> {
    let BrokerFlags { data_dir, port, shards, ready_file, metrics_listen, rocketmq } = flags;
    let mut cfg = match config {
        Some(path) => Config::load(&path)?,
        None => Config::default(),
    };
    if rocketmq {
        cfg.rocketmq.enabled = true;
        // Both default to 10911 (RocketMQ's broker port): the front keeps it, the native
        // port moves unless one was chosen.
        if port.is_none() && cfg.broker.port == 10911 && cfg.rocketmq.broker_port == 10911 {
            cfg.broker.port = 10811;
        }
    }
    if let Some(d) = data_dir {
        cfg.broker.data_dir = d;
    }
    if let Some(p) = port {
        cfg.broker.port = p;
    }
    if let Some(n) = shards {
        cfg.broker.shards = n;
    }
    if ready_file.is_some() {
        cfg.broker.ready_file = ready_file;
    }
    if let Some(a) = metrics_listen {
        cfg.metrics.listen = a;
    }
    ringmq::broker::run(cfg)
}

fn err(e: ClientError) -> String {
    e.to_string()
}

fn topic(broker: &str, action: TopicAction) -> Result<(), String> {
    let admin = Client::connect(broker).map_err(err)?.admin();
    match action {
        TopicAction::Create { name, queues } => {
            let id = admin.create_topic(&name, queues).map_err(err)?;
            println!("created topic {name} (id {id}, {queues} queues)");
        }
        TopicAction::List => {
            for t in admin.list_topics().map_err(err)? {
                println!("{}\tid={}\tqueues={}", t.name, t.topic_id, t.queue_count);
            }
        }
        TopicAction::Delete { name } => {
            let id = admin.delete_topic(&name).map_err(err)?;
            println!("deleted topic {name} (id {id})");
        }
        TopicAction::Offsets { name, at } => {
            let at_ms = at.as_deref().map(|t| rfc3339_ms("--at", t)).transpose()?;
            let route = admin.route(&name).map_err(err)?;
            for queue in 0..route.queue_count() {
                let o = admin.queue_offsets(&name, queue).map_err(err)?;
                let mut line = format!("queue={queue}\tmin={}\tnext={}", o.min, o.next);
                if let Some(ms) = at_ms {
                    let offset = admin.offset_for_timestamp(&name, queue, ms).map_err(err)?;
                    line.push_str(&format!("\tat={offset}"));
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch of an RFC 3339 time given to `flag`.
fn rfc3339_ms(flag: &str, text: &str) -> Result<i64, String> {
    let at = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{flag} {text:?} is not an RFC 3339 time ({e})"))?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{flag} {text:?} is before 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| format!("{flag} {text:?} is too far in the future"))
}

fn produce(
    broker: &str,
    topic: &str,
    key: Option<String>,
    tag: Option<String>,
    queue: Option<u32>,
    deliver_at: Option<std::time::SystemTime>,
    messages: Vec<String>,
) -> Result<(), String> {
    let client = Client::connect(broker).map_err(err)?;
    let selector = match (queue, &key) {
        (Some(q), _) => QueueSelector::Queue(q),
        (None, Some(_)) => QueueSelector::KeyHash,
        (None, None) => QueueSelector::RoundRobin,
    };
    // The broker's default batch limit (RocketMQ's maxMessageSize), so any message a default
    // broker accepts can be sent; the library's smaller default suits batching, not this tool.
    let max_batch_bytes = ringmq::storage::StorageConfig::default().max_batch_bytes;
    let producer = client
        .producer(ProducerConfig { selector, max_batch_bytes, ..Default::default() })
        .map_err(err)?;
    let make = |body: String| {
        let mut m = Message::new(topic, body);
        if let Some(k) = &key {
            m = m.with_key(k.as_bytes());
        }
        if let Some(t) = &tag {
            m = m.with_tag(t.as_bytes());
        }
        m
    };
    if let Some(at) = deliver_at {
        return produce_scheduled(&producer, at, messages.into_iter().map(make));
    }
    // Send everything asynchronously (batched), then report each result in order.
    let mut pending = Vec::new();
    if messages.is_empty() {
        use std::io::IsTerminal;
        if std::io::stdin().is_terminal() {
            // Otherwise a newcomer sees a command that seems to hang.
            eprintln!(
                "ringmq: no messages given: reading one message per line from stdin \
                 (end with Ctrl-D)"
            );
        }
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| format!("reading stdin: {e}"))?;
            pending.push(producer.send_async(make(line)).map_err(err)?);
        }
    } else {
        for m in messages {
            pending.push(producer.send_async(make(m)).map_err(err)?);
        }
    }
    let mut failed = 0;
    let mut out = std::io::stdout().lock();
    for p in pending {
        match p.wait() {
            Ok(r) => {
                let _ = writeln!(
                    out,
                    "{:?}\tqueue={}\toffset={}\tmsgId={}",
                    r.status,
                    r.queue_id,
                    r.queue_offset,
                    r.message_id()
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("ringmq: send failed: {e}");
            }
        }
    }
    producer.close().map_err(err)?;
    if failed > 0 {
        return Err(format!("{failed} message(s) were not sent"));
    }
    Ok(())
}

/// Sends each message to be delivered at `at`, one scheduled send each, and prints where the
/// broker holds it until then.
fn produce_scheduled(
    producer: &ringmq::client::Producer,
    at: std::time::SystemTime,
    messages: impl Iterator<Item = Message>,
) -> Result<(), String> {
    let when = humantime::format_rfc3339_millis(at);
    let mut out = std::io::stdout().lock();
    let mut any = false;
    for m in messages {
        any = true;
        let r = producer.send_at(m, at).map_err(err)?;
        let _ = writeln!(
            out,
            "{:?}\tscheduled\tdeliver_at={when}\theld_at=%SYS%schedule:{}",
            r.status, r.queue_offset
        );
    }
    if !any {
        return Err("give the messages to schedule as arguments".into());
    }
    Ok(())
}

mod cluster_cli;
mod consume_cli;
mod dlq_cli;
mod group_consume;
mod message_cli;

fn txn_list(broker: &str, max: u32) -> Result<(), String> {
    let client = Client::connect(broker).map_err(err)?;
    let halves = ringmq::client::transaction::list_undecided(client.router(), max).map_err(err)?;
    println!("shard\ttransaction_id\tgroup\ttopic\tqueue\tage_ms\tchecks");
    for (shard, h) in halves {
        let topic = if h.topic.is_empty() { "(deleted)" } else { h.topic.as_str() };
        println!(
            "{shard}\t{}\t{}\t{topic}\t{}\t{}\t{}",
            h.transaction_id, h.group, h.queue_id, h.age_ms, h.checks
        );
    }
    Ok(())
}

fn group(broker: &str, action: GroupAction) -> Result<(), String> {
    use ringmq::protocol::group::ResetTo;
    let groups = Client::connect(broker).map_err(err)?.groups();
    match action {
        GroupAction::List => {
            println!("group\tmembers\tversion\tcommitted_queues");
            // Page by page, as the broker answers them: every group, each once, in name order.
            groups
                .list_each(|page| {
                    for g in page {
                        println!(
                            "{}\t{}\t{}\t{}",
                            g.group, g.members, g.version, g.committed_queues
                        );
                    }
                })
                .map_err(err)?;
        }
        GroupAction::Describe { group } => {
            let d = groups.describe(&group).map_err(err)?;
            println!("group {} version {} members {}", d.group, d.version, d.members.len());
            for m in &d.members {
                let subs: Vec<String> =
                    m.subscriptions.iter().map(|(t, e)| format!("{t}:{e}")).collect();
                let room =
                    if m.room.is_empty() { String::new() } else { format!(" room={}", m.room) };
                println!("member {}{room} subscriptions {}", m.client_id, subs.join(","));
            }
            println!("topic\tqueue\tmember\tcommitted\tmax_offset\tlag");
            for q in &d.queues {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    q.topic,
                    q.queue_id,
                    q.assigned_to.as_deref().unwrap_or("-"),
                    q.committed.map_or("-".to_string(), |o| o.to_string()),
                    q.max_offset,
                    q.lag
                );
            }
            println!("total lag {}", d.total_lag);
        }
        GroupAction::Reset { group, topic, to } => {
            let to = match to.as_str() {
                "earliest" => ResetTo::Earliest,
                "latest" => ResetTo::Latest,
                t => match t.parse::<u64>() {
                    Ok(o) => ResetTo::Offset(o),
                    Err(_) => ResetTo::Timestamp(rfc3339_ms("--to", t).map_err(|e| {
                        format!("{e}; --to takes earliest, latest, an offset or a time")
                    })?),
                },
            };
            for (queue, offset) in groups.reset(&group, &topic, to).map_err(err)? {
                println!("{topic}\t{queue}\t{offset}");
            }
        }
        GroupAction::Delete { group } => {
            let removed = groups.delete(&group).map_err(err)?;
            println!("group {group} deleted: committed offsets of {removed} queue(s) removed");
        }
    }
    Ok(())
}

fn stats(broker: &str) -> Result<(), String> {
    let shards = Client::connect(broker).map_err(err)?.admin().stats().map_err(err)?;
    println!(
        "shard\tconns\trequests\tproduce_batches\tproduce_records\tproduce_bytes\tfetches\tfetch_bytes\tfwd_out\tfwd_in\tlong_polls\terrors"
    );
    for s in shards {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            s.shard,
            s.connections_open,
            s.requests,
            s.produce_batches,
            s.produce_records,
            s.produce_bytes,
            s.fetch_requests,
            s.fetch_bytes,
            s.forwarded_out,
            s.forwarded_in,
            s.long_poll_waiting,
            s.errors
        );
    }
    Ok(())
}
