//! Shard-aware routing: topic metadata from the broker and one connection per shard port.
//!
//! The router asks the bootstrap address (the broker's shared port) for a topic's route,
//! caches it, and hands out the connection to the port of the shard that owns a queue, so
//! requests go straight to the owning core. `refresh` drops a cached route (after
//! NOT_OWNER, an unknown topic, or a dead connection). Thread-safe; share it in an `Arc`.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::connection::{Connection, ConnectionOptions};
use super::error::{ClientError, Result};
use super::message::Message;
use super::selector::{QueueSelector, SelectorTurn};
use crate::protocol::{ErrorCode, Request, Response};

/// A topic's route as the broker reported it.
#[derive(Debug, Clone)]
pub struct TopicRoute {
    pub topic_id: u32,
    /// Port of the shard owning each queue.
    pub queue_ports: Vec<u16>,
    /// The round-robin and sticky selectors' position in this topic (RocketMQ's
    /// `sendWhichQueue`, one per topic): shared by the client's producers, carried over when
    /// the route is read again.
    pub(crate) turn: SelectorTurn,
}

impl TopicRoute {
    pub fn queue_count(&self) -> u32 {
        self.queue_ports.len() as u32
    }
}

/// Client-wide settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connection: ConnectionOptions,
    /// Longest wait for any one reply (long-poll fetches add their wait). Default 10 s.
    pub request_timeout: Duration,
    /// How long a topic change (`AdminClient::create_topic`, `delete_topic`) keeps asking a
    /// sync master that refuses it with SLAVE_NOT_AVAILABLE (its replicas have not joined
    /// yet), every 100 ms. Default 30 s; zero: that refusal is returned at once.
    pub topic_change_wait: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connection: ConnectionOptions::default(),
            request_timeout: Duration::from_secs(10),
            topic_change_wait: Duration::from_secs(30),
        }
    }
}

pub struct Router {
    host: String,
    bootstrap_port: u16,
    pub options: ClientOptions,
    /// Looked up for every message a producer sends: a fast hash (the keys are topic names
    /// the application chose, not an attacker's).
    routes: Mutex<FxHashMap<String, Arc<TopicRoute>>>,
    /// Routes marked for refresh, used while the broker cannot answer.
    stale: Mutex<FxHashMap<String, Arc<TopicRoute>>>,
    connections: Mutex<HashMap<u16, Arc<Connection>>>,
    /// Each shard's own port, from the last metadata answer (for group coordinators).
    shard_ports: Mutex<Vec<u16>>,
    /// This router among every router of the process ([`LastRoute`]).
    id: u64,
    /// Changes whenever `routes` loses or replaces a route: a thread's [`LastRoute`] of this
    /// router is used only while it has not changed.
    generation: AtomicU64,
}

/// Every router's [`Router::id`], handed out in order (never reused, unlike an address).
static ROUTER_IDS: AtomicU64 = AtomicU64::new(0);

/// One route a thread reads without the router's lock: the first one it sent to through the
/// first router it used, taken again after that router's routes change. A producer usually sends
/// message after message to one topic, and the lock and the hash lookup by name were about a
/// tenth of the load generator's core in small-messages (perf). Sends to other topics, or
/// through other routers, take the lock as before.
struct LastRoute {
    router: u64,
    generation: u64,
    topic: String,
    route: Arc<TopicRoute>,
}

thread_local! {
    static LAST_ROUTE: RefCell<Option<LastRoute>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Router {
    /// `bootstrap` is "host:port" of the broker's shared port.
    pub fn new(bootstrap: &str, options: ClientOptions) -> Result<Arc<Router>> {
        let (host, port) = bootstrap
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_owned(), p)))
            .ok_or_else(|| {
                ClientError::Invalid(format!("broker address {bootstrap:?} is not host:port"))
            })?;
        Ok(Arc::new(Router {
            host,
            bootstrap_port: port,
            options,
            routes: Mutex::new(FxHashMap::default()),
            stale: Mutex::new(FxHashMap::default()),
            connections: Mutex::new(HashMap::new()),
            shard_ports: Mutex::new(Vec::new()),
            id: ROUTER_IDS.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
        }))
    }

    /// A router to the same broker that shares no connection with this one (its traffic
    /// never waits behind this one's in-flight requests).
    pub fn detached(&self) -> Arc<Router> {
        Arc::new(Router {
            host: self.host.clone(),
            bootstrap_port: self.bootstrap_port,
            options: self.options.clone(),
            routes: Mutex::new(FxHashMap::default()),
            stale: Mutex::new(FxHashMap::default()),
            connections: Mutex::new(HashMap::new()),
            shard_ports: Mutex::new(Vec::new()),
            id: ROUTER_IDS.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
        })
    }

    /// The connection to `port` on the broker host (made or remade as needed).
    pub fn connection(&self, port: u16) -> Result<Arc<Connection>> {
        if let Some(c) = lock(&self.connections).get(&port) {
            if c.is_alive() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(Connection::connect(
            &format!("{}:{port}", self.host),
            &self.options.connection,
        )?);
        lock(&self.connections).insert(port, c.clone());
        Ok(c)
    }

    pub fn bootstrap(&self) -> Result<Arc<Connection>> {
        self.connection(self.bootstrap_port)
    }

    /// Sends `request` to the bootstrap port and waits for the reply.
    pub fn call_bootstrap(&self, request: &Request) -> Result<Response> {
        self.bootstrap()?.call(request, self.options.request_timeout)
    }

    /// The queue of `msg.topic` that `selector` picks, with the topic's own round-robin turn:
    /// what a producer asks for every message.
    pub fn select_queue(&self, msg: &Message, selector: &QueueSelector) -> Result<u32> {
        // Not through the thread's entry for a `Custom` selector: the application's function
        // could send from inside (the thread's entry is borrowed meanwhile), and it never runs
        // under the router's lock either.
        if matches!(selector, QueueSelector::Custom(_)) {
            let route = self.route(&msg.topic)?;
            return selector.select(msg, route.queue_count(), &route.turn);
        }
        self.with_route(&msg.topic, |count, turn| selector.select(msg, count, turn))?
    }

    /// How many queues `topic` has (a producer's [`QueueSelector::RoundRobinPerBatch`] picks
    /// among them as it stages the message). A topic without queues is an error.
    pub(crate) fn queue_count(&self, topic: &str) -> Result<u32> {
        match self.with_route(topic, |count, _| count)? {
            0 => Err(ClientError::Invalid(format!("topic {topic:?} has no queues"))),
            n => Ok(n),
        }
    }

    /// `f(queue count, turn)` of `topic`'s route: the thread's entry if it is this router's
    /// current route for the topic, read in place; another topic's route under the router's
    /// lock, read in place too. `f` must not block or call the router.
    fn with_route<T>(&self, topic: &str, f: impl Fn(u32, &SelectorTurn) -> T) -> Result<T> {
        let generation = self.generation.load(Ordering::Acquire);
        let (done, take) = LAST_ROUTE.with(|l| match l.borrow().as_ref() {
            Some(l) if l.router == self.id && l.generation == generation => {
                if l.topic == topic {
                    (Some(f(l.route.queue_count(), &l.route.turn)), false)
                } else {
                    (None, false)
                }
            }
            // Another router's entry stays (a thread that alternates between routers would
            // replace it at every send); this router's entry from before a change goes.
            Some(l) if l.router != self.id => (None, false),
            _ => (None, true),
        });
        if let Some(done) = done {
            return Ok(done);
        }
        // Sends to other topics than the entry's take the lock, as before, reading the route
        // in place: a producer going round the topics would otherwise replace the entry (a
        // copy of the name, a reference count shared with other threads) at every send.
        if !take {
            if let Some(r) = lock(&self.routes).get(topic) {
                return Ok(f(r.queue_count(), &r.turn));
            }
        }
        let route = self.route(topic)?;
        if take {
            LAST_ROUTE.with(|l| {
                *l.borrow_mut() = Some(LastRoute {
                    router: self.id,
                    generation,
                    topic: topic.to_owned(),
                    route: route.clone(),
                })
            });
        }
        Ok(f(route.queue_count(), &route.turn))
    }

    /// The topic's route (cached). After [`Router::refresh`] the route is asked for again;
    /// if the broker cannot be reached then, the previous route is used (a restarting broker
    /// keeps its placement), so retries can go on.
    pub fn route(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        if let Some(r) = lock(&self.routes).get(topic) {
            return Ok(r.clone());
        }
        match self.fetch_route(topic) {
            Ok(r) => {
                lock(&self.stale).remove(topic);
                Ok(r)
            }
            Err(e) if e.is_retriable() => match lock(&self.stale).get(topic) {
                Some(old) => Ok(old.clone()),
                None => Err(e),
            },
            Err(e) => {
                lock(&self.stale).remove(topic);
                Err(e)
            }
        }
    }

    fn fetch_route(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        let resp = self.call_bootstrap(&Request::Metadata { topics: vec![topic.to_owned()] })?;
        let Response::Metadata { shard_ports, topics, .. } = resp else {
            return Err(ClientError::Protocol("metadata request got another reply".into()));
        };
        *lock(&self.shard_ports) = shard_ports.clone();
        let t = topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| ClientError::Protocol(format!("metadata lacks topic {topic:?}")))?;
        if t.error_code != 0 {
            let code = ErrorCode::from_u16(t.error_code);
            return Err(ClientError::Broker {
                code: t.error_code,
                name: code.map(|c| c.name().to_owned()).unwrap_or_default(),
                message: format!(
                    "topic {topic:?}: {}",
                    code.map(|c| c.description()).unwrap_or("error")
                ),
                detail: crate::protocol::ErrorDetail::None,
            });
        }
        let mut queue_ports = Vec::with_capacity(t.queue_owners.len());
        for owner in &t.queue_owners {
            let port = shard_ports.get(*owner as usize).copied().ok_or_else(|| {
                ClientError::Protocol(format!("queue owner shard {owner} has no port in metadata"))
            })?;
            queue_ports.push(port);
        }
        // Round-robin goes on where it was, not from queue 0 after every refresh.
        let turn = lock(&self.stale).get(topic).map(|old| old.turn.clone()).unwrap_or_default();
        let route = Arc::new(TopicRoute { topic_id: t.topic_id, queue_ports, turn });
        if lock(&self.routes).insert(topic.to_owned(), route.clone()).is_some() {
            self.generation.fetch_add(1, Ordering::Release);
        }
        Ok(route)
    }

    /// The id of `topic` in the route this router holds (current, or marked for refresh), if
    /// it holds one; asks the broker nothing.
    pub fn cached_topic_id(&self, topic: &str) -> Option<u32> {
        let route = lock(&self.routes).get(topic).map(|r| r.topic_id);
        route.or_else(|| lock(&self.stale).get(topic).map(|r| r.topic_id))
    }

    /// The connection to the shard owning `queue_id` of `topic`.
    pub fn queue_connection(&self, topic: &str, queue_id: u32) -> Result<Arc<Connection>> {
        let route = self.route(topic)?;
        let port = route.queue_ports.get(queue_id as usize).copied().ok_or_else(|| {
            ClientError::Invalid(format!(
                "topic {topic:?} has {} queues, not queue {queue_id}",
                route.queue_count()
            ))
        })?;
        self.connection(port)
    }

    /// Each shard's own port, indexed by shard (asked for once, then cached).
    pub fn shard_ports(&self) -> Result<Vec<u16>> {
        let ports = lock(&self.shard_ports).clone();
        if !ports.is_empty() {
            return Ok(ports);
        }
        let resp = self.call_bootstrap(&Request::Metadata { topics: vec![] })?;
        let Response::Metadata { shard_ports, .. } = resp else {
            return Err(ClientError::Protocol("metadata request got another reply".into()));
        };
        *lock(&self.shard_ports) = shard_ports.clone();
        Ok(shard_ports)
    }

    /// The connection to the shard coordinating consumer group `group`
    /// (`crc32c(group) % shards`, as the broker computes it).
    pub fn coordinator_connection(&self, group: &str) -> Result<Arc<Connection>> {
        let ports = self.shard_ports()?;
        if ports.is_empty() {
            return self.bootstrap();
        }
        let shard = crate::format::crc::crc32c(group.as_bytes()) as usize % ports.len();
        self.connection(ports[shard])
    }

    /// Forgets the shard layout (a NOT_COORDINATOR answer: ask the broker again).
    pub fn refresh_layout(&self) {
        lock(&self.shard_ports).clear();
    }

    /// Marks the cached route of `topic` for re-reading on next use.
    pub fn refresh(&self, topic: &str) {
        if let Some(old) = lock(&self.routes).remove(topic) {
            self.generation.fetch_add(1, Ordering::Release);
            lock(&self.stale).insert(topic.to_owned(), old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::scripted_broker::{one_shard_with, scripted_broker};
    use std::sync::atomic::AtomicU32;

    /// A broker whose topic "t" has `queues` queues (read at each METADATA).
    fn broker(queues: Arc<AtomicU32>) -> String {
        scripted_broker(move |port, request| match request {
            Request::Metadata { topics } => {
                one_shard_with(port, topics, queues.load(Ordering::Relaxed) as usize)
            }
            other => panic!("unexpected {other:?}"),
        })
    }

    fn picks(router: &Router, n: usize) -> Vec<u32> {
        let m = Message::new("t", "b");
        (0..n).map(|_| router.select_queue(&m, &QueueSelector::RoundRobin).unwrap()).collect()
    }

    #[test]
    fn a_refreshed_route_is_read_again_by_the_next_selection() {
        // The route a thread used last is kept without the router's lock; a refresh (a topic
        // deleted and created again with more queues) must still be seen at once.
        let queues = Arc::new(AtomicU32::new(2));
        let router = Router::new(&broker(queues.clone()), ClientOptions::default()).unwrap();
        let other =
            Router::new(&broker(Arc::new(AtomicU32::new(1))), ClientOptions::default()).unwrap();
        assert!(picks(&router, 6).iter().all(|&q| q < 2));
        // Another router's route for the same topic name, on this thread, is not this one's.
        assert_eq!(picks(&other, 3), vec![0, 0, 0]);
        assert!(picks(&router, 6).iter().all(|&q| q < 2));
        queues.store(5, Ordering::Relaxed);
        assert!(picks(&router, 6).iter().all(|&q| q < 2), "the route is cached until refreshed");
        router.refresh("t");
        let after = picks(&router, 10);
        assert!(after.iter().any(|&q| q >= 2), "{after:?}");
        assert!(after.iter().all(|&q| q < 5), "{after:?}");
    }
}
