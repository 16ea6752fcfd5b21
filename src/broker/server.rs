//! Starting and stopping the broker: the main thread's orchestration and each shard's life.
//!
//! Start (main thread, [`run`]): validate the config, make `data_dir` absolute, lock it
//! ([`DataDirLock`]: one broker per data directory), bind every port ([`listener::reserve`]:
//! refuses ports another process serves), load the topic table, build the two meshes, start
//! the shards; once every shard opened its log, start the metrics endpoint (its port was bound
//! with the others) and send each the port list; once every shard finished its start-up
//! (replication role, rebuilt state) and serves, print the ready line
//! (`ringmq broker ready shared_port=P shard_ports=A,B,.. revision=R metrics=URL`, stdout only)
//! and write `ready_file`. A start that fails before the port list went out removes the
//! directories it created ([`StartFootprint`]); one that fails after it (a replica refused by
//! its master, a master whose replicas follow another) exits with the error and no ready line.
//!
//! A shard's life (`shard_main`, on its executor): open log, take its listeners, report ready,
//! wait for the port list, start its replication role, rebuild its state, connect the meshes,
//! serve (and report serving). On stop: stop accepting; wake long-polls; wait (at
//! most `shutdown_timeout_ms`) for connections to answer their in-flight requests; close the
//! mesh senders; keep serving forwarded requests until every peer closed its senders; then
//! `flush()` and `close()` the log. The process exits 0 when every shard stopped cleanly.

use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::Semaphore;
use futures::channel::oneshot;
use futures::FutureExt;

use super::config::{shard_placement, Config};
use super::data_dir_lock::{DataDirLock, StartFootprint, LOCK_FILE_NAME};
use super::forwarding;
use super::listener::{self, Protocol, Reserved};
use super::log_backend::{self, Log};
use super::mesh::{self, MeshEnds};
use super::metadata_store::{self, MetadataStore};
use super::routing::ShardId;
use super::shard::replication::ShardRole;
use super::shard::{Control, Forward, Ports, Shard};
use super::shutdown::{self, Stop, StopHandle, StopStep};
use super::topics::TopicTable;
use crate::compat::rocketmq::bodies::BrokerEntry;
use crate::compat::rocketmq::dispatch::FrontSite;
use crate::compat::rocketmq::namesrv::{NameServer, NamesrvOptions, NativeBroker, NativeBrokers};
use crate::metrics::exposition;
use crate::metrics::http::{HttpLimits, HttpServer};
use crate::metrics::Exporter;
use crate::replication::role_override::apply_role_override;
use crate::runtime::{self, ExecutorOptions};

enum Event {
    /// A shard opened its log and holds its listeners.
    Ready,
    /// A shard finished its start-up and accepts connections.
    Serving,
    Exited {
        shard: usize,
        result: Result<(), String>,
    },
    Signal(i32),
    /// A shard cannot go on (e.g. a replica whose log diverged from its master's): stop the
    /// broker and exit with this error.
    Fatal {
        shard: usize,
        error: String,
    },
}

struct ShardArgs {
    id: usize,
    shard_count: usize,
    config: Arc<Config>,
    topics: TopicTable,
    shared: Reserved,
    own: Reserved,
    data: MeshEnds<Forward>,
    control: MeshEnds<Control>,
    go: oneshot::Receiver<Ports>,
    stop: Stop,
    events: mpsc::SyncSender<Event>,
    /// This start's count, for producer ids (`producer_ids`).
    boot: u64,
    /// Queries from the metrics exporter; None when `[metrics] enabled = false`.
    metrics: Option<crate::metrics::Inbox>,
    /// This shard's socket on the RocketMQ front's broker port, when the front is on.
    front: Option<(Reserved, FrontSite)>,
}

/// Runs the broker until SIGINT/SIGTERM; Ok after a clean stop.
pub fn run(mut config: Config) -> Result<(), String> {
    config.validate()?;
    let placement = shard_placement(&config.broker)?;
    let n = placement.len();
    // A relative data_dir is relative to the working directory at start. Every later use gets
    // the absolute path: glommio opens directories with openat(-1, path), which fails with
    // EBADF for a relative path (the default "data" did not start).
    let data_dir = config.broker.data_dir.clone();
    let data_dir_existed = std::fs::symlink_metadata(&data_dir).is_ok();
    std::fs::create_dir_all(&data_dir)
        .and_then(|_| std::fs::canonicalize(&data_dir))
        .map(|absolute| config.broker.data_dir = absolute)
        .map_err(|e| {
            format!(
                "cannot create data directory {}: {e} (check the path and its permissions)",
                data_dir.display()
            )
        })?;
    let data_dir = config.broker.data_dir.clone();
    let lock_existed = data_dir.join(LOCK_FILE_NAME).exists();
    let lock = DataDirLock::acquire(&data_dir)?;
    apply_role_override(&mut config)?;
    let footprint = StartFootprint::record(
        &data_dir,
        data_dir_existed,
        lock_existed,
        n,
        &[super::producer_ids::BOOT_FILE],
    );
    let mut served = false;
    let result = run_locked(config, placement, &mut served);
    if result.is_err() && !served {
        // Nothing was acknowledged: remove the fresh directories (and the preallocated
        // segments in them) so a retry with a fixed config starts from the same state.
        footprint.remove(&lock);
    }
    drop(lock);
    result
}

/// The broker's life once it holds the data directory; sets `served` when it printed the
/// ready line (from then on its files hold data).
fn run_locked(
    config: Config,
    placement: Vec<Option<usize>>,
    served: &mut bool,
) -> Result<(), String> {
    let n = placement.len();
    if let Some(w) = runtime::check_memlock(n, config.shard_io_memory_bytes()) {
        tracing::warn!("{w}");
    }
    runtime::tune_allocator();
    tracing::info!(shards = n, "{}", config.shard_memory_budget());
    let reserved = listener::reserve(&config.broker.listen_address, config.broker.port, n)?;
    // Bound before the shards start, like the broker's ports, so a busy metrics port fails
    // the start instead of leaving a broker nobody can watch.
    let metrics_listener = if config.metrics.enabled {
        let addr = config.metrics.listen_addr()?;
        Some(std::net::TcpListener::bind(addr).map_err(|e| {
            format!(
                "cannot listen for metrics on {addr}: {e} (choose a free address with \
                 [metrics] listen or --metrics-listen, or set [metrics] enabled = false)"
            )
        })?)
    } else {
        None
    };
    let rq = &config.rocketmq.clone();
    let listen = config.broker.listen_address.clone();
    let mut front_sockets: Vec<Option<Reserved>> = Vec::new();
    let mut front_site = None;
    let mut namesrv_listener = None;
    if rq.enabled {
        let ip = rq.advertised_ip(&listen)?;
        let sockets = listener::reserve_shared(
            &listen,
            rq.broker_port,
            n,
            "the RocketMQ broker port, rocketmq.broker_port",
        )?;
        let port = sockets.first().map_or(0, |r| r.port);
        front_site = Some(FrontSite::new(std::net::SocketAddrV4::new(ip, port), rq.clone()));
        front_sockets = sockets.into_iter().map(Some).collect();
        if rq.namesrv {
            let addr = format!("{}:{}", bracket(&listen), rq.namesrv_port);
            namesrv_listener = Some(std::net::TcpListener::bind(&addr).map_err(|e| {
                format!(
                    "cannot listen for the RocketMQ name server on {addr}: {e} (choose another \
                     rocketmq.namesrv_port, or set rocketmq.namesrv = false and run `ringmq \
                     namesrv` elsewhere)"
                )
            })?);
        }
    }
    let (exporter, inboxes) =
        Exporter::new(n, config.metrics.limits(), config.metrics.scrape_timeout());
    let mut inboxes = inboxes.into_iter();
    let topics = metadata_store::load(&config.broker.data_dir, n)?;
    let boot = super::producer_ids::advance_boot(&config.broker.data_dir)?;
    let config = Arc::new(config);
    let cap = config.broker.forward_channel_capacity;
    let data_ends = mesh::build::<Forward>(n, cap);
    let control_ends = mesh::build::<Control>(n, cap);
    let (events, events_rx) = mpsc::sync_channel::<Event>(4 * n + 16);
    {
        let events = events.clone();
        shutdown::watch_signals(move |sig| {
            let _ = events.try_send(Event::Signal(sig));
        })
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    }

    let ports = Ports {
        shared: reserved.shared.first().map_or(0, |r| r.port),
        per_shard: reserved.own.iter().map(|r| r.port).collect(),
    };
    let mut handles = Vec::with_capacity(n);
    let mut stops: Vec<StopHandle> = Vec::with_capacity(n);
    let mut gos = Vec::with_capacity(n);
    let mut failure: Option<String> = None;
    let sockets = reserved.shared.into_iter().zip(reserved.own);
    let ends = data_ends.into_iter().zip(control_ends).zip(sockets).enumerate();
    for (id, ((data, control), (shared, own))) in ends {
        let (stop_handle, stop) = shutdown::stop_pair();
        let (go_tx, go) = oneshot::channel();
        let args = ShardArgs {
            id,
            shard_count: n,
            config: config.clone(),
            topics: topics.clone(),
            shared,
            own,
            data,
            control,
            go,
            stop,
            events: events.clone(),
            boot,
            metrics: inboxes.next().filter(|_| metrics_listener.is_some()),
            front: front_sockets.get_mut(id).and_then(Option::take).zip(front_site.clone()),
        };
        let opts = ExecutorOptions {
            name: format!("ringmq-shard-{id}"),
            cpu: placement[id],
            io_memory_bytes: config.shard_io_memory_bytes(),
        };
        let handle = match runtime::spawn_executor(opts, move || shard_thread(args)) {
            Ok(h) => h,
            Err(e) => {
                // Stop the shards already started (they close their logs) before failing.
                failure = Some(format!("shard {id}: {e}"));
                break;
            }
        };
        handles.push(handle);
        stops.push(stop_handle);
        gos.push(go_tx);
    }
    if failure.is_none() {
        failure = await_shards(&events_rx, n, Event::is_ready);
    }
    let mut metrics_server = None;
    if let (None, Some(l)) = (&failure, metrics_listener) {
        let scrape = move || Ok(exposition::render(exporter.gather()));
        match HttpServer::start(l, HttpLimits::default(), Arc::new(scrape)) {
            Ok(s) => metrics_server = Some(s),
            Err(e) => failure = Some(format!("cannot start the metrics endpoint: {e}")),
        }
    }
    let mut namesrv = None;
    if let (None, Some(l), Some(site)) = (&failure, namesrv_listener, &front_site) {
        let native = format!("{}:{}", bracket(&loopback_of(&listen)), ports.shared);
        let entry = BrokerEntry {
            cluster: rq.cluster_name.clone(),
            name: rq.broker_name.clone(),
            address: site.store_host.to_string(),
        };
        let opts = NamesrvOptions {
            auto_create_topics: rq.auto_create_topics,
            auto_create_queue_count: rq.auto_create_queue_count,
            max_connections: 1024,
        };
        let brokers = Arc::new(NativeBrokers(vec![NativeBroker::new(native, entry)]));
        match NameServer::start(l, brokers, opts) {
            Ok(s) => namesrv = Some(s),
            Err(e) => failure = Some(format!("cannot start the RocketMQ name server: {e}")),
        }
    }
    if let Some(e) = failure {
        // Dropping the go senders makes waiting shards close their logs and exit.
        drop(gos);
        stop_shards(&mut stops, handles);
        return Err(e);
    }
    for go in gos {
        let _ = go.send(ports.clone());
    }
    *served = true;
    // The ready line says the broker serves: not before every shard's start-up succeeded (a
    // replication refusal happens there, and then the broker exits without a ready line).
    if let Some(e) = await_shards(&events_rx, n, Event::is_serving) {
        stop_shards(&mut stops, handles);
        return Err(e);
    }
    // The ready line goes to stdout only (scripts and tests read it there); the log says what
    // was started.
    let mut line = ready_line(&ports, metrics_server.as_ref().map(HttpServer::local_addr));
    match &front_site {
        Some(site) => {
            let namesrv_port = namesrv.as_ref().map_or(0, |s| s.local_addr().port());
            line.push_str(&format!(
                " rocketmq_namesrv={namesrv_port} rocketmq_broker={}",
                site.store_host.port()
            ));
        }
        None => line.push_str(" rocketmq=off"),
    }
    println!("{line}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Some(path) = &config.broker.ready_file {
        write_ready_file(path, &line)?;
    }

    let mut result: Result<(), String> = Ok(());
    let mut remaining = n;
    let mut stopping = false;
    while remaining > 0 {
        match events_rx.recv() {
            Ok(Event::Signal(sig)) => {
                if !stopping {
                    tracing::info!(signal = sig, "stopping: finishing in-flight requests");
                    stopping = true;
                    for s in &mut stops {
                        s.fire();
                    }
                }
            }
            Ok(Event::Exited { shard, result: r }) => {
                remaining -= 1;
                if let Err(e) = r {
                    tracing::error!(shard, "shard failed: {e}");
                    result = Err(format!("shard {shard}: {e}"));
                }
                if !stopping {
                    // A shard ending on its own is a failure; stop the others cleanly.
                    if result.is_ok() {
                        result = Err(format!("shard {shard} stopped unexpectedly"));
                    }
                    stopping = true;
                    for s in &mut stops {
                        s.fire();
                    }
                }
            }
            Ok(Event::Fatal { shard, error }) => {
                tracing::error!(shard, "{error}");
                result = Err(format!("shard {shard}: {error}"));
                if !stopping {
                    stopping = true;
                    for s in &mut stops {
                        s.fire();
                    }
                }
            }
            Ok(Event::Ready | Event::Serving) => {}
            Err(_) => break,
        }
    }
    for (id, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.join() {
            result = Err(format!("shard {id} thread failed: {e}"));
        }
    }
    if let Some(mut s) = metrics_server {
        s.stop();
    }
    if let Some(mut s) = namesrv {
        s.stop();
    }
    if result.is_ok() {
        tracing::info!("stopped cleanly");
    }
    result
}

/// The git revision this broker was built from (`+dirty` with uncommitted changes; "unknown"
/// when built outside a git checkout). Embedded by `build.rs`.
pub const GIT_REVISION: &str = env!("RINGMQ_GIT_REVISION");

impl Event {
    fn is_ready(&self) -> bool {
        matches!(self, Event::Ready)
    }
    fn is_serving(&self) -> bool {
        matches!(self, Event::Serving)
    }
}

/// Waits during start until `n` shards sent an event `counts` (ready, then serving), or one
/// failed, exited or a signal came: then why.
fn await_shards(
    events: &mpsc::Receiver<Event>,
    n: usize,
    counts: fn(&Event) -> bool,
) -> Option<String> {
    let mut seen = 0;
    while seen < n {
        match events.recv() {
            Ok(e) if counts(&e) => seen += 1,
            Ok(Event::Ready | Event::Serving) => {}
            Ok(Event::Exited { shard, result }) => {
                return Some(result.err().unwrap_or_else(|| format!("shard {shard} exited")));
            }
            Ok(Event::Signal(_)) => return Some("stopped by a signal during start".into()),
            Ok(Event::Fatal { shard, error }) => return Some(format!("shard {shard}: {error}")),
            Err(_) => unreachable!("main holds a sender"),
        }
    }
    None
}

/// Stops every started shard and waits for its thread (a start that failed).
fn stop_shards<T: Send>(stops: &mut [StopHandle], handles: Vec<glommio::ExecutorJoinHandle<T>>) {
    for s in stops {
        s.fire();
    }
    for h in handles {
        let _ = h.join();
    }
}

/// The startup line tests and scripts read: `ringmq broker ready shared_port=P
/// shard_ports=A,B,.. revision=R metrics=URL` (fields may be added; read them by name).
/// `metrics=off` when the endpoint is disabled.
pub fn ready_line(ports: &Ports, metrics: Option<std::net::SocketAddr>) -> String {
    let list: Vec<String> = ports.per_shard.iter().map(u16::to_string).collect();
    let metrics = metrics.map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics"));
    format!(
        "ringmq broker ready shared_port={} shard_ports={} revision={GIT_REVISION} \
         metrics={metrics}",
        ports.shared,
        list.join(",")
    )
}

fn write_ready_file(path: &Path, line: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{line}\n"))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write ready file {}: {e}", path.display()))
}

/// Reports a shard's end to the main thread exactly once, also when the shard panics (the
/// report is sent while unwinding), so the main thread never waits for a dead shard.
struct ExitReport {
    shard: usize,
    events: mpsc::SyncSender<Event>,
    sent: bool,
}

impl ExitReport {
    fn send(mut self, result: Result<(), String>) {
        self.sent = true;
        let _ = self.events.send(Event::Exited { shard: self.shard, result });
    }
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        if !self.sent {
            let result = Err("the shard thread panicked".to_owned());
            let _ = self.events.send(Event::Exited { shard: self.shard, result });
        }
    }
}

async fn shard_thread(args: ShardArgs) {
    let id = args.id;
    let report = ExitReport { shard: id, events: args.events.clone(), sent: false };
    let result = shard_main(args).await;
    if let Err(e) = &result {
        tracing::error!(shard = id, "{e}");
    }
    report.send(result);
}

async fn shard_main(args: ShardArgs) -> Result<(), String> {
    let ShardArgs {
        id,
        shard_count,
        config,
        topics,
        shared,
        own,
        data,
        control,
        go,
        stop,
        events,
        boot,
        metrics,
        front,
    } = args;
    let b = &config.broker;
    let log = log_backend::open(config.storage_for_shard(id))
        .await
        .map_err(|e| format!("cannot open the commit log of shard {id}: {e}"))?;
    let (shared, own) = (shared.into_listener(), own.into_listener());
    let front = front.map(|(socket, site)| (socket.into_listener(), Rc::new(site)));
    if events.send(Event::Ready).is_err() {
        close_log(id, &log).await;
        return Err("the main thread is gone".into());
    }
    let Ok(ports) = go.await else {
        // Another shard failed to start; nothing was served.
        close_log(id, &log).await;
        return Ok(());
    };
    let (log, role) =
        super::replication_start::start_replication(id, shard_count, &config, log, &ports).await?;
    let is_replica = matches!(role, Some(ShardRole::Replica(_)));
    let ((data_tx, data_rx), (control_tx, control_rx)) =
        futures::future::join(data.connect(), control.connect()).await;
    let metadata = if id == 0 {
        match MetadataStore::open(&b.data_dir).await {
            Ok(m) => Some(m),
            Err(e) => {
                close_log(id, &log).await;
                return Err(e);
            }
        }
    } else {
        None
    };
    let shard = Rc::new(Shard::new(
        ShardId::new(id),
        shard_count,
        config.clone(),
        log.clone(),
        ports,
        topics,
        data_tx,
        control_tx,
        metadata,
        runtime::system_clock(),
    ));
    if let Some(role) = role {
        shard.set_role(role);
    }
    if let Err(e) = shard.start_idempotence(boot).await {
        close_log(id, &log).await;
        return Err(format!("shard {id}: {}", e.message));
    }
    if let Err(e) = shard.start_groups().await {
        close_log(id, &log).await;
        return Err(format!("shard {id}: rebuilding committed offsets: {}", e.message));
    }
    if let Err(e) = shard.start_schedule().await {
        close_log(id, &log).await;
        return Err(format!("shard {id}: recovering scheduled messages: {}", e.message));
    }
    if let Err(e) = shard.start_transactions().await {
        close_log(id, &log).await;
        return Err(format!("shard {id}: rebuilding undecided transactions: {}", e.message));
    }
    if let Err(e) = shard.start_key_index().await {
        close_log(id, &log).await;
        return Err(format!("shard {id}: opening the key index: {e}"));
    }

    let forward_permits = Rc::new(Semaphore::new(b.max_forwarded_in_flight as u64));
    let mut mesh_loops = Vec::new();
    for rx in data_rx {
        mesh_loops.push(runtime::spawn(forwarding::data_loop(
            shard.clone(),
            rx,
            forward_permits.clone(),
        )));
    }
    let control = shard.control_queue();
    for rx in control_rx {
        mesh_loops.push(control.spawn(forwarding::control_loop(shard.clone(), rx)));
    }
    let connections = Rc::new(Semaphore::new(b.max_connections_per_shard as u64));
    let per_ip = Rc::new(listener::PerIpConnections::default());
    let mut listeners = vec![(shared, Protocol::Native), (own, Protocol::Native)];
    if let Some((l, site)) = front {
        listeners.push((l, Protocol::RocketMq(site)));
    }
    let accepts: Vec<_> = listeners
        .into_iter()
        .map(|(l, protocol)| {
            let (shard, connections, per_ip) = (shard.clone(), connections.clone(), per_ip.clone());
            runtime::spawn(listener::accept_loop(
                shard,
                l,
                connections,
                per_ip,
                stop.clone(),
                protocol,
            ))
        })
        .collect();
    let release = control.spawn(listener::release_memory_loop(per_ip, stop.clone()));
    // A replica's log is a copy of its master's: nothing but the follower writes to it, so
    // the loops that append (group snapshots, scheduled delivery, transaction checks) run on
    // masters and single brokers only.
    // A replica shard starts them when `ringmq cluster promote` makes it master.
    let writers = {
        let (shard, stop) = (shard.clone(), stop.clone());
        control.spawn(async move {
            if is_replica && !shard.await_promotion(stop.clone()).await {
                return;
            }
            futures::future::join3(
                shard.clone().group_loop(stop.clone()),
                shard.clone().schedule_loop(stop.clone()),
                shard.clone().transaction_loop(stop),
            )
            .await;
        })
    };
    let metrics =
        metrics.map(|inbox| control.spawn(shard.clone().serve_metrics(inbox, stop.clone())));
    let keys = shard.key_index_queue().spawn(shard.clone().key_index_loop(stop.clone()));
    let replication = {
        let (shard, stop) = (shard.clone(), stop.clone());
        runtime::spawn(async move {
            if is_replica && !shard.await_promotion(stop.clone()).await {
                return;
            }
            shard.replication_loop(stop).await
        })
    };
    let follower = {
        let (shard, stop, events) = (shard.clone(), stop.clone(), events.clone());
        // Stops with the broker, or when a promotion makes this shard master.
        let until = futures::future::select(stop, shard.unfollow_signal()).map(|_| ()).shared();
        runtime::spawn(async move {
            let result = shard.clone().follow_master(until).await;
            shard.follower_stopped();
            if let Err(error) = result {
                tracing::error!(shard = id, "{error}");
                let _ = events.send(Event::Fatal { shard: id, error });
            }
        })
    };
    tracing::debug!(shard = id, "serving");
    let _ = events.send(Event::Serving);

    let _ = stop.await;
    tracing::debug!(shard = id, "stopping");
    let grace = Duration::from_millis(b.shutdown_timeout_ms);
    let step = |what: &'static str| StopStep { shard: id, what, grace };
    step("the accept loops").wait(futures::future::join_all(accepts)).await;
    step("the memory release loop").wait(release).await;
    step("the group, schedule and transaction loops").wait(writers).await;
    if let Some(m) = metrics {
        step("the metrics task").wait(m).await;
    }
    // The key index indexes for up to `grace` after the stop, then checkpoints: warn later.
    StopStep { grace: grace * 2, ..step("the key index's last steps") }.wait(keys).await;
    step("the replication timer").wait(replication).await;
    step("the follower").wait(follower).await;
    shard.begin_stop();
    let all = b.max_connections_per_shard as u64;
    if runtime::timeout(grace, connections.acquire(all)).await.is_none() {
        tracing::warn!(shard = id, "connections still busy after {grace:?}; closing anyway");
    }
    tracing::debug!(shard = id, "stopping: connections done; closing the mesh");
    shard.close_mesh();
    if runtime::timeout(grace, futures::future::join_all(mesh_loops)).await.is_none() {
        tracing::warn!(shard = id, "peer shards still forwarding after {grace:?}");
    }
    let all = b.max_forwarded_in_flight as u64;
    let _ = runtime::timeout(grace, forward_permits.acquire(all)).await;
    tracing::debug!(shard = id, "stopping: the mesh is closed");
    let flushed = step("the log's final flush").wait(log.flush()).await;
    let closed = step("closing the log").wait(log.close()).await;
    flushed.map_err(|e| format!("final flush of shard {id} failed: {e}"))?;
    closed.map_err(|e| format!("closing the log of shard {id} failed: {e}"))?;
    tracing::debug!(shard = id, "stopped");
    Ok(())
}

/// `address` ready for `host:port` (IPv6 in brackets).
fn bracket(address: &str) -> String {
    if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_owned()
    }
}

/// Where this process reaches its own listeners bound on `listen`.
fn loopback_of(listen: &str) -> String {
    match listen {
        "0.0.0.0" => "127.0.0.1".into(),
        "::" => "::1".into(),
        other => other.into(),
    }
}

pub(super) async fn close_log(id: usize, log: &Rc<Log>) {
    if let Err(e) = log.close().await {
        tracing::error!(shard = id, "closing the log failed: {e}");
    }
}
