//! A real OpenID Provider for the OAuth token-swap tests: `oidc-provider` (npm, certified) run by
//! node from `tests/oauth/provider.js`, with a resource-server API that checks every bearer token
//! by RFC 7662 introspection. Plus the client side an integration would run: the authorization
//! code + PKCE flow through the provider's HTML login and consent pages, token requests,
//! introspection and the provider's request counters.
//!
//! Nothing here prints a token, code, verifier or client secret (`AuthCode`'s Debug is redacted).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::blocking::Client;
use reqwest::Url;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The redirect URI registered for the interactive clients (never fetched: the flow stops at it).
pub const CALLBACK: &str = "https://integration.example/callback";
/// The scope the interactive clients may ask for.
pub const SCOPE: &str = "openid offline_access api";
/// The login the helper types into the provider's sign-in form (any login is an account).
pub const USER: &str = "alice";

/// A client registered at the test provider. The secrets are test fixtures, the same as in
/// `tests/oauth/provider.js`.
#[derive(Clone, Copy)]
pub struct OAuthClient {
    pub id: &'static str,
    pub secret: &'static str,
}

/// Confidential (Basic), authorization code + PKCE, refresh tokens rotated on every use.
pub const INTEGRATION: OAuthClient = OAuthClient::new("integration", "integration-test-secret-4f1c9a2e7b");
/// Same as [`INTEGRATION`] but refresh tokens are not rotated.
pub const INTEGRATION_STATIC: OAuthClient =
    OAuthClient::new("integration-static", "integration-static-test-secret-8d3e6b0a5c");
/// Client credentials only, `client_secret_post` (the secret travels in the form body).
pub const SERVICE: OAuthClient = OAuthClient::new("service", "service-test-secret-2a7f4c9e1d");
/// The resource server's introspection client.
pub const API: OAuthClient = OAuthClient::new("api", "api-test-secret-6b0d3f8a2e");

impl OAuthClient {
    const fn new(id: &'static str, secret: &'static str) -> OAuthClient {
        OAuthClient { id, secret }
    }

    /// `(id, secret)` for [`token_request`]'s HTTP Basic authentication.
    pub fn basic(&self) -> Option<(&'static str, &'static str)> {
        Some((self.id, self.secret))
    }
}

/// `npm ci` runs once per test binary at most.
static NPM_CI: Mutex<()> = Mutex::new(());

fn oauth_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth")
}

/// Node.js >= 20 on PATH and `tests/oauth/node_modules` installed (`npm ci` if missing).
fn ensure_installed() {
    let out = Command::new("node").arg("--version").output().unwrap_or_else(|e| {
        panic!(
            "the OAuth tests need Node.js >= 20 (`node` on PATH): {e}; \
             install it (`apt-get install nodejs npm`) or run scripts/test, which does"
        )
    });
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "the OAuth tests need Node.js >= 20 for oidc-provider 9, found {version:?}; \
         install a newer nodejs"
    );
    let _once = NPM_CI.lock().unwrap_or_else(|e| e.into_inner());
    let dir = oauth_dir();
    if dir.join("node_modules/oidc-provider/package.json").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--prefix"])
        .arg(&dir)
        .args(["--no-audit", "--no-fund", "--loglevel=error"])
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("`npm ci --prefix tests/oauth` could not start (is npm installed? `apt-get install npm`): {e}")
        });
    assert!(status.success(), "`npm ci --prefix tests/oauth` failed: {status}");
}

/// The provider (`issuer`) and its resource-server API (`api`), both on 127.0.0.1, as a child
/// process killed on drop. Its stderr (warnings, error names; never tokens) goes to `log`.
pub struct OidcProvider {
    /// `http://127.0.0.1:P`, also the `iss` of its ID tokens.
    pub issuer: String,
    /// `http://127.0.0.1:Q`: answers `200 {"active":true,"client_id","sub","scope","headers"}`
    /// for a live bearer token, `401 {"active":false}` otherwise; `GET /__hits` → [`Hits`].
    pub api: String,
    pub child: Child,
    /// Closing it (drop) also stops the provider.
    stdin: Option<ChildStdin>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// A provider that honours `X-Forwarded-Host`/`-Proto` (as sent by Tessera): the URLs it
    /// builds (redirects, form actions, discovery endpoints) are on the host the client used.
    pub fn start() -> OidcProvider {
        Self::spawn(false)
    }

    /// A provider that ignores forwarded headers: every URL it builds is on the issuer's origin,
    /// like an authorization server that knows nothing of the vanity hostname (the discovery
    /// rewrite has something to rewrite). The browser flow through Tessera does not work with it.
    pub fn start_fixed_origin() -> OidcProvider {
        Self::spawn(true)
    }

    fn spawn(fixed_origin: bool) -> OidcProvider {
        ensure_installed();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("provider.log");
        let mut cmd = Command::new("node");
        cmd.arg(oauth_dir().join("provider.js"))
            .env_remove("DEBUG") // oidc-provider's debug output would show token values
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        if fixed_origin {
            cmd.arg("--fixed-origin");
        }
        let mut child = cmd.spawn().expect("spawn node tests/oauth/provider.js");
        let stdout = child.stdout.take().unwrap();
        // The ready line, read on a thread so a hung start fails the test instead of blocking it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep the pipe open for the child's life.
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let ready: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let (Some(issuer), Some(api)) = (ready["issuer"].as_str(), ready["api"].as_str()) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tests/oauth/provider.js did not print its ready line (got {line:?}); its stderr:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        OidcProvider {
            issuer: issuer.to_string(),
            api: api.to_string(),
            stdin: child.stdin.take(),
            child,
            log,
            _dir: dir,
        }
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn revocation_url(&self) -> String {
        format!("{}/token/revocation", self.issuer)
    }

    pub fn introspection_url(&self) -> String {
        format!("{}/token/introspection", self.issuer)
    }

    /// Closes the provider's stdin: it exits, as when the test process dies.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// What the provider wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- oidc provider stderr ---\n{}", self.log_text());
        }
    }
}

/// A tenant whose API (`api_host`) is `p`'s resource server and whose OAuth hostname
/// (`oauth_host`) fronts `p` itself, as Tessera's OAuth tests and benches configure it (token
/// and revocation paths of oidc-provider, discovery on); the certificate covers both hostnames.
/// `extra`: more lines for the `oauth:` section (6 spaces indent).
pub fn oauth_tenant(id: &str, api_host: &str, oauth_host: &str, p: &OidcProvider, extra: &str) -> super::TenantSpec {
    let mut t = super::TenantSpec::new(id, &[api_host], "127.0.0.1:9".parse().unwrap());
    t.upstream = p.api.clone();
    t.cert_names = Some(vec![api_host.to_string(), oauth_host.to_string()]);
    t.extra(&format!(
        "    oauth:\n      hostnames: [\"{oauth_host}\"]\n      upstream: \"{}\"\n      token_path: /token\n      revocation_path: /token/revocation\n      discovery: true\n{extra}",
        p.issuer
    ))
}

/// A client for [`authorize`]: keeps cookies, follows no redirect (the helper does, so it can
/// stop at the redirect URI). Add `.resolve(…)` and the test CA for Tessera's vanity hostname.
pub fn browser_builder() -> reqwest::blocking::ClientBuilder {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
}

/// An authorization code and the PKCE verifier that redeems it.
pub struct AuthCode {
    pub code: String,
    pub verifier: String,
}

impl std::fmt::Debug for AuthCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthCode { code: [redacted], verifier: [redacted] }")
    }
}

impl AuthCode {
    /// The `authorization_code` grant's form for [`token_request`].
    pub fn grant_form(&self) -> [(&str, &str); 4] {
        [
            ("grant_type", "authorization_code"),
            ("code", &self.code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", &self.verifier),
        ]
    }
}

fn random_b64url(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).unwrap();
    URL_SAFE_NO_PAD.encode(buf)
}

/// Drives the authorization code + PKCE (S256) flow as an integration's user would: `GET
/// {base}/auth?…` with `prompt=consent` (needed for a refresh token), then follows redirects and
/// submits the provider's HTML login form (as [`USER`]) and consent form, until the redirect to
/// `redirect_uri`, whose `code` it returns. `base` is the provider or Tessera's vanity OAuth
/// origin; relative and absolute `Location`s and form actions both work. `client` must keep
/// cookies and not follow redirects ([`browser_builder`]).
pub fn authorize(client: &Client, base: &str, client_id: &str, redirect_uri: &str, scope: &str) -> AuthCode {
    let verifier = random_b64url(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_b64url(16);
    let start = format!("{}/auth", base.trim_end_matches('/'));
    let mut url = Url::parse_with_params(
        &start,
        [
            ("client_id", client_id),
            ("response_type", "code"),
            ("redirect_uri", redirect_uri),
            ("scope", scope),
            ("prompt", "consent"),
            ("state", &state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap_or_else(|e| panic!("bad authorization base {base:?}: {e}"));
    let mut form: Option<Vec<(String, String)>> = None;
    for _ in 0..16 {
        let req = match form.take() {
            Some(fields) => client.post(url.clone()).form(&fields),
            None => client.get(url.clone()),
        };
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("OAuth flow: {} {}: {e}", url.origin().ascii_serialization(), url.path()));
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or_else(|| panic!("OAuth flow: {status} without Location at {}", url.path()));
            let next = url
                .join(location)
                .unwrap_or_else(|e| panic!("OAuth flow: bad Location at {}: {e}", url.path()));
            if next.as_str().starts_with(redirect_uri) {
                return code_from_callback(&next, &state, verifier);
            }
            url = next;
            continue;
        }
        let page = resp.text().unwrap_or_default();
        assert!(
            status.is_success(),
            "OAuth flow: {status} at {} (expected a redirect or a login/consent page): {page}",
            url.path()
        );
        let (action, fields) =
            parse_form(&page).unwrap_or_else(|| panic!("OAuth flow: no form on the page at {}: {page}", url.path()));
        url = url
            .join(&action)
            .unwrap_or_else(|e| panic!("OAuth flow: bad form action {action:?}: {e}"));
        form = Some(fields);
    }
    panic!(
        "OAuth flow: no redirect to {redirect_uri} after 16 steps (last: {})",
        url.path()
    );
}

/// The `code` of the redirect to the client, after checking `state` and that it is no error.
fn code_from_callback(callback: &Url, state: &str, verifier: String) -> AuthCode {
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = param("error") {
        panic!(
            "OAuth flow: the provider redirected with error={error} ({})",
            param("error_description").unwrap_or_default()
        );
    }
    assert_eq!(
        param("state").as_deref(),
        Some(state),
        "OAuth flow: state changed on the way back"
    );
    let code = param("code").expect("OAuth flow: redirect to the client without a code");
    AuthCode { code, verifier }
}

/// The first `<form>` of `page`: its action and its fields (`login`/`password` inputs filled in
/// as [`USER`]). A minimal scanner for the provider's own pages, not a general HTML parser.
fn parse_form(page: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = page.find("<form")?;
    let end = page[start..].find("</form>").map_or(page.len(), |e| start + e);
    let form = &page[start..end];
    let action = attr(&form[..form.find('>')?], "action").unwrap_or_default();
    let mut fields = vec![];
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let tag_end = rest[i..].find('>').map_or(rest.len(), |e| i + e);
        let tag = &rest[i..tag_end];
        rest = &rest[tag_end..];
        let Some(name) = attr(tag, "name") else { continue };
        let value = match (attr(tag, "value"), name.as_str()) {
            (Some(v), _) => v,
            (None, "login") => USER.to_string(),
            (None, "password") => "correct horse battery staple".to_string(),
            (None, _) => String::new(),
        };
        fields.push((name, value));
    }
    Some((action, fields))
}

/// The value of `name="…"` in an HTML tag, entities decoded.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(
        tag[start..start + len]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// POSTs `form` (urlencoded) to `url`, with HTTP Basic client authentication if given; returns
/// the status and the JSON body (`Null` when empty, a string when not JSON).
pub fn token_request(client: &Client, url: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
    let mut req = client.post(url).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    (status, json_body(resp.text().unwrap_or_default()))
}

fn json_body(text: String) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// RFC 7662 introspection of `token` at the provider, as the resource server `api`.
pub fn introspect(provider: &OidcProvider, token: &str) -> Value {
    let (status, body) = token_request(
        &Client::new(),
        &provider.introspection_url(),
        &[("token", token)],
        API.basic(),
    );
    assert_eq!(status, 200, "introspection: {body}");
    body
}

/// Whether the provider says `token` is live (introspection's `active`).
pub fn is_active(provider: &OidcProvider, token: &str) -> bool {
    introspect(provider, token)["active"] == Value::Bool(true)
}

/// Asserts a token-endpoint answer is the OAuth error `error` with `status`.
#[track_caller]
pub fn assert_oauth_error(answer: &(u16, Value), status: u16, error: &str) {
    assert_eq!(
        (answer.0, answer.1["error"].as_str()),
        (status, Some(error)),
        "{}",
        answer.1
    );
}

/// `GET url` with `Authorization: Bearer <token>` (no header when `None`): status and JSON body.
pub fn bearer_get(client: &Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, json_body(resp.text().unwrap_or_default()))
}

/// Requests the provider received, per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub struct Hits {
    pub token: u64,
    pub revocation: u64,
    pub introspection: u64,
    pub total: u64,
}

/// The provider's request counters (`GET <api>/__hits`).
pub fn hits(provider: &OidcProvider) -> Hits {
    let url = format!("{}/__hits", provider.api);
    let resp = Client::new()
        .get(&url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.json().unwrap_or_else(|e| panic!("GET {url}: {e}"))
}
