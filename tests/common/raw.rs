//! Raw sockets for adversarial tests: an upstream that records every byte it receives, and
//! clients that send exactly the bytes a test wrote (plaintext or TLS with a chosen SNI).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_rustls::rustls;

/// An HTTP/1.1 upstream on 127.0.0.1:0 that answers `200 ok` to every request and keeps the
/// raw bytes of each one (head and body) for the test to inspect.
pub struct Recorder {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let reqs = reqs.clone();
                std::thread::spawn(move || serve(conn, &reqs));
            }
        });
        Recorder { addr, requests }
    }

    /// Every request received so far, raw.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().unwrap().clone()
    }

    /// Every request received so far, as text (lossy).
    pub fn texts(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Header values of `name` (case-insensitive) in a raw request head.
pub fn header_values(raw: &str, name: &str) -> Vec<String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

fn serve(mut conn: TcpStream, reqs: &Mutex<Vec<Vec<u8>>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        // Read one request: head, then a Content-Length or chunked body.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let chunked = header_values(&head, "transfer-encoding")
            .iter()
            .any(|v| v.contains("chunked"));
        let cl: usize = header_values(&head, "content-length")
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let end = loop {
            let have = buf.len() - head_end;
            if chunked {
                if let Some(i) = find(&buf[head_end..], b"0\r\n\r\n") {
                    break head_end + i + 5;
                }
            } else if have >= cl {
                break head_end + cl;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    reqs.lock().unwrap().push(buf.clone());
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        reqs.lock().unwrap().push(buf[..end].to_vec());
        buf.drain(..end);
        if conn
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nX-Upstream-Case: kept\r\ncontent-length: 2\r\n\r\nok",
            )
            .is_err()
        {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Send `bytes` on a plaintext connection to 127.0.0.1:`port` and return what came back
/// before the server closed (or 3 s of silence). The write side stays open: Pingora treats a
/// half-closed client as gone.
pub fn plain_exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Send `bytes` over TLS with SNI `sni` (trusting `ca_pem`) and return the answer read until
/// the server closes or 3 s of silence.
pub fn tls_exchange(port: u16, sni: &str, ca_pem: &str, bytes: &[u8]) -> String {
    let mut tls = tls_connect(port, sni, ca_pem, Duration::from_secs(3));
    tls.write_all(bytes).unwrap();
    tls.flush().unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A TLS client connection to 127.0.0.1:`port` with SNI `sni`, trusting `ca_pem`.
fn tls_connect(
    port: u16,
    sni: &str,
    ca_pem: &str,
    read_timeout: Duration,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let mut rd = std::io::BufReader::new(ca_pem.as_bytes());
    for c in rustls_pemfile_certs(&mut rd) {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(read_timeout)).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn rustls_pemfile_certs(rd: &mut dyn std::io::BufRead) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    let mut text = Vec::new();
    rd.read_to_end(&mut text).unwrap();
    rustls::pki_types::CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// One TLS connection for several HTTP/1.1 exchanges in turn (keep-alive), each answer read
/// by its framing (`Content-Length` or chunked).
pub struct TlsConn {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsConn {
    pub fn connect(port: u16, sni: &str, ca_pem: &str) -> TlsConn {
        TlsConn {
            tls: tls_connect(port, sni, ca_pem, Duration::from_secs(5)),
            buf: Vec::new(),
        }
    }

    /// Write `bytes` (one write, flushed).
    pub fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).unwrap();
        self.tls.flush().unwrap();
    }

    /// The head of the next response, for a request that gets no body (`HEAD`).
    pub fn head_only(&mut self) -> String {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill();
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        head
    }

    /// The next response: head (text) and body. Panics if the connection ends first.
    pub fn response(&mut self) -> (String, Vec<u8>) {
        let head = self.head_only();
        let body = if let Some(v) = header_values(&head, "content-length").first() {
            let n: usize = v.parse().unwrap();
            while self.buf.len() < n {
                self.fill();
            }
            self.buf.drain(..n).collect()
        } else if header_values(&head, "transfer-encoding")
            .iter()
            .any(|v| v.contains("chunked"))
        {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    self.fill();
                };
                let size =
                    usize::from_str_radix(std::str::from_utf8(&self.buf[..line_end]).unwrap().trim(), 16).unwrap();
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    self.fill();
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break body;
                }
            }
        } else {
            Vec::new()
        };
        (head, body)
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.tls.read(&mut chunk).expect("connection read failed");
        assert!(
            n > 0,
            "connection closed; so far: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }
}
