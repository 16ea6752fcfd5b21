//! `ringmq namesrv`: a RocketMQ name server alone, in front of running ringmq brokers (see
//! [`super::namesrv`] for how it learns topics). Runs until SIGINT or SIGTERM.

use std::sync::Arc;

use super::bodies::BrokerEntry;
use super::namesrv::{NameServer, NamesrvOptions, NativeBroker, NativeBrokers};

/// Parses `NATIVE=FRONT` broker arguments and serves until a signal.
pub fn run(
    listen: &str,
    brokers: &[String],
    broker_name: &str,
    cluster_name: &str,
    auto_create_topics: bool,
    queues: u32,
) -> Result<(), String> {
    if brokers.is_empty() {
        return Err("give at least one --broker NATIVE=FRONT".into());
    }
    if queues == 0 {
        return Err("--queues must be positive".into());
    }
    let mut list = Vec::with_capacity(brokers.len());
    for (i, spec) in brokers.iter().enumerate() {
        let (native, front) = spec.split_once('=').ok_or_else(|| {
            format!("--broker {spec:?}: expected NATIVE=FRONT, e.g. 127.0.0.1:10811=10.0.0.5:10911")
        })?;
        let front: std::net::SocketAddrV4 = front.parse().map_err(|_| {
            format!("--broker {spec:?}: the front address {front:?} is not an IPv4 host:port (RocketMQ clients need one)")
        })?;
        let name = if i == 0 { broker_name.to_owned() } else { format!("{broker_name}-{i}") };
        let entry =
            BrokerEntry { cluster: cluster_name.to_owned(), name, address: front.to_string() };
        list.push(NativeBroker::new(native.to_owned(), entry));
    }
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| format!("cannot listen on {listen}: {e} (choose another --listen)"))?;
    let opts = NamesrvOptions {
        auto_create_topics,
        auto_create_queue_count: queues,
        max_connections: 1024,
    };
    let mut server = NameServer::start(listener, Arc::new(NativeBrokers(list)), opts)
        .map_err(|e| format!("cannot start the name server: {e}"))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<i32>(4);
    crate::broker::shutdown::watch_signals(move |sig| {
        let _ = tx.try_send(sig);
    })
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    println!("ringmq namesrv ready listen={}", server.local_addr());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = rx.recv();
    server.stop();
    Ok(())
}
