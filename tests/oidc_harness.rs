//! The OAuth test harness against the real provider directly (no Tessera): the authorization
//! code + PKCE flow through its login and consent pages, introspection, refresh with and without
//! rotation, client credentials, RFC 7009 revocation, the introspecting API, the request counters
//! and the forwarded-header modes. The Tessera OAuth tests build on these helpers.

mod common;

use common::oidc::*;
use reqwest::blocking::Client;
use serde_json::Value;

/// The code flow for `client`, then the code exchanged at the provider's token endpoint.
fn tokens(p: &OidcProvider, c: &Client, client: OAuthClient) -> Value {
    let code = authorize(c, &p.issuer, client.id, CALLBACK, SCOPE);
    let (status, body) = token_request(c, &p.token_url(), &code.grant_form(), client.basic());
    assert_eq!(status, 200, "code exchange: {body}");
    body
}

fn refresh(p: &OidcProvider, c: &Client, client: OAuthClient, refresh_token: &str) -> (u16, Value) {
    token_request(
        c,
        &p.token_url(),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
        client.basic(),
    )
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in the answer"))
}

#[test]
fn code_flow_gives_live_tokens_the_api_accepts() {
    let p = OidcProvider::start();
    let c = browser_builder().build().unwrap();
    let before = hits(&p);
    let t = tokens(&p, &c, INTEGRATION);
    let after = hits(&p);
    assert_eq!(after.token - before.token, 1, "one token request");
    assert!(
        after.total - before.total >= 6,
        "auth, interaction pages and forms went through the provider"
    );

    for key in ["access_token", "refresh_token", "id_token"] {
        assert!(!s(&t, key).is_empty(), "{key} issued");
    }
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_u64().is_some_and(|e| e > 0), "expires_in present");
    assert!(
        !s(&t, "access_token").contains('.'),
        "access tokens are opaque (checked by introspection)"
    );

    let info = introspect(&p, s(&t, "access_token"));
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], "integration");
    assert_eq!(info["sub"], USER);
    assert!(s(&info, "scope").split(' ').any(|x| x == "api"), "{info}");
    assert_eq!(hits(&p).introspection - after.introspection, 1);

    // The API: 200 with who the token belongs to and the headers it got (no Authorization).
    let api = Client::new();
    let url = format!("{}/v1/things?x=1", p.api);
    let (status, body) = bearer_get(&api, &url, Some(s(&t, "access_token")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], "integration");
    assert_eq!(body["sub"], USER);
    assert!(body["headers"]["host"].is_string(), "{body}");
    assert!(
        body["headers"].get("authorization").is_none(),
        "the API never echoes the token"
    );
    // No token, a made-up one, or the refresh token (not an access token): 401.
    assert_eq!(
        bearer_get(&api, &url, None),
        (401, serde_json::json!({"active": false}))
    );
    assert_eq!(bearer_get(&api, &url, Some("not-a-token")).0, 401);
    assert_eq!(bearer_get(&api, &url, Some(s(&t, "refresh_token"))).0, 401);
    // Nothing secret reached the provider's own output.
    let log = p.log_text();
    for key in ["access_token", "refresh_token"] {
        assert!(!log.contains(s(&t, key)), "{key} in the provider's stderr");
    }
    assert!(!log.contains(INTEGRATION.secret));
}

#[test]
fn refresh_rotates_for_integration_and_reuse_kills_the_grant() {
    let p = OidcProvider::start();
    let c = browser_builder().build().unwrap();
    let first = tokens(&p, &c, INTEGRATION);
    let before = hits(&p);
    let (status, second) = refresh(&p, &c, INTEGRATION, s(&first, "refresh_token"));
    assert_eq!(status, 200, "{second}");
    assert_eq!(hits(&p).token - before.token, 1);
    assert_ne!(s(&second, "refresh_token"), s(&first, "refresh_token"), "rotated");
    assert_ne!(s(&second, "access_token"), s(&first, "access_token"));
    assert!(second["expires_in"].as_u64().is_some());
    assert!(is_active(&p, s(&second, "access_token")));
    assert!(!is_active(&p, s(&first, "refresh_token")), "old refresh consumed");

    // Presenting the rotated-out refresh token again is reuse: refused, and oidc-provider
    // revokes the whole grant (so Tessera must refuse it before it reaches the provider).
    assert_oauth_error(
        &refresh(&p, &c, INTEGRATION, s(&first, "refresh_token")),
        400,
        "invalid_grant",
    );
    assert!(!is_active(&p, s(&second, "access_token")));
    assert!(!is_active(&p, s(&second, "refresh_token")));
}

#[test]
fn refresh_keeps_the_token_for_integration_static() {
    let p = OidcProvider::start();
    let c = browser_builder().build().unwrap();
    let first = tokens(&p, &c, INTEGRATION_STATIC);
    let rt = s(&first, "refresh_token");
    let mut accesses = vec![s(&first, "access_token").to_string()];
    for _ in 0..2 {
        let (status, next) = refresh(&p, &c, INTEGRATION_STATIC, rt);
        assert_eq!(status, 200, "{next}");
        assert_eq!(
            s(&next, "refresh_token"),
            rt,
            "not rotated: the same refresh token comes back"
        );
        accesses.push(s(&next, "access_token").to_string());
    }
    assert_ne!(accesses[1], accesses[2], "a new access token each time");
    assert!(is_active(&p, &accesses[2]));
    assert!(is_active(&p, rt));
    // Another client cannot use it.
    assert_oauth_error(&refresh(&p, &c, INTEGRATION, rt), 400, "invalid_grant");
}

#[test]
fn client_credentials_and_revocation() {
    let p = OidcProvider::start();
    let c = Client::new();
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "api"),
        ("client_id", SERVICE.id),
        ("client_secret", SERVICE.secret),
    ];
    let (status, t) = token_request(&c, &p.token_url(), &form, None);
    assert_eq!(status, 200, "{t}");
    assert!(
        t["expires_in"].as_u64().is_some() && t.get("refresh_token").is_none(),
        "{t:?}"
    );
    let at = s(&t, "access_token");
    let (status, body) = bearer_get(&c, &p.api, Some(at));
    assert_eq!((status, &body["client_id"]), (200, &Value::from("service")), "{body}");
    assert!(
        body.get("sub").is_none_or(Value::is_null),
        "no user behind client credentials"
    );

    // A wrong secret is the provider's own error, passed to the client.
    let bad = [form[0], form[1], form[2], ("client_secret", "wrong")];
    assert_oauth_error(&token_request(&c, &p.token_url(), &bad, None), 401, "invalid_client");

    // RFC 7009: revoked, then inactive at introspection and refused by the API.
    let before = hits(&p);
    let revoke = [
        ("token", at),
        ("client_id", SERVICE.id),
        ("client_secret", SERVICE.secret),
    ];
    let (status, _) = token_request(&c, &p.revocation_url(), &revoke, None);
    assert_eq!(status, 200);
    assert_eq!(hits(&p).revocation - before.revocation, 1);
    assert!(!is_active(&p, at));
    assert_eq!(bearer_get(&c, &p.api, Some(at)).0, 401);
}

#[test]
fn revoking_a_refresh_token_ends_the_grant() {
    let p = OidcProvider::start();
    let c = browser_builder().build().unwrap();
    let t = tokens(&p, &c, INTEGRATION_STATIC);
    let (status, _) = token_request(
        &c,
        &p.revocation_url(),
        &[("token", s(&t, "refresh_token")), ("token_type_hint", "refresh_token")],
        INTEGRATION_STATIC.basic(),
    );
    assert_eq!(status, 200);
    assert!(!is_active(&p, s(&t, "refresh_token")));
    assert!(!is_active(&p, s(&t, "access_token")), "the grant's access token too");
    assert_oauth_error(
        &refresh(&p, &c, INTEGRATION_STATIC, s(&t, "refresh_token")),
        400,
        "invalid_grant",
    );
}

/// Discovery as seen through a proxy that sends `X-Forwarded-Host`/`-Proto` (as Tessera does).
fn discovery_via_proxy_headers(p: &OidcProvider) -> Value {
    Client::new()
        .get(format!("{}/.well-known/openid-configuration", p.issuer))
        .header("x-forwarded-host", "oauth.acme.test:8443")
        .header("x-forwarded-proto", "https")
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn forwarded_headers_decide_the_urls_the_provider_builds() {
    let p = OidcProvider::start();
    let d = discovery_via_proxy_headers(&p);
    assert_eq!(d["issuer"], Value::from(p.issuer.as_str()), "issuer never changes");
    assert_eq!(d["token_endpoint"], "https://oauth.acme.test:8443/token");
    assert_eq!(
        d["revocation_endpoint"],
        "https://oauth.acme.test:8443/token/revocation"
    );

    let fixed = OidcProvider::start_fixed_origin();
    let d = discovery_via_proxy_headers(&fixed);
    assert_eq!(d["token_endpoint"], Value::from(fixed.token_url()));
    assert_eq!(d["revocation_endpoint"], Value::from(fixed.revocation_url()));
    assert_eq!(
        d["authorization_endpoint"],
        Value::from(format!("{}/auth", fixed.issuer))
    );
    // The flow still works directly against a fixed-origin provider.
    let c = browser_builder().build().unwrap();
    tokens(&fixed, &c, INTEGRATION);
}

#[test]
fn the_provider_stops_when_its_stdin_closes() {
    let mut p = OidcProvider::start();
    p.close_stdin();
    let exited = common::eventually(std::time::Duration::from_secs(10), || {
        p.child.try_wait().ok().flatten().is_some()
    });
    assert!(exited.is_some(), "provider still running after stdin closed");
}
