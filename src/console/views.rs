//! Console pages, rendered with `maud` (every interpolation HTML-escaped; no `PreEscaped`
//! anywhere). Runs on console GETs and after actions; reads what the admin API reads (token
//! list JSON from `AdminState::list`, so new fields such as `kind` and `grant_id` show up as
//! columns when present; session records; anomaly quarantine; the audit ring).
//!
//! Pages work without JavaScript; `console.js` only adds the live tail's streaming and the
//! incident button's typed-confirmation enablement. No inline script or style: layout comes
//! from `console.css`, the sparkline is inline SVG with presentation attributes.

use std::collections::{BTreeSet, HashMap};

use http::StatusCode;
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::audit::AuditEntry;
use super::form::Form;
use super::session::Current;
use super::Page;
use crate::admin::{rfc3339, AdminState, Reply};
use crate::config::Scope;
use crate::session_log::{Query, SessionRecord};
use crate::token::{self, TokenId};

/// Records read for the token table's "last used / last IP / flags" columns.
const ACTIVITY_RECORDS: usize = 2000;
/// Records read for a token's timeline (before the page's filters).
const TIMELINE_RECORDS: usize = 1000;

// === helpers ===

/// Percent-encode a query value.
fn enc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn ms_time(ms: u64) -> String {
    rfc3339((ms / 1000) as i64).replace('T', " ")
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn short_time(v: &str) -> String {
    v.replace('T', " ")
}

/// `YYYY-MM-DDTHH:MM[:SS]` (an `<input type=datetime-local>`, read as UTC) → Unix ms.
fn parse_local(v: &str) -> Option<u64> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let fmt_s = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(v, &fmt)
        .or_else(|_| time::PrimitiveDateTime::parse(v, &fmt_s))
        .ok()?;
    let ms = t.assume_utc().unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).ok()
}

fn status_class(status: &str) -> &'static str {
    match status {
        "active" => "ok",
        "revoked" | "unreadable" => "bad",
        "quarantined" | "expired" => "warn",
        _ => "",
    }
}

fn http_class(code: u16) -> &'static str {
    match code {
        200..=399 => "ok",
        400..=499 => "warn",
        _ => "bad",
    }
}

/// Inline SVG bar chart of `points` (requests per minute), right-aligned on a 60-minute axis:
/// minutes before this instance started have no bar. Presentation attributes only (no style).
fn sparkline(points: &[u64]) -> Markup {
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    const SLOT: f64 = W / 61.0;
    let peak = points.iter().copied().max().unwrap_or(0);
    let max = peak.max(1) as f64;
    let n = points.len().min(61);
    let bars: Vec<(String, String, String)> = points[points.len() - n..]
        .iter()
        .enumerate()
        .filter(|(_, p)| **p > 0)
        .map(|(i, p)| {
            let x = W - (n - i) as f64 * SLOT;
            let h = (*p as f64 / max * (H - 3.0)).max(1.5);
            (format!("{x:.2}"), format!("{:.2}", H - 1.0 - h), format!("{h:.2}"))
        })
        .collect();
    let label = format!(
        "requests per minute over the last hour: this minute {}, peak {peak}",
        points.last().copied().unwrap_or(0)
    );
    html! {
        svg.spark viewBox="0 0 120 28" width="120" height="28" role="img" aria-label=(label) {
            title { (label) }
            line x1="0" y1="27.5" x2="120" y2="27.5" stroke="#c8ccd4" stroke-width="1" {}
            @for (x, y, h) in &bars {
                rect x=(x) y=(y) width=(format!("{:.2}", SLOT * 0.8)) height=(h) fill="#2f6fde" {}
            }
        }
    }
}

// === layout ===

fn layout(cur: Option<&Current>, title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Tessera console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/" { "Tessera " span { "security console" } }
                    @if let Some(cur) = cur {
                        nav aria-label="Main" {
                            ul {
                                @match &cur.caller.scope {
                                    Scope::Operator => { li { a href="/console/" { "Tenants" } } }
                                    Scope::Tenant(t) => {
                                        li { a href=(format!("/console/t/{t}")) { "Tokens" } }
                                        li { a href=(format!("/console/t/{t}/tail")) { "Live tail" } }
                                    }
                                }
                                li { a href="/console/audit" { "Audit log" } }
                            }
                        }
                        div.who {
                            span { "Signed in as " strong { (cur.caller.name) } " (" (super::audit::scope_label(&cur.caller.scope)) ")" }
                            form method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(cur.csrf);
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
            }
        }
    }
    .into_string()
}

/// A table head; a leading `#` marks a numeric (right-aligned) column.
fn head_row(cols: &[&str]) -> Markup {
    html! {
        thead { tr {
            @for c in cols {
                @match c.strip_prefix('#') {
                    Some(n) => { th.num scope="col" { (n) } }
                    None => { th scope="col" { (c) } }
                }
            }
        } }
    }
}

fn csrf_field(cur: &Current) -> Markup {
    html! { input type="hidden" name="csrf" value=(cur.csrf); }
}

fn crumbs(items: &[(&str, Option<String>)]) -> Markup {
    html! {
        nav.crumbs aria-label="Breadcrumb" {
            ol {
                @for (label, href) in items {
                    li {
                        @match href {
                            Some(h) => { a href=(h) { (label) } }
                            None => { span aria-current="page" { (label) } }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn error(cur: Option<&Current>, status: StatusCode, msg: &str) -> Page {
    let body = html! {
        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
        p.notice.bad role="alert" { (msg) }
        p { a href="/console/" { "Back to the console" } }
    };
    Page::html(status, layout(cur, "Refused", body))
}

pub(super) fn login(csrf: &str, problem: Option<&str>) -> String {
    let body = html! {
        section.login {
            h1 { "Sign in" }
            p { "Use an admin token (" code { "tsa_…" } "), operator or tenant-scoped, the same as for the admin API. "
                "The console keeps only a session id in a cookie, never the token." }
            @if let Some(p) = problem { p.notice.bad role="alert" { (p) } }
            form method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="off" required autofocus spellcheck="false";
                button type="submit" { "Sign in" }
            }
        }
    };
    layout(None, "Sign in", body)
}

// === overview ===

/// Per tenant: tokens not revoked nor expired, and quarantined ones.
async fn token_counts(state: &AdminState) -> HashMap<String, (u64, u64)> {
    let mut out: HashMap<String, (u64, u64)> = HashMap::new();
    let Ok(entries) = state.store.list(None).await else {
        return out;
    };
    let keyring = state.keyring.load();
    let now = crate::admin::now();
    for e in &entries {
        if token::is_tombstone(&e.record).is_some() {
            continue;
        }
        let Ok(m) = token::open_meta(&keyring, &e.tenant, &e.id, &e.record) else {
            continue;
        };
        if m.expires_at.is_some_and(|x| x <= now) {
            continue;
        }
        out.entry(e.tenant.clone()).or_default().0 += 1;
    }
    for t in state.tenants.load().iter() {
        let q = state.anomaly.quarantined(t.index).len() as u64;
        if q > 0 {
            out.entry(t.id.to_string()).or_default().1 = q;
        }
    }
    out
}

pub(super) async fn overview(state: &AdminState, cur: &Current) -> Page {
    let counts = token_counts(state).await;
    let body = html! {
        h1 { "Tenants" }
        p.lede { "Requests, refused Part A verifications and anomalies over the last hour on this instance; tokens active across the store." }
        div.scroll tabindex="0" role="region" aria-label="Tenants table" {
            table.data {
                thead { tr {
                    th scope="col" { "Tenant" }
                    th.num scope="col" { "Requests (1 h)" }
                    th.num scope="col" { "Refusals (1 h)" }
                    th.num scope="col" { "Anomalies (1 h)" }
                    th.num scope="col" { "Tokens active" }
                    th.num scope="col" { "Quarantined" }
                    th scope="col" { "Request rate" }
                } }
                tbody {
                    @for t in state.tenants.load().iter() {
                        @if crate::admin::AdminState::allowed(&cur.caller, Some(&t.id)) {
                            @let sum = state.console.history.summary(t.index);
                            @let (active, quarantined) = counts.get(&*t.id).copied().unwrap_or((0, 0));
                            tr {
                                th scope="row" {
                                    a href=(format!("/console/t/{}", t.id)) { (t.id) }
                                    @if t.metrics.label == "_other" { " " small.muted { "(counters shared beyond metrics.tenant_label_cap)" } }
                                }
                                td.num { (sum.requests) }
                                td class=(if sum.refused > 0 { "num warn" } else { "num" }) { (sum.refused) }
                                td class=(if sum.anomalies > 0 { "num warn" } else { "num" }) { (sum.anomalies) }
                                td.num { (active) }
                                td class=(if quarantined > 0 { "num bad" } else { "num" }) { (quarantined) }
                                td.rate {
                                    (sparkline(&sum.per_minute))
                                    small.muted { "peak " (sum.per_minute.iter().max().copied().unwrap_or(0)) "/min" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Page::html(StatusCode::OK, layout(Some(cur), "Tenants", body))
}

// === tenant: tokens ===

/// Latest use of each token among the tenant's recent records.
#[derive(Default, Clone)]
struct Activity {
    last_ms: u64,
    last_ip: String,
    flags: BTreeSet<String>,
}

async fn activity(state: &AdminState, t: &str) -> HashMap<String, Activity> {
    let q = Query {
        limit: ACTIVITY_RECORDS,
        ..Default::default()
    };
    let mut out: HashMap<String, Activity> = HashMap::new();
    for r in state.sessions.query(t, &q).await.unwrap_or_default() {
        let Some(id) = r.token_id.clone() else { continue };
        let a = out.entry(id).or_default();
        if r.ts > a.last_ms {
            a.last_ms = r.ts;
            a.last_ip = r.client_ip.clone().unwrap_or_default();
        }
        a.flags.extend(r.anomalies.iter().cloned());
    }
    out
}

/// The tenant's tokens as the API lists them, or the API's error.
async fn tokens_of(state: &AdminState, t: &str) -> Result<Vec<Value>, String> {
    let Reply(status, v) = state.list(t).await;
    if !status.is_success() {
        return Err(s(&v, "message").to_string());
    }
    Ok(v.get("tokens").and_then(Value::as_array).cloned().unwrap_or_default())
}

fn tenant_nav(t: &str, here: &str) -> Markup {
    html! {
        nav.tabs aria-label="Tenant" {
            @for (label, href) in [("Tokens", format!("/console/t/{t}")), ("Grants", format!("/console/t/{t}/grants")), ("Live tail", format!("/console/t/{t}/tail")), ("Incident: revoke all", format!("/console/t/{t}/revoke-all"))] {
                @if label == here { span aria-current="page" { (label) } } @else { a href=(href) { (label) } }
            }
        }
    }
}

pub(super) async fn tenant(state: &AdminState, cur: &Current, t: &str, q: &Form) -> Page {
    let tokens = match tokens_of(state, t).await {
        Ok(v) => v,
        Err(m) => return error(Some(cur), StatusCode::SERVICE_UNAVAILABLE, &m),
    };
    let act = activity(state, t).await;
    let needle = q.text("q").to_ascii_lowercase();
    let want = q.text("status");
    let sort = match q.text("sort") {
        s @ ("label" | "status" | "expires_at" | "last_used" | "created_at") => s,
        _ => "created_at",
    };
    let asc = q.text("dir") == "asc";
    let has_kind = tokens.iter().any(|v| v.get("kind").and_then(Value::as_str).is_some());
    let has_grant = tokens
        .iter()
        .any(|v| v.get("grant_id").and_then(Value::as_str).is_some());
    let mut rows: Vec<(&Value, Activity)> = tokens
        .iter()
        .filter(|v| want.is_empty() || s(v, "status") == want)
        .filter(|v| {
            needle.is_empty() || s(v, "label").to_ascii_lowercase().contains(&needle) || s(v, "id").contains(&needle)
        })
        .map(|v| (v, act.get(s(v, "id")).cloned().unwrap_or_default()))
        .collect();
    rows.sort_by(|(a, aa), (b, ba)| {
        let o = match sort {
            "last_used" => aa.last_ms.cmp(&ba.last_ms),
            "label" => s(a, "label").to_lowercase().cmp(&s(b, "label").to_lowercase()),
            k => s(a, k).cmp(s(b, k)),
        };
        if asc {
            o
        } else {
            o.reverse()
        }
    });
    let sort_link = |col: &str| {
        let dir = if sort == col && !asc { "asc" } else { "desc" };
        format!("?q={}&status={}&sort={col}&dir={dir}", enc(q.text("q")), enc(want))
    };
    let sort_state = |col: &str| {
        if sort != col {
            "none"
        } else if asc {
            "ascending"
        } else {
            "descending"
        }
    };
    let total = tokens.len();
    let body = html! {
        (crumbs(&[("Tenants", Some("/console/".into())), (t, None)]))
        h1 { "Tenant " code { (t) } }
        (tenant_nav(t, "Tokens"))
        form.filters method="get" role="search" aria-label="Filter tokens" {
            div { label for="q" { "Label or id contains" } input #q type="search" name="q" value=(q.text("q")); }
            div { label for="status" { "Status" }
                select #status name="status" {
                    @for s in ["", "active", "quarantined", "expired", "revoked", "unreadable"] {
                        option value=(s) selected[want == s] { @if s.is_empty() { "any" } @else { (s) } }
                    }
                }
            }
            div { label for="sort" { "Sort by" }
                select #sort name="sort" {
                    @for (v, l) in [("created_at", "created"), ("label", "label"), ("status", "status"), ("expires_at", "expires"), ("last_used", "last seen")] {
                        option value=(v) selected[sort == v] { (l) }
                    }
                }
            }
            div { label for="dir" { "Order" }
                select #dir name="dir" {
                    option value="desc" selected[!asc] { "descending" }
                    option value="asc" selected[asc] { "ascending" }
                }
            }
            div { button type="submit" { "Apply" } }
        }
        p.muted { (rows.len()) " of " (total) " tokens. Last seen, last IP and flags come from the tenant's latest " (ACTIVITY_RECORDS) " session records." }
        div.scroll tabindex="0" role="region" aria-label="Tokens table" {
            table.data #tokens {
                thead { tr {
                    th scope="col" aria-sort=(sort_state("label")) { a href=(sort_link("label")) { "Label" } }
                    th scope="col" { "Id" }
                    @if has_kind { th scope="col" { "Kind" } }
                    @if has_grant { th scope="col" { "Grant" } }
                    th scope="col" aria-sort=(sort_state("status")) { a href=(sort_link("status")) { "Status" } }
                    th scope="col" aria-sort=(sort_state("created_at")) { a href=(sort_link("created_at")) { "Created" } }
                    th scope="col" aria-sort=(sort_state("expires_at")) { a href=(sort_link("expires_at")) { "Expires" } }
                    th scope="col" aria-sort=(sort_state("last_used")) { a href=(sort_link("last_used")) { "Last seen" } }
                    th scope="col" { "Last client IP" }
                    th scope="col" { "Anomaly flags" }
                } }
                tbody {
                    @for (v, a) in &rows {
                        @let id = s(v, "id");
                        @let status = s(v, "status");
                        tr data-token=(id) {
                            td { a href=(format!("/console/t/{t}/tokens/{id}")) { @if s(v, "label").is_empty() { span.muted { "(no label)" } } @else { (s(v, "label")) } } }
                            td { code.id { (id) } }
                            @if has_kind { td { (s(v, "kind")) } }
                            @if has_grant { td { @if !s(v, "grant_id").is_empty() { a href=(format!("/console/t/{t}/grants/{}", s(v, "grant_id"))) { code.id { (s(v, "grant_id")) } } } } }
                            td { span class=(format!("pill {}", status_class(status))) { (status) } }
                            td { (short_time(s(v, "created_at"))) }
                            td { @if s(v, "expires_at").is_empty() { span.muted { "never" } } @else { (short_time(s(v, "expires_at"))) } }
                            td { @if a.last_ms == 0 { span.muted { "—" } } @else { (ms_time(a.last_ms)) } }
                            td { (a.last_ip) }
                            td { @for f in &a.flags { span.pill.warn { (f) } " " } }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p.muted { "No token matches." } }
    };
    Page::html(StatusCode::OK, layout(Some(cur), &format!("Tenant {t}"), body))
}

// === one token ===

pub(super) async fn token(state: &AdminState, cur: &Current, t: &str, id: &TokenId, q: &Form) -> Page {
    let tokens = match tokens_of(state, t).await {
        Ok(v) => v,
        Err(m) => return error(Some(cur), StatusCode::SERVICE_UNAVAILABLE, &m),
    };
    let ids = id.to_string();
    let Some(tok) = tokens.iter().find(|v| s(v, "id") == ids) else {
        return error(Some(cur), StatusCode::NOT_FOUND, "No such token for this tenant.");
    };
    let status = s(tok, "status");
    let from = parse_local(q.text("from"));
    let to = parse_local(q.text("to"));
    let query = Query {
        token_id: Some(ids.clone()),
        since: from,
        limit: TIMELINE_RECORDS,
    };
    let all = state.sessions.query(t, &query).await.unwrap_or_default();
    let (fs, fp, fi) = (q.text("status"), q.text("path"), q.text("ip"));
    let status_match = |r: &SessionRecord| {
        fs.is_empty() || {
            let code = r.status.to_string();
            code == fs || (fs.len() == 3 && fs.ends_with("xx") && code.starts_with(&fs[..1]))
        }
    };
    let records: Vec<&SessionRecord> = all
        .iter()
        .filter(|r| to.is_none_or(|to| r.ts <= to))
        .filter(|r| status_match(r))
        .filter(|r| fp.is_empty() || r.path.contains(fp))
        .filter(|r| fi.is_empty() || r.client_ip.as_deref().is_some_and(|ip| ip.starts_with(fi)))
        .collect();
    let mut fired: Vec<(&str, usize)> = Vec::new();
    for r in &all {
        for a in &r.anomalies {
            match fired.iter_mut().find(|(k, _)| *k == a.as_str()) {
                Some((_, n)) => *n += 1,
                None => fired.push((a.as_str(), 1)),
            }
        }
    }
    let last = all.first();
    let quarantined = state
        .tenants
        .load()
        .by_id(t)
        .is_some_and(|tn| state.anomaly.is_quarantined(tn.index, id));
    // A revoke replaces the record by a tombstone: its label and metadata are gone.
    let label = match (s(tok, "label"), status) {
        ("", "revoked") => "(revoked; label not kept)",
        ("", _) => "(no label)",
        (l, _) => l,
    };
    let base = format!("/console/t/{t}/tokens/{ids}");
    let body = html! {
        (crumbs(&[("Tenants", Some("/console/".into())), (t, Some(format!("/console/t/{t}"))), (label, None)]))
        h1 { "Token " q { (label) } }
        dl.facts {
            dt { "Id" } dd { code.id #token-id { (ids) } }
            dt { "Part A prefix" } dd { code #part-a-prefix { (token::part_a_prefix(t, id)) "…" } " " small.muted { "(every Part A of this token starts so; Part A itself is never shown)" } }
            dt { "Status" } dd { span class=(format!("pill {}", status_class(status))) #token-status { (status) } }
            @if let Some(k) = tok.get("kind").and_then(Value::as_str) { dt { "Kind" } dd { (k) } }
            @if let Some(g) = tok.get("grant_id").and_then(Value::as_str) { dt { "Grant" } dd { a href=(format!("/console/t/{t}/grants/{g}")) { code.id { (g) } } } }
            dt { "Quarantine" } dd { @if quarantined { span.pill.bad { "quarantined" } } @else { "not quarantined" } }
            @if !s(tok, "created_at").is_empty() {
                dt { "Created" } dd { (short_time(s(tok, "created_at"))) }
                dt { "Expires" } dd { @if s(tok, "expires_at").is_empty() { "never" } @else { (short_time(s(tok, "expires_at"))) } }
            }
            @if !s(tok, "revoked_at").is_empty() { dt { "Revoked" } dd { (short_time(s(tok, "revoked_at"))) } }
            @if !s(tok, "replaces").is_empty() { dt { "Replaces" } dd { a href=(format!("/console/t/{t}/tokens/{}", s(tok, "replaces"))) { code { (s(tok, "replaces")) } } } }
            @if !s(tok, "header").is_empty() { dt { "Credential header" } dd { code { (s(tok, "header")) } " " (s(tok, "scheme")) } }
            dt { "Last seen" } dd { @match last { Some(r) => { (ms_time(r.ts)) " from " (r.client_ip.as_deref().unwrap_or("?")) }, None => { span.muted { "no recent record" } } } }
        }
        @if status != "revoked" {
            div.actions role="group" aria-label="Actions" {
                a.button.danger href=(format!("{base}/revoke")) { "Revoke…" }
                a.button href=(format!("{base}/rotate")) { "Rotate…" }
                @if quarantined || status == "quarantined" { a.button href=(format!("{base}/unblock")) { "Unblock…" } }
            }
        }
        h2 { "Anomalies fired" }
        @if fired.is_empty() { p.muted { "None in the records read." } } @else {
            ul.chips { @for (k, n) in &fired { li { span.pill.warn { (k) } " × " (n) } } }
        }
        h2 #timeline { "Session timeline" }
        form.filters method="get" action=(format!("{base}#timeline")) role="search" aria-label="Filter the timeline" {
            div { label for="f-status" { "Status (e.g. 401, 4xx)" } input #f-status type="text" name="status" value=(fs) size="5"; }
            div { label for="f-path" { "Path contains" } input #f-path type="text" name="path" value=(fp); }
            div { label for="f-ip" { "Client IP starts with" } input #f-ip type="text" name="ip" value=(fi) size="15"; }
            div { label for="f-from" { "From (UTC)" } input #f-from type="datetime-local" name="from" value=(q.text("from")); }
            div { label for="f-to" { "To (UTC)" } input #f-to type="datetime-local" name="to" value=(q.text("to")); }
            div { button type="submit" { "Filter" } " " a href=(base) { "Clear" } }
        }
        p.muted { (records.len()) " of the latest " (all.len()) " records of this token." }
        (records_table(&records, "Session timeline", false))
    };
    Page::html(StatusCode::OK, layout(Some(cur), &format!("Token {label}"), body))
}

fn records_table(records: &[&SessionRecord], label: &str, with_token: bool) -> Markup {
    html! {
        div.scroll tabindex="0" role="region" aria-label=(label) {
            table.data.records {
                thead { tr {
                    th scope="col" { "Time (UTC)" }
                    @if with_token { th scope="col" { "Token" } }
                    th scope="col" { "Method" }
                    th scope="col" { "Path" }
                    th.num scope="col" { "Status" }
                    th scope="col" { "Verify" }
                    th scope="col" { "Client IP" }
                    th.num scope="col" { "ms" }
                    th scope="col" { "Flags" }
                } }
                tbody #tail-body {
                    @for r in records {
                        tr {
                            td { (ms_time(r.ts)) }
                            @if with_token { td { code.id { (r.token_id.as_deref().unwrap_or("—")) } } }
                            td { (r.method) }
                            td.path { (r.path) }
                            td.num { span class=(format!("pill {}", http_class(r.status))) { (r.status) } }
                            td { (r.verify.map(|v| v.label()).unwrap_or("")) }
                            td { (r.client_ip.as_deref().unwrap_or("")) }
                            td.num { (format!("{:.1}", r.duration_ms)) }
                            td { @for f in &r.anomalies { span.pill.warn { (f) } " " } }
                        }
                    }
                }
            }
        }
    }
}

// === grants ===

pub(super) async fn grants(state: &AdminState, cur: &Current, t: &str) -> Page {
    let Reply(status, v) = state.list_grants(t).await;
    if !status.is_success() {
        return error(Some(cur), status, s(&v, "message"));
    }
    let list = v.get("grants").and_then(Value::as_array).cloned().unwrap_or_default();
    let num = |g: &Value, k: &str| g.get(k).and_then(Value::as_u64).unwrap_or(0);
    let body = html! {
        (crumbs(&[("Tenants", Some("/console/".into())), (t, Some(format!("/console/t/{t}"))), ("Grants", None)]))
        h1 { "OAuth grants: " code { (t) } }
        (tenant_nav(t, "Grants"))
        p.muted { "One grant per OAuth authorization; revoking it revokes every access and refresh token it produced." }
        div.scroll tabindex="0" role="region" aria-label="Grants table" {
            table.data #grants {
                (head_row(&["Grant", "Status", "Grant type", "Client", "Created", "Last refresh", "#Refreshes", "#Live records"]))
                tbody {
                    @for g in &list {
                        @let id = s(g, "grant_id");
                        tr data-grant=(id) {
                            td { a href=(format!("/console/t/{t}/grants/{id}")) { code.id { (id) } } }
                            td { span class=(format!("pill {}", status_class(s(g, "status")))) { (s(g, "status")) } }
                            td { (s(g, "grant_type")) }
                            td { code { (s(g, "client_id")) } }
                            td { (short_time(s(g, "created_at"))) }
                            td { @if s(g, "last_refresh_at").is_empty() { span.muted { "—" } } @else { (short_time(s(g, "last_refresh_at"))) } }
                            td.num { (num(g, "refreshes")) }
                            td.num { (num(g, "live_records")) }
                        }
                    }
                }
            }
        }
        @if list.is_empty() { p.muted { "No OAuth grant for this tenant." } }
    };
    Page::html(StatusCode::OK, layout(Some(cur), &format!("Grants {t}"), body))
}

pub(super) async fn grant(state: &AdminState, cur: &Current, t: &str, g: &TokenId) -> Page {
    let Reply(status, v) = state.show_grant(t, g).await;
    if !status.is_success() {
        return error(Some(cur), status, s(&v, "message"));
    }
    let records = v.get("records").and_then(Value::as_array).cloned().unwrap_or_default();
    let gid = g.to_string();
    let body = html! {
        (crumbs(&[("Tenants", Some("/console/".into())), (t, Some(format!("/console/t/{t}"))), ("Grants", Some(format!("/console/t/{t}/grants"))), ("Grant", None)]))
        h1 { "Grant " code.id { (gid) } }
        dl.facts {
            dt { "Status" } dd { span class=(format!("pill {}", status_class(s(&v, "status")))) #grant-status { (s(&v, "status")) } }
            dt { "Grant type" } dd { (s(&v, "grant_type")) }
            dt { "Client" } dd { code { (s(&v, "client_id")) } }
            dt { "Created" } dd { (short_time(s(&v, "created_at"))) }
            @if !s(&v, "last_refresh_at").is_empty() { dt { "Last refresh" } dd { (short_time(s(&v, "last_refresh_at"))) } }
            @if !s(&v, "revoked_at").is_empty() { dt { "Revoked" } dd { (short_time(s(&v, "revoked_at"))) } }
        }
        @if s(&v, "status") == "active" {
            div.actions role="group" aria-label="Actions" {
                a.button.danger href=(format!("/console/t/{t}/grants/{gid}/revoke")) { "Revoke grant…" }
            }
        }
        h2 { "Access and refresh records" }
        div.scroll tabindex="0" role="region" aria-label="Records of the grant" {
            table.data {
                (head_row(&["Token", "Kind", "Status", "Created", "Expires", "Last used"]))
                tbody {
                    @for r in &records {
                        tr {
                            td { a href=(format!("/console/t/{t}/tokens/{}", s(r, "id"))) { code.id { (s(r, "id")) } } }
                            td { (s(r, "kind")) }
                            td { span class=(format!("pill {}", status_class(s(r, "status")))) { (s(r, "status")) } }
                            td { (short_time(s(r, "created_at"))) }
                            td { @if s(r, "expires_at").is_empty() { "never" } @else { (short_time(s(r, "expires_at"))) } }
                            td { @if s(r, "last_used_at").is_empty() { span.muted { "—" } } @else { (short_time(s(r, "last_used_at"))) } }
                        }
                    }
                }
            }
        }
    };
    Page::html(StatusCode::OK, layout(Some(cur), "Grant", body))
}

pub(super) fn confirm_grant(cur: &Current, t: &str, g: &TokenId) -> String {
    let base = format!("/console/t/{t}/grants/{g}");
    let body = html! {
        (crumbs(&[("Tenants", Some("/console/".into())), (t, Some(format!("/console/t/{t}"))), ("Grant", Some(base.clone())), ("Revoke grant", None)]))
        h1 { "Revoke grant" }
        p { "Grant " code.id { (g.to_string()) } " of tenant " code { (t) } "." }
        p.notice.bad { "Every access and refresh token of this grant is tombstoned; the integration must be authorized again. This cannot be undone." }
        form.confirm method="post" action=(format!("{base}/revoke")) {
            (csrf_field(cur))
            div.actions {
                button.danger type="submit" #confirm-action { "Confirm: revoke grant" }
                a.button href=(base) { "Cancel" }
            }
        }
    };
    layout(Some(cur), "Revoke grant", body)
}

// === live tail ===

pub(super) async fn tail(state: &AdminState, cur: &Current, t: &str) -> Page {
    let q = Query {
        limit: 50,
        ..Default::default()
    };
    let recent = state.sessions.query(t, &q).await.unwrap_or_default();
    let refs: Vec<&SessionRecord> = recent.iter().collect();
    let body = html! {
        (crumbs(&[("Tenants", Some("/console/".into())), (t, Some(format!("/console/t/{t}"))), ("Live tail", None)]))
        h1 { "Live tail: " code { (t) } }
        (tenant_nav(t, "Live tail"))
        div.tailbar #tail data-src=(format!("/console/t/{t}/tail/events")) {
            span #tail-state role="status" aria-live="polite" { "Showing the latest records. With JavaScript on, new requests appear at the top as they happen; scrolling down pauses." }
            button #tail-toggle type="button" hidden { "Pause" }
            noscript { a href=(format!("/console/t/{t}/tail")) { "Reload" } }
        }
        (records_table(&refs, "Live tail", true))
    };
    Page::html(StatusCode::OK, layout(Some(cur), &format!("Live tail {t}"), body))
}

// === audit ===

pub(super) fn audit(cur: &Current, entries: &[AuditEntry]) -> String {
    let body = html! {
        h1 { "Audit log" }
        p.lede { "Every admin action, through the API or this console, newest first. "
            @if let Scope::Tenant(t) = &cur.caller.scope { "Entries of tenant " code { (t) } " only." }
            " Also at " code { "GET /v1/audit" } " and in the process log (target " code { "tessera::audit" } ")." }
        div.scroll tabindex="0" role="region" aria-label="Audit log" {
            table.data #audit {
                (head_row(&["When (UTC)", "Who", "Via", "Action", "Tenant", "Target", "#Result", "Detail"]))
                tbody {
                    @for e in entries {
                        tr {
                            td { (short_time(&e.at)) }
                            td { (e.who) " " small.muted { (e.scope) } }
                            td { (match e.source { super::audit::Source::Api => "api", super::audit::Source::Console => "console" }) }
                            td { strong { (e.action) } }
                            td { (e.tenant.as_deref().unwrap_or("—")) }
                            td { @if let Some(tg) = &e.target {
                                @match &e.tenant {
                                    Some(tn) => { a href=(format!("/console/t/{tn}/tokens/{tg}")) { code.id { (tg) } } }
                                    None => { code.id { (tg) } }
                                }
                            } }
                            td.num { span class=(format!("pill {}", http_class(e.status))) { (e.status) } }
                            td.detail { (e.detail) }
                        }
                    }
                }
            }
        }
        @if entries.is_empty() { p.muted { "No admin action yet." } }
    };
    layout(Some(cur), "Audit log", body)
}

// === confirmations and results ===

pub(super) fn confirm(cur: &Current, t: &str, id: &TokenId, act: &str) -> String {
    confirm_with(cur, t, id, act, None)
}

pub(super) fn confirm_with(cur: &Current, t: &str, id: &TokenId, act: &str, problem: Option<&str>) -> String {
    let base = format!("/console/t/{t}/tokens/{id}");
    let (title, what) = match act {
        "revoke" => ("Revoke token", "Its Part B is replaced by a tombstone: every instance refuses its Part A within milliseconds. This cannot be undone."),
        "unblock" => ("Unblock token", "Lifts the anomaly quarantine on this instance; the token works again if it is not revoked."),
        _ => ("Rotate token", "Mints a new Part A for the same upstream credential and revokes this one. Tessera never holds the credential alone: give the current Part A, or the upstream token itself. The new Part A is shown once."),
    };
    let body = html! {
        (crumbs(&[("Tenants", Some("/console/".into())), (t, Some(format!("/console/t/{t}"))), ("Token", Some(base.clone())), (title, None)]))
        h1 { (title) }
        p { "Token " code.id { (id.to_string()) } " of tenant " code { (t) } "." }
        p class=(if act == "revoke" { "notice bad" } else { "notice" }) { (what) }
        @if let Some(p) = problem { p.notice.bad role="alert" { (p) } }
        form.confirm method="post" action=(format!("{base}/{act}")) {
            (csrf_field(cur))
            @if act == "rotate" {
                div { label for="part_a" { "Current Part A" } input #part_a type="password" name="part_a" autocomplete="off" spellcheck="false"; }
                p.muted { "or" }
                div { label for="utoken" { "Upstream token" } input #utoken type="password" name="token" autocomplete="off" spellcheck="false"; }
            }
            div.actions {
                button class=(if act == "revoke" { "danger" } else { "" }) type="submit" #confirm-action { "Confirm: " (title.to_lowercase()) }
                a.button href=(base) { "Cancel" }
            }
        }
    };
    layout(Some(cur), title, body)
}

pub(super) fn revoke_all_form(cur: &Current, t: &str, problem: Option<&str>) -> String {
    let body = html! {
        (crumbs(&[("Tenants", Some("/console/".into())), (t, Some(format!("/console/t/{t}"))), ("Revoke all", None)]))
        h1 { "Incident: revoke every token of " code { (t) } }
        (tenant_nav(t, "Incident: revoke all"))
        p.notice.bad { "Every grant and every token of this tenant that is not already revoked gets a tombstone. Every integration of the tenant stops working at once, on every instance. This cannot be undone." }
        @if let Some(p) = problem { p.notice.bad role="alert" { (p) } }
        form.confirm method="post" action=(format!("/console/t/{t}/revoke-all")) {
            (csrf_field(cur))
            div {
                label for="confirm" { "Type the tenant id (" code { (t) } ") to confirm" }
                input #confirm type="text" name="confirm" autocomplete="off" spellcheck="false" required data-expect=(t);
            }
            div.actions {
                button.danger type="submit" #revoke-all { "Revoke every token of " (t) }
                a.button href=(format!("/console/t/{t}")) { "Cancel" }
            }
        }
    };
    layout(Some(cur), "Revoke all", body)
}

pub(super) fn result(cur: &Current, t: &str, id: Option<&TokenId>, action: &str, reply: &Reply) -> Page {
    let Reply(status, v) = reply;
    let ok = status.is_success();
    let back = match id {
        Some(id) if action != "rotate" || !ok => format!("/console/t/{t}/tokens/{id}"),
        _ => format!("/console/t/{t}"),
    };
    let body = html! {
        h1 { @if ok { "Done" } @else { "Not done" } }
        @if ok {
            p.notice.ok role="status" #result {
                @match action {
                    "revoke" => { "Token " code.id { (id.map(|i| i.to_string()).unwrap_or_default()) } " is revoked." }
                    "unblock" => { "Token unblocked" @if v.get("was_quarantined") == Some(&Value::Bool(false)) { " (it was not quarantined)" } "." }
                    "rotate" => { "Token rotated; the old one is revoked." }
                    "revoke_grant" => { "Grant " code.id { (s(v, "grant_id")) } " is revoked (" (v.get("records_revoked").and_then(Value::as_u64).unwrap_or(0)) " record(s))." }
                    _ => {
                        "Revoked " (v.get("revoked").and_then(Value::as_u64).unwrap_or(0)) " token(s) and "
                        (v.get("grants_revoked").and_then(Value::as_u64).unwrap_or(0)) " grant(s) of " code { (t) } "."
                    }
                }
            }
            @if let Some(part_a) = v.get("part_a").and_then(Value::as_str) {
                section.once {
                    h2 { "New Part A (shown once)" }
                    p { "Hand it to the integration now; it is not stored anywhere Tessera can show it again." }
                    label for="new-part-a" { "New Part A" }
                    input #new-part-a type="text" readonly value=(part_a) spellcheck="false";
                    p { "New token id: " a href=(format!("/console/t/{t}/tokens/{}", s(v, "id"))) { code.id { (s(v, "id")) } } }
                }
            }
        } @else {
            p.notice.bad role="alert" { (status.as_u16()) ": " (s(v, "message")) }
        }
        p { a href=(back) { @if back.contains("/tokens/") { "Back to the token" } @else { "Back to tenant " (t) } } }
    };
    Page::html(*status, layout(Some(cur), if ok { "Done" } else { "Not done" }, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_and_encoding() {
        assert_eq!(parse_local("2026-01-02T03:04"), Some(1_767_323_040_000));
        assert_eq!(parse_local("2026-01-02T03:04:05"), Some(1_767_323_045_000));
        assert_eq!(parse_local("yesterday"), None);
        assert_eq!(enc("a b&c=é"), "a%20b%26c%3D%C3%A9");
    }

    #[test]
    fn sparkline_is_escaped_svg() {
        let m = sparkline(&[0, 3, 1]).into_string();
        assert!(m.starts_with("<svg") && m.matches("<rect").count() == 2, "{m}");
        assert!(m.contains("this minute 1, peak 3"), "{m}");
        assert_eq!(sparkline(&[0]).into_string().matches("<rect").count(), 0);
        assert_eq!(sparkline(&[1; 100]).into_string().matches("<rect").count(), 61);
    }
}
