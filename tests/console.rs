//! The security console (`/console/` on `listen.admin`) against a real stack: real Redis
//! (session log streams and fragments), the echo upstream, the real `tessera` binary, real
//! HTTPS. Two parts:
//! - checks that need no browser: security headers, cookie flags, login refused with a wrong
//!   token or without the login form's token, form posts without / with a wrong CSRF token or
//!   from another origin, a tenant-scoped session acting on another tenant (all `403`, nothing
//!   revoked), `GET /v1/audit` scoping;
//! - the Playwright script `tests/console/console.test.js` driving Debian's Chromium (operator
//!   finds a token and revokes it from its page, then its Part A gets `401` over HTTPS; the live
//!   tail shows a request made during the test; tenant scope refused elsewhere; JavaScript
//!   off). Screenshots land in `target/console-screenshots/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;

const ACME: &str = "saas.acme.example";
const GLOBEX: &str = "api.globex.example";

struct Stack {
    _redis: Redis,
    setup: Setup,
    t: Tessera,
    globex_admin: String,
}

fn stack() -> Stack {
    let redis = Redis::start();
    let up = echo_upstream();
    let mut setup = Setup::new(vec![
        TenantSpec::new("acme", &[ACME], up),
        TenantSpec::new("globex", &[GLOBEX], up),
    ]);
    setup.redis_store(&redis, "");
    let globex_admin = setup.tenant_admin("globex");
    let t = setup.start("console");
    t.wait_ready();
    Stack {
        _redis: redis,
        setup,
        t,
        globex_admin,
    }
}

fn browser() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

fn console_url(t: &Tessera, path: &str) -> String {
    t.admin_url(&format!("/console{path}"))
}

/// The first `name="csrf" value="…"` of a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("page has a csrf field") + 19;
    html[at..at + 64].to_string()
}

fn set_cookies(r: &Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string()
}

/// Fetch the login form and post `token` with its double-submit cookie and field.
fn login_post(c: &Client, t: &Tessera, token: &str) -> Response {
    let r = c.get(console_url(t, "/login")).send().unwrap();
    let pre = cookie_value(&set_cookies(&r)[0]);
    let csrf = csrf_of(&r.text().unwrap());
    c.post(console_url(t, "/login"))
        .header("cookie", format!("tessera_login={pre}"))
        .form(&[("csrf", csrf.as_str()), ("token", token)])
        .send()
        .unwrap()
}

/// Log in through the form; returns (session cookie value, session CSRF token).
fn login(c: &Client, t: &Tessera, token: &str) -> (String, String) {
    let r = login_post(c, t, token);
    assert_eq!(r.status(), 303, "login with a configured token");
    let cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("tessera_console="))
        .expect("session cookie");
    let id = cookie_value(&cookie);
    let page = get_with(c, t, &id, "/audit").text().unwrap();
    (id, csrf_of(&page))
}

/// GET a console page with a session cookie.
fn get_with(c: &Client, t: &Tessera, sid: &str, path: &str) -> Response {
    c.get(console_url(t, path))
        .header("cookie", format!("tessera_console={sid}"))
        .send()
        .unwrap()
}

fn post(c: &Client, t: &Tessera, sid: &str, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> (u16, String) {
    let mut req = c
        .post(console_url(t, path))
        .header("cookie", format!("tessera_console={sid}"))
        .form(form);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn assert_security_headers(r: &Response, what: &str) {
    let h = |k: &str| {
        r.headers()
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let csp = h("content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(h("cache-control"), "no-store", "{what}");
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
}

#[test]
fn console_refuses_what_it_must_without_a_browser() {
    let s = stack();
    let t = &s.t;
    let c = browser();
    let (acme_id, acme_part_a) = t.mint("acme", "acme-upstream-secret");
    let https = t.client(&[ACME, GLOBEX]);
    assert_eq!(t.status_with(&https, ACME, &acme_part_a), 200);

    // Login page: headers, a double-submit token, no session yet.
    let r = c.get(console_url(t, "/login")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_security_headers(&r, "login page");
    let pre = set_cookies(&r);
    assert!(
        pre[0].starts_with("tessera_login=") && pre[0].contains("HttpOnly"),
        "{pre:?}"
    );
    let pre = cookie_value(&pre[0]);
    let csrf = csrf_of(&r.text().unwrap());
    assert_eq!(pre, csrf, "double-submit token");

    // Without a session every page sends to login, every post is refused.
    let r = c.get(console_url(t, "/t/acme")).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    let (st, _) = post(
        &c,
        t,
        &"0".repeat(64),
        &format!("/t/acme/tokens/{acme_id}/revoke"),
        &[("csrf", &csrf)],
        None,
    );
    assert_eq!(st, 403, "a made-up session id");

    // Wrong token; right token without the login form's cookie.
    let r = login_post(&c, t, "tsa_0123");
    assert_eq!(r.status(), 401, "wrong admin token");
    assert!(set_cookies(&r).iter().all(|c| !c.starts_with("tessera_console=")));
    let r = c
        .post(console_url(t, "/login"))
        .form(&[("csrf", csrf.as_str()), ("token", t.admin_token.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "login without the double-submit cookie");

    // Right token: an opaque session cookie with every flag.
    let r = login_post(&c, t, &t.admin_token);
    assert_eq!(r.status(), 303);
    let sc = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("tessera_console="))
        .unwrap();
    for flag in ["; HttpOnly", "; Secure", "; SameSite=Strict", "; Path=/console"] {
        assert!(sc.contains(flag), "{sc} lacks {flag}");
    }
    let sid = cookie_value(&sc);
    assert!(sid.len() == 64 && sid.bytes().all(|b| b.is_ascii_hexdigit()), "{sid}");
    assert!(!sc.contains(&t.admin_token[4..]), "the cookie is not the admin token");
    let r = get_with(&c, t, &sid, "/");
    assert_eq!(r.status(), 200);
    assert_security_headers(&r, "overview");
    let page = r.text().unwrap();
    assert!(page.contains("href=\"/console/t/acme\"") && page.contains("href=\"/console/t/globex\""));
    assert!(
        !page.contains("<script>") && !page.contains(" style="),
        "no inline script or style"
    );
    let op_csrf = csrf_of(&page);
    // Labels are the tenant admin's text: escaped, never markup.
    t.mint_labelled("acme", "xss-upstream", "<script>alert(1)</script>\"><img src=x>");
    let tokens_page = get_with(&c, t, &sid, "/t/acme").text().unwrap();
    assert!(
        tokens_page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "label escaped"
    );
    assert!(!tokens_page.contains("<script>alert") && !tokens_page.contains("<img src=x>"));
    let opost = |path: &str, form: &[(&str, &str)]| post(&c, t, &sid, path, form, None);

    // CSRF: missing, wrong, right token from another origin → 403, nothing revoked.
    let revoke = format!("/t/acme/tokens/{acme_id}/revoke");
    let (st, body) = opost(&revoke, &[]);
    assert_eq!(st, 403, "no CSRF token");
    assert!(body.contains("CSRF"), "{body}");
    let (st, _) = opost(&revoke, &[("csrf", &"f".repeat(64))]);
    assert_eq!(st, 403, "wrong CSRF token");
    let (st, _) = post(&c, t, &sid, &revoke, &[("csrf", &op_csrf)], Some("http://evil.example"));
    assert_eq!(st, 403, "cross-origin post");
    let r = c
        .post(console_url(t, &revoke))
        .header("cookie", format!("tessera_console={sid}"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", op_csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "cross-site post (Sec-Fetch-Site)");
    assert_eq!(
        t.status_with(&https, ACME, &acme_part_a),
        200,
        "still live after refused posts"
    );

    // Unblock and rotate through the console: the API's code, the new Part A shown once.
    let (st, body) = opost(&format!("/t/acme/tokens/{acme_id}/unblock"), &[("csrf", &op_csrf)]);
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("it was not quarantined"), "{body}");
    let rotate = format!("/t/acme/tokens/{acme_id}/rotate");
    let (st, _) = opost(&rotate, &[("csrf", &op_csrf), ("part_a", "tsr_wrong")]);
    assert_eq!(st, 400, "a wrong Part A does not rotate");
    let (st, body) = opost(&rotate, &[("csrf", &op_csrf), ("part_a", &acme_part_a)]);
    assert_eq!(st, 201, "{body}");
    let at = body.find("id=\"new-part-a\"").expect("new Part A field");
    let v = body[at..].find("value=\"").unwrap() + at + 7;
    let new_part_a = body[v..v + acme_part_a.len()].to_string();
    assert!(
        new_part_a.starts_with("tsr_") && new_part_a != acme_part_a,
        "{new_part_a}"
    );
    assert_eq!(
        t.status_with(&https, ACME, &acme_part_a),
        401,
        "old Part A after rotation"
    );
    assert_eq!(t.status_with(&https, ACME, &new_part_a), 200, "new Part A");
    let acme_part_a = new_part_a;
    let needle = "New token id: <a href=\"/console/t/acme/tokens/";
    let at = body.find(needle).expect("new id link") + needle.len();
    let acme_id = body[at..at + 32].to_string();
    assert_eq!(
        get_with(&c, t, &sid, &format!("/t/acme/tokens/{acme_id}")).status(),
        200,
        "the new token's page"
    );

    // Grants (OAuth): the list renders; revoking an unknown grant is the API's 404, audited.
    let r = get_with(&c, t, &sid, "/t/acme/grants");
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("No OAuth grant"));
    let ghost = "0123456789abcdef0123456789abcdef";
    let (st, _) = opost(&format!("/t/acme/grants/{ghost}/revoke"), &[("csrf", &op_csrf)]);
    assert_eq!(st, 404, "unknown grant");

    // Tenant scope: its tenant only, pages and crafted posts with its own valid CSRF token.
    let (gsid, gcsrf) = login(&c, t, &s.globex_admin);
    let gpost = |path: &str, form: &[(&str, &str)]| post(&c, t, &gsid, path, form, None);
    let get = |path: &str| get_with(&c, t, &gsid, path).status().as_u16();
    assert_eq!(get("/t/globex"), 200);
    assert_eq!(get("/t/acme"), 403);
    assert_eq!(get(&format!("/t/acme/tokens/{acme_id}")), 403);
    assert_eq!(get("/t/acme/tail"), 403);
    assert_eq!(get("/t/acme/tail/events"), 403);
    assert_eq!(get("/t/acme/grants"), 403);
    assert_eq!(get("/t/globex/grants"), 200);
    assert_eq!(
        get("/t/nosuch"),
        403,
        "unknown tenants look the same as others' to a tenant scope"
    );
    assert_eq!(get("/"), 303, "a tenant scope has no all-tenants overview");
    let (st, _) = gpost(&revoke, &[("csrf", &gcsrf)]);
    assert_eq!(st, 403, "cross-tenant revoke");
    let (st, _) = gpost("/t/acme/revoke-all", &[("csrf", &gcsrf), ("confirm", "acme")]);
    assert_eq!(st, 403, "cross-tenant revoke-all");
    assert_eq!(
        t.status_with(&https, ACME, &acme_part_a),
        200,
        "cross-tenant posts revoked nothing"
    );

    // The incident button needs the tenant id typed again.
    let (gid, gpart_a) = t.mint("globex", "globex-upstream-secret");
    assert_eq!(t.status_with(&https, GLOBEX, &gpart_a), 200);
    let (st, _) = gpost("/t/globex/revoke-all", &[("csrf", &gcsrf), ("confirm", "globe")]);
    assert_eq!(st, 400, "mistyped tenant id");
    assert_eq!(t.status_with(&https, GLOBEX, &gpart_a), 200);
    let (st, body) = gpost("/t/globex/revoke-all", &[("csrf", &gcsrf), ("confirm", "globex")]);
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("Revoked 1 token"), "{body}");
    assert!(
        eventually(std::time::Duration::from_secs(2), || t
            .status_with(&https, GLOBEX, &gpart_a)
            == 401)
        .is_some(),
        "revoke-all revoked the globex token"
    );

    // Audit: the API mint (source api), the console revoke-all (source console); scoped reads.
    let (st, v) = t.admin_call("GET", "/v1/audit", None);
    assert_eq!(st, 200, "{v}");
    let entries = v["entries"].as_array().unwrap();
    let has = |action: &str, source: &str, tenant: &str| {
        entries
            .iter()
            .any(|e| e["action"] == action && e["source"] == source && e["tenant"] == tenant)
    };
    assert!(has("mint", "api", "acme") && has("mint", "api", "globex"), "{v}");
    assert!(has("revoke_tenant", "console", "globex"), "{v}");
    assert!(
        has("rotate", "console", "acme") && has("unblock", "console", "acme"),
        "{v}"
    );
    assert!(has("revoke_grant", "console", "acme"), "{v}");
    let rot = entries
        .iter()
        .find(|e| e["action"] == "rotate" && e["status"] == 201)
        .unwrap();
    assert!(
        rot["detail"].as_str().unwrap().contains(&format!("new_id={acme_id}")),
        "{rot}"
    );
    let rt = entries.iter().find(|e| e["action"] == "revoke_tenant").unwrap();
    assert_eq!(rt["who"], "secops0");
    assert!(rt["detail"].as_str().unwrap().contains("revoked=1"), "{rt}");
    assert!(!v.to_string().contains(&acme_part_a[4..]), "no Part A in the audit log");
    let (st, v) = t.admin_call_as(&s.globex_admin, "GET", "/v1/audit", None);
    assert_eq!(st, 200);
    let mine = v["entries"].as_array().unwrap();
    assert!(!mine.is_empty() && mine.iter().all(|e| e["tenant"] == "globex"), "{v}");
    let (st, _) = t.admin_call_as(&s.globex_admin, "GET", "/v1/audit?tenant=acme", None);
    assert_eq!(st, 403);
    let _ = gid;

    // Logout kills the session server-side.
    let (st, _) = gpost("/logout", &[("csrf", &gcsrf)]);
    assert_eq!(st, 303);
    assert_eq!(get("/t/globex"), 303, "logged-out session id");
    assert_not_in_files(
        &[&t.log, &t.sessions],
        &[&acme_part_a[4..], &s.globex_admin[4..], &t.admin_token[4..]],
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn console_in_a_real_browser() {
    let root = repo();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists() && root.join("tests/console/node_modules/playwright-core").exists(),
        "the browser test needs Chromium ({chromium}) and playwright-core: run scripts/test, or \
         `apt-get install chromium && npm ci --prefix tests/console`"
    );
    let s = stack();
    let t = &s.t;
    let (victim_id, victim_part_a) = t.mint_labelled("acme", "victim-upstream", "zapier-prod");
    let (_, live_part_a) = t.mint_labelled("acme", "live-upstream", "live-feed");
    t.mint_labelled("acme", "other-upstream", "billing-sync");
    t.mint_labelled("globex", "globex-upstream", "globex-crm");
    let https = t.client(&[ACME, GLOBEX]);
    // Some history: the victim's timeline, refusals and traffic for the overview.
    for _ in 0..3 {
        assert_eq!(t.status_with(&https, ACME, &victim_part_a), 200);
    }
    assert_eq!(t.status_with(&https, ACME, "tsr_not-a-part-a"), 401);
    assert_eq!(t.status_with(&https, GLOBEX, &victim_part_a), 401, "wrong tenant");
    // The session log writer lingers before it writes.
    assert!(
        eventually(std::time::Duration::from_secs(5), || {
            let (_, v) = t.admin_call("GET", &format!("/v1/tenants/acme/sessions?token_id={victim_id}"), None);
            v["records"].as_array().is_some_and(|r| r.len() >= 3)
        })
        .is_some(),
        "session records written"
    );
    let shots = root.join("target/console-screenshots");
    let ca = s.setup.path("ca.pem");
    let out = Command::new("node")
        .arg(root.join("tests/console/console.test.js"))
        .env("CONSOLE_URL", console_url(t, "/"))
        .env("OPERATOR_TOKEN", &t.admin_token)
        .env("TENANT_TOKEN", &s.globex_admin)
        .env("TENANT", "acme")
        .env("OWN_TENANT", "globex")
        .env("VICTIM_ID", &victim_id)
        .env("VICTIM_LABEL", "zapier-prod")
        .env("VICTIM_PART_A", &victim_part_a)
        .env("LIVE_PART_A", &live_part_a)
        .env("HTTPS_HOST", ACME)
        .env("HTTPS_PORT", t.ports.https.to_string())
        .env("CA_FILE", &ca)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(out.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("REVOKED {victim_id}")), "{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    let steps = stdout.lines().filter(|l| l.starts_with("ok - ")).count();
    assert!(steps >= 30, "only {steps} browser steps ran:\n{stdout}");
    // Checked again from here: the revoked Part A gets 401 over real HTTPS.
    assert_eq!(t.status_with(&https, ACME, &victim_part_a), 401);
    assert_eq!(t.status_with(&https, ACME, &live_part_a), 200);
    let (_, v) = t.admin_call("GET", "/v1/audit?tenant=acme", None);
    assert!(
        v["entries"].as_array().unwrap().iter().any(|e| e["action"] == "revoke"
            && e["source"] == "console"
            && e["target"] == victim_id.as_str()
            && e["who"] == "ops"),
        "{v}"
    );
    for name in ["02-overview", "04-token", "07-live-tail", "08-audit"] {
        let png = shots.join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&png).is_ok_and(|m| m.len() > 1000),
            "{} missing",
            png.display()
        );
    }
    assert_not_in_files(&[&t.log, &t.sessions], &[&victim_part_a[4..], &t.admin_token[4..]]);
}
