//! The OAuth token swap end to end (issue 9): the real `tessera` binary in front of a real
//! OpenID Provider (`oidc-provider`, `tests/oauth/provider.js`) and its introspecting API, a
//! real `redis-server` shared by the instances, TLS with SNI on the vanity hostnames.
//!
//! The integration's side is driven as an integration would: the authorization code + PKCE
//! flow through the provider's login and consent pages on `oauth.acme.test`, token requests
//! there, API calls on `api.acme.test`. The provider's API checks every bearer token by RFC 7662
//! introspection, so a `200` from it proves Tessera sent the real, live token; the provider's
//! request counters prove which refusals never reached it. The tests recover the real tokens
//! from the store with the test keyring (`recover_token`) only to check them at the provider
//! and to look for them where they must not be.

mod common;

use std::process::Command;
use std::time::Duration;

use common::oidc::*;
use common::*;
use reqwest::blocking::Client;
use serde_json::Value;
use tessera::token::{Keyring, PartA};

const API_HOST: &str = "api.acme.test";
const OAUTH_HOST: &str = "oauth.acme.test";
const GLOBEX_API: &str = "api.globex.test";
const GLOBEX_OAUTH: &str = "oauth.globex.test";
const ALL_HOSTS: [&str; 4] = [API_HOST, OAUTH_HOST, GLOBEX_API, GLOBEX_OAUTH];
const METRIC: &str = "tessera_oauth_token_responses_total";
/// Client credentials for the `service` client (`client_secret_post`).
const CC_FORM: [(&str, &str); 4] = [
    ("grant_type", "client_credentials"),
    ("scope", "api"),
    ("client_id", SERVICE.id),
    ("client_secret", SERVICE.secret),
];

/// One provider, one Redis, tenants `acme` and `globex` (both on the provider), N instances.
struct Env {
    // Field order is drop order: instances before the store and the provider.
    instances: Vec<Tessera>,
    setup: Setup,
    redis: Redis,
    p: OidcProvider,
}

impl Env {
    fn start(instances: usize) -> Env {
        Self::with_provider(OidcProvider::start(), instances)
    }

    fn with_provider(p: OidcProvider, n: usize) -> Env {
        Self::with_config(p, n, "")
    }

    /// `acme_oauth`: more lines for acme's `oauth:` section (6 spaces indent).
    fn with_config(p: OidcProvider, n: usize, acme_oauth: &str) -> Env {
        Self::with_env(p, n, acme_oauth, &[])
    }

    /// ... and `env` for the instances (e.g. `RUST_LOG`).
    fn with_env(p: OidcProvider, n: usize, acme_oauth: &str, env: &[(&str, &str)]) -> Env {
        let redis = Redis::start();
        let mut setup = Setup::new(vec![
            oauth_tenant("acme", API_HOST, OAUTH_HOST, &p, acme_oauth),
            oauth_tenant("globex", GLOBEX_API, GLOBEX_OAUTH, &p, ""),
        ]);
        setup.redis_store(&redis, "");
        let instances: Vec<Tessera> = (0..n)
            .map(|i| setup.start_with_env(&format!("oauth{i}"), env))
            .collect();
        for t in &instances {
            t.wait_ready();
        }
        Env {
            instances,
            setup,
            redis,
            p,
        }
    }

    fn t(&self) -> &Tessera {
        &self.instances[0]
    }

    /// `https://<host>:<port>` of instance `i`.
    fn origin(&self, i: usize, host: &str) -> String {
        format!("https://{host}:{}", self.instances[i].ports.https)
    }

    /// An integration's HTTP client for instance `i` (no cookies, no redirects followed).
    fn client(&self, i: usize) -> Client {
        self.instances[i].client(&ALL_HOSTS)
    }

    /// The user's browser for instance `i`: cookies, redirects followed by `authorize`.
    fn browser(&self, i: usize) -> Client {
        let mut b = browser_builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(self.setup.ca_pem.as_bytes()).unwrap());
        for h in ALL_HOSTS {
            b = b.resolve(h, ([127, 0, 0, 1], self.instances[i].ports.https).into());
        }
        b.build().unwrap()
    }

    /// The code + PKCE flow through instance 0's vanity OAuth hostname, then the code
    /// exchanged there: the code and the token answer.
    fn code_flow(&self, client: OAuthClient) -> (AuthCode, Value) {
        let code = authorize(
            &self.browser(0),
            &self.origin(0, OAUTH_HOST),
            client.id,
            CALLBACK,
            SCOPE,
        );
        let answer = self.token(0, OAUTH_HOST, &code.grant_form(), client.basic());
        assert_eq!(answer.0, 200, "code exchange through Tessera: {}", answer.1);
        (code, answer.1)
    }

    /// POST a form to the token endpoint on `host` of instance `i`.
    fn token(&self, i: usize, host: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
        let url = format!("{}/token", self.origin(i, host));
        token_request(&self.client(i), &url, form, basic)
    }

    fn refresh(&self, i: usize, host: &str, client: OAuthClient, refresh_token: &str) -> (u16, Value) {
        self.token(
            i,
            host,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
            client.basic(),
        )
    }

    /// RFC 7009 through instance 0.
    fn revoke(&self, token: &str, client: OAuthClient) -> (u16, Value) {
        let url = format!("{}/token/revocation", self.origin(0, OAUTH_HOST));
        token_request(&self.client(0), &url, &[("token", token)], client.basic())
    }

    /// `GET https://api.acme.test/v1/things` on instance `i` with `Authorization: Bearer <token>`.
    fn api(&self, i: usize, token: &str) -> (u16, Value) {
        let url = format!("{}/v1/things", self.origin(i, API_HOST));
        bearer_get(&self.client(i), &url, Some(token))
    }

    /// The real token behind a Part A, recovered from the record in Redis with the test
    /// keyring. Only to check it at the provider and to look for it where it must not be.
    fn real(&self, tenant: &str, part_a: &str) -> String {
        let pa = PartA::parse(part_a).expect("a Part A");
        let key = format!("tessera:frag:{tenant}:{}", pa.id);
        let mut con = redis::Client::open(self.redis.url()).unwrap().get_connection().unwrap();
        let stored: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        assert!(!stored.is_empty(), "no record at {key}");
        let keyring = Keyring::parse(&std::fs::read_to_string(&self.setup.keyring).unwrap()).unwrap();
        let real = tessera::token::recover_token(&keyring, tenant, &pa, &stored).expect("record opens with its Part A");
        String::from_utf8(real.to_vec()).expect("a UTF-8 token")
    }

    fn metric(&self, grant_type: &str, result: &str) -> f64 {
        self.t().metric(
            METRIC,
            &[("tenant", "acme"), ("grant_type", grant_type), ("result", result)],
        )
    }

    /// Runs `tessera <args>` against instance 0's admin API: exit success and stdout.
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env("TESSERA_ADMIN_URL", self.t().admin_url(""))
            .env("TESSERA_ADMIN_TOKEN", &self.setup.admin_token)
            .output()
            .expect("run tessera");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The string member `key` of a JSON answer.
#[track_caller]
fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no string {key:?} in {v}"))
}

/// Asserts `v` is a Part A of `tenant`'s format (what an integration holds), returns it.
#[track_caller]
fn part_a<'a>(v: &'a Value, key: &str) -> &'a str {
    let a = s(v, key);
    assert!(
        a.starts_with("tsr_") && PartA::parse(a).is_ok(),
        "{key} is not a Part A: {v}"
    );
    a
}

/// The token ids of a tenant's token list, with their kind and grant.
fn token_list(t: &Tessera, tenant: &str) -> Vec<Value> {
    let (status, v) = t.admin_call("GET", &format!("/v1/tenants/{tenant}/tokens"), None);
    assert_eq!(status, 200, "{v}");
    v["tokens"].as_array().cloned().unwrap_or_default()
}

/// The token list entry of the record behind Part A `a`.
#[track_caller]
fn entry_of(t: &Tessera, tenant: &str, a: &str) -> Value {
    let id = id_of(a);
    token_list(t, tenant)
        .into_iter()
        .find(|e| e["id"] == id.as_str())
        .unwrap_or_else(|| panic!("token {id} not listed"))
}

fn id_of(a: &str) -> String {
    PartA::parse(a).unwrap().id.to_string()
}

/// Session records of `tenant` on instance `t` whose `oauth.endpoint` is `endpoint`, once
/// at least `n` are there (the writer is asynchronous).
fn oauth_records(t: &Tessera, tenant: &str, endpoint: &str, n: usize) -> Vec<Value> {
    let mut found = vec![];
    eventually(Duration::from_secs(5), || {
        let (status, v) = t.admin_call("GET", &format!("/v1/tenants/{tenant}/sessions?limit=1000"), None);
        assert_eq!(status, 200, "{v}");
        found = v["records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["oauth"]["endpoint"] == endpoint)
            .collect();
        found.len() >= n
    });
    assert!(found.len() >= n, "{n} {endpoint} records expected, found {found:?}");
    found
}

// === the code flow ===

#[test]
fn code_flow_through_the_vanity_hostname_hands_out_only_part_a() {
    let env = Env::start(1);
    let before = hits(&env.p);
    let (_, answer) = env.code_flow(INTEGRATION);
    let after = hits(&env.p);
    assert_eq!(
        after.token - before.token,
        1,
        "the code exchange reached the provider once"
    );
    assert!(
        after.total - before.total >= 6,
        "the authorize, login and consent pages went through Tessera to the provider"
    );

    // The integration holds Part A values; everything else in the answer is the provider's.
    let access_a = part_a(&answer, "access_token");
    let refresh_a = part_a(&answer, "refresh_token");
    assert_ne!(access_a, refresh_a);
    assert_eq!(answer["token_type"], "Bearer");
    assert!(answer["expires_in"].as_u64().is_some_and(|e| e > 0), "{answer}");
    assert!(s(&answer, "scope").split(' ').any(|x| x == "api"), "{answer}");
    let id_token = s(&answer, "id_token");
    assert_eq!(id_token.split('.').count(), 3, "the ID token passes through untouched");

    // Behind each Part A is a real, live token of the provider.
    let real_access = env.real("acme", access_a);
    let real_refresh = env.real("acme", refresh_a);
    let info = introspect(&env.p, &real_access);
    assert_eq!(
        (&info["active"], &info["client_id"]),
        (&Value::Bool(true), &Value::from("integration"))
    );
    assert_eq!(info["token_type"], "Bearer");
    assert!(is_active(&env.p, &real_refresh));
    assert!(!is_active(&env.p, access_a), "a Part A is nothing to the provider");

    // The API through Tessera with the access Part A: the provider's introspection says the
    // token it received is live (Tessera sent the real one).
    let introspections = hits(&env.p).introspection;
    let (status, body) = env.api(0, access_a);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], "integration");
    assert_eq!(body["sub"], USER);
    assert_eq!(body["headers"]["host"], env.p.api.trim_start_matches("http://"));
    assert_eq!(
        hits(&env.p).introspection - introspections,
        1,
        "checked by introspection"
    );
    // The refresh Part A is no API credential (`wrong_kind`), and a real token is no Part A.
    let (status, refused) = env.api(0, refresh_a);
    assert_eq!(status, 401, "{refused}");
    assert_eq!(env.api(0, &real_access).0, 401);
    // On the OAuth hostname no Part A is required, but one sent anyway is swapped: the
    // provider's userinfo endpoint answers for the real token behind the access Part A.
    let userinfo_url = format!("{}/me", env.origin(0, OAUTH_HOST));
    let (status, userinfo) = bearer_get(&env.client(0), &userinfo_url, Some(access_a));
    assert_eq!((status, &userinfo["sub"]), (200, &Value::from(USER)), "{userinfo}");
    assert_eq!(bearer_get(&env.client(0), &userinfo_url, Some(refresh_a)).0, 401);

    // No real token in anything the integration received.
    for text in [
        answer.to_string(),
        body.to_string(),
        refused.to_string(),
        userinfo.to_string(),
    ] {
        for real in [&real_access, &real_refresh] {
            assert!(
                !text.contains(real.as_str()),
                "a real token reached the integration: {text}"
            );
        }
    }
    // The ID token's claims carry no token either (at_hash is a hash).
    for part in id_token.split('.').take(2) {
        use base64::Engine as _;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_default();
        let claims = String::from_utf8_lossy(&claims);
        assert!(!claims.contains(&real_access) && !claims.contains(&real_refresh));
    }

    // Token list: one access and one refresh record of one grant; the grant is listed.
    let access_entry = entry_of(env.t(), "acme", access_a);
    assert_eq!(access_entry["kind"], "access", "{access_entry}");
    assert_eq!(access_entry["status"], "active", "{access_entry}");
    let grant_id = s(&access_entry, "grant_id").to_string();
    let refresh_entry = entry_of(env.t(), "acme", refresh_a);
    assert_eq!(refresh_entry["kind"], "refresh");
    assert_eq!(refresh_entry["grant_id"], grant_id.as_str());
    assert!(
        !token_list(env.t(), "acme").iter().any(|t| t["id"] == grant_id.as_str()),
        "a grant record is not a token"
    );
    let (status, grants) = env.t().admin_call("GET", "/v1/tenants/acme/grants", None);
    assert_eq!(status, 200, "{grants}");
    let g = &grants["grants"][0];
    assert_eq!(g["grant_id"], grant_id.as_str());
    assert_eq!(g["grant_type"], "authorization_code");
    assert_eq!(g["client_id"], "integration");
    assert_eq!(g["status"], "active");
    assert_eq!(g["live_records"], 2);
    let (status, shown) = env
        .t()
        .admin_call("GET", &format!("/v1/tenants/acme/grants/{grant_id}"), None);
    assert_eq!(status, 200, "{shown}");
    let kinds: Vec<&str> = shown["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "active", "{r}");
            r["kind"].as_str().unwrap()
        })
        .collect();
    assert_eq!(kinds.len(), 2, "{shown}");
    assert!(kinds.contains(&"access") && kinds.contains(&"refresh"), "{shown}");
    // The other tenant sees nothing of it.
    let (_, other) = env.t().admin_call("GET", "/v1/tenants/globex/grants", None);
    assert_eq!(other["grants"], Value::Array(vec![]), "{other}");

    // A minted token lists as such, without a grant.
    let (minted_id, _) = env.t().mint("acme", "an-upstream-token-minted-by-hand");
    let minted = token_list(env.t(), "acme")
        .into_iter()
        .find(|t| t["id"] == minted_id.as_str())
        .unwrap();
    assert_eq!(
        (&minted["kind"], &minted["grant_id"]),
        (&Value::from("minted"), &Value::Null)
    );

    // The refresh Part A on the API was refused as `wrong_kind`.
    let refresh_id = id_of(refresh_a);
    let mut record = Value::Null;
    eventually(Duration::from_secs(5), || {
        let path = format!("/v1/tenants/acme/sessions?token_id={refresh_id}");
        let (_, v) = env.t().admin_call("GET", &path, None);
        record = v["records"]
            .as_array()
            .and_then(|r| {
                r.iter()
                    .find(|r| r["host"].as_str().is_some_and(|h| h.starts_with(API_HOST)))
            })
            .cloned()
            .unwrap_or(Value::Null);
        !record.is_null()
    });
    assert_eq!(
        (&record["status"], &record["verify"]),
        (&Value::from(401), &Value::from("wrong_kind")),
        "{record}"
    );

    assert_eq!(env.metric("authorization_code", "ok"), 1.0);
}

#[test]
fn refresh_with_rotation_issues_a_new_pair_and_refuses_the_rotated_out_part_a() {
    let env = Env::start(1);
    let (_, first) = env.code_flow(INTEGRATION);
    let old_refresh_a = part_a(&first, "refresh_token");
    let old_access_a = part_a(&first, "access_token");

    let before = hits(&env.p);
    let (status, second) = env.refresh(0, OAUTH_HOST, INTEGRATION, old_refresh_a);
    assert_eq!(status, 200, "{second}");
    assert_eq!(hits(&env.p).token - before.token, 1);
    let new_refresh_a = part_a(&second, "refresh_token");
    let new_access_a = part_a(&second, "access_token");
    assert_ne!(
        new_refresh_a, old_refresh_a,
        "the provider rotated: a new refresh Part A"
    );
    assert_ne!(new_access_a, old_access_a);
    assert!(second["expires_in"].as_u64().is_some(), "{second}");
    let new_real_refresh = env.real("acme", new_refresh_a);
    let new_real_access = env.real("acme", new_access_a);
    let text = second.to_string();
    assert!(!text.contains(&new_real_refresh) && !text.contains(&new_real_access));
    let (status, body) = env.api(0, new_access_a);
    assert_eq!((status, &body["active"]), (200, &Value::Bool(true)), "{body}");

    // The rotated-out refresh Part A: refused by Tessera, the provider never sees it (it would
    // revoke the whole grant on reuse).
    let before = hits(&env.p);
    let refused = env.refresh(0, OAUTH_HOST, INTEGRATION, old_refresh_a);
    assert_oauth_error(&refused, 400, "invalid_grant");
    assert_eq!(hits(&env.p).token, before.token, "the reuse never reached the provider");
    assert!(is_active(&env.p, &new_real_refresh), "so the grant lives on upstream");
    assert!(is_active(&env.p, &new_real_access));
    let old = entry_of(env.t(), "acme", old_refresh_a);
    assert_eq!(old["status"], "revoked", "rotated-out record tombstoned: {old}");
    assert_eq!(old["kind"], "refresh");

    // The new one keeps working, in the same grant.
    let (status, third) = env.refresh(0, OAUTH_HOST, INTEGRATION, new_refresh_a);
    assert_eq!(status, 200, "{third}");
    assert_eq!(
        entry_of(env.t(), "acme", part_a(&third, "access_token"))["grant_id"],
        entry_of(env.t(), "acme", old_access_a)["grant_id"]
    );
    let (_, grants) = env.t().admin_call("GET", "/v1/tenants/acme/grants", None);
    assert_eq!(grants["grants"].as_array().unwrap().len(), 1, "{grants}");
    assert_eq!(grants["grants"][0]["refreshes"], 2);

    assert_eq!(env.metric("refresh_token", "ok"), 2.0);
    assert_eq!(env.metric("refresh_token", "invalid_grant"), 1.0);
}

#[test]
fn refresh_without_rotation_keeps_the_same_part_a() {
    let env = Env::start(1);
    let (_, first) = env.code_flow(INTEGRATION_STATIC);
    let refresh_a = part_a(&first, "refresh_token").to_string();
    let real_refresh = env.real("acme", &refresh_a);
    let mut accesses = vec![part_a(&first, "access_token").to_string()];
    for _ in 0..2 {
        let (status, next) = env.refresh(0, OAUTH_HOST, INTEGRATION_STATIC, &refresh_a);
        assert_eq!(status, 200, "{next}");
        assert_eq!(
            s(&next, "refresh_token"),
            refresh_a,
            "the same refresh Part A stays valid"
        );
        accesses.push(part_a(&next, "access_token").to_string());
    }
    assert_ne!(accesses[1], accesses[2], "a new access Part A each time");
    for a in &accesses[1..] {
        let (status, body) = env.api(0, a);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["client_id"], "integration-static");
    }
    assert!(is_active(&env.p, &real_refresh));
    let tokens = token_list(env.t(), "acme");
    let refresh_records: Vec<_> = tokens.iter().filter(|t| t["kind"] == "refresh").collect();
    assert_eq!(
        refresh_records.len(),
        1,
        "one refresh record, never re-minted: {tokens:?}"
    );
    assert_eq!(refresh_records[0]["status"], "active");
    assert_eq!(tokens.iter().filter(|t| t["kind"] == "access").count(), 3);
    assert_eq!(env.metric("refresh_token", "ok"), 2.0);
}

// === revocation ===

#[test]
fn grant_revoke_is_refused_by_three_instances_sharing_redis_and_the_cli_drives_it() {
    let env = Env::start(3);
    let (_, answer) = env.code_flow(INTEGRATION_STATIC);
    let access_a = part_a(&answer, "access_token");
    let refresh_a = part_a(&answer, "refresh_token");
    // Every instance serves the grant (and caches its records).
    for i in 0..3 {
        assert_eq!(env.api(i, access_a).0, 200, "instance {i}");
    }
    let (status, refreshed) = env.refresh(1, OAUTH_HOST, INTEGRATION_STATIC, refresh_a);
    assert_eq!(status, 200, "refresh on another instance: {refreshed}");
    let access2_a = part_a(&refreshed, "access_token");
    for i in 0..3 {
        assert_eq!(env.api(i, access2_a).0, 200, "instance {i}");
    }

    // The CLI lists and shows it.
    let (ok, list) = env.cli(&["grant", "list", "--tenant", "acme"]);
    assert!(ok, "tessera grant list: {list}");
    let list: Value = serde_json::from_str(&list).unwrap();
    let grant_id = s(&list["grants"][0], "grant_id").to_string();
    assert_eq!(list["grants"][0]["refreshes"], 1, "{list}");
    let (ok, shown) = env.cli(&["grant", "show", "--tenant", "acme", "--id", &grant_id]);
    assert!(ok, "tessera grant show: {shown}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    let ids: Vec<&str> = shown["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    for a in [access_a, refresh_a, access2_a] {
        assert!(ids.contains(&id_of(a).as_str()), "{shown}");
    }
    assert!(
        shown["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["last_used_at"].is_string()),
        "last use from the session log: {shown}"
    );

    // Revoked through the admin API of instance 0.
    let (status, v) = env
        .t()
        .admin_call("DELETE", &format!("/v1/tenants/acme/grants/{grant_id}"), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["records_revoked"], 3, "{v}");
    let before = hits(&env.p);
    for i in 0..3 {
        let refused = eventually(Duration::from_secs(2), || {
            env.api(i, access_a).0 == 401 && env.api(i, access2_a).0 == 401
        });
        assert!(
            refused.is_some(),
            "instance {i} still accepts the grant's access Part A"
        );
        assert_oauth_error(
            &env.refresh(i, OAUTH_HOST, INTEGRATION_STATIC, refresh_a),
            400,
            "invalid_grant",
        );
    }
    assert_eq!(
        hits(&env.p).token,
        before.token,
        "no refused refresh reached the provider"
    );

    // The CLI sees it revoked, and a second revoke is an error.
    let (ok, shown) = env.cli(&["grant", "show", "--tenant", "acme", "--id", &grant_id]);
    assert!(ok);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["status"], "revoked", "{shown}");
    assert_eq!(shown["live_records"], 0, "{shown}");
    assert!(
        shown["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "revoked"),
        "{shown}"
    );
    let (ok, _) = env.cli(&["grant", "revoke", "--tenant", "acme", "--id", &grant_id]);
    assert!(!ok, "revoking a revoked grant fails");
}

#[test]
fn cli_grant_revoke_ends_a_grant() {
    let env = Env::start(1);
    let (_, answer) = env.code_flow(INTEGRATION);
    let access_a = part_a(&answer, "access_token");
    let refresh_a = part_a(&answer, "refresh_token");
    let grant_id = s(&entry_of(env.t(), "acme", access_a), "grant_id").to_string();
    let (ok, out) = env.cli(&["grant", "revoke", "--tenant", "acme", "--id", &grant_id]);
    assert!(ok, "tessera grant revoke: {out}");
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&out["revoked"], &out["records_revoked"]),
        (&Value::Bool(true), &Value::from(2))
    );
    assert_eq!(env.api(0, access_a).0, 401);
    assert_oauth_error(
        &env.refresh(0, OAUTH_HOST, INTEGRATION, refresh_a),
        400,
        "invalid_grant",
    );
    let (ok, _) = env.cli(&["grant", "show", "--tenant", "acme", "--id", &"0".repeat(32)]);
    assert!(!ok, "an unknown grant is an error");
}

#[test]
fn rfc7009_revocation_through_tessera_revokes_upstream_and_locally() {
    let env = Env::start(1);

    // An access Part A: the provider gets the real token (now inactive), Tessera refuses it.
    let (_, answer) = env.code_flow(INTEGRATION_STATIC);
    let access_a = part_a(&answer, "access_token");
    let refresh_a = part_a(&answer, "refresh_token");
    let real_access = env.real("acme", access_a);
    assert_eq!(env.api(0, access_a).0, 200);
    let before = hits(&env.p);
    let (status, body) = env.revoke(access_a, INTEGRATION_STATIC);
    assert_eq!(status, 200, "{body}");
    assert_eq!(hits(&env.p).revocation - before.revocation, 1);
    assert!(!is_active(&env.p, &real_access), "introspection: inactive");
    assert_eq!(env.api(0, access_a).0, 401);
    let entry = |a: &str| entry_of(env.t(), "acme", a);
    assert_eq!(entry(access_a)["status"], "revoked");
    // Tessera revokes only that record; oidc-provider also revokes the refresh tokens of the
    // grant when one of its access tokens is revoked, so the next refresh is the provider's
    // own invalid_grant, passed through.
    assert_eq!(entry(refresh_a)["status"], "active");
    let before = hits(&env.p);
    assert_oauth_error(
        &env.refresh(0, OAUTH_HOST, INTEGRATION_STATIC, refresh_a),
        400,
        "invalid_grant",
    );
    assert_eq!(
        hits(&env.p).token - before.token,
        1,
        "this one was the provider's answer"
    );

    // A refresh Part A: the provider ends the grant, Tessera every record of it.
    let (_, answer) = env.code_flow(INTEGRATION_STATIC);
    let access_a = part_a(&answer, "access_token");
    let refresh_a = part_a(&answer, "refresh_token");
    let real_access = env.real("acme", access_a);
    let real_refresh = env.real("acme", refresh_a);
    let before = hits(&env.p);
    let (status, _) = env.revoke(refresh_a, INTEGRATION_STATIC);
    assert_eq!(status, 200);
    assert_eq!(hits(&env.p).revocation - before.revocation, 1);
    assert!(!is_active(&env.p, &real_refresh));
    assert!(!is_active(&env.p, &real_access));
    assert_eq!(env.api(0, access_a).0, 401, "the grant's other records go too");
    let before = hits(&env.p);
    assert_oauth_error(
        &env.refresh(0, OAUTH_HOST, INTEGRATION_STATIC, refresh_a),
        400,
        "invalid_grant",
    );
    // Revoking again, or something that is no Part A: 200 (RFC 7009 §2.2), no upstream call.
    assert_eq!(env.revoke(refresh_a, INTEGRATION_STATIC).0, 200);
    assert_eq!(env.revoke("not-a-token", INTEGRATION_STATIC).0, 200);
    let after = hits(&env.p);
    assert_eq!((after.token, after.revocation), (before.token, before.revocation));
    let (_, g) = env.t().admin_call("GET", "/v1/tenants/acme/grants", None);
    let mut statuses: Vec<&str> = g["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["status"].as_str().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["active", "revoked"], "{g}");
    assert_eq!(
        env.t()
            .metric(METRIC, &[("tenant", "acme"), ("grant_type", "revocation")]),
        4.0
    );
}

#[test]
fn a_real_refresh_token_sent_to_tessera_never_reaches_the_provider() {
    let env = Env::start(1);
    let (_, answer) = env.code_flow(INTEGRATION_STATIC);
    let real_refresh = env.real("acme", part_a(&answer, "refresh_token"));
    let real_access = env.real("acme", part_a(&answer, "access_token"));

    let before = hits(&env.p);
    // A leaked real refresh token, at the token endpoint: invalid_grant from Tessera itself.
    let refused = env.refresh(0, OAUTH_HOST, INTEGRATION_STATIC, &real_refresh);
    assert_oauth_error(&refused, 400, "invalid_grant");
    assert!(!refused.1.to_string().contains(&real_refresh));
    // Garbage, a forged Part A, a missing field: same, or invalid_request.
    let forged = tessera::token::forge_part_a("acme", PartA::parse(part_a(&answer, "refresh_token")).unwrap().id);
    assert_oauth_error(
        &env.refresh(0, OAUTH_HOST, INTEGRATION_STATIC, &forged),
        400,
        "invalid_grant",
    );
    assert_oauth_error(
        &env.refresh(0, OAUTH_HOST, INTEGRATION_STATIC, "garbage"),
        400,
        "invalid_grant",
    );
    assert_oauth_error(
        &env.token(
            0,
            OAUTH_HOST,
            &[("grant_type", "refresh_token")],
            INTEGRATION_STATIC.basic(),
        ),
        400,
        "invalid_request",
    );
    // The access Part A, or a minted one, is no refresh token.
    let (_, minted) = env.t().mint("acme", "a-hand-minted-upstream-token");
    for not_refresh in [part_a(&answer, "access_token"), minted.as_str()] {
        assert_oauth_error(
            &env.refresh(0, OAUTH_HOST, INTEGRATION_STATIC, not_refresh),
            400,
            "invalid_grant",
        );
    }
    // At the revocation endpoint it is no Part A: 200 and nothing forwarded.
    assert_eq!(env.revoke(&real_refresh, INTEGRATION_STATIC).0, 200);
    // On the API hostname a real access token is no credential.
    assert_eq!(env.api(0, &real_access).0, 401);
    let after = hits(&env.p);
    assert_eq!(
        (after.token, after.revocation),
        (before.token, before.revocation),
        "nothing reached the provider's token or revocation endpoint"
    );
    assert!(is_active(&env.p, &real_refresh), "the grant is untouched upstream");
    assert_eq!(env.metric("refresh_token", "invalid_grant"), 5.0);
}

#[test]
fn store_down_at_issuance_answers_503_and_drops_the_tokens() {
    let mut env = Env::start(1);
    let code = authorize(
        &env.browser(0),
        &env.origin(0, OAUTH_HOST),
        INTEGRATION.id,
        CALLBACK,
        SCOPE,
    );
    env.redis.stop();
    let before = hits(&env.p);
    let url = format!("{}/token", env.origin(0, OAUTH_HOST));
    let resp = env
        .client(0)
        .post(&url)
        .form(&code.grant_form())
        .basic_auth(INTEGRATION.id, Some(INTEGRATION.secret))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().unwrap();
    assert_eq!(hits(&env.p).token - before.token, 1, "the provider issued tokens");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["error", "error_description"], "only the error: {body}");
    assert_eq!(env.metric("authorization_code", "store_unavailable"), 1.0);
    // A refresh needs the store too: 503, not a guess.
    let (status, v) = env.refresh(
        0,
        OAUTH_HOST,
        INTEGRATION,
        &tessera::token::forge_part_a("acme", tessera::token::TokenId([7; 16])),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{v}"
    );
}

// === discovery, other tenants, client credentials ===

#[test]
fn discovery_points_clients_at_the_vanity_hostname() {
    let env = Env::with_provider(OidcProvider::start_fixed_origin(), 1);
    let vanity = env.origin(0, OAUTH_HOST);
    let c = env.client(0);
    let doc: Value = c
        .get(format!("{vanity}/.well-known/openid-configuration"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        doc["issuer"],
        env.p.issuer.as_str(),
        "issuer untouched (it is the ID token's iss)"
    );
    assert_eq!(doc["token_endpoint"], format!("{vanity}/token"));
    assert_eq!(doc["revocation_endpoint"], format!("{vanity}/token/revocation"));
    assert_eq!(doc["authorization_endpoint"], format!("{vanity}/auth"));
    assert_eq!(doc["jwks_uri"], format!("{vanity}/jwks"));
    assert_eq!(doc["introspection_endpoint"], format!("{vanity}/token/introspection"));
    let text = doc.to_string();
    let upstream_origin = env.p.issuer.as_str();
    assert_eq!(
        text.matches(upstream_origin).count(),
        1,
        "only the issuer names the provider's origin: {text}"
    );
    // The same document straight from the provider names its own origin.
    let direct: Value = Client::new()
        .get(format!("{}/.well-known/openid-configuration", env.p.issuer))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(direct["token_endpoint"], env.p.token_url());
    // RFC 8414's document too.
    let rfc8414: Value = c
        .get(format!("{vanity}/.well-known/oauth-authorization-server"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(rfc8414["issuer"], env.p.issuer.as_str());
    assert_eq!(rfc8414["token_endpoint"], format!("{vanity}/token"));
    // A metadata document the server does not have: its answer, untouched.
    let resp = c
        .get(format!("{vanity}/.well-known/oauth-authorization-server/acme"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);

    // A client configured by discovery goes through Tessera: client credentials at the
    // discovered token endpoint get a Part A.
    let before = hits(&env.p);
    let form = CC_FORM;
    let (status, t) = token_request(&c, s(&doc, "token_endpoint"), &form, None);
    assert_eq!(status, 200, "{t}");
    part_a(&t, "access_token");
    assert_eq!(hits(&env.p).token - before.token, 1);

    // Redirects the provider writes on its own origin are moved to the vanity origin. This
    // provider writes relative redirects and absolute form actions (on its origin: Tessera does
    // not rewrite HTML, so a browser would leave the vanity hostname here), and an absolute
    // redirect after the login form, which is the one to check: the login is posted through
    // Tessera by hand.
    let b = env.browser(0);
    let resp = b
        .get(format!(
            "{vanity}/auth?client_id=integration&response_type=code&scope=openid&redirect_uri={CALLBACK}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 303);
    let interaction = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(interaction.starts_with("/interaction/"), "{interaction}");
    let page = b.get(format!("{vanity}{interaction}")).send().unwrap().text().unwrap();
    let action = format!("action=\"{}{interaction}\"", env.p.issuer);
    assert!(
        page.contains(&action),
        "the login form posts to the provider's own origin: {page}"
    );
    let resp = b
        .post(format!("{vanity}{interaction}"))
        .form(&[("prompt", "login"), ("login", USER), ("password", "x")])
        .send()
        .unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let location = resp.headers()["location"].to_str().unwrap();
    let uid = interaction.trim_start_matches("/interaction/");
    assert_eq!(
        location,
        format!("{vanity}/auth/{uid}"),
        "absolute redirect moved to the vanity origin"
    );
}

#[test]
fn another_tenants_oauth_hostname_refuses_this_tenants_refresh_part_a() {
    let env = Env::start(1);
    let (_, answer) = env.code_flow(INTEGRATION_STATIC);
    let refresh_a = part_a(&answer, "refresh_token");
    let access_a = part_a(&answer, "access_token");
    let before = hits(&env.p);
    assert_oauth_error(
        &env.refresh(0, GLOBEX_OAUTH, INTEGRATION_STATIC, refresh_a),
        400,
        "invalid_grant",
    );
    assert_eq!(
        env.revoke(refresh_a, INTEGRATION_STATIC).0,
        200,
        "sanity: acme's revocation path answers"
    );
    assert_eq!(
        hits(&env.p).token,
        before.token,
        "globex's refusal never reached the provider"
    );
    // Nor does globex's API take acme's access Part A.
    let url = format!("{}/v1/things", env.origin(0, GLOBEX_API));
    assert_eq!(bearer_get(&env.client(0), &url, Some(access_a)).0, 401);
    assert_eq!(
        env.t().metric(
            METRIC,
            &[
                ("tenant", "globex"),
                ("grant_type", "refresh_token"),
                ("result", "invalid_grant")
            ]
        ),
        1.0
    );
}

#[test]
fn another_tenants_hostname_leaves_the_grant_alone() {
    let env = Env::start(1);
    let (_, answer) = env.code_flow(INTEGRATION_STATIC);
    let refresh_a = part_a(&answer, "refresh_token");
    assert_oauth_error(
        &env.refresh(0, GLOBEX_OAUTH, INTEGRATION_STATIC, refresh_a),
        400,
        "invalid_grant",
    );
    let (status, next) = env.refresh(0, OAUTH_HOST, INTEGRATION_STATIC, refresh_a);
    assert_eq!(status, 200, "acme's own hostname still takes it: {next}");
    assert_eq!(s(&next, "refresh_token"), refresh_a);
}

#[test]
fn client_credentials_through_tessera() {
    let env = Env::start(1);
    let form = CC_FORM;
    let resp = env
        .client(0)
        .post(format!("{}/token", env.origin(0, OAUTH_HOST)))
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let t: Value = resp.json().unwrap();
    let access_a = part_a(&t, "access_token");
    assert!(t.get("refresh_token").is_none(), "{t}");
    assert!(t["expires_in"].as_u64().is_some_and(|e| e > 0 && e <= 600), "{t}");
    let real = env.real("acme", access_a);
    assert!(!t.to_string().contains(&real));
    assert!(is_active(&env.p, &real));
    let (status, body) = env.api(0, access_a);
    assert_eq!((status, &body["client_id"]), (200, &Value::from("service")), "{body}");

    // The access record expires with the token.
    let entry = entry_of(env.t(), "acme", access_a);
    assert_eq!(entry["kind"], "access");
    assert!(
        entry["expires_at"].is_string(),
        "expires_in sets the record's expiry: {entry}"
    );
    let (_, g) = env.t().admin_call("GET", "/v1/tenants/acme/grants", None);
    assert_eq!(g["grants"][0]["grant_type"], "client_credentials", "{g}");
    assert_eq!(g["grants"][0]["client_id"], "service", "{g}");

    // The provider's own error answers pass through untouched.
    let bad = [form[0], form[1], form[2], ("client_secret", "wrong")];
    let direct = token_request(&Client::new(), &env.p.token_url(), &bad, None);
    let through = env.token(0, OAUTH_HOST, &bad, None);
    assert_oauth_error(&through, 401, "invalid_client");
    assert_eq!(through.1, direct.1);
    // Not a form: refused by Tessera.
    let resp = env
        .client(0)
        .post(format!("{}/token", env.origin(0, OAUTH_HOST)))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(env.metric("client_credentials", "ok"), 1.0);
    assert_eq!(env.metric("client_credentials", "upstream_error"), 1.0);

    // Deleting the record in Redis still revokes it.
    env.redis
        .cli(&["DEL", &format!("tessera:frag:acme:{}", id_of(access_a))])
        .unwrap();
    let refused = eventually(Duration::from_secs(2), || env.api(0, access_a).0 == 401);
    assert!(refused.is_some(), "a DEL'd access record still works");
}

// === audit and secrets ===

#[test]
fn oauth_flow_is_audited_and_no_secret_reaches_logs_sessions_or_metrics() {
    // The most verbose logging (Pingora's own included), as in tests/tokens.rs
    // `secrets_never_logged`.
    let mut env = Env::with_env(OidcProvider::start(), 1, "", &[("RUST_LOG", "trace")]);
    let (code, first) = env.code_flow(INTEGRATION);
    let access_a = part_a(&first, "access_token").to_string();
    let refresh_a = part_a(&first, "refresh_token").to_string();
    let real_access = env.real("acme", &access_a);
    let real_refresh = env.real("acme", &refresh_a);
    assert_eq!(env.api(0, &access_a).0, 200);
    let (status, second) = env.refresh(0, OAUTH_HOST, INTEGRATION, &refresh_a);
    assert_eq!(status, 200, "{second}");
    let access2_a = part_a(&second, "access_token").to_string();
    let refresh2_a = part_a(&second, "refresh_token").to_string();
    let real_access2 = env.real("acme", &access2_a);
    let real_refresh2 = env.real("acme", &refresh2_a);
    assert_oauth_error(
        &env.refresh(0, OAUTH_HOST, INTEGRATION, &refresh_a),
        400,
        "invalid_grant",
    );
    let (status, cc) = env.token(0, OAUTH_HOST, &CC_FORM, None);
    assert_eq!(status, 200, "{cc}");
    let cc_a = part_a(&cc, "access_token").to_string();
    let real_cc = env.real("acme", &cc_a);
    // The same over HTTP/2, and a userinfo call with the access Part A on the OAuth hostname.
    let h2 = client_for(&env.setup.ca_pem, env.t().ports.https, &ALL_HOSTS, true);
    let (status, cc2) = token_request(&h2, &format!("{}/token", env.origin(0, OAUTH_HOST)), &CC_FORM, None);
    assert_eq!(status, 200, "{cc2}");
    let cc2_a = part_a(&cc2, "access_token").to_string();
    let real_cc2 = env.real("acme", &cc2_a);
    let userinfo = format!("{}/me", env.origin(0, OAUTH_HOST));
    assert_eq!(bearer_get(&h2, &userinfo, Some(&access2_a)).0, 200);
    assert_eq!(env.revoke(&access2_a, INTEGRATION).0, 200);

    // The session records of the token and revocation calls carry the audit fields.
    let tokens = oauth_records(env.t(), "acme", "token", 4);
    let find = |grant_type: &str, outcome: &str| {
        tokens
            .iter()
            .find(|r| r["oauth"]["grant_type"] == grant_type && r["oauth"]["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {grant_type}/{outcome} record in {tokens:?}"))
    };
    let issued = find("authorization_code", "ok");
    let grant_id = s(&issued["oauth"], "grant_id").to_string();
    let mut ids: Vec<&str> = issued["oauth"]["issued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = [id_of(&access_a), id_of(&refresh_a)];
    want.sort_unstable();
    assert_eq!(ids, want, "{issued}");
    assert_eq!(issued["status"], 200);
    assert_eq!(issued["upstream_status"], 200);
    assert_eq!(issued["method"], "POST");
    assert_eq!(issued["path"], "/token");
    let refreshed = find("refresh_token", "ok");
    assert_eq!(refreshed["oauth"]["used"], id_of(&refresh_a).as_str());
    assert_eq!(refreshed["oauth"]["grant_id"], grant_id.as_str());
    assert_eq!(refreshed["token_id"], id_of(&refresh_a).as_str());
    assert_eq!(refreshed["oauth"]["issued"].as_array().unwrap().len(), 2);
    let reused = find("refresh_token", "invalid_grant");
    assert_eq!(reused["status"], 400);
    assert_eq!(
        reused["oauth"]["used"],
        id_of(&refresh_a).as_str(),
        "the replayed id: {reused}"
    );
    assert_eq!(reused["token_id"], id_of(&refresh_a).as_str());
    assert_eq!(
        reused["oauth"]["grant_id"],
        grant_id.as_str(),
        "the grant to revoke: {reused}"
    );
    assert!(reused["upstream_status"].is_null(), "never sent upstream: {reused}");
    find("client_credentials", "ok");
    let revoked = &oauth_records(env.t(), "acme", "revocation", 1)[0];
    assert_eq!(revoked["oauth"]["used"], id_of(&access2_a).as_str());
    assert_eq!(revoked["oauth"]["outcome"], "revoked");
    assert_eq!(revoked["oauth"]["grant_id"], grant_id.as_str());

    // The metric moved for each.
    for (grant_type, result) in [
        ("authorization_code", "ok"),
        ("refresh_token", "ok"),
        ("refresh_token", "invalid_grant"),
        ("revocation", "revoked"),
    ] {
        assert_eq!(env.metric(grant_type, result), 1.0, "{grant_type}/{result}");
    }
    assert_eq!(env.metric("client_credentials", "ok"), 2.0);

    // No code, verifier, client secret, real token or Part A anywhere Tessera writes.
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", INTEGRATION.id, INTEGRATION.secret));
    let secrets: Vec<&str> = vec![
        &code.code,
        &code.verifier,
        INTEGRATION.secret,
        SERVICE.secret,
        &basic,
        &real_access,
        &real_refresh,
        &real_access2,
        &real_refresh2,
        &real_cc,
        &real_cc2,
        &cc2_a,
        &access_a,
        &refresh_a,
        &access2_a,
        &refresh2_a,
        &cc_a,
    ];
    let t = env.t();
    let (_, api_records) = t.admin_call("GET", "/v1/tenants/acme/sessions?limit=1000", None);
    let metrics = t.metrics();
    assert!(metrics.contains(METRIC));
    let stream = env
        .redis
        .cli(&["XRANGE", "tessera:log:acme", "-", "+"])
        .unwrap_or_default();
    assert!(stream.contains(&grant_id), "session records in the Redis stream");
    for (place, text) in [
        ("the admin sessions API", api_records.to_string()),
        ("/metrics", metrics),
        ("the Redis session stream", stream),
    ] {
        for secret in &secrets {
            assert!(!text.contains(secret), "secret material in {place}");
        }
    }
    // Stop the instance (flushes its logs), then search every byte it wrote.
    let t = &mut env.instances[0];
    assert!(t.terminate(), "tessera did not stop cleanly");
    let log = t.log_text();
    assert!(log.contains("oauth grant="), "the log says what happened (by id)");
    assert!(
        log.contains("oauth refresh refused"),
        "debug logging was on (the refused refresh, by token id)"
    );
    assert_not_in_files(&[t.log.as_path(), t.sessions.as_path()], &secrets);
}

#[test]
fn one_keep_alive_connection_carries_a_whole_integration_session_over_h1_and_h2() {
    let env = Env::start(1);
    let (_, answer) = env.code_flow(INTEGRATION_STATIC);
    let refresh_a = part_a(&answer, "refresh_token").to_string();
    let port = env.t().ports.https;
    for http2 in [false, true] {
        // One client (one pooled connection) for every call, as an integration would.
        let c = client_for(&env.setup.ca_pem, port, &ALL_HOSTS, http2);
        let token_url = format!("{}/token", env.origin(0, OAUTH_HOST));
        let api_url = format!("{}/v1/things", env.origin(0, API_HOST));
        for round in 0..3 {
            let (status, t) = token_request(
                &c,
                &token_url,
                &[("grant_type", "refresh_token"), ("refresh_token", &refresh_a)],
                INTEGRATION_STATIC.basic(),
            );
            assert_eq!(status, 200, "h2={http2} round {round}: {t}");
            assert_eq!(s(&t, "refresh_token"), refresh_a);
            let access_a = part_a(&t, "access_token");
            // A refused token request whose body Tessera never reads (not a form).
            let resp = c
                .post(&token_url)
                .header("content-type", "application/json")
                .body(r#"{"grant_type":"refresh_token","padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#)
                .send()
                .unwrap();
            assert_eq!(resp.status(), 400, "h2={http2}");
            let _ = resp.text();
            // A form over the 64 KiB cap, refused before it is all read.
            let big = "x".repeat(70 * 1024);
            assert_oauth_error(
                &token_request(
                    &c,
                    &token_url,
                    &[("grant_type", "refresh_token"), ("refresh_token", &big)],
                    INTEGRATION_STATIC.basic(),
                ),
                400,
                "invalid_request",
            );
            // A form of many distinct names (the repeated-name check must stay cheap), refused
            // before the upstream is called.
            let names: Vec<String> = (0..5000).map(|i| format!("p{i}")).collect();
            let mut many: Vec<(&str, &str)> = vec![("grant_type", "refresh_token"), ("refresh_token", &refresh_a)];
            many.extend(names.iter().map(|n| (n.as_str(), "")));
            let before = hits(&env.p);
            let (status, t) = token_request(&c, &token_url, &many, INTEGRATION_STATIC.basic());
            assert_oauth_error(&(status, t.clone()), 400, "invalid_request");
            assert!(s(&t, "error_description").contains("parameters"), "{t}");
            assert_eq!(hits(&env.p).token, before.token, "no upstream call");
            assert_oauth_error(
                &token_request(
                    &c,
                    &token_url,
                    &[("grant_type", "refresh_token"), ("refresh_token", "garbage")],
                    INTEGRATION_STATIC.basic(),
                ),
                400,
                "invalid_grant",
            );
            let (status, body) = bearer_get(&c, &api_url, Some(access_a));
            assert_eq!(status, 200, "h2={http2} round {round}: {body}");
        }
    }
}

#[test]
fn refresh_records_end_at_refresh_token_ttl() {
    let env = Env::with_config(OidcProvider::start(), 1, "      refresh_token_ttl: 1s\n");
    let (_, answer) = env.code_flow(INTEGRATION_STATIC);
    let refresh_a = part_a(&answer, "refresh_token");
    let real_refresh = env.real("acme", refresh_a);
    assert!(
        entry_of(env.t(), "acme", refresh_a)["expires_at"].is_string(),
        "refresh_token_ttl caps the refresh record"
    );
    // Past refresh_token_ttl Tessera refuses the refresh Part A (the provider would not).
    std::thread::sleep(Duration::from_millis(2100));
    let before = hits(&env.p);
    assert_oauth_error(
        &env.refresh(0, OAUTH_HOST, INTEGRATION_STATIC, refresh_a),
        400,
        "invalid_grant",
    );
    assert_eq!(hits(&env.p).token, before.token);
    assert!(is_active(&env.p, &real_refresh));
    assert_eq!(entry_of(env.t(), "acme", refresh_a)["status"], "expired");
}

#[test]
fn a_grant_revoke_racing_refreshes_leaves_no_live_record() {
    let env = Env::start(2);
    let (_, answer) = env.code_flow(INTEGRATION_STATIC);
    let refresh_a = part_a(&answer, "refresh_token");
    let grant_id = s(&entry_of(env.t(), "acme", refresh_a), "grant_id").to_string();
    let mut issued = vec![part_a(&answer, "access_token").to_string()];
    std::thread::scope(|scope| {
        // Two integrations' workers refreshing the same grant on two instances until refused.
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let env = &env;
                scope.spawn(move || {
                    let mut mine = vec![];
                    for _ in 0..200 {
                        let (status, t) = env.refresh(i, OAUTH_HOST, INTEGRATION_STATIC, refresh_a);
                        if status != 200 {
                            assert_oauth_error(&(status, t), 400, "invalid_grant");
                            return mine;
                        }
                        mine.push(part_a(&t, "access_token").to_string());
                    }
                    panic!("instance {i}: the grant was never refused");
                })
            })
            .collect();
        // Revoke while they run (after a few refreshes went through).
        let going = eventually(Duration::from_secs(10), || {
            let (_, g) = env
                .t()
                .admin_call("GET", &format!("/v1/tenants/acme/grants/{grant_id}"), None);
            g["refreshes"].as_u64().unwrap_or(0) >= 4
        });
        assert!(going.is_some(), "refreshes did not start");
        let (status, v) = env
            .t()
            .admin_call("DELETE", &format!("/v1/tenants/acme/grants/{grant_id}"), None);
        assert_eq!(status, 200, "{v}");
        for w in workers {
            issued.extend(w.join().unwrap());
        }
    });
    assert!(issued.len() > 4);
    // Every access Part A the grant ever issued is refused, on both instances.
    for i in 0..2 {
        for a in &issued {
            let refused = eventually(Duration::from_secs(2), || env.api(i, a).0 == 401);
            assert!(
                refused.is_some(),
                "instance {i}: an access Part A outlived its grant's revoke"
            );
        }
    }
    let live: Vec<Value> = token_list(env.t(), "acme")
        .into_iter()
        .filter(|t| t["status"] == "active")
        .collect();
    assert!(live.is_empty(), "records still active after the grant revoke: {live:?}");
}
