//! Accepting connections on one shard: the shared port (SO_REUSEPORT, the kernel spreads
//! connections over shards) and the shard's own port (shard-aware clients connect to the
//! owner of the queues they use). The main thread binds them all first ([`reserve`]), so a
//! port another process serves fails the start before any data file is touched.
//!
//! Connections are bounded per shard by a semaphore of `max_connections_per_shard` permits,
//! and per client IP address on each shard by `max_connections_per_ip`; one over either limit
//! is closed at once. At stop the loops return; the shard then waits for
//! the permits to come back, i.e. for every connection to finish its in-flight requests.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::rc::Rc;

use crate::runtime::Semaphore;
use futures::future::{select, Either};
use glommio::net::TcpListener;
use socket2::{Domain, Protocol as IpProtocol, Socket, Type};

use super::connection;
use super::shard::Shard;
use super::shard_log::ShardLog;
use super::shutdown::Stop;
use crate::runtime;

/// Listening sockets bound on the main thread before any shard starts, each handed to its
/// shard (which accepts on it once its log is open; until then connections wait in the
/// backlog).
pub struct PortReservation {
    /// One socket per shard on the shared port (SO_REUSEPORT: the kernel spreads connections).
    pub shared: Vec<Reserved>,
    /// Each shard's own port, bound exclusively.
    pub own: Vec<Reserved>,
}

/// One bound, listening socket.
pub struct Reserved {
    socket: Socket,
    pub port: u16,
}

impl Reserved {
    /// The listener for the current shard's executor (glommio ties it to the executor that
    /// converts it).
    pub fn into_listener(self) -> TcpListener {
        // SAFETY: the descriptor is a bound, listening TCP socket we own and give away here.
        unsafe { TcpListener::from_raw_fd(self.socket.into_raw_fd()) }
    }
}

const BACKLOG: i32 = 1024;

/// Binds every port of a broker with `shards` shards, or fails when another process already
/// serves one of them.
///
/// Why this order and these options: SO_REUSEPORT, which the shared port needs so every shard
/// can accept on it, also lets a *second broker* of the same user bind the same port, and
/// clients then alternate between two brokers. So (1) the shared port is first bound without
/// SO_REUSEPORT and released: that fails if any socket serves the port, with or without
/// SO_REUSEPORT; (2) the per-shard ports `port + 1 + n` are bound without SO_REUSEPORT and
/// kept, which makes them a mutex between two brokers configured with the same port even when
/// both passed (1) at the same moment; (3) only then the shared port is bound with
/// SO_REUSEPORT. The one window left, between (1) and (3), is open only to a program other
/// than ringmq that binds the shared port with SO_REUSEPORT. SO_REUSEADDR is set everywhere so
/// a restart is not refused because of connections in TIME_WAIT. Port 0 (tests) picks free
/// ports and skips (1).
pub fn reserve(address: &str, port: u16, shards: usize) -> Result<PortReservation, String> {
    let ip: IpAddr =
        address.parse().map_err(|e| format!("broker.listen_address = {address:?}: {e}"))?;
    if port != 0 {
        bind_after_a_restart(ip, port, false, false)
            .map_err(|e| in_use(address, port, &e, "the shared port"))?;
    }
    let mut own = Vec::with_capacity(shards);
    for id in 0..shards {
        let own_port = if port == 0 { 0 } else { port + 1 + id as u16 };
        let what = format!("shard {id}'s own port, port {port} + 1 + {id}");
        own.push(
            bind_after_a_restart(ip, own_port, false, true)
                .map_err(|e| in_use(address, own_port, &e, &what))?,
        );
    }
    let mut shared = Vec::with_capacity(shards);
    let mut shared_port = port;
    for _ in 0..shards {
        let r = bind(ip, shared_port, true, true)
            .map_err(|e| in_use(address, shared_port, &e, "the shared port"))?;
        shared_port = r.port;
        shared.push(r);
    }
    Ok(PortReservation { shared, own })
}

/// Binds one more port that every shard accepts on (SO_REUSEPORT), one socket per shard: the
/// RocketMQ front's broker port. The first bind is exclusive-checked as in [`reserve`], so a
/// port another process serves fails the start. Port 0 picks one free port for all shards.
pub fn reserve_shared(
    address: &str,
    port: u16,
    shards: usize,
    what: &str,
) -> Result<Vec<Reserved>, String> {
    let ip: IpAddr =
        address.parse().map_err(|e| format!("broker.listen_address = {address:?}: {e}"))?;
    if port != 0 {
        bind(ip, port, false, false).map_err(|e| in_use(address, port, &e, what))?;
    }
    let mut out = Vec::with_capacity(shards);
    let mut bound = port;
    for _ in 0..shards {
        let r = bind(ip, bound, true, true).map_err(|e| in_use(address, bound, &e, what))?;
        bound = r.port;
        out.push(r);
    }
    Ok(out)
}

/// How long a port in use is retried at start. A broker killed a moment ago can still hold
/// its listeners: its io_uring requests (a pending accept) keep the sockets open until the
/// kernel's asynchronous ring teardown ends, after the process is gone. A port another live
/// process serves still fails the start, this much later.
const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// [`bind`], retried while the port is in use for at most [`BIND_RETRY`].
fn bind_after_a_restart(
    ip: IpAddr,
    port: u16,
    reuse_port: bool,
    listen: bool,
) -> std::io::Result<Reserved> {
    let deadline = std::time::Instant::now() + BIND_RETRY;
    loop {
        match bind(ip, port, reuse_port, listen) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn bind(ip: IpAddr, port: u16, reuse_port: bool, listen: bool) -> std::io::Result<Reserved> {
    let addr = SocketAddr::new(ip, port);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(IpProtocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.bind(&addr.into())?;
    if listen {
        socket.listen(BACKLOG)?;
    }
    let port = socket
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .ok_or_else(|| std::io::Error::other("bound address is not an IP address"))?;
    Ok(Reserved { socket, port })
}

fn in_use(address: &str, port: u16, e: &std::io::Error, what: &str) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        format!(
            "cannot listen on {address}:{port} ({what}): {e}; another process already serves \
             port {port} (another ringmq broker?). Stop it or choose another broker.port \
             (--port); a broker with port P also listens on P+1..P+shards"
        )
    } else {
        format!("cannot listen on {address}:{port} ({what}): {e}")
    }
}

pub fn local_port(l: &TcpListener) -> Result<u16, String> {
    l.local_addr().map(|a| a.port()).map_err(|e| format!("cannot read the bound port: {e}"))
}

/// Open connections per client IP address on one shard (`max_connections_per_ip`). Entries
/// leave at zero, so the map never holds more than `max_connections_per_shard` addresses.
#[derive(Default)]
pub struct PerIpConnections {
    open: RefCell<HashMap<IpAddr, usize>>,
    /// Connections closed on this shard since it started.
    closed: Cell<u64>,
}

/// One counted connection; uncounts itself when dropped.
pub struct IpSlot {
    counts: Rc<PerIpConnections>,
    ip: IpAddr,
}

impl PerIpConnections {
    /// A slot for one more connection from `ip`, or None when it has `max` open.
    pub fn try_take(self: &Rc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.open.borrow_mut();
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot { counts: self.clone(), ip })
    }

    /// Connections closed on this shard so far.
    pub fn closed(&self) -> u64 {
        self.closed.get()
    }

    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open.borrow().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.counts.closed.set(self.counts.closed.get() + 1);
        let mut open = self.counts.open.borrow_mut();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a listener's connections speak.
#[derive(Clone)]
pub enum Protocol {
    Native,
    /// The RocketMQ front (`crate::compat::rocketmq::front`).
    RocketMq(Rc<crate::compat::rocketmq::dispatch::FrontSite>),
}

/// Accepts until `stop` fires. The shard's listeners share `connections` and `per_ip`.
pub async fn accept_loop<L: ShardLog>(
    shard: Rc<Shard<L>>,
    listener: TcpListener,
    connections: Rc<Semaphore>,
    per_ip: Rc<PerIpConnections>,
    stop: Stop,
    protocol: Protocol,
) {
    let max_per_ip = shard.config.broker.max_connections_per_ip;
    loop {
        let accepted = match select(Box::pin(listener.accept()), stop.clone()).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => return,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have; try again soon.
                tracing::warn!(shard = %shard.id, "accept failed: {e}");
                runtime::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let ip_slot = match stream.peer_addr() {
            Ok(peer) => match per_ip.try_take(peer.ip(), max_per_ip) {
                Some(slot) => slot,
                None => {
                    tracing::debug!(
                        shard = %shard.id,
                        %peer,
                        "refusing a connection: max_connections_per_ip reached"
                    );
                    shard.stats_mut().errors += 1;
                    drop(stream);
                    continue;
                }
            },
            Err(e) => {
                tracing::debug!(shard = %shard.id, "accepted a connection without a peer: {e}");
                continue;
            }
        };
        let permit = match connections.try_acquire_static_permit(1) {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!(
                    shard = %shard.id,
                    "refusing a connection: max_connections_per_shard reached"
                );
                drop(stream);
                continue;
            }
        };
        let (shard, stop, protocol) = (shard.clone(), stop.clone(), protocol.clone());
        runtime::spawn_detached(async move {
            shard.stats_mut().connections_open += 1;
            match protocol {
                Protocol::Native => connection::serve(shard.clone(), stream, stop).await,
                Protocol::RocketMq(site) => {
                    crate::compat::rocketmq::front::serve(shard.clone(), site, stream, stop).await
                }
            }
            shard.stats_mut().connections_open -= 1;
            drop(permit);
            drop(ip_slot);
        });
    }
}

/// How often a shard checks whether connections closed since its last look and, if so, gives
/// the freed memory back to the system.
pub const MEMORY_RELEASE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs (in the shard's control queue) until `stop`: after connections closed, returns their
/// freed buffers to the system, at most once per [`MEMORY_RELEASE_INTERVAL`]. Without this the
/// memory of a burst of connections stayed with the process after they closed.
pub async fn release_memory_loop(per_ip: Rc<PerIpConnections>, stop: Stop) {
    let mut seen = per_ip.closed();
    loop {
        let tick = Box::pin(runtime::sleep(MEMORY_RELEASE_INTERVAL));
        if let Either::Right(_) = select(tick, stop.clone()).await {
            return;
        }
        let closed = per_ip.closed();
        if closed != seen {
            seen = closed;
            runtime::release_free_memory();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_bounded_and_returned() {
        let counts = Rc::new(PerIpConnections::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = counts.try_take(a, 2).unwrap();
        let _s2 = counts.try_take(a, 2).unwrap();
        assert!(counts.try_take(a, 2).is_none(), "a third from the same address");
        let _other = counts.try_take(b, 2).expect("other addresses are not affected");
        drop(s1);
        let _s3 = counts.try_take(a, 2).expect("a closed connection frees its slot");
        drop(_s2);
        drop(_s3);
        assert_eq!(counts.open_from(a), 0);
        assert_eq!(counts.closed(), 3);
        assert!(!counts.open.borrow().contains_key(&a), "no entry is kept at zero");
    }
}
