//! A small HTTP/1.1 echo server: the demo's upstream, the test suite's upstream and the load
//! script's "direct" baseline. Plain TCP or TLS, keep-alive, Content-Length and chunked bodies.
//!
//! Routes:
//! - any path: `200` with JSON `{"method","path","headers":{..},"body_len"}` (headers as received,
//!   lower-case names; repeated headers joined with ", ")
//! - `/status/<code>`: that status, same JSON body
//! - `/bytes/<n>`: `200` with `n` bytes of `x` (n ≤ 64 MiB)
//! - `/small`: `200` with the 2-byte body `ok` (for load tests)
//! - `/delay/<ms>`: the JSON answer after `ms` milliseconds (≤ 60 s; for drain tests)

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Serve forever on `listener`; TLS when `tls` is given.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acc) => {
                    if let Ok(s) = acc.accept(stream).await {
                        handle(s).await;
                    }
                }
                None => handle(stream).await,
            }
        });
    }
}

/// Build a TLS acceptor from PEM strings.
pub fn tls_acceptor(cert_pem: &str, key_pem: &str) -> Result<TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    pingora::tls::install_default_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut cfg = pingora::tls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Start the echo server on its own thread and runtime (used where the caller's thread is
/// taken, e.g. by Pingora's `run_forever`). Returns the bound address.
pub fn spawn_thread(addr: SocketAddr, tls: Option<TlsAcceptor>) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    std::thread::Builder::new()
        .name("echo-upstream".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("echo upstream runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                match TcpListener::from_std(std_listener) {
                    Ok(l) => serve(l, tls).await,
                    Err(e) => log::error!("echo upstream listener: {e}"),
                }
            });
        })?;
    Ok(local)
}

const MAX_HEAD: usize = 64 * 1024;

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Read until a complete head is buffered.
        let (head_len, method, path, headers, body_mode) = loop {
            let mut hdrs = [httparse::EMPTY_HEADER; 96];
            let mut req = httparse::Request::new(&mut hdrs);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let method = req.method.unwrap_or("GET").to_string();
                    let path = req.path.unwrap_or("/").to_string();
                    let mut mode = Body::None;
                    let mut list: Vec<(String, String)> = Vec::with_capacity(req.headers.len());
                    for h in req.headers.iter() {
                        let name = h.name.to_ascii_lowercase();
                        let value = String::from_utf8_lossy(h.value).into_owned();
                        if name == "content-length" {
                            mode = Body::Length(value.trim().parse().unwrap_or(0));
                        } else if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
                            mode = Body::Chunked;
                        }
                        list.push((name, value));
                    }
                    break (n, method, path, list, mode);
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > MAX_HEAD {
                        return;
                    }
                    if !read_more(&mut s, &mut buf).await {
                        return;
                    }
                }
                Err(_) => {
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
            }
        };
        buf.drain(..head_len);
        let Some(body_len) = read_body(&mut s, &mut buf, body_mode).await else {
            return;
        };

        if let Some(ms) = path.strip_prefix("/delay/").and_then(|m| m.parse::<u64>().ok()) {
            tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
        }
        out.clear();
        respond(&method, &path, &headers, body_len, &mut out);
        if s.write_all(&out).await.is_err() {
            return;
        }
        let close = headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        if close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

#[derive(Clone, Copy)]
enum Body {
    None,
    Length(usize),
    Chunked,
}

async fn read_more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 16 * 1024];
    match s.read(&mut tmp).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

/// Consume the body from `buf`/`s`; returns its length.
async fn read_body<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, mode: Body) -> Option<usize> {
    match mode {
        Body::None => Some(0),
        Body::Length(n) => {
            while buf.len() < n {
                if !read_more(s, buf).await {
                    return None;
                }
            }
            buf.drain(..n);
            Some(n)
        }
        Body::Chunked => {
            let mut total = 0usize;
            loop {
                let line_end = loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if buf.len() > MAX_HEAD || !read_more(s, buf).await {
                        return None;
                    }
                };
                let size_str = String::from_utf8_lossy(&buf[..line_end]).to_string();
                let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).ok()?;
                buf.drain(..line_end + 2);
                if size == 0 {
                    // Skip trailers up to the blank line.
                    loop {
                        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                            let empty = i == 0;
                            buf.drain(..i + 2);
                            if empty {
                                return Some(total);
                            }
                        } else if !read_more(s, buf).await {
                            return None;
                        }
                    }
                }
                while buf.len() < size + 2 {
                    if !read_more(s, buf).await {
                        return None;
                    }
                }
                buf.drain(..size + 2);
                total += size;
            }
        }
    }
}

fn json_escape(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn respond(method: &str, path: &str, headers: &[(String, String)], body_len: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    if path == "/small" {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok");
        return;
    }
    if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()) {
        let n = n.min(64 << 20);
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {n}\r\n\r\n"
        );
        out.resize(out.len() + n, b'x');
        return;
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|c| c.split(['/', '?']).next())
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (200..600).contains(c))
        .unwrap_or(200);
    let mut body = Vec::with_capacity(1024);
    body.extend_from_slice(b"{\"method\":");
    json_escape(method, &mut body);
    body.extend_from_slice(b",\"path\":");
    json_escape(path, &mut body);
    body.extend_from_slice(b",\"headers\":{");
    let mut seen: Vec<(&str, String)> = Vec::new();
    for (n, v) in headers {
        if let Some((_, existing)) = seen.iter_mut().find(|(sn, _)| *sn == n.as_str()) {
            existing.push_str(", ");
            existing.push_str(v);
        } else {
            seen.push((n.as_str(), v.clone()));
        }
    }
    for (i, (n, v)) in seen.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        json_escape(n, &mut body);
        body.push(b':');
        json_escape(v, &mut body);
    }
    let _ = write!(body, "}},\"body_len\":{body_len}}}");
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Status"),
        body.len()
    );
    out.extend_from_slice(&body);
}
