//! The latency floor of a machine for one request and its reply between two pinned CPUs: a
//! TCP echo over loopback at a fixed rate, each reply timed from its request's intended send
//! time, as ringmq-bench's `latency` workload times its acks (its sender also sleeps at least
//! 50 µs and then sends everything due). No ringmq code is involved: whatever this measures,
//! the broker and its client cannot do better on the same machine.
//!
//! ```text
//! cargo build --release -p ringmq-bench --example echo_floor
//! target/release/examples/echo_floor RATE_PER_S REQUEST_BYTES SECONDS [SERVER_CPU CLIENT_CPU]
//! ```
//!
//! The server (one thread on SERVER_CPU, default 0) answers each request with 16 bytes; the
//! client's sender and receiver threads run on CLIENT_CPU (default 1). The first second is
//! warm-up. Prints one JSON line: reply latency and send delay (how late the sender woke)
//! percentiles in microseconds.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const MIN_SLEEP: Duration = Duration::from_micros(50);

fn pin(cpu: usize) {
    assert!(cpu < libc::CPU_SETSIZE as usize, "cpu {cpu} is out of range");
    // SAFETY: a zeroed cpu_set_t is valid and CPU_SET stays inside it (checked above); both
    // calls affect only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_setaffinity(0, size, &set), 0, "cannot pin to cpu {cpu}");
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: Option<T>) -> T {
    match args.get(i) {
        Some(a) => a.parse().unwrap_or_else(|_| usage(&format!("argument {i} ({a:?})"))),
        None => default.unwrap_or_else(|| usage(&format!("argument {i} is missing"))),
    }
}

fn usage(why: &str) -> ! {
    eprintln!(
        "echo_floor: {why}\nusage: echo_floor RATE_PER_S REQUEST_BYTES SECONDS [SERVER_CPU CLIENT_CPU]"
    );
    std::process::exit(2)
}

/// (p50, p90, p99, p99.9, max) of `v` in microseconds; `v` is sorted here.
fn percentiles(v: &mut [u64]) -> [u64; 5] {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)] / 1000;
    [at(0.5), at(0.9), at(0.99), at(0.999), at(1.0)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rate: u64 = arg(&args, 1, None);
    let size: usize = arg(&args, 2, None);
    let secs: u64 = arg(&args, 3, None);
    let server_cpu: usize = arg(&args, 4, Some(0));
    let client_cpu: usize = arg(&args, 5, Some(1));
    if rate == 0 || size < 8 || secs < 2 {
        usage("RATE_PER_S > 0, REQUEST_BYTES >= 8 and SECONDS >= 2 (the first is warm-up)");
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("the listener's address");
    std::thread::spawn(move || {
        pin(server_cpu);
        let (mut s, _) = listener.accept().expect("accept the client");
        s.set_nodelay(true).expect("TCP_NODELAY");
        let mut request = vec![0u8; size];
        let mut reply = [0u8; 16];
        while s.read_exact(&mut request).is_ok() {
            reply[..8].copy_from_slice(&request[..8]);
            if s.write_all(&reply).is_err() {
                return;
            }
        }
    });
    pin(client_cpu);
    let start = Instant::now();
    let now_ns = move || start.elapsed().as_nanos() as u64;
    let mut tx = TcpStream::connect(addr).expect("connect to the echo server");
    tx.set_nodelay(true).expect("TCP_NODELAY");
    let mut rx = tx.try_clone().expect("a second handle on the socket");
    let total = rate * secs;
    let receiver = std::thread::spawn(move || {
        pin(client_cpu);
        let mut latency = Vec::with_capacity(total as usize);
        let mut reply = [0u8; 16];
        for _ in 0..total {
            rx.read_exact(&mut reply).expect("read a reply");
            let intended = u64::from_le_bytes(reply[..8].try_into().expect("8 bytes"));
            latency.push(now_ns().saturating_sub(intended));
        }
        latency
    });
    let mut request = vec![7u8; size];
    let mut late = Vec::with_capacity(total as usize);
    let interval = 1_000_000_000 / rate;
    let t0 = now_ns() + 1_000_000;
    for i in 0..total {
        let intended = t0 + i * interval;
        let now = now_ns();
        if intended > now {
            std::thread::sleep(Duration::from_nanos(intended - now).max(MIN_SLEEP));
        }
        late.push(now_ns().saturating_sub(intended));
        request[..8].copy_from_slice(&intended.to_le_bytes());
        tx.write_all(&request).expect("send a request");
    }
    let mut latency = receiver.join().expect("the receiver thread");
    let warmup = rate as usize;
    let [p50, p90, p99, p999, max] = percentiles(&mut latency[warmup..]);
    let [s50, _, s99, _, smax] = percentiles(&mut late[warmup..]);
    println!(
        "{{\"rate\": {rate}, \"request_bytes\": {size}, \"seconds\": {secs}, \"measured\": {}, \
         \"p50_us\": {p50}, \"p90_us\": {p90}, \"p99_us\": {p99}, \"p99_9_us\": {p999}, \
         \"max_us\": {max}, \"send_delay_p50_us\": {s50}, \"send_delay_p99_us\": {s99}, \
         \"send_delay_max_us\": {smax}}}",
        total as usize - warmup
    );
}
