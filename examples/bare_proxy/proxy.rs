//! The bare proxy itself (`main.rs` wires it up with Tessera's allocator; benches/allocations.rs
//! includes this file to run it under a counting allocator).

use std::net::SocketAddr;
use std::path::PathBuf;

use async_trait::async_trait;
use clap::Parser;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};

/// Command line of the bare proxy.
#[derive(Debug, Clone, Parser)]
#[command(about = "Bare Pingora HTTPS reverse proxy (performance baseline for Tessera)")]
pub struct Args {
    /// HTTPS listen address.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Optional plaintext HTTP listen address.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Upstream address (plain HTTP).
    #[arg(long)]
    pub upstream: SocketAddr,
    /// PEM certificate chain.
    #[arg(long)]
    pub cert: PathBuf,
    /// PEM private key.
    #[arg(long)]
    pub key: PathBuf,
    /// Pingora worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Pingora's work-stealing runtime (Tessera's default is off).
    #[arg(long)]
    pub work_stealing: bool,
    /// Serve without pingora-proxy: a minimal forwarding loop on pingora-core (`lean.rs`).
    #[arg(long)]
    pub lean: bool,
    /// Unix socket for Pingora's upgrade hand-over (unused, but Pingora wants a path).
    #[arg(long)]
    pub upgrade_sock: Option<PathBuf>,
}

/// The proxy: one prepared peer, the two header values prepared at start-up.
pub struct Bare {
    peer: HttpPeer,
    tenant: HeaderValue,
    credential: HeaderValue,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        up: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        up.remove_header(&http::header::AUTHORIZATION);
        up.insert_header(http::header::AUTHORIZATION, self.credential.clone())?;
        up.insert_header("x-tenant-id", self.tenant.clone())?;
        Ok(())
    }
}

/// Build the server and run it until SIGTERM/SIGINT (never returns; Pingora exits the process).
pub fn run(args: Args) -> Result<(), String> {
    pingora::tls::install_default_crypto_provider();
    let conf = ServerConf {
        threads: args.threads.max(1),
        work_stealing: args.work_stealing,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: args
            .upgrade_sock
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("/tmp/bare-proxy-upgrade-{}.sock", args.listen.port())),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let mut credential = HeaderValue::from_static("Bearer bare-proxy-upstream-token");
    credential.set_sensitive(true);
    let bare = Bare {
        peer: HttpPeer::new(args.upstream, false, String::new()),
        tenant: HeaderValue::from_static("bench"),
        credential,
    };
    let path = |p: &PathBuf| {
        p.to_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{} is not UTF-8", p.display()))
    };
    let mut tls = TlsSettings::intermediate(&path(&args.cert)?, &path(&args.key)?)
        .map_err(|e| format!("certificate {} / key {}: {e}", args.cert.display(), args.key.display()))?;
    tls.enable_h2();
    if args.lean {
        let lean = crate::lean::Lean {
            host: HeaderValue::from_str(&args.upstream.to_string()).map_err(|e| e.to_string())?,
            peer: bare.peer,
            tenant: bare.tenant,
            credential: bare.credential,
            connector: pingora::connectors::http::v1::Connector::new(None),
        };
        let mut service = pingora::services::listening::Service::new("lean proxy".into(), lean);
        service.add_tls_with_settings(&args.listen.to_string(), None, tls);
        if let Some(http) = args.http {
            service.add_tcp(&http.to_string());
        }
        server.add_service(service);
        server.run_forever()
    }
    let mut service = http_proxy_service(&server.configuration, bare);
    service.add_tls_with_settings(&args.listen.to_string(), None, tls);
    if let Some(http) = args.http {
        service.add_tcp(&http.to_string());
    }
    server.add_service(service);
    server.run_forever()
}
