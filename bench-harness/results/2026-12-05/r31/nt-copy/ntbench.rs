//! Copies 1 KiB messages round-robin into QUEUES buffers of 8 KiB (a 13-byte header first),
//! with a locked add after each as the client does, plainly or with non-temporal stores
//! (movntdq for the 64-byte-aligned middle, then sfence). Build: `rustc -O ntbench.rs`;
//! run: `taskset -c 1 ./ntbench 10000 plain` (or `nt`). Round 31, issue 10.
use std::arch::x86_64::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[inline(never)]
fn copy_plain(dst: &mut Vec<u8>, src: &[u8]) {
    dst.extend_from_slice(src);
}

#[inline(never)]
fn copy_nt(dst: &mut Vec<u8>, src: &[u8]) {
    dst.reserve(src.len());
    unsafe {
        let start = dst.as_mut_ptr().add(dst.len());
        let n = src.len();
        // head up to 64-byte alignment
        let mis = (start as usize) & 63;
        let head = if mis == 0 { 0 } else { (64 - mis).min(n) };
        std::ptr::copy_nonoverlapping(src.as_ptr(), start, head);
        let mut i = head;
        while i + 64 <= n {
            let s = src.as_ptr().add(i) as *const __m128i;
            let d = start.add(i) as *mut __m128i;
            _mm_stream_si128(d, _mm_loadu_si128(s));
            _mm_stream_si128(d.add(1), _mm_loadu_si128(s.add(1)));
            _mm_stream_si128(d.add(2), _mm_loadu_si128(s.add(2)));
            _mm_stream_si128(d.add(3), _mm_loadu_si128(s.add(3)));
            i += 64;
        }
        std::ptr::copy_nonoverlapping(src.as_ptr().add(i), start.add(i), n - i);
        _mm_sfence();
        dst.set_len(dst.len() + n);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let queues: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(10000);
    let mode = args.get(2).cloned().unwrap_or("plain".into());
    let cap = 8192;
    let mut bufs: Vec<Vec<u8>> = (0..queues).map(|_| { let mut v = vec![0u8; cap]; v.clear(); v }).collect();
    let msg = vec![7u8; 1024];
    let hdr = [1u8; 13];
    let counter = AtomicU64::new(0);
    let total = 4_000_000usize;
    let t = Instant::now();
    for i in 0..total {
        let q = i % queues;
        let b = &mut bufs[q];
        if b.len() + 1100 > cap { b.clear(); }
        b.extend_from_slice(&hdr);
        if mode == "nt" { copy_nt(b, &msg) } else { copy_plain(b, &msg) }
        counter.fetch_add(1, Ordering::AcqRel);
    }
    let ns = t.elapsed().as_nanos() as f64 / total as f64;
    let sum: usize = bufs.iter().map(|b| b.len()).sum();
    println!("{mode} queues {queues}: {ns:.1} ns/msg ({sum})");
}
