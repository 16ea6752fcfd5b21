//! The `/metrics` endpoint: a deliberately tiny HTTP/1.x responder on std threads.
//!
//! Why not a crate: an endpoint that answers one GET needs request-line parsing and nothing
//! else. What it must guarantee is a bound on the request head's size, on the time a client may
//! take to send it however slowly it trickles in (slowloris), and on the connections served at
//! once. A general server such as tiny_http brings keep-alive, pipelining, chunked bodies and
//! its own thread pool, and we would still have to verify and test those three bounds through
//! its API; about 150 lines here give exactly them, tested below and against the real binary,
//! with no dependency tree. It speaks only what a scraper sends: `GET /metrics HTTP/1.x`,
//! answered once, then the connection is closed.
//!
//! Threads: one accept thread (named `ringmq-metrics`), and one short-lived thread per
//! connection, at most [`HttpLimits::max_connections`] at a time; a connection over that is
//! answered 503 at once by the accept thread. None of them runs on a shard: a scrape reaches
//! the shards only through the exporter's messages (see [`super::exporter`]).
//!
//! Bounds, so a slow or hostile client can neither hang nor crash the broker:
//! - the request head (request line and headers) is at most `max_request_bytes` (8 KiB),
//!   else 431; a body is never read;
//! - the whole head must arrive within `request_timeout` (5 s) from accept, however slowly
//!   it trickles in (slowloris), else 408; writing the answer has the same limit;
//! - anything that is not a well-formed request line gets 400, a method other than GET 405,
//!   a path other than `/metrics` 404.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The endpoint's bounds (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_request_bytes: usize,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_request_bytes: 8 * 1024,
            request_timeout: Duration::from_secs(5),
            max_connections: 4,
        }
    }
}

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// No blank line yet: read more.
    Incomplete,
    /// A complete head: the method and the path (without any query string).
    Complete { method: String, path: String },
    /// Not an HTTP/1.x request; the reason goes into the 400 answer.
    Bad(&'static str),
}

/// Parses a request head; pure, so every malformed case is tested without sockets.
pub fn parse_head(buf: &[u8]) -> Head {
    let Some(line_end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.iter().all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\r') {
            Head::Incomplete
        } else {
            Head::Bad("the request line holds bytes that are not printable ASCII")
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[..line_end]) else {
        return Head::Bad("the request line is not ASCII");
    };
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Bad("the request line is not `METHOD /path HTTP/1.x`");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Head::Bad("the method is not an HTTP method");
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Head::Bad("the target is not an absolute path");
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Head::Bad("the version is not HTTP/1.0 or HTTP/1.1");
    }
    let rest = &buf[line_end + 1..];
    let ended = rest.starts_with(b"\r\n")
        || rest.starts_with(b"\n")
        || rest.windows(4).any(|w| w == b"\r\n\r\n")
        || rest.windows(2).any(|w| w == b"\n\n");
    if !ended {
        return Head::Incomplete;
    }
    let path = target.split('?').next().unwrap_or(target);
    Head::Complete { method: method.to_owned(), path: path.to_owned() }
}

/// Produces the body of a scrape, or why there is none (answered 503).
pub type Scrape = dyn Fn() -> Result<String, String> + Send + Sync;

/// The running endpoint; stops (and joins its accept thread) on [`HttpServer::stop`] or drop.
pub struct HttpServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `listener` (already bound, so a busy port fails the broker's start, not later).
    pub fn start(
        listener: TcpListener,
        limits: HttpLimits,
        scrape: Arc<Scrape>,
    ) -> std::io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let accept = std::thread::Builder::new()
            .name("ringmq-metrics".into())
            .spawn(move || accept_loop(listener, limits, scrape, flag))?;
        Ok(HttpServer { addr, stopping, accept: Some(accept) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        if let Some(t) = self.accept.take() {
            self.stopping.store(true, Ordering::SeqCst);
            // Wake the blocking accept; it sees the flag and ends.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    limits: HttpLimits,
    scrape: Arc<Scrape>,
    stop: Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    // Connections whose answer is sent and that only drain the client's leftovers (for at
    // most a second): they no longer hold a request slot, so a client that reads an answer
    // and connects again at once is not refused for its own finished connection.
    let lingering = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!("metrics endpoint: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= limits.max_connections {
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = respond(&mut stream, 503, "text/plain", "too many metrics connections\n");
            let _ = stream.shutdown(std::net::Shutdown::Write);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (scrape, done, lingering) = (scrape.clone(), active.clone(), lingering.clone());
        let spawned =
            std::thread::Builder::new().name("ringmq-metrics-conn".into()).spawn(move || {
                let mut stream = stream;
                let answered = serve(&mut stream, limits, &*scrape);
                // The request slot is free once the answer is written, before the client can
                // see its end: a client that reads the answer to its end and connects again
                // is never refused for this connection.
                done.fetch_sub(1, Ordering::SeqCst);
                if let Some(deadline) = answered {
                    // The answer is complete: say so (the client's read ends now).
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                    // Bounded: past 4 x the limit, close without draining.
                    if lingering.fetch_add(1, Ordering::SeqCst) < 4 * limits.max_connections {
                        linger(&mut stream, deadline);
                    }
                    lingering.fetch_sub(1, Ordering::SeqCst);
                }
                drop(stream);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("metrics endpoint: cannot start a connection thread: {e}");
        }
    }
}

/// Answers one request on `stream`. Returns the request's deadline when an answer was
/// written (the caller then ends the write side and drains what the client still sends, see
/// [`linger`]), None when there was nobody to answer.
fn serve(stream: &mut TcpStream, limits: HttpLimits, scrape: &Scrape) -> Option<Instant> {
    let deadline = Instant::now() + limits.request_timeout;
    let (status, body) = match read_head(stream, limits, deadline) {
        Ok(Head::Complete { method, path }) => {
            if method != "GET" {
                (405, "only GET is served\n".to_owned())
            } else if path != "/metrics" {
                (404, "not found; metrics are at /metrics\n".to_owned())
            } else {
                match scrape() {
                    Ok(text) => (200, text),
                    Err(e) => (503, format!("{e}\n")),
                }
            }
        }
        Ok(Head::Bad(reason)) => (400, format!("{reason}\n")),
        Ok(Head::Incomplete) => unreachable!("read_head returns complete or bad heads"),
        Err(Some(status)) => (status, String::new()),
        Err(None) => return None, // the client closed or the socket failed: nobody to answer
    };
    let content_type = if status == 200 { super::exposition::CONTENT_TYPE } else { "text/plain" };
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let _ = stream.set_write_timeout(Some(left));
    respond(stream, status, content_type, &body).is_ok().then_some(deadline)
}

/// Reads and drops what the client still sends (the rest of an oversized head, say) until it
/// closes, for at most a second and 64 KiB: closing a socket with unread input makes the
/// kernel reset the connection, and the client could lose the answer it was sent.
fn linger(stream: &mut TcpStream, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
    if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
        return;
    }
    let mut scratch = [0u8; 4096];
    let mut drained = 0;
    while drained < 64 * 1024 {
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Reads until the head is complete or bad; `Err(Some(status))` for a limit hit (431, 408),
/// `Err(None)` when the client went away.
fn read_head(
    stream: &mut TcpStream,
    limits: HttpLimits,
    deadline: Instant,
) -> Result<Head, Option<u16>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match parse_head(&buf) {
            Head::Incomplete => {}
            done => return Ok(done),
        }
        if buf.len() >= limits.max_request_bytes {
            return Err(Some(431));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Some(408));
        }
        stream.set_read_timeout(Some(left)).map_err(|_| None)?;
        let room = (limits.max_request_bytes - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return Err(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Some(408))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(None),
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_only_when_complete_and_well_formed() {
        assert_eq!(parse_head(b""), Head::Incomplete);
        assert_eq!(parse_head(b"GET /metr"), Head::Incomplete);
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), Head::Incomplete);
        let ok = |m: &str, p: &str| Head::Complete { method: m.into(), path: p.into() };
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), ok("GET", "/metrics"));
        assert_eq!(parse_head(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), ok("GET", "/metrics"));
        assert_eq!(parse_head(b"POST / HTTP/1.1\n\n"), ok("POST", "/"));
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01\x00"[..], // a TLS hello
            b"\xff\xfe\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert!(matches!(parse_head(bad), Head::Bad(_)), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn server(limits: HttpLimits) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        HttpServer::start(listener, limits, Arc::new(|| Ok("ringmq_up 1\n".to_owned()))).unwrap()
    }

    /// Sends `bytes`, then reads the whole answer (bounded by a read timeout).
    fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn metrics_are_served_and_everything_else_is_refused_with_a_status() {
        let srv = server(HttpLimits::default());
        let a = srv.local_addr();
        let ok = exchange(a, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nringmq_up 1\n"), "{ok}");
        assert!(exchange(a, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let post = exchange(a, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET"), "{post}");
        assert!(exchange(a, b"\x00\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert!(exchange(a, huge.as_bytes()).starts_with("HTTP/1.1 431 "));
    }

    #[test]
    fn a_slow_client_is_cut_off_at_the_request_timeout_and_others_are_still_served() {
        let limits =
            HttpLimits { request_timeout: Duration::from_millis(300), ..Default::default() };
        let srv = server(limits);
        let a = srv.local_addr();
        let mut slow = TcpStream::connect(a).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
        // Meanwhile another scraper is served.
        assert!(exchange(a, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 "));
        let started = Instant::now();
        let mut out = String::new();
        let _ = slow.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_client_that_read_its_answer_is_never_refused_for_that_connection() {
        // One slot: each request follows the end of the previous answer, so none may be
        // refused (it was, when the slot was freed only after the client closed).
        let limits = HttpLimits { max_connections: 1, ..Default::default() };
        let srv = server(limits);
        let a = srv.local_addr();
        for i in 0..300 {
            let answer = exchange(a, b"GET /metrics HTTP/1.1\r\n\r\n");
            assert!(answer.starts_with("HTTP/1.1 200 "), "request {i}: {answer}");
        }
    }

    #[test]
    fn connections_over_the_limit_are_answered_503_at_once() {
        let limits = HttpLimits {
            max_connections: 1,
            request_timeout: Duration::from_secs(30),
            ..Default::default()
        };
        let srv = server(limits);
        let a = srv.local_addr();
        let mut holder = TcpStream::connect(a).unwrap();
        holder.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        // The holder's thread is counted once the accept loop took it; poll until the next
        // connection is refused.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = exchange(a, b"GET /metrics HTTP/1.1\r\n\r\n");
            // The refusal is written before the request is read, so the kernel may reset the
            // connection when the request arrives: an empty answer is a refusal too.
            if answer.starts_with("HTTP/1.1 503 ") || answer.is_empty() {
                break;
            }
            assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
            assert!(Instant::now() < deadline, "the limit was never applied");
        }
        holder.write_all(b"\r\n").unwrap();
        let mut out = String::new();
        holder.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = holder.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        drop(srv);
    }
}
