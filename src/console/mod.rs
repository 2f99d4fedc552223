//! Security console: server-rendered HTML on `listen.admin` under `/console/`. Not on the
//! proxy's request path; `AdminApp` hands every `/console/…` request here.
//!
//! ```text
//! GET  /console/                                   overview (operator: every tenant; tenant scope: its own)
//! GET  /console/login, POST /console/login         admin token → session cookie
//! POST /console/logout                             session deleted
//! GET  /console/assets/{console.css,console.js}    embedded assets
//! GET  /console/audit                              audit log
//! GET  /console/t/{t}                              tokens of a tenant (filter q, status; sort)
//! GET  /console/t/{t}/tokens/{id}                  one token: timeline (status, path, ip, from, to), anomalies
//! GET  /console/t/{t}/tokens/{id}/{revoke|unblock|rotate}   confirmation page
//! POST /console/t/{t}/tokens/{id}/{revoke|unblock|rotate}   the action (same AdminState code as the API)
//! GET  /console/t/{t}/grants                      OAuth grants of a tenant
//! GET  /console/t/{t}/grants/{g}                  one grant and its access/refresh records
//! GET|POST /console/t/{t}/grants/{g}/revoke       confirm / revoke the grant (every record of it)
//! GET  /console/t/{t}/revoke-all, POST …           incident: revoke every token and grant (tenant id typed again)
//! GET  /console/t/{t}/tail                         live tail page; /tail/events is its SSE stream
//! ```
//!
//! Every request: security headers (strict CSP without inline script or style,
//! `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`, `Cache-Control: no-store`); a live
//! session (`session`) except for login and assets; on POST, a same-origin `Origin` (when sent)
//! and the session's CSRF token; on tenant pages, the caller's scope (`AdminState::check_scope`,
//! the API's own check) on every request. Actions call the API's `AdminState` methods in
//! process and are audited with `source: console`.

pub mod audit;
mod form;
pub mod history;
pub mod session;
mod tail;
mod views;

use std::sync::Arc;

use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::admin::{AdminState, Reply};
use crate::config::{AdminConf, AdminToken, Scope};
use crate::tenants::Tenants;
use crate::token::TokenId;
use audit::Source;
use form::Form;
use history::History;
use session::{Current, Sessions};

/// `Content-Security-Policy` of every console response: only this origin's files, no inline
/// script or style, no framing, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// Console state kept by `AdminState`.
pub struct Console {
    pub sessions: Sessions,
    pub history: Arc<History>,
    /// Live-tail streams open at once (each polls the session log once a second).
    streams: Arc<tokio::sync::Semaphore>,
}

/// Most live-tail streams at once, over all sessions.
const MAX_STREAMS: usize = 32;

impl Console {
    pub fn new(conf: &AdminConf, tenants: Arc<Tenants>) -> Console {
        Console {
            sessions: Sessions::new(conf.console_idle, conf.console_absolute),
            history: Arc::new(History::new(tenants)),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        }
    }
}

/// Whether a path belongs to the console.
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// One console answer.
pub(crate) struct Page {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    location: Option<String>,
    cookies: Vec<String>,
}

impl Page {
    fn html(status: StatusCode, body: String) -> Page {
        Page {
            status,
            content_type: "text/html; charset=utf-8",
            body: body.into_bytes(),
            location: None,
            cookies: Vec::new(),
        }
    }

    fn redirect(to: impl Into<String>) -> Page {
        Page {
            status: StatusCode::SEE_OTHER,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
            location: Some(to.into()),
            cookies: Vec::new(),
        }
    }

    fn asset(content_type: &'static str, body: &'static str) -> Page {
        Page {
            status: StatusCode::OK,
            content_type,
            body: body.as_bytes().to_vec(),
            location: None,
            cookies: Vec::new(),
        }
    }

    fn cookie(mut self, c: String) -> Page {
        self.cookies.push(c);
        self
    }
}

/// The response head every console answer carries.
pub(crate) fn head(status: StatusCode, content_type: &str) -> Option<ResponseHeader> {
    let mut h = ResponseHeader::build(status, Some(12)).ok()?;
    for (k, v) in [
        ("content-type", content_type),
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert_header(k, v).ok()?;
    }
    Some(h)
}

async fn write(http: &mut ServerSession, page: Page) {
    crate::admin::count_outcome(page.status);
    let Some(mut h) = head(page.status, page.content_type) else {
        return;
    };
    let _ = h.insert_header("content-length", page.body.len());
    if let Some(l) = &page.location {
        let _ = h.insert_header("location", l.as_str());
    }
    for c in &page.cookies {
        let _ = h.append_header("set-cookie", c.as_str());
    }
    if http.write_response_header(Box::new(h)).await.is_err() {
        return;
    }
    if !page.body.is_empty() {
        let _ = http.write_response_body(page.body.into(), true).await;
    }
}

/// Answer one console request (called by `AdminApp`).
pub async fn serve(state: &Arc<AdminState>, http: &mut ServerSession, shutdown: &ShutdownWatch) {
    let method = http.req_header().method.clone();
    let path = http.req_header().uri.path().to_string();
    let query = http.req_header().uri.query().unwrap_or("").to_string();
    let segs: Vec<String> = path
        .trim_start_matches("/console")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let cookies = http
        .req_header()
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");

    // Assets and login need no session.
    let page = match (method.as_str(), segs.as_slice()) {
        ("GET", ["assets", "console.css"]) => Some(Page::asset("text/css; charset=utf-8", CSS)),
        ("GET", ["assets", "console.js"]) => Some(Page::asset("text/javascript; charset=utf-8", JS)),
        ("GET", ["login"]) => Some(login_form(None, StatusCode::OK)),
        ("POST", ["login"]) => Some(login(state, http, &cookies).await),
        _ => None,
    };
    if let Some(p) = page {
        return write(http, p).await;
    }
    let cur = session::cookie(&cookies, session::COOKIE).and_then(|id| state.console.sessions.get(id));
    let Some(cur) = cur else {
        let p = if method == http::Method::GET {
            Page::redirect("/console/login")
        } else {
            views::error(None, StatusCode::FORBIDDEN, "No console session: log in again.")
        };
        return write(http, p).await;
    };
    if method == http::Method::POST {
        if !same_origin(http) {
            return write(
                http,
                views::error(Some(&cur), StatusCode::FORBIDDEN, "Cross-origin form post refused."),
            )
            .await;
        }
        let body = match crate::admin::read_body(http).await {
            Ok(b) => b,
            Err(Reply(s, _)) => return write(http, views::error(Some(&cur), s, "The form could not be read.")).await,
        };
        let f = Form::parse(&body);
        if !cur.csrf_ok(f.get("csrf")) {
            log::warn!("console: {} posted {path} without a valid CSRF token", cur.caller.name);
            return write(
                http,
                views::error(
                    Some(&cur),
                    StatusCode::FORBIDDEN,
                    "Missing or wrong CSRF token: reload the page and try again.",
                ),
            )
            .await;
        }
        let p = post(state, &cur, &segs, &f).await;
        return write(http, p).await;
    }
    if method != http::Method::GET {
        return write(
            http,
            views::error(Some(&cur), StatusCode::METHOD_NOT_ALLOWED, "Use GET or a form."),
        )
        .await;
    }
    // The live tail streams; everything else is one page.
    if let ["t", t, "tail", "events"] = segs.as_slice() {
        if let Some(p) = scope_refusal(state, &cur, t) {
            return write(http, p).await;
        }
        return tail::stream(state, http, &cur, t, shutdown).await;
    }
    let p = get(state, &cur, &segs, &query).await;
    write(http, p).await
}

/// A POST must come from a console page. Browsers say so in `Sec-Fetch-Site` (sent whatever
/// the referrer policy; with `Referrer-Policy: no-referrer` Chromium's form posts carry
/// `Origin: null`, so `Origin` alone cannot tell). Without it, an `Origin` must be this
/// listener (`Host`). Clients that send neither (curl, the tests) still need the CSRF token.
fn same_origin(http: &ServerSession) -> bool {
    let h = &http.req_header().headers;
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return site == "same-origin";
    }
    let Some(origin) = get("origin") else {
        return true;
    };
    let Some(host) = get("host") else {
        return false;
    };
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

/// `Some(page)` when the session's caller may not see tenant `t` (403), or it does not exist
/// (404 for a caller who could see it). The API's `check_scope`, on every request.
fn scope_refusal(state: &AdminState, cur: &Current, t: &str) -> Option<Page> {
    let Reply(status, body) = state.check_scope(&cur.caller, Some(t))?;
    let msg = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("refused")
        .to_string();
    Some(views::error(Some(cur), status, &msg))
}

fn login_form(problem: Option<&str>, status: StatusCode) -> Page {
    let csrf = session::random_hex();
    Page::html(status, views::login(&csrf, problem)).cookie(session::login_cookie(&csrf))
}

async fn login(state: &AdminState, http: &mut ServerSession, cookies: &str) -> Page {
    if !same_origin(http) {
        return login_form(Some("Cross-origin login refused."), StatusCode::FORBIDDEN);
    }
    let body = match crate::admin::read_body(http).await {
        Ok(b) => b,
        Err(_) => return login_form(Some("The form could not be read."), StatusCode::BAD_REQUEST),
    };
    let f = Form::parse(&body);
    let double_submit = session::cookie(cookies, session::LOGIN_COOKIE);
    if !matches!((double_submit, f.get("csrf")), (Some(c), Some(p)) if session::same(c, p)) {
        return login_form(
            Some("The login form expired or was not sent by this page; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let presented = f.text("token");
    let Some(caller) = state.caller_for(presented.as_bytes()) else {
        log::warn!("console: login refused (not a configured admin token)");
        return login_form(Some("That is not a configured admin token."), StatusCode::UNAUTHORIZED);
    };
    match state.console.sessions.create(caller) {
        Ok(id) => {
            log::info!("console: {} logged in", caller.name);
            Page::redirect("/console/")
                .cookie(session::session_cookie(Some(&id)))
                .cookie(format!("{}=; Path=/console/login; Max-Age=0", session::LOGIN_COOKIE))
        }
        Err(e) => login_form(Some(&e.to_string()), StatusCode::SERVICE_UNAVAILABLE),
    }
}

fn token_id(s: &str) -> Option<TokenId> {
    TokenId::parse(s)
}

async fn get(state: &AdminState, cur: &Current, segs: &[&str], query: &str) -> Page {
    let q = Form::parse(query.as_bytes());
    match segs {
        [] => match &cur.caller.scope {
            Scope::Operator => views::overview(state, cur).await,
            Scope::Tenant(t) => Page::redirect(format!("/console/t/{t}")),
        },
        ["audit"] => {
            let tenant = match &cur.caller.scope {
                Scope::Operator => None,
                Scope::Tenant(t) => Some(t.as_str()),
            };
            let entries = state.audit.list(tenant, 1000);
            Page::html(StatusCode::OK, views::audit(cur, &entries))
        }
        ["t", t, rest @ ..] => {
            if let Some(p) = scope_refusal(state, cur, t) {
                return p;
            }
            match rest {
                [] => views::tenant(state, cur, t, &q).await,
                ["tail"] => views::tail(state, cur, t).await,
                ["revoke-all"] => Page::html(StatusCode::OK, views::revoke_all_form(cur, t, None)),
                ["grants"] => views::grants(state, cur, t).await,
                ["grants", g, more @ ..] => {
                    let Some(g) = token_id(g) else {
                        return views::error(Some(cur), StatusCode::NOT_FOUND, "Not a grant id (32 hex characters).");
                    };
                    match more {
                        [] => views::grant(state, cur, t, &g).await,
                        ["revoke"] => Page::html(StatusCode::OK, views::confirm_grant(cur, t, &g)),
                        _ => views::error(Some(cur), StatusCode::NOT_FOUND, "No such console page."),
                    }
                }
                ["tokens", id, more @ ..] => {
                    let Some(id) = token_id(id) else {
                        return views::error(Some(cur), StatusCode::NOT_FOUND, "Not a token id (32 hex characters).");
                    };
                    match more {
                        [] => views::token(state, cur, t, &id, &q).await,
                        [act @ ("revoke" | "unblock" | "rotate")] => {
                            Page::html(StatusCode::OK, views::confirm(cur, t, &id, act))
                        }
                        _ => views::error(Some(cur), StatusCode::NOT_FOUND, "No such console page."),
                    }
                }
                _ => views::error(Some(cur), StatusCode::NOT_FOUND, "No such console page."),
            }
        }
        _ => views::error(Some(cur), StatusCode::NOT_FOUND, "No such console page."),
    }
}

async fn post(state: &AdminState, cur: &Current, segs: &[&str], f: &Form) -> Page {
    if segs == ["logout"] {
        state.console.sessions.end(cur);
        log::info!("console: {} logged out", cur.caller.name);
        return Page::redirect("/console/login").cookie(session::session_cookie(None));
    }
    let ["t", t, rest @ ..] = segs else {
        return views::error(Some(cur), StatusCode::NOT_FOUND, "No such console action.");
    };
    if let Some(p) = scope_refusal(state, cur, t) {
        log::warn!("console: {} refused an action on tenant {t:?}", cur.caller.name);
        return p;
    }
    let caller = &cur.caller;
    match rest {
        ["revoke-all"] => {
            if f.text("confirm") != *t {
                return Page::html(
                    StatusCode::BAD_REQUEST,
                    views::revoke_all_form(
                        cur,
                        t,
                        Some("The tenant id you typed does not match; nothing was revoked."),
                    ),
                );
            }
            let reply = revoke_all(state, caller, t).await;
            state.audited(caller, Source::Console, "revoke_tenant", Some(t), None, &reply);
            views::result(cur, t, None, "revoke_tenant", &reply)
        }
        ["grants", g, "revoke"] => {
            let Some(g) = token_id(g) else {
                return views::error(Some(cur), StatusCode::NOT_FOUND, "Not a grant id (32 hex characters).");
            };
            let reply = state.revoke_grant(caller, t, &g).await;
            state.audited(caller, Source::Console, "revoke_grant", Some(t), Some(&g), &reply);
            views::result(cur, t, None, "revoke_grant", &reply)
        }
        ["tokens", id, act] => {
            let Some(id) = token_id(id) else {
                return views::error(Some(cur), StatusCode::NOT_FOUND, "Not a token id (32 hex characters).");
            };
            let (action, reply) = match *act {
                "revoke" => ("revoke", state.revoke(caller, t, &id).await),
                "unblock" => ("unblock", state.unblock(caller, t, &id)),
                "rotate" => {
                    let body = match rotate_body(f) {
                        Ok(b) => b,
                        Err(msg) => {
                            return Page::html(
                                StatusCode::BAD_REQUEST,
                                views::confirm_with(cur, t, &id, "rotate", Some(msg)),
                            )
                        }
                    };
                    ("rotate", state.rotate(caller, t, &id, &body).await)
                }
                _ => return views::error(Some(cur), StatusCode::NOT_FOUND, "No such console action."),
            };
            state.audited(caller, Source::Console, action, Some(t), Some(&id), &reply);
            views::result(cur, t, Some(&id), action, &reply)
        }
        _ => views::error(Some(cur), StatusCode::NOT_FOUND, "No such console action."),
    }
}

/// The rotate form as the API's JSON body (`{"part_a"}` or `{"token"}`), in a wiped buffer.
fn rotate_body(f: &Form) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    let v = match (f.text("part_a"), f.text("token")) {
        (a, "") if !a.is_empty() => json!({ "part_a": a }),
        ("", t) if !t.is_empty() => json!({ "token": t }),
        _ => return Err("Give exactly one: the current Part A, or the upstream token."),
    };
    let body = Zeroizing::new(serde_json::to_vec(&v).unwrap_or_default());
    // `v` holds a copy of the secret in its String; wipe it too.
    if let Value::Object(mut m) = v {
        for (_, val) in m.iter_mut() {
            if let Value::String(s) = val {
                zeroize::Zeroize::zeroize(s);
            }
        }
    }
    Ok(body)
}

/// Ids under `list[key]` whose `status` is not `revoked` (nor another dead state for grants).
fn live_ids(listed: &Value, key: &str, id_key: &str, live: fn(&str) -> bool) -> Vec<TokenId> {
    listed
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| live(v.get("status").and_then(Value::as_str).unwrap_or("")))
        .filter_map(|v| v.get(id_key).and_then(Value::as_str).and_then(TokenId::parse))
        .collect()
}

/// Incident action: revoke every live grant of tenant `t` (`revoke_grant`: all its access and
/// refresh records), then every other live token (`revoke`), through the API's own methods.
async fn revoke_all(state: &AdminState, caller: &AdminToken, t: &str) -> Reply {
    let Reply(status, grants) = state.list_grants(t).await;
    if !status.is_success() {
        return Reply(status, grants);
    }
    let (mut revoked_grants, mut revoked, mut failed) = (0u64, 0u64, 0u64);
    for id in live_ids(&grants, "grants", "grant_id", |s| s == "active") {
        match state.revoke_grant(caller, t, &id).await {
            Reply(s, _) if s.is_success() => revoked_grants += 1,
            _ => failed += 1,
        }
    }
    // Listed after the grants: their records are tombstones by now.
    let Reply(status, tokens) = state.list(t).await;
    if !status.is_success() {
        return Reply(status, tokens);
    }
    for id in live_ids(&tokens, "tokens", "id", |s| s != "revoked") {
        match state.revoke(caller, t, &id).await {
            Reply(s, _) if s.is_success() => revoked += 1,
            _ => failed += 1,
        }
    }
    let status = if failed == 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Reply(
        status,
        json!({"tenant": t, "revoked": revoked, "grants_revoked": revoked_grants, "failed": failed}),
    )
}
