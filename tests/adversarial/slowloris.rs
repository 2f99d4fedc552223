//! Slowloris and oversized heads (issue 8, finding 3): the request-head deadline, the head
//! size and header-count caps (`431`) and the per-client-IP connection limit, over the
//! plaintext listener with raw TCP clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

const HOST: &str = "saas.acme.example";

fn setup(limits: &str) -> (Setup, Tessera) {
    let mut s = Setup::new(vec![
        TenantSpec::new("acme", &[HOST], echo_upstream()).extra("    auth: none")
    ]);
    s.extra = format!("limits: {limits}\n");
    let t = s.start_with_env("guard", &[("RUST_LOG", "info")]);
    (s, t)
}

fn connect(t: &Tessera) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", t.ports.http)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c
}

/// Send one complete keep-alive request and read its response head; returns the status line.
fn request(c: &mut TcpStream, extra_headers: &str) -> String {
    // A connection the guard already refused may be reset before the write lands (the
    // retry loop below races the slot being freed): that is "no answer", not a test failure.
    if write!(c, "GET /hello HTTP/1.1\r\nHost: {HOST}\r\n{extra_headers}\r\n").is_err() {
        return String::new();
    }
    read_head(c)
}

fn read_head(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    // Drain the body so the connection can be reused.
    if let Some(len) = text.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length: ")
            .map(|v| v.trim().parse::<usize>().unwrap())
    }) {
        let body_start = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut have = got.len() - body_start;
        while have < len {
            match c.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => have += n,
            }
        }
    }
    text.lines().next().unwrap_or("").to_string()
}

/// True once the server has closed `c` (EOF or reset), reading whatever it sent.
fn closed(c: &mut TcpStream) -> bool {
    let mut b = [0u8; 1024];
    matches!(c.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn slow_head_is_cut_at_the_deadline_and_others_still_served() {
    let (_s, t) = setup("{ request_head_timeout: 2s }");
    let mut slow = connect(&t);
    slow.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    write!(slow, "GET /hello HTTP/1.1\r\nHost: {HOST}\r\n").unwrap();
    // Drip one header line per second for up to 12 s; the deadline is 2 s.
    let mut cut_after = None;
    'drip: for i in 0..12 {
        let tick = Instant::now();
        while tick.elapsed() < Duration::from_secs(1) {
            let mut b = [0u8; 64];
            match slow.read(&mut b) {
                Ok(0) => {
                    cut_after = Some(start.elapsed());
                    break 'drip;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => {
                    cut_after = Some(start.elapsed());
                    break 'drip;
                }
            }
        }
        if write!(slow, "X-Drip-{i}: 1\r\n").is_err() {
            cut_after = Some(start.elapsed());
            break;
        }
    }
    let cut_after = cut_after.expect("the dripping connection was still open after 12 s");
    assert!(cut_after < Duration::from_secs(8), "cut only after {cut_after:?}");

    // A normal request on another connection is served, and keep-alive requests on it too
    // (each request gets its own deadline, from its first byte).
    let mut ok = connect(&t);
    assert_eq!(request(&mut ok, ""), "HTTP/1.1 200 OK");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        request(&mut ok, ""),
        "HTTP/1.1 200 OK",
        "an idle keep-alive gap is not head time"
    );
    assert_counted(&t, "head_timeout");
}

#[test]
fn oversized_head_gets_431() {
    let (_s, t) = setup("{ max_request_head_bytes: 65536 }");
    let mut c = connect(&t);
    let big = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
    assert_eq!(request(&mut c, &big), "HTTP/1.1 431 Request Header Fields Too Large");
    assert!(closed(&mut c));
    // Just under the cap is fine.
    let mut c = connect(&t);
    let fits = format!("X-Big: {}\r\n", "a".repeat(60 * 1024));
    assert_eq!(request(&mut c, &fits), "HTTP/1.1 200 OK");
    assert_counted(&t, "head_too_large");
}

#[test]
fn too_many_headers_get_431() {
    let (_s, t) = setup("{ max_headers: 20 }");
    let mut c = connect(&t);
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(request(&mut c, &many), "HTTP/1.1 431 Request Header Fields Too Large");
    let mut c = connect(&t);
    let some: String = (0..15).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(request(&mut c, &some), "HTTP/1.1 200 OK");
    assert_counted(&t, "too_many_headers");
}

#[test]
fn per_ip_limit_refuses_the_next_connection_and_frees_slots() {
    let (_s, t) = setup("{ max_connections_per_ip: 3 }");
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(&t)).collect();
    for c in &mut held {
        assert_eq!(request(c, ""), "HTTP/1.1 200 OK");
    }
    let mut fourth = connect(&t);
    let _ = write!(fourth, "GET /hello HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    assert_eq!(
        read_head(&mut fourth),
        "",
        "the 4th concurrent connection got an answer"
    );
    assert_counted(&t, "per_ip_limit");

    // Closing one frees its slot.
    drop(held.pop());
    let freed = eventually(Duration::from_secs(5), || {
        let mut c = connect(&t);
        request(&mut c, "") == "HTTP/1.1 200 OK"
    });
    assert!(freed.is_some(), "no slot freed after a connection closed");
}

fn assert_counted(t: &Tessera, reason: &str) {
    let ok = eventually(Duration::from_secs(5), || {
        t.metric("tessera_guard_refusals_total", &[("reason", reason)]) >= 1.0
    });
    assert!(
        ok.is_some(),
        "tessera_guard_refusals_total{{reason={reason:?}}} not counted"
    );
}
