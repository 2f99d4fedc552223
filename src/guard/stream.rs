//! [`GuardedStream`]: the accepted connection as Pingora sees it. Runs under Pingora's
//! request reader: every byte Pingora reads passes through `poll_read`, which enforces the
//! request-head deadline and the head size and header-count caps, answers `431` itself, and
//! ends connections of an IP that spent its HTTP/2 reset budget.
//!
//! Phases (shared with `GuardApp` and `GuardHttp` through [`Shared`]):
//!
//! ```text
//! FIRST ──first byte──▶ READING ──end of head──▶ DONE ──GuardHttp: next h1 request──▶ IDLE
//!  (deadline runs         │ deadline / cap                                              │
//!   from accept)          ▼                                                  first byte ▼
//!                  TIMED_OUT / REJECTING (431, linger) ─▶ REJECTED              READING (deadline
//!                                                                               from that byte)
//! any phase: IP blocked for HTTP/2 resets ─▶ BLOCKED
//! ```
//!
//! Terminal phases wake `GuardApp`, which drops the connection future: Pingora never sees an
//! error, so nothing is logged per connection by Pingora.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::{Reason, Slot};

/// The HTTP/2 connection preface a client must send first (RFC 9113 §3.4).
const H2_PREFACE_LEN: usize = 24;
/// How long a rejected connection keeps reading (and discarding) what the client still sends,
/// so that closing it does not reset the connection before the client has read the `431`.
const LINGER: Duration = Duration::from_secs(1);
/// At most this much is discarded while lingering.
const LINGER_BYTES: usize = 1024 * 1024;

const RESPONSE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\ncontent-length: 32\r\nconnection: close\r\n\r\nrequest header fields too large\n";

// Phases, see the module docs.
const FIRST: u8 = 0;
const IDLE: u8 = 1;
const READING: u8 = 2;
const DONE: u8 = 3;
const REJECTING: u8 = 4;
const TIMED_OUT: u8 = 5;
const REJECTED: u8 = 6;
const BLOCKED: u8 = 7;

/// State shared between the stream (owned by Pingora) and the guard's apps.
#[derive(Debug)]
pub struct Shared {
    phase: AtomicU8,
    /// For `REJECTED`: too many headers (else: head too large).
    too_many_headers: AtomicBool,
    notify: Notify,
}

impl Shared {
    /// A new HTTP/1 request may start on this connection: its deadline starts with its first
    /// byte. Called by `GuardHttp` before Pingora reads each request head.
    pub fn arm(&self) {
        let _ = self
            .phase
            .compare_exchange(DONE, IDLE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Resolves when the connection must be closed, with the reason.
    pub async fn closed(&self) -> Reason {
        loop {
            match self.phase.load(Ordering::Acquire) {
                TIMED_OUT => return Reason::HeadTimeout,
                BLOCKED => return Reason::H2ResetBudget,
                REJECTED if self.too_many_headers.load(Ordering::Acquire) => return Reason::TooManyHeaders,
                REJECTED => return Reason::HeadTooLarge,
                _ => self.notify.notified().await,
            }
        }
    }

    fn set(&self, phase: u8) {
        self.phase.store(phase, Ordering::Release);
        if matches!(phase, TIMED_OUT | BLOCKED | REJECTED) {
            // Stores a permit if `closed` is not waiting yet: no lost wake-up.
            self.notify.notify_one();
        }
    }
}

/// Limits a stream needs, copied from `Limits` at load time.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub timeout: Duration,
    pub max_bytes: usize,
    pub max_headers: usize,
}

/// Result of feeding bytes to [`HeadScan`].
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    More,
    Complete,
    TooLarge,
    TooManyHeaders,
}

/// Finds the end of an HTTP/1 request head (an empty line, CRLF or bare LF as httparse
/// accepts) while counting its bytes and header lines. Only looks at framing, never at values.
#[derive(Debug, Default, Clone)]
pub struct HeadScan {
    bytes: usize,
    /// Non-empty lines seen (the request line included).
    lines: usize,
    line_has_content: bool,
}

impl HeadScan {
    /// Feed the next bytes read. Same answers as looking at one byte at a time (the unit tests
    /// check that against a byte loop), but jumps from line end to line end with `memchr`: a
    /// request head is scanned at SIMD speed instead of ~20 instructions per byte.
    pub fn feed(&mut self, data: &[u8], limits: &HeadLimits) -> Scan {
        let start = self.bytes;
        let mut line_start = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            // Byte `nl` is the (start + nl + 1)th of the head: past the cap before it is looked at.
            if start + nl + 1 > limits.max_bytes {
                self.bytes = limits.max_bytes + 1;
                return Scan::TooLarge;
            }
            // A line has content if anything but CR precedes its LF (CR-only lines are empty,
            // as in the byte loop).
            if !self.line_has_content {
                self.line_has_content = data[line_start..nl].iter().any(|&b| b != b'\r');
            }
            line_start = nl + 1;
            if self.line_has_content {
                self.lines += 1;
                // lines - 1: the request line is not a header.
                if self.lines - 1 > limits.max_headers {
                    self.bytes = start + nl + 1;
                    return Scan::TooManyHeaders;
                }
            } else if self.lines > 0 {
                self.bytes = start + nl + 1;
                return Scan::Complete;
            }
            // Empty lines before the request line are skipped, as httparse does.
            self.line_has_content = false;
        }
        if start + data.len() > limits.max_bytes {
            self.bytes = limits.max_bytes + 1;
            return Scan::TooLarge;
        }
        if !self.line_has_content {
            self.line_has_content = data[line_start..].iter().any(|&b| b != b'\r');
        }
        self.bytes = start + data.len();
        Scan::More
    }
}

/// The connection, wrapped. Holds the client IP's connection slot until dropped.
pub struct GuardedStream {
    inner: Stream,
    slot: Option<Slot>,
    shared: Arc<Shared>,
    limits: HeadLimits,
    h2: bool,
    scan: HeadScan,
    /// Head deadline, then the linger deadline of a rejected connection. One timer per
    /// connection, reset per request.
    deadline: Pin<Box<Sleep>>,
    written: usize,
    shut: bool,
    lingered: usize,
    /// HTTP/1: bytes of the read that completed the current request head that lie past the
    /// head (the start of its body). Empty for a request without a body in the same read, the
    /// common case: then nothing is copied. See [`GuardedStream::take_overread`].
    overread: bytes::BytesMut,
    /// HTTP/1: the length of the current request head as scanned (leading empty lines included).
    head_len: usize,
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .field("phase", &self.shared.phase.load(Ordering::Relaxed))
            .finish()
    }
}

impl GuardedStream {
    pub fn new(inner: Stream, slot: Option<Slot>, limits: HeadLimits) -> GuardedStream {
        let h2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        GuardedStream {
            inner,
            slot,
            shared: Arc::new(Shared {
                phase: AtomicU8::new(FIRST),
                too_many_headers: AtomicBool::new(false),
                notify: Notify::new(),
            }),
            limits,
            h2,
            scan: HeadScan::default(),
            deadline: Box::pin(tokio::time::sleep(limits.timeout)),
            written: 0,
            shut: false,
            lingered: 0,
            overread: bytes::BytesMut::new(),
            head_len: 0,
        }
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// See [`Shared::arm`].
    pub fn arm(&self) {
        self.shared.arm();
    }

    /// Write the `431`, close our side, then read and discard for a moment (lingering close).
    fn poll_reject(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.written < RESPONSE_431.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &RESPONSE_431[self.written..]) {
                Poll::Ready(Ok(n)) if n > 0 => self.written += n,
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        if !self.shut {
            if ready!(Pin::new(&mut self.inner).poll_flush(cx)).is_err() {
                return Poll::Ready(());
            }
            if ready!(Pin::new(&mut self.inner).poll_shutdown(cx)).is_err() {
                return Poll::Ready(());
            }
            self.shut = true;
            self.deadline.as_mut().reset(Instant::now() + LINGER);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let mut scratch = [0u8; 4096];
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    self.lingered += rb.filled().len();
                    if self.lingered > LINGER_BYTES {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn blocked(&self) -> bool {
        self.slot.as_ref().is_some_and(Slot::blocked)
    }

    /// The current HTTP/1 request head's length as scanned, and the bytes read past it (see the
    /// fields). With the head's own bytes they are everything the connection has delivered for
    /// this request so far, which is what `proxy::lean` needs to hand a request whose head it
    /// has read to pingora-proxy: Pingora 0.9 keeps its own copy of them private. Pipelining is
    /// off (Pingora's default), so no earlier read holds bytes of this request.
    pub fn take_overread(&mut self) -> bytes::BytesMut {
        std::mem::take(&mut self.overread)
    }

    /// See [`GuardedStream::take_overread`].
    pub fn head_len(&self) -> usize {
        self.head_len
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.shared.phase.load(Ordering::Acquire);
        if phase < REJECTING && this.blocked() {
            this.shared.set(BLOCKED);
            return Poll::Pending;
        }
        match phase {
            DONE => return Pin::new(&mut this.inner).poll_read(cx, buf),
            REJECTING => {
                ready!(this.poll_reject(cx));
                this.shared.set(REJECTED);
                return Poll::Pending;
            }
            TIMED_OUT | REJECTED | BLOCKED => return Poll::Pending,
            _ => {}
        }
        if phase != IDLE && this.deadline.as_mut().poll(cx).is_ready() {
            this.shared.set(TIMED_OUT);
            return Poll::Pending;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let filled = buf.filled().len();
        if filled == before {
            return Poll::Ready(Ok(()));
        }
        if phase == IDLE {
            this.scan = HeadScan::default();
            this.deadline.as_mut().reset(Instant::now() + this.limits.timeout);
        }
        let head_before = this.scan.bytes;
        let result = if this.h2 {
            this.scan.bytes += filled - before;
            if this.scan.bytes >= H2_PREFACE_LEN {
                Scan::Complete
            } else {
                Scan::More
            }
        } else {
            this.scan.feed(&buf.filled()[before..], &this.limits)
        };
        match result {
            Scan::More => this.shared.phase.store(READING, Ordering::Release),
            Scan::Complete => {
                if !this.h2 {
                    this.head_len = this.scan.bytes;
                    let rest = &buf.filled()[before + (this.scan.bytes - head_before)..];
                    this.overread.clear();
                    if !rest.is_empty() {
                        this.overread.extend_from_slice(rest);
                    }
                }
                this.shared.phase.store(DONE, Ordering::Release)
            }
            Scan::TooLarge | Scan::TooManyHeaders => {
                // Pingora never sees the oversized head.
                buf.set_filled(before);
                this.shared
                    .too_many_headers
                    .store(result == Scan::TooManyHeaders, Ordering::Release);
                this.shared.phase.store(REJECTING, Ordering::Release);
                ready!(this.poll_reject(cx));
                this.shared.set(REJECTED);
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    // Peeking would bypass the head checks; Pingora only peeks for h2c, which is off.
    async fn try_peek(&mut self, _buf: &mut [u8]) -> io::Result<bool> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: HeadLimits = HeadLimits {
        timeout: Duration::from_secs(1),
        max_bytes: 200,
        max_headers: 3,
    };

    #[test]
    fn finds_end_of_head_across_reads() {
        let mut s = HeadScan::default();
        assert_eq!(s.feed(b"\r\nGET / HTTP/1.1\r\nHost: a\r", &L), Scan::More);
        assert_eq!(s.feed(b"\n\r", &L), Scan::More);
        assert_eq!(s.feed(b"\nbody", &L), Scan::Complete);
        let mut s = HeadScan::default();
        assert_eq!(s.feed(b"GET / HTTP/1.1\nHost: a\n\n", &L), Scan::Complete, "bare LF");
    }

    /// The byte-at-a-time scan `feed` replaced: the reference it must agree with.
    fn feed_bytewise(s: &mut HeadScan, data: &[u8], limits: &HeadLimits) -> Scan {
        for &b in data {
            s.bytes += 1;
            if s.bytes > limits.max_bytes {
                return Scan::TooLarge;
            }
            match b {
                b'\n' => {
                    if s.line_has_content {
                        s.lines += 1;
                        if s.lines - 1 > limits.max_headers {
                            return Scan::TooManyHeaders;
                        }
                    } else if s.lines > 0 {
                        return Scan::Complete;
                    }
                    s.line_has_content = false;
                }
                b'\r' => {}
                _ => s.line_has_content = true,
            }
        }
        Scan::More
    }

    /// Random heads over a small alphabet (so CR, LF, empty lines and caps all occur), cut
    /// into random reads: `feed` and the byte loop give the same answer at every read.
    #[test]
    fn agrees_with_a_byte_at_a_time_scan() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let alphabets: [&[u8]; 3] = [b"\r\n\r\na:x", b"aaaaaaaaaaaaaa\r\n", b"a\n"];
        let mut outcomes = std::collections::HashMap::new();
        for _ in 0..20_000 {
            let alphabet = alphabets[(next() % 3) as usize];
            let limits = HeadLimits {
                timeout: Duration::from_secs(1),
                max_bytes: (next() % 200) as usize,
                max_headers: (next() % 12) as usize,
            };
            let len = (next() % 260) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let (mut fast, mut slow) = (HeadScan::default(), HeadScan::default());
            let mut rest = &data[..];
            loop {
                let cut = if rest.is_empty() {
                    0
                } else {
                    (next() as usize % rest.len()) + 1
                };
                let (chunk, tail) = rest.split_at(cut);
                let (a, b) = (fast.feed(chunk, &limits), feed_bytewise(&mut slow, chunk, &limits));
                assert_eq!(a, b, "input {data:?}");
                if a != Scan::More || tail.is_empty() {
                    *outcomes.entry(format!("{a:?}")).or_insert(0) += 1;
                    if a == Scan::More {
                        assert_eq!((fast.bytes, fast.lines), (slow.bytes, slow.lines));
                    }
                    break;
                }
                rest = tail;
            }
        }
        // Every outcome was reached, so the comparison covered each branch.
        for o in ["More", "Complete", "TooLarge", "TooManyHeaders"] {
            assert!(
                outcomes.get(o).copied().unwrap_or(0) > 50,
                "{o} seen too rarely: {outcomes:?}"
            );
        }
    }

    #[test]
    fn caps() {
        let mut s = HeadScan::default();
        assert_eq!(s.feed(b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n", &L), Scan::More);
        assert_eq!(s.feed(b"d: 4\r\n", &L), Scan::TooManyHeaders);
        let mut s = HeadScan::default();
        assert_eq!(s.feed(&[b'x'; 201], &L), Scan::TooLarge);
    }
}
