//! The name server: what RocketMQ clients ask first (`namesrvAddr`), for topic routes, the
//! cluster and the topic list.
//!
//! How it learns topics: it holds none. Every query asks the ringmq brokers it fronts over
//! the native protocol (LIST_TOPICS; CREATE_TOPIC for automatic creation), through the native
//! client library: the in-process name server (`ringmq broker --rocketmq`) asks its own broker
//! over loopback, a standalone one (`ringmq namesrv --broker NATIVE=FRONT`) asks each broker it
//! was given. So a topic created by any client (native or RocketMQ, on any broker) is routable
//! at once, and there is no registration protocol nor state to lose; the price is one
//! loopback round trip per route query, which clients make about every 30 s per topic.
//!
//! Threads: one accept thread and one thread per connection (at most
//! [`NamesrvOptions::max_connections`]; one over is closed at once). Bounds: request frames
//! are at most [`MAX_REQUEST_BYTES`]; a frame must arrive whole within
//! [`FRAME_READ_TIMEOUT`] and a connection idle for [`IDLE_TIMEOUT`] is closed; a stop is seen
//! within [`POLL_INTERVAL`].
//!
//! Automatic topic creation (on by default, `rocketmq.auto_create_topics`): a route query
//! for an unknown topic creates it on every broker, with `auto_create_queue_count` queues (1
//! for `%RETRY%` and `%DLQ%` topics), as RocketMQ creates topics from `TBW102` on first use.
//! Off, an unknown topic is answered TOPIC_NOT_EXIST.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::bodies::{self, BrokerEntry};
use super::codec::{self, RemotingCommand};
use super::codes::{request, response};
use crate::client::{Client, ClientError, ClientOptions};
use crate::protocol::ErrorCode;

/// Largest request frame the name server reads (its requests are a few hundred bytes).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// A frame must arrive whole within this long of its first byte.
pub const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection with nothing received for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often blocked reads and accepts look at the stop flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long creating a topic on first use keeps asking a sync master whose replicas have not
/// joined yet (SLAVE_NOT_AVAILABLE): under the 3 s RocketMQ clients give a route lookup, so
/// they get the name server's answer (no route yet; they ask again) instead of a timeout, and
/// the connection's thread is not held for the library's default 30 s.
pub const TOPIC_CREATE_WAIT: Duration = Duration::from_secs(2);

/// The topic source behind the name server: ringmq brokers.
pub trait Brokers: Send + Sync {
    /// Every broker holding `topic`, with its queue count (empty: nowhere).
    fn route(&self, topic: &str) -> Result<Vec<(BrokerEntry, u32)>, String>;
    /// Creates `topic` with `queues` queues on every broker that lacks it.
    fn create(&self, topic: &str, queues: u32) -> Result<(), String>;
    /// Every topic, once.
    fn topics(&self) -> Result<Vec<String>, String>;
    fn entries(&self) -> Vec<BrokerEntry>;
}

/// One broker reached over the native protocol: its native address and the front entry.
pub struct NativeBroker {
    pub native_address: String,
    pub entry: BrokerEntry,
    client: Mutex<Option<Client>>,
}

impl NativeBroker {
    pub fn new(native_address: String, entry: BrokerEntry) -> Self {
        NativeBroker { native_address, entry, client: Mutex::new(None) }
    }

    /// The native client, connected on first use (a standalone name server may start before
    /// its brokers).
    fn client(&self) -> Result<Client, String> {
        let mut slot = self.client.lock().expect("not poisoned");
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let options = ClientOptions { topic_change_wait: TOPIC_CREATE_WAIT, ..Default::default() };
        let c = Client::with_options(&self.native_address, options)
            .map_err(|e| format!("broker {} ({}): {e}", self.entry.name, self.native_address))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    fn call<T>(&self, f: impl Fn(&Client) -> Result<T, ClientError>) -> Result<T, String> {
        let client = self.client()?;
        f(&client).map_err(|e| {
            if matches!(e, ClientError::Io { .. } | ClientError::Disconnected(_)) {
                // Reconnect next time (the broker restarted).
                *self.client.lock().expect("not poisoned") = None;
            }
            format!("broker {} ({}): {e}", self.entry.name, self.native_address)
        })
    }
}

/// The brokers a name server fronts.
pub struct NativeBrokers(pub Vec<NativeBroker>);

impl Brokers for NativeBrokers {
    fn route(&self, topic: &str) -> Result<Vec<(BrokerEntry, u32)>, String> {
        let mut out = Vec::new();
        for b in &self.0 {
            let topics = b.call(|c| c.admin().list_topics())?;
            if let Some(t) = topics.iter().find(|t| t.name == topic) {
                out.push((b.entry.clone(), t.queue_count));
            }
        }
        Ok(out)
    }

    fn create(&self, topic: &str, queues: u32) -> Result<(), String> {
        for b in &self.0 {
            match b.call(|c| c.admin().create_topic(topic, queues).map(|_| ())) {
                Ok(()) => {}
                Err(e) if e.contains(ErrorCode::TOPIC_EXISTS.name()) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn topics(&self) -> Result<Vec<String>, String> {
        let mut all = std::collections::BTreeSet::new();
        for b in &self.0 {
            all.extend(b.call(|c| c.admin().list_topics())?.into_iter().map(|t| t.name));
        }
        Ok(all.into_iter().collect())
    }

    fn entries(&self) -> Vec<BrokerEntry> {
        self.0.iter().map(|b| b.entry.clone()).collect()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct NamesrvOptions {
    pub auto_create_topics: bool,
    pub auto_create_queue_count: u32,
    pub max_connections: usize,
}

/// Queues of a topic created on first use: 1 for retry and dead-letter topics (as RocketMQ).
pub fn auto_queue_count(topic: &str, default: u32) -> u32 {
    use crate::schedule::retry::{DLQ_TOPIC_PREFIX, RETRY_TOPIC_PREFIX};
    if topic.starts_with(RETRY_TOPIC_PREFIX) || topic.starts_with(DLQ_TOPIC_PREFIX) {
        1
    } else {
        default
    }
}

/// Answers one name-server request.
pub fn handle(
    req: &RemotingCommand,
    brokers: &dyn Brokers,
    opts: &NamesrvOptions,
) -> RemotingCommand {
    let fail = |code, remark: String| RemotingCommand::response_to(req, code, Some(remark));
    match req.code {
        request::GET_ROUTEINFO_BY_TOPIC => {
            let Some(topic) = req.field("topic").filter(|t| !t.is_empty()) else {
                return fail(response::SYSTEM_ERROR, "the request has no topic field".into());
            };
            let mut route = match brokers.route(topic) {
                Ok(r) => r,
                Err(e) => return fail(response::SYSTEM_ERROR, e),
            };
            if route.is_empty() && opts.auto_create_topics {
                let queues = auto_queue_count(topic, opts.auto_create_queue_count);
                if let Err(e) = brokers.create(topic, queues) {
                    // An invalid name is the client's error: say so as RocketMQ does.
                    return fail(response::TOPIC_NOT_EXIST, format!("cannot create {topic}: {e}"));
                }
                route = match brokers.route(topic) {
                    Ok(r) => r,
                    Err(e) => return fail(response::SYSTEM_ERROR, e),
                };
            }
            if route.is_empty() {
                return fail(
                    response::TOPIC_NOT_EXIST,
                    format!("No topic route info in name server for the topic: {topic}"),
                );
            }
            let mut resp = RemotingCommand::response_to(req, response::SUCCESS, None);
            resp.body = bodies::topic_route(&route);
            resp
        }
        request::GET_BROKER_CLUSTER_INFO => {
            let mut resp = RemotingCommand::response_to(req, response::SUCCESS, None);
            resp.body = bodies::cluster_info(&brokers.entries());
            resp
        }
        request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => match brokers.topics() {
            Ok(topics) => {
                let mut resp = RemotingCommand::response_to(req, response::SUCCESS, None);
                resp.body = bodies::topic_list(&topics);
                resp
            }
            Err(e) => fail(response::SYSTEM_ERROR, e),
        },
        code => fail(
            response::REQUEST_CODE_NOT_SUPPORTED,
            format!("request code {code} is not supported by the ringmq name server"),
        ),
    }
}

/// A running name server; stops on [`NameServer::stop`] or drop.
pub struct NameServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl NameServer {
    /// Serves `listener` (bound by the caller, so a busy port fails its start).
    pub fn start(
        listener: TcpListener,
        brokers: Arc<dyn Brokers>,
        opts: NamesrvOptions,
    ) -> std::io::Result<NameServer> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let accept = std::thread::Builder::new()
            .name("ringmq-namesrv".into())
            .spawn(move || accept_loop(listener, brokers, opts, flag))?;
        Ok(NameServer { addr, stopping, accept: Some(accept) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        if let Some(t) = self.accept.take() {
            self.stopping.store(true, Ordering::SeqCst);
            let _ = t.join();
        }
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    brokers: Arc<dyn Brokers>,
    opts: NamesrvOptions,
    stop: Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        threads.retain(|t| !t.is_finished());
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(POLL_INTERVAL / 4);
                continue;
            }
            Err(e) => {
                tracing::warn!("name server: accept failed: {e}");
                std::thread::sleep(POLL_INTERVAL);
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= opts.max_connections {
            tracing::warn!("name server: refusing a connection: {} open", opts.max_connections);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (brokers, stop, done) = (brokers.clone(), stop.clone(), active.clone());
        let spawned =
            std::thread::Builder::new().name("ringmq-namesrv-conn".into()).spawn(move || {
                serve(stream, &*brokers, &opts, &stop);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                active.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("name server: cannot start a connection thread: {e}");
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

fn serve(mut stream: TcpStream, brokers: &dyn Brokers, opts: &NamesrvOptions, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(POLL_INTERVAL)).is_err()
        || stream.set_write_timeout(Some(FRAME_READ_TIMEOUT)).is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut last_byte = Instant::now();
    let mut frame_started: Option<Instant> = None;
    loop {
        // Answer every whole frame buffered.
        loop {
            match codec::frame_length(&buf, MAX_REQUEST_BYTES) {
                Ok(Some(len)) if buf.len() >= len => {
                    let answer = match codec::decode(&buf[..len]) {
                        Ok((req, ty)) if !req.is_oneway() => {
                            Some(codec::encode(&handle(&req, brokers, opts), ty))
                        }
                        Ok(_) => None,
                        Err(e) => {
                            tracing::debug!("name server: closing a connection: {e}");
                            return;
                        }
                    };
                    buf.drain(..len);
                    frame_started = (!buf.is_empty()).then(Instant::now);
                    if let Some(a) = answer {
                        if stream.write_all(&a).is_err() {
                            return;
                        }
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!("name server: closing a connection: {e}");
                    return;
                }
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        if frame_started.is_some_and(|t| now - t > FRAME_READ_TIMEOUT)
            || (buf.is_empty() && now - last_byte > IDLE_TIMEOUT)
        {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                if buf.is_empty() {
                    frame_started = Some(Instant::now());
                }
                buf.extend_from_slice(&chunk[..n]);
                last_byte = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Topics in memory: the name server's logic without a broker.
    struct Table {
        entry: BrokerEntry,
        topics: Mutex<BTreeMap<String, u32>>,
    }

    impl Brokers for Table {
        fn route(&self, topic: &str) -> Result<Vec<(BrokerEntry, u32)>, String> {
            Ok(self
                .topics
                .lock()
                .unwrap()
                .get(topic)
                .map(|q| (self.entry.clone(), *q))
                .into_iter()
                .collect())
        }
        fn create(&self, topic: &str, queues: u32) -> Result<(), String> {
            self.topics.lock().unwrap().entry(topic.into()).or_insert(queues);
            Ok(())
        }
        fn topics(&self) -> Result<Vec<String>, String> {
            Ok(self.topics.lock().unwrap().keys().cloned().collect())
        }
        fn entries(&self) -> Vec<BrokerEntry> {
            vec![self.entry.clone()]
        }
    }

    fn table() -> Table {
        Table {
            entry: BrokerEntry {
                cluster: "c".into(),
                name: "b".into(),
                address: "127.0.0.1:10911".into(),
            },
            topics: Mutex::new(BTreeMap::new()),
        }
    }

    fn route_request(topic: &str) -> RemotingCommand {
        let mut r = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, 7);
        r.set_field("topic", topic);
        r
    }

    #[test]
    fn routes_create_topics_on_first_use_when_allowed() {
        let t = table();
        let on = NamesrvOptions {
            auto_create_topics: true,
            auto_create_queue_count: 8,
            max_connections: 4,
        };
        let resp = handle(&route_request("orders"), &t, &on);
        assert_eq!(resp.code, response::SUCCESS);
        assert_eq!(resp.opaque, 7);
        assert!(resp.is_response());
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["queueDatas"][0]["writeQueueNums"], 8);
        let resp = handle(&route_request("%RETRY%g"), &t, &on);
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["queueDatas"][0]["readQueueNums"], 1, "retry topics get one queue");

        let off = NamesrvOptions { auto_create_topics: false, ..on };
        let resp = handle(&route_request("other"), &t, &off);
        assert_eq!(resp.code, response::TOPIC_NOT_EXIST);
        assert!(resp.remark.unwrap().contains("other"));
    }

    #[test]
    fn a_topic_a_sync_master_cannot_create_yet_is_answered_within_a_route_lookup_s_timeout() {
        use crate::client::scripted_broker::{one_shard, scripted_broker_refusing};
        use crate::protocol::{ErrorDetail, Request, Response};
        let broker = scripted_broker_refusing(|port, request| match request {
            Request::Metadata { .. } => Ok(one_shard(port)),
            Request::ListTopics => Ok(Response::ListTopics { topics: vec![] }),
            Request::CreateTopic { .. } => {
                let e = "1 in-sync member(s), needs 2".to_string();
                Err((ErrorCode::SLAVE_NOT_AVAILABLE, e, ErrorDetail::None))
            }
            other => panic!("unexpected {other:?}"),
        });
        let brokers = NativeBrokers(vec![NativeBroker::new(broker, table().entry)]);
        let on = NamesrvOptions {
            auto_create_topics: true,
            auto_create_queue_count: 8,
            max_connections: 4,
        };
        let asked = std::time::Instant::now();
        let resp = handle(&route_request("orders"), &brokers, &on);
        assert_ne!(resp.code, response::SUCCESS);
        assert!(resp.remark.unwrap().contains("SLAVE_NOT_AVAILABLE"));
        // TOPIC_CREATE_WAIT, not the library's default 30 s (generous: CI shares its cores).
        assert!(asked.elapsed() < Duration::from_secs(10), "{:?}", asked.elapsed());
    }

    #[test]
    fn unknown_codes_and_missing_fields_are_answered() {
        let t = table();
        let opts = NamesrvOptions {
            auto_create_topics: true,
            auto_create_queue_count: 8,
            max_connections: 4,
        };
        let resp = handle(&RemotingCommand::request(103, 1), &t, &opts);
        assert_eq!(resp.code, response::REQUEST_CODE_NOT_SUPPORTED);
        assert!(resp.remark.unwrap().contains("103"));
        let resp = handle(&RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, 2), &t, &opts);
        assert_eq!(resp.code, response::SYSTEM_ERROR);
        let resp =
            handle(&RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO, 3), &t, &opts);
        assert_eq!(resp.code, response::SUCCESS);
    }

    #[test]
    fn a_served_connection_answers_frames_and_survives_garbage_on_another() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = NamesrvOptions {
            auto_create_topics: true,
            auto_create_queue_count: 2,
            max_connections: 4,
        };
        let mut server = NameServer::start(listener, Arc::new(table()), opts).unwrap();
        let addr = server.local_addr();
        let mut bad = TcpStream::connect(addr).unwrap();
        bad.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]).unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&codec::encode(&route_request("t"), codec::SerializeType::Json)).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut rest).unwrap();
        let mut frame = len.to_vec();
        frame.extend(rest);
        let (resp, _) = codec::decode(&frame).unwrap();
        assert_eq!(resp.code, response::SUCCESS);
        let mut one = [0u8; 1];
        bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(bad.read(&mut one).unwrap_or(0), 0, "a broken frame closes its connection");
        server.stop();
    }
}
