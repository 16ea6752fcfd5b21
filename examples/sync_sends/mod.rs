//! What the sync-send throughput examples share: their arguments, the timed sending threads
//! and the one JSON line `bench-harness/rocketmq/python_produce.py` prints too.

use std::time::{Duration, Instant};

/// `ADDR TOPIC THREADS SIZE SECONDS` from the command line, with defaults.
pub struct Args {
    pub addr: String,
    pub topic: String,
    pub threads: usize,
    pub size: usize,
    pub seconds: f64,
}

impl Args {
    pub fn parse(default_addr: &str, default_topic: &str) -> Args {
        let args: Vec<String> = std::env::args().collect();
        let arg =
            |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
        Args {
            addr: arg(1, default_addr),
            topic: arg(2, default_topic),
            threads: arg(3, "4").parse().expect("threads"),
            size: arg(4, "100").parse().expect("size"),
            seconds: arg(5, "10").parse().expect("seconds"),
        }
    }
}

/// Runs `args.threads` threads for `args.seconds`; thread `t` makes its sender with
/// `sender(t)` and calls it in a loop, each call one send waiting for its answer and timed.
/// Prints one JSON object: `client`, the arguments, messages, msgs_per_s and ack latencies.
pub fn run_and_report<S: FnMut()>(client: &str, args: &Args, sender: impl Fn(usize) -> S + Sync) {
    let stop = Instant::now() + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.threads)
            .map(|t| {
                let sender = &sender;
                s.spawn(move || {
                    let mut send = sender(t);
                    let mut mine = Vec::new();
                    while Instant::now() < stop {
                        let at = Instant::now();
                        send();
                        mine.push(at.elapsed());
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
    });
    let took = start.elapsed().as_secs_f64();
    latencies.sort();
    let n = latencies.len();
    let pct = |q: f64| latencies[((q * n as f64) as usize).min(n - 1)].as_secs_f64() * 1000.0;
    println!(
        "{{\"client\": \"{client}\", \"threads\": {}, \"size\": {}, \"messages\": {n}, \
         \"seconds\": {took:.2}, \"msgs_per_s\": {:.0}, \"ack_ms_p50\": {:.3}, \
         \"ack_ms_p99\": {:.3}, \"ack_ms_max\": {:.3}}}",
        args.threads,
        args.size,
        n as f64 / took,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
