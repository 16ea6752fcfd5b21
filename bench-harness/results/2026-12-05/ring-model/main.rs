//! Model of the producer's staging with N queues, 1 KiB messages round-robin, a staging budget:
//! P: per-queue batch buffers (as ringmq's staging today), R: one ring in arrival order,
//! gathered per queue at send time. Both CRC each batch and copy it into a request buffer
//! (standing in for the kernel's socket copy). Single thread, no broker. ns per message.
use std::time::Instant;

const HDR: usize = 24; // record header
const BATCH_HDR: usize = 64;
const REQ: usize = 1 << 20;

struct Req { buf: Vec<u8>, len: usize, sent: u64 }
impl Req {
    fn new() -> Self { Req { buf: vec![0; REQ + (2 << 20)], len: 0, sent: 0 } }
    #[inline] fn room(&mut self, n: usize) { if self.len + n > REQ { self.len = 0; self.sent += 1; } }
}

fn record(dst: &mut [u8], body: &[u8], q: u32, seq: u64) {
    dst[0..4].copy_from_slice(&q.to_le_bytes());
    dst[4..12].copy_from_slice(&seq.to_le_bytes());
    dst[12..16].copy_from_slice(&(body.len() as u32).to_le_bytes());
    dst[HDR..HDR + body.len()].copy_from_slice(body);
}

fn per_queue(n: usize, msgs: u64, budget: usize, max_batch: usize, bodies: &[Vec<u8>]) -> (f64, f64) {
    let rec = HDR + bodies[0].len();
    let mut qs: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity((budget / n).min(max_batch) + rec)).collect();
    let mut staged = 0usize;
    let mut req = Req::new();
    let mut batches = 0u64;
    let mut crc_acc = 0u32;
    let t = Instant::now();
    for i in 0..msgs {
        let q = (i % n as u64) as usize;
        // Send the queue's batch first if the budget is spent (it is the oldest) or it is full.
        if (staged + rec > budget && !qs[q].is_empty()) || qs[q].len() + rec > max_batch {
            let b = &mut qs[q];
            let crc = crc32c::crc32c(b);
            req.room(BATCH_HDR + b.len());
            let at = req.len;
            req.buf[at..at + 4].copy_from_slice(&crc.to_le_bytes());
            req.buf[at + BATCH_HDR..at + BATCH_HDR + b.len()].copy_from_slice(b);
            req.len += BATCH_HDR + b.len();
            staged -= b.len();
            crc_acc ^= crc;
            b.clear();
            batches += 1;
        }
        let b = &mut qs[q];
        let at = b.len();
        b.resize(at + rec, 0); // grows only if short
        record(&mut b[at..], &bodies[(i % bodies.len() as u64) as usize], q as u32, i);
        staged += rec;
    }
    let dt = t.elapsed().as_nanos() as f64 / msgs as f64;
    std::hint::black_box((crc_acc, req.sent));
    (dt, msgs as f64 / batches.max(1) as f64)
}

fn ring(n: usize, msgs: u64, budget: usize, max_batch: usize, bodies: &[Vec<u8>]) -> (f64, f64) {
    let rec = HDR + bodies[0].len();
    let slots = budget / rec; // fixed-size slots for the model (1 KiB messages)
    let mut ring = vec![0u8; slots * rec];
    let mut next = vec![u32::MAX; slots]; // link to the queue's next record
    let mut consumed = vec![false; slots];
    let mut qhead = vec![u32::MAX; n];
    let mut qtail = vec![u32::MAX; n];
    let mut qlen = vec![0usize; n];
    let (mut head, mut tail, mut used) = (0usize, 0usize, 0usize);
    let mut req = Req::new();
    let mut batches = 0u64;
    let mut crc_acc = 0u32;
    let t = Instant::now();
    for i in 0..msgs {
        let q = (i % n as u64) as usize;
        // Full batch: send it. Ring full: send the queue owning the oldest record.
        let send = |q: usize, ring: &mut [u8], req: &mut Req, next: &mut [u32], consumed: &mut [bool],
                        qhead: &mut [u32], qtail: &mut [u32], qlen: &mut [usize]| {
            let bytes = qlen[q] * rec;
            req.room(BATCH_HDR + bytes);
            let at = req.len;
            let mut w = at + BATCH_HDR;
            let mut crc = 0u32;
            let mut s = qhead[q];
            while s != u32::MAX {
                let src = &ring[s as usize * rec..s as usize * rec + rec];
                crc = crc32c::crc32c_append(crc, src);
                req.buf[w..w + rec].copy_from_slice(src);
                w += rec;
                consumed[s as usize] = true;
                s = std::mem::replace(&mut next[s as usize], u32::MAX);
            }
            req.buf[at..at + 4].copy_from_slice(&crc.to_le_bytes());
            req.len = w;
            qhead[q] = u32::MAX;
            qtail[q] = u32::MAX;
            qlen[q] = 0;
            crc
        };
        if (qlen[q] + 1) * rec > max_batch {
            crc_acc ^= send(q, &mut ring, &mut req, &mut next, &mut consumed, &mut qhead, &mut qtail, &mut qlen);
            batches += 1;
        }
        while used == slots {
            // The oldest record's queue goes; then the head moves past consumed slots.
            let owner = u32::from_le_bytes(ring[head * rec..head * rec + 4].try_into().unwrap()) as usize;
            if !consumed[head] {
                crc_acc ^= send(owner, &mut ring, &mut req, &mut next, &mut consumed, &mut qhead, &mut qtail, &mut qlen);
                batches += 1;
            }
            while used > 0 && consumed[head] {
                consumed[head] = false;
                head = (head + 1) % slots;
                used -= 1;
            }
        }
        let s = tail;
        record(&mut ring[s * rec..s * rec + rec], &bodies[(i % bodies.len() as u64) as usize], q as u32, i);
        tail = (tail + 1) % slots;
        used += 1;
        if qtail[q] == u32::MAX { qhead[q] = s as u32; } else { next[qtail[q] as usize] = s as u32; }
        qtail[q] = s as u32;
        qlen[q] += 1;
    }
    let dt = t.elapsed().as_nanos() as f64 / msgs as f64;
    std::hint::black_box((crc_acc, req.sent));
    (dt, msgs as f64 / batches.max(1) as f64)
}

fn main() {
    let msgs: u64 = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(5_000_000);
    let budget = std::env::args().nth(2).map(|s| s.parse::<usize>().unwrap()).unwrap_or(32) << 20;
    let bodies: Vec<Vec<u8>> = (0..10u8).map(|k| vec![k; 1024]).collect();
    let max_batch = 1 << 20;
    for round in 0..3 {
        for n in [16usize, 10_000] {
            let (p, pb) = per_queue(n, msgs, budget, max_batch, &bodies);
            let (r, rb) = ring(n, msgs, budget, max_batch, &bodies);
            println!("round {round} queues {n:>6}: per-queue {p:7.1} ns/msg ({pb:7.1} rec/batch)   ring {r:7.1} ns/msg ({rb:7.1} rec/batch)");
        }
    }
}
