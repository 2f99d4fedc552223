//! Command line: `serve`, `check-config`, `demo`, `keys`, `token`, `sessions`, `admin-token`.
//!
//! Client commands (`token`, `sessions`, `keys rotate`) talk to a running Tessera's admin API.
//! Secrets never come from argv: the upstream token and Part A are read from stdin or a
//! file, the admin token from `TESSERA_ADMIN_TOKEN` or `--admin-token-file`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::server::{self, ServeOptions};
use crate::token::Keyring;

#[derive(Parser, Debug)]
#[command(
    name = "tessera",
    version,
    about = "Split-token reverse proxy: integrations hold Part A, Tessera holds Part B, the upstream gets the real token.",
    long_about = "Tessera terminates TLS for each tenant's vanity hostname, reconstructs the upstream \
bearer token from the client's Part A and the stored Part B, forwards the request with tenant \
headers, and wipes the token. Start with `tessera demo`; see README.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy with a config file.
    Serve {
        /// Config file (YAML).
        #[arg(short, long, default_value = "conf/tessera.yaml")]
        config: PathBuf,
        /// Zero-downtime upgrade: take the listening sockets over from a running Tessera
        /// (send it SIGQUIT right after starting this one).
        #[arg(short, long)]
        upgrade: bool,
        /// Socket used to hand listeners over during --upgrade
        /// (default /tmp/tessera-upgrade-<https port>.sock).
        #[arg(long)]
        upgrade_sock: Option<PathBuf>,
    },
    /// Validate a config file (certificates, keys, URLs, hostnames) and exit non-zero on problems.
    CheckConfig {
        /// Config file(s) to check.
        #[arg(short, long, required = true, num_args = 1..)]
        config: Vec<PathBuf>,
    },
    /// Run a self-contained demo: two tenants, generated certificates, an echo upstream and a
    /// minted token, with curl commands that work as pasted.
    Demo(DemoArgs),
    /// Manage the keyring of key-encryption keys (KEKs).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Mint, list, revoke, rotate or unblock split tokens through the admin API.
    #[command(subcommand)]
    Token(TokenCmd),
    /// List, show or revoke OAuth grants (the records born of one OAuth authorization, see
    /// `tenants[].oauth`) through the admin API.
    #[command(subcommand)]
    Grant(GrantCmd),
    /// Add, list, show, update or remove tenants at runtime through the admin API (operator
    /// token). Changes reach every instance sharing the store within a second; tenants from
    /// the config file are the static base and cannot be changed here.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Read a tenant's session log through the admin API.
    Sessions {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id (`tenants[].id` in the config).
        #[arg(long)]
        tenant: String,
        /// Only records of this token id.
        #[arg(long = "token")]
        token_id: Option<String>,
        /// Only records at or after this time (RFC 3339 or Unix ms).
        #[arg(long)]
        since: Option<String>,
        /// Most records to show (1-10000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Keep polling and print new records as they arrive.
        #[arg(long)]
        follow: bool,
    },
    /// Run the built-in echo upstream (for load tests and trials): answers every request with
    /// the method, path and headers it received as JSON; `/small` answers `ok`.
    UpstreamEcho {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Serve TLS with this PEM certificate (needs --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Generate a random admin token; prints the token (give it to the caller) and the
    /// config line with its SHA-256 (put it in admin.tokens).
    AdminToken {
        /// Name of the caller, for logs.
        #[arg(long, default_value = "ops")]
        name: String,
        /// `operator` or `tenant:<id>`.
        #[arg(long, default_value = "operator")]
        scope: String,
    },
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Directory for the demo's certificates, keyring, config and database.
    #[arg(long, default_value = "demo-data")]
    pub dir: PathBuf,
    /// HTTPS port (0 = any free port).
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
    /// Write the files and print the commands, but do not start the proxy.
    #[arg(long)]
    pub no_serve: bool,
}

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Admin API base URL.
    #[arg(long, env = "TESSERA_ADMIN_URL", default_value = "http://127.0.0.1:9901")]
    pub admin_url: String,
    /// File holding the admin token (else TESSERA_ADMIN_TOKEN).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create a new keyring file with one key (mode 0600).
    Generate {
        /// Keyring file to create.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file (its keys are lost, and with them every record).
        #[arg(long)]
        force: bool,
    },
    /// Add a new active key at the top of a keyring file; older keys stay readable.
    Add {
        /// Keyring file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Remove a key that no record uses any more (check with `tessera keys status`).
    Retire {
        /// Keyring file.
        #[arg(long)]
        file: PathBuf,
        /// Key id to remove.
        #[arg(long)]
        kid: String,
    },
    /// Show the active kid and how many records each kid seals (admin API).
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Re-seal every record under the active kid (admin API, operator token).
    Rotate {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum GrantCmd {
    /// List a tenant's grants, newest first: grant type, client id, created, last refresh,
    /// live records, status.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id (`tenants[].id` in the config).
        #[arg(long)]
        tenant: String,
    },
    /// Show one grant with each of its access and refresh records and their state.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id (`tenants[].id` in the config).
        #[arg(long)]
        tenant: String,
        /// Grant id (32 hex characters, from `grant list` or a token's `grant_id`).
        #[arg(long)]
        id: String,
    },
    /// Revoke a grant: every access and refresh record of it is refused at every instance,
    /// and a refresh through Tessera gets `invalid_grant`.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id (`tenants[].id` in the config).
        #[arg(long)]
        tenant: String,
        /// Grant id (32 hex characters).
        #[arg(long)]
        id: String,
    },
}

/// A tenant definition from flags, for `tenant add` (every field) and `tenant update` (the
/// fields given). `--file` gives a whole definition (add) or a JSON merge patch (update) in
/// JSON or YAML; flags given beside it override its fields.
#[derive(Args, Debug)]
pub struct TenantFields {
    /// JSON or YAML file with the definition (add) or the merge patch (update), as
    /// `POST/PATCH /v1/tenants` take it.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Vanity hostname the tenant is served on (repeat for several; in `update` the list
    /// replaces the current one, `tenant hostname add|remove` changes one).
    #[arg(long = "hostname")]
    hostnames: Vec<String>,
    /// Upstream base URL, e.g. https://api.vendor.example.
    #[arg(long)]
    upstream: Option<String>,
    /// PEM file of the CA that signs the upstream's certificate (its text is sent: every
    /// instance must be able to use it).
    #[arg(long)]
    upstream_ca: Option<PathBuf>,
    /// Tenant header injected upstream (default X-Tenant-Id).
    #[arg(long)]
    tenant_header: Option<String>,
    /// Extra header set upstream, NAME=VALUE (repeat for several).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// `split` (default: Part A required) or `none`.
    #[arg(long)]
    auth: Option<String>,
    /// PEM certificate file covering every hostname (with --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key file of --cert; sent once, sealed under the keyring's KEK at rest.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// Create a tenant.
    ///
    /// Example: tessera tenant add --id globex --hostname saas.globex.example
    /// --upstream https://api.vendor.example --cert globex.pem --key globex.key
    /// --header X-Plan=gold
    Add {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id (letters, digits, `-`, `_`).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        fields: TenantFields,
    },
    /// List every tenant (config file and API) with its source and hostnames.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one tenant's definition (private keys are never shown).
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id.
        id: String,
    },
    /// Change an API tenant: the fields given replace the stored ones (JSON merge patch).
    ///
    /// Example: tessera tenant update globex --upstream https://api-eu.vendor.example
    Update {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id.
        id: String,
        #[command(flatten)]
        fields: TenantFields,
    },
    /// Remove an API tenant: its hostnames are refused at once on every instance and its
    /// tokens stop working. Its token records, grants and session log are kept (an audit
    /// trail) unless --purge is given.
    Remove {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id.
        id: String,
        /// Also delete the tenant's token records, grants and session log.
        #[arg(long)]
        purge: bool,
    },
    /// Add or remove one hostname of an API tenant.
    #[command(subcommand)]
    Hostname(HostnameCmd),
}

#[derive(Subcommand, Debug)]
pub enum HostnameCmd {
    /// Serve the tenant on one more hostname (its certificate must cover it).
    Add {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id.
        id: String,
        /// Hostname, e.g. eu.saas.globex.example.
        hostname: String,
    },
    /// Stop serving the tenant on a hostname (handshakes for it are refused at once).
    Remove {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id.
        id: String,
        /// Hostname.
        hostname: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Split an upstream token; prints the id and Part A (shown once). The upstream token is
    /// read from --token-file or stdin.
    Mint {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id (`tenants[].id` in the config).
        #[arg(long)]
        tenant: String,
        /// Free-text label shown in listings (e.g. the integration's name).
        #[arg(long, default_value = "")]
        label: String,
        /// RFC 3339 expiry, e.g. 2027-01-31T00:00:00Z.
        #[arg(long)]
        expires_at: Option<String>,
        /// Header the upstream expects the credential in (default Authorization).
        #[arg(long)]
        header: Option<String>,
        /// Scheme before the token (default Bearer for Authorization, none otherwise).
        #[arg(long)]
        scheme: Option<String>,
        /// Read the upstream token from this file instead of stdin.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// List a tenant's tokens (metadata only).
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id (`tenants[].id` in the config).
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a token: its Part B is deleted and every instance refuses it.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id (`tenants[].id` in the config).
        #[arg(long)]
        tenant: String,
        /// Token id (32 hex characters, from `mint` or `list`).
        #[arg(long)]
        id: String,
    },
    /// Issue a new Part A for the same upstream token; the old one stops working. Reads the
    /// current Part A from --part-a-file or stdin.
    Rotate {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id (`tenants[].id` in the config).
        #[arg(long)]
        tenant: String,
        /// Token id (32 hex characters, from `mint` or `list`).
        #[arg(long)]
        id: String,
        /// Read the current Part A from this file instead of stdin.
        #[arg(long)]
        part_a_file: Option<PathBuf>,
    },
    /// Lift an anomaly quarantine.
    Unblock {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant id (`tenants[].id` in the config).
        #[arg(long)]
        tenant: String,
        /// Token id (32 hex characters, from `mint` or `list`).
        #[arg(long)]
        id: String,
    },
}

/// What went wrong in a command; printed as `error: …` with exit code 1 (2 for usage).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Serve(#[from] server::ServeError),
    #[error("{0}")]
    Keyring(#[from] crate::token::KeyringError),
    #[error("{0}")]
    Demo(#[from] crate::demo::DemoError),
    #[error("{0}")]
    Io(String),
    #[error("admin API: {0}")]
    Api(String),
    #[error("{0}")]
    Usage(String),
}

fn read_secret(file: Option<&Path>, what: &str) -> Result<Zeroizing<String>, CliError> {
    let mut s = Zeroizing::new(String::new());
    match file {
        Some(p) => {
            let data =
                std::fs::read_to_string(p).map_err(|e| CliError::Io(format!("cannot read {}: {e}", p.display())))?;
            s.push_str(&data);
            let mut data = data;
            zeroize::Zeroize::zeroize(&mut data);
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("Paste the {what}, then press Enter and Ctrl-D:");
            }
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CliError::Io(format!("reading {what} from stdin: {e}")))?;
        }
    }
    let trimmed = Zeroizing::new(s.trim().to_string());
    if trimmed.is_empty() {
        return Err(CliError::Usage(format!(
            "the {what} is empty; pipe it on stdin or use the --*-file option"
        )));
    }
    Ok(trimmed)
}

struct Api {
    base: String,
    token: Zeroizing<String>,
    client: reqwest::Client,
}

impl Api {
    fn new(a: &AdminArgs) -> Result<Api, CliError> {
        let token = match &a.admin_token_file {
            Some(p) => read_secret(Some(p), "admin token")?,
            None => Zeroizing::new(
                std::env::var("TESSERA_ADMIN_TOKEN")
                    .map_err(|_| CliError::Usage("set TESSERA_ADMIN_TOKEN or pass --admin-token-file".into()))?
                    .trim()
                    .to_string(),
            ),
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::Api(e.to_string()))?;
        Ok(Api {
            base: a.admin_url.trim_end_matches('/').to_string(),
            token,
            client,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.as_str());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            CliError::Api(format!(
                "{}: {e} (is Tessera running, and is --admin-url right?)",
                self.base
            ))
        })?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let mut msg = format!("{status}: {}", v.get("message").and_then(Value::as_str).unwrap_or(""));
            // 409/422 of the tenants API: one line per problem, as `check-config` prints them.
            for p in v.get("problems").and_then(Value::as_array).into_iter().flatten() {
                let key = p.get("key").and_then(Value::as_str).unwrap_or("?");
                let text = p.get("message").and_then(Value::as_str).unwrap_or("");
                msg.push_str(&format!("\n  {key}: {text}"));
            }
            return Err(CliError::Api(msg));
        }
        Ok(v)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Io(e.to_string()))
}

/// One admin API call, its JSON answer printed.
async fn call_print(admin: &AdminArgs, method: reqwest::Method, path: &str) -> Result<(), CliError> {
    print_json(&Api::new(admin)?.call(method, path, None).await?);
    Ok(())
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Run a parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve {
            config,
            upgrade,
            upgrade_sock,
        } => {
            let cfg = Config::load(&config)?;
            server::run(cfg, ServeOptions { upgrade, upgrade_sock })?;
            Ok(())
        }
        Command::CheckConfig { config } => {
            let mut failed = false;
            for path in &config {
                match Config::load(path) {
                    Ok(cfg) => {
                        // The keyring is part of a working config too.
                        match server::load_keyring(&cfg.keys) {
                            Ok(k) => println!(
                                "{}: OK ({} tenant(s), active kid {})",
                                path.display(),
                                cfg.tenants.len(),
                                k.active().kid
                            ),
                            Err(e) => {
                                failed = true;
                                eprintln!("{}: keys: {e}", path.display());
                            }
                        }
                    }
                    Err(e) => {
                        failed = true;
                        eprintln!("{e}");
                    }
                }
            }
            if failed {
                Err(CliError::Usage("configuration has problems (see above)".into()))
            } else {
                Ok(())
            }
        }
        Command::Demo(args) => Ok(crate::demo::run(&args.dir, args.port, !args.no_serve)?),
        Command::Keys(cmd) => keys(cmd),
        Command::Token(cmd) => runtime()?.block_on(token(cmd)),
        Command::Grant(cmd) => runtime()?.block_on(grant(cmd)),
        Command::Tenant(cmd) => runtime()?.block_on(tenant(cmd)),
        Command::Sessions {
            admin,
            tenant,
            token_id,
            since,
            limit,
            follow,
        } => runtime()?.block_on(sessions(admin, tenant, token_id, since, limit, follow)),
        Command::UpstreamEcho {
            listen,
            tls_cert,
            tls_key,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(c), Some(k)) => {
                    let read = |p: &Path| {
                        std::fs::read_to_string(p).map_err(|e| CliError::Io(format!("{}: {e}", p.display())))
                    };
                    Some(crate::demo::echo::tls_acceptor(&read(&c)?, &read(&k)?).map_err(CliError::Io)?)
                }
                _ => None,
            };
            let rt = runtime()?;
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|e| CliError::Io(format!("{listen}: {e}")))?;
                eprintln!(
                    "echo upstream listening on {}",
                    l.local_addr().map_err(|e| CliError::Io(e.to_string()))?
                );
                crate::demo::echo::serve(l, tls).await;
                Ok(())
            })
        }
        Command::AdminToken { name, scope } => {
            let (token, sha) = crate::admin::new_admin_token();
            println!("admin token (give to the caller, shown once): {}", token.as_str());
            println!("config line for admin.tokens:");
            println!("    - {{ name: {name}, sha256: {sha}, scope: \"{scope}\" }}");
            Ok(())
        }
    }
}

fn keys(cmd: KeysCmd) -> Result<(), CliError> {
    match cmd {
        KeysCmd::Generate { out, force } => {
            if out.exists() && !force {
                return Err(CliError::Usage(format!(
                    "{} exists; refusing to overwrite a keyring (records sealed with it would be lost). Use `tessera keys add --file {}` to rotate, or --force",
                    out.display(),
                    out.display()
                )));
            }
            let line = Keyring::generate_line();
            let text = Zeroizing::new(format!(
                "# Tessera keyring: first key is active. Keep this file secret (mode 0600).\n{}\n",
                line.as_str()
            ));
            crate::demo::certs::write_file(&out, text.as_bytes(), true).map_err(|e| CliError::Io(e.to_string()))?;
            let kid = line.split_whitespace().next().unwrap_or("");
            println!("wrote {} with active kid {kid}", out.display());
            Ok(())
        }
        KeysCmd::Add { file } => {
            let old = Zeroizing::new(
                std::fs::read_to_string(&file).map_err(|e| CliError::Io(format!("{}: {e}", file.display())))?,
            );
            Keyring::parse(&old)?;
            let line = Keyring::generate_line();
            let body: String = old
                .lines()
                .filter(|l| !l.starts_with("# Tessera keyring"))
                .map(|l| format!("{l}\n"))
                .collect();
            let text = Zeroizing::new(format!(
                "# Tessera keyring: first key is active. Keep this file secret (mode 0600).\n{}\n{body}",
                line.as_str()
            ));
            Keyring::parse(&text)?;
            crate::demo::certs::write_file(&file, text.as_bytes(), true).map_err(|e| CliError::Io(e.to_string()))?;
            let kid = line.split_whitespace().next().unwrap_or("");
            println!("added active kid {kid} to {}; once every instance has reloaded it (tls.reload_interval), run `tessera keys rotate`", file.display());
            Ok(())
        }
        KeysCmd::Retire { file, kid } => {
            let old = Zeroizing::new(
                std::fs::read_to_string(&file).map_err(|e| CliError::Io(format!("{}: {e}", file.display())))?,
            );
            let ring = Keyring::parse(&old)?;
            if ring.active().kid == kid {
                return Err(CliError::Usage(format!("{kid} is the active key; add a new one first")));
            }
            if ring.get(kid.as_bytes()).is_none() {
                return Err(CliError::Usage(format!("no kid {kid} in {}", file.display())));
            }
            let text: Zeroizing<String> = Zeroizing::new(
                old.lines()
                    .filter(|l| l.split_whitespace().next() != Some(kid.as_str()))
                    .map(|l| format!("{l}\n"))
                    .collect(),
            );
            Keyring::parse(&text)?;
            crate::demo::certs::write_file(&file, text.as_bytes(), true).map_err(|e| CliError::Io(e.to_string()))?;
            println!("retired {kid} from {}", file.display());
            Ok(())
        }
        KeysCmd::Status { admin } => runtime()?.block_on(call_print(&admin, reqwest::Method::GET, "/v1/keys")),
        KeysCmd::Rotate { admin } => runtime()?.block_on(call_print(&admin, reqwest::Method::POST, "/v1/keys/rotate")),
    }
}

async fn grant(cmd: GrantCmd) -> Result<(), CliError> {
    let (admin, method, path) = match cmd {
        GrantCmd::List { admin, tenant } => (admin, reqwest::Method::GET, format!("/v1/tenants/{tenant}/grants")),
        GrantCmd::Show { admin, tenant, id } => {
            (admin, reqwest::Method::GET, format!("/v1/tenants/{tenant}/grants/{id}"))
        }
        GrantCmd::Revoke { admin, tenant, id } => (
            admin,
            reqwest::Method::DELETE,
            format!("/v1/tenants/{tenant}/grants/{id}"),
        ),
    };
    call_print(&admin, method, &path).await
}

/// Read a JSON or YAML file into a JSON value (`.json` as JSON; anything else tried as YAML,
/// which also reads JSON).
fn read_def_file(path: &Path) -> Result<Value, CliError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| CliError::Io(format!("cannot read {}: {e}", path.display())))?,
    );
    let v: Result<Value, String> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(&text).map_err(|e| e.to_string())
    };
    match v {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(CliError::Usage(format!(
            "{}: give a tenant definition as a JSON/YAML object",
            path.display()
        ))),
        Err(e) => Err(CliError::Usage(format!("{}: {e}", path.display()))),
    }
}

fn read_text(path: &Path, what: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::Io(format!("cannot read {what} {}: {e}", path.display())))
}

impl TenantFields {
    /// The definition or patch: `--file` first, then each flag given over it.
    fn to_json(&self) -> Result<Value, CliError> {
        let mut v = match &self.file {
            Some(p) => read_def_file(p)?,
            None => json!({}),
        };
        if !self.hostnames.is_empty() {
            v["hostnames"] = json!(self.hostnames);
        }
        if let Some(u) = &self.upstream {
            v["upstream"] = json!(u);
        }
        if let Some(p) = &self.upstream_ca {
            v["upstream_ca"] = json!(read_text(p, "--upstream-ca")?);
        }
        if let Some(h) = &self.tenant_header {
            v["tenant_header"] = json!(h);
        }
        for h in &self.headers {
            let Some((name, value)) = h.split_once('=').filter(|(n, _)| !n.trim().is_empty()) else {
                return Err(CliError::Usage(format!(
                    "--header {h:?}: give NAME=VALUE, e.g. --header X-Plan=gold"
                )));
            };
            v["headers"][name.trim()] = json!(value);
        }
        if let Some(a) = &self.auth {
            v["auth"] = json!(a);
        }
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            let key = read_secret(Some(k), "private key")?;
            v["tls"] = json!({"cert_pem": read_text(c, "--cert")?, "key_pem": key.as_str()});
        }
        Ok(v)
    }
}

async fn tenant(cmd: TenantCmd) -> Result<(), CliError> {
    use reqwest::Method;
    let (admin, method, path, body) = match cmd {
        TenantCmd::Add { admin, id, fields } => {
            let mut v = fields.to_json()?;
            if let Some(id) = id {
                v["id"] = json!(id);
            }
            if v.get("id").is_none() {
                return Err(CliError::Usage("give the tenant's --id (or `id` in --file)".into()));
            }
            (admin, Method::POST, "/v1/tenants".to_string(), Some(v))
        }
        TenantCmd::List { admin } => (admin, Method::GET, "/v1/tenants".to_string(), None),
        TenantCmd::Show { admin, id } => (admin, Method::GET, format!("/v1/tenants/{id}"), None),
        TenantCmd::Update { admin, id, fields } => {
            let v = fields.to_json()?;
            if v.as_object().is_some_and(serde_json::Map::is_empty) {
                return Err(CliError::Usage(
                    "nothing to change: give --file or a field flag (see `tessera tenant update --help`)".into(),
                ));
            }
            (admin, Method::PATCH, format!("/v1/tenants/{id}"), Some(v))
        }
        TenantCmd::Remove { admin, id, purge } => {
            let q = if purge { "?purge=true" } else { "" };
            (admin, Method::DELETE, format!("/v1/tenants/{id}{q}"), None)
        }
        TenantCmd::Hostname(HostnameCmd::Add { admin, id, hostname }) => (
            admin,
            Method::POST,
            format!("/v1/tenants/{id}/hostnames"),
            Some(json!({ "hostname": hostname })),
        ),
        TenantCmd::Hostname(HostnameCmd::Remove { admin, id, hostname }) => (
            admin,
            Method::DELETE,
            format!("/v1/tenants/{id}/hostnames/{hostname}"),
            None,
        ),
    };
    print_json(&Api::new(&admin)?.call(method, &path, body).await?);
    Ok(())
}

async fn token(cmd: TokenCmd) -> Result<(), CliError> {
    match cmd {
        TokenCmd::Mint {
            admin,
            tenant,
            label,
            expires_at,
            header,
            scheme,
            token_file,
        } => {
            let api = Api::new(&admin)?;
            let upstream = read_secret(token_file.as_deref(), "upstream token")?;
            let mut body = json!({"token": upstream.as_str(), "label": label});
            if let Some(e) = expires_at {
                body["expires_at"] = json!(e);
            }
            if let Some(h) = header {
                body["header"] = json!(h);
            }
            if let Some(s) = scheme {
                body["scheme"] = json!(s);
            }
            let v = api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/tenants/{tenant}/tokens"),
                    Some(body),
                )
                .await?;
            print_json(&v);
            eprintln!("Part A is shown only now: hand it to the integration over a secure channel.");
            Ok(())
        }
        TokenCmd::List { admin, tenant } => {
            call_print(&admin, reqwest::Method::GET, &format!("/v1/tenants/{tenant}/tokens")).await
        }
        TokenCmd::Revoke { admin, tenant, id } => {
            call_print(
                &admin,
                reqwest::Method::DELETE,
                &format!("/v1/tenants/{tenant}/tokens/{id}"),
            )
            .await
        }
        TokenCmd::Rotate {
            admin,
            tenant,
            id,
            part_a_file,
        } => {
            let api = Api::new(&admin)?;
            let part_a = read_secret(part_a_file.as_deref(), "current Part A")?;
            let v = api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/tenants/{tenant}/tokens/{id}/rotate"),
                    Some(json!({"part_a": part_a.as_str()})),
                )
                .await?;
            print_json(&v);
            Ok(())
        }
        TokenCmd::Unblock { admin, tenant, id } => {
            call_print(
                &admin,
                reqwest::Method::POST,
                &format!("/v1/tenants/{tenant}/tokens/{id}/unblock"),
            )
            .await
        }
    }
}

async fn sessions(
    admin: AdminArgs,
    tenant: String,
    token_id: Option<String>,
    since: Option<String>,
    limit: usize,
    follow: bool,
) -> Result<(), CliError> {
    let api = Api::new(&admin)?;
    let mut since = since;
    let mut seen_ts = 0u64;
    loop {
        let mut q = format!("limit={limit}");
        if let Some(t) = &token_id {
            q.push_str(&format!("&token_id={t}"));
        }
        if let Some(s) = &since {
            q.push_str(&format!("&since={}", s.replace(':', "%3A").replace('+', "%2B")));
        }
        let v = api
            .call(
                reqwest::Method::GET,
                &format!("/v1/tenants/{tenant}/sessions?{q}"),
                None,
            )
            .await?;
        let mut records: Vec<Value> = v.get("records").and_then(Value::as_array).cloned().unwrap_or_default();
        records.reverse(); // oldest first, like a log
        for r in &records {
            let ts = r.get("ts").and_then(Value::as_u64).unwrap_or(0);
            if follow && ts <= seen_ts {
                continue;
            }
            seen_ts = seen_ts.max(ts);
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        if !follow {
            return Ok(());
        }
        since = Some((seen_ts + 1).to_string());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
