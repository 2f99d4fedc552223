//! Header authority, tenant confusion and request smuggling: what reaches the upstream is
//! exactly what Tessera decided, whatever a client or a tenant-scoped admin sends.

use serde_json::json;

use crate::common::raw::{header_values, plain_exchange, tls_exchange, Recorder};
use crate::common::*;

const TOKEN: &str = "upstream-secret-token-for-adversarial-tests";

/// Two tenants on one recording upstream: acme (X-Tenant-Id, an extra X-Env header) and
/// globex (X-Amz-Tenant-Id).
fn two_tenants(rec: &Recorder) -> (Setup, String) {
    let mut s = Setup::new(vec![
        TenantSpec::new("acme", &["saas.acme.test"], rec.addr).extra("    headers: { X-Env: prod }"),
        TenantSpec::new("globex", &["saas.globex.test"], rec.addr).extra("    tenant_header: X-Amz-Tenant-Id"),
    ]);
    let acme_admin = s.tenant_admin("acme");
    (s, acme_admin)
}

fn mint_as(t: &Tessera, admin: &str, tenant: &str, header: &str) -> (u16, serde_json::Value) {
    t.admin_call_as(
        admin,
        "POST",
        &format!("/v1/tenants/{tenant}/tokens"),
        Some(json!({"token": TOKEN, "label": "x", "header": header})),
    )
}

/// Finding 1 (High): a mint may not choose a header Tessera sets or strips.
#[test]
fn mint_cannot_take_over_headers_tessera_owns() {
    let rec = Recorder::start();
    let (s, acme_admin) = two_tenants(&rec);
    let t = s.start("a");
    for header in [
        "X-Tenant-Id",
        "x-amz-tenant-id",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Request-Id",
        "X-Env",
        "Proxy-Authorization",
        "Keep-Alive",
        "Expect",
        "Trailer",
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Forwarded",
        "X-Real-IP",
        "Cookie",
    ] {
        let (code, body) = mint_as(&t, &acme_admin, "acme", header);
        assert_eq!(code, 400, "{header}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("cannot carry a credential"),
            "{header}: {body}"
        );
    }
    // A real credential header still works, and Tessera's headers are what arrives.
    let (code, body) = mint_as(&t, &acme_admin, "acme", "X-Api-Key");
    assert_eq!(code, 201, "{body}");
    let part_a = body["part_a"].as_str().unwrap();
    let raw = format!(
        "GET /r HTTP/1.1\r\nHost: saas.acme.test\r\nAuthorization: Bearer {part_a}\r\nX-Tenant-Id: globex\r\nX-Amz-Tenant-Id: globex\r\nX-Env: dev\r\nConnection: close\r\n\r\n"
    );
    let answer = tls_exchange(t.ports.https, "saas.acme.test", &s.ca_pem, raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = rec.texts().pop().expect("upstream saw the request");
    assert_eq!(header_values(&got, "x-tenant-id"), ["acme"], "{got}");
    assert!(header_values(&got, "x-amz-tenant-id").is_empty(), "{got}");
    assert_eq!(header_values(&got, "x-env"), ["prod"], "{got}");
    assert_eq!(header_values(&got, "x-api-key"), [TOKEN], "{got}");
    assert!(header_values(&got, "authorization").is_empty(), "{got}");
}

/// Finding 1, second half: a record stored before a config change made its header name one
/// Tessera owns is refused at request time, and nothing reaches the upstream.
#[test]
fn stored_record_with_a_now_owned_header_is_refused() {
    let rec = Recorder::start();
    let (mut s, _) = two_tenants(&rec);
    let mut t = s.start("a");
    let (code, body) = mint_as(&t, &s.admin_token.clone(), "acme", "X-Api-Key");
    assert_eq!(code, 201, "{body}");
    let part_a = body["part_a"].as_str().unwrap().to_string();
    let c = t.client(&["saas.acme.test"]);
    assert_eq!(t.status_with(&c, "saas.acme.test", &part_a), 200);
    let before = rec.count();
    t.terminate();
    // The operator now declares X-Api-Key as a header Tessera sets for acme.
    s.tenants[0].extra = "    headers: { X-Env: prod, X-Api-Key: fixed }\n".into();
    let t = s.start("a");
    let c = t.client(&["saas.acme.test"]);
    assert_eq!(t.status_with(&c, "saas.acme.test", &part_a), 401);
    assert_eq!(rec.count(), before, "a refused request reached the upstream");
    assert!(t.metric("tessera_token_verifications_total", &[("result", "header_conflict")]) >= 1.0);
}

/// Finding 2: every tenant's tenant header name, `Forwarded` and `X-Real-IP` are stripped
/// from client requests on every route.
#[test]
fn other_tenants_headers_and_forwarding_headers_are_stripped() {
    let rec = Recorder::start();
    let (s, _) = two_tenants(&rec);
    let t = s.start("a");
    let (_, part_a) = t.mint("globex", TOKEN);
    let raw = format!(
        // A second `Authorization` of the client's own must not ride along with the credential.
        "GET /r HTTP/1.1\r\nHost: saas.globex.test\r\nAuthorization: Bearer {part_a}\r\nAuthorization: Basic ZXZpbDpldmls\r\nX-Tenant-Id: acme\r\nForwarded: for=10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\nX-Forwarded-Port: 1\r\nConnection: close\r\n\r\n"
    );
    let answer = tls_exchange(t.ports.https, "saas.globex.test", &s.ca_pem, raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = rec.texts().pop().unwrap();
    assert_eq!(header_values(&got, "x-amz-tenant-id"), ["globex"], "{got}");
    for h in ["x-tenant-id", "forwarded", "x-real-ip", "x-forwarded-port"] {
        assert!(header_values(&got, h).is_empty(), "{h} passed through: {got}");
    }
    assert_eq!(header_values(&got, "authorization"), [format!("Bearer {TOKEN}")]);
}

/// The upstream's HTTP/1 head: the tenant's upstream as `Host`, one credential, the tenant
/// header, and an origin-form target, also for an HTTP/2 client (whose URI carries the
/// vanity authority; Tessera sends the path on, `shape_upstream`). Header names: by default an
/// HTTP/1 client's spelling is not kept (names go out as Pingora writes them, as for every
/// HTTP/2 client); with `upstream.preserve_header_case` it is, and the credential goes under
/// the usual `Authorization` spelling whatever case the client used. The same holds for the
/// upstream's response header names on their way to an HTTP/1 client.
#[test]
fn upstream_head_is_origin_form_with_the_tenants_host() {
    let rec = Recorder::start();
    let (mut s, _) = two_tenants(&rec);
    let upstream_host = rec.addr.to_string();
    let check = |got: &str, line: &str, forwarded_host: &str| {
        assert!(got.starts_with(&format!("{line}\r\n")), "request line: {got}");
        assert_eq!(
            header_values(got, "authorization"),
            [format!("Bearer {TOKEN}")],
            "{got}"
        );
        assert_eq!(header_values(got, "x-amz-tenant-id"), ["globex"], "{got}");
        assert_eq!(header_values(got, "host"), [upstream_host.as_str()], "{got}");
        assert_eq!(header_values(got, "x-forwarded-host"), [forwarded_host], "{got}");
        assert_eq!(header_values(got, "x-client-Case"), ["kept"], "{got}");
    };
    for preserve in [false, true] {
        s.upstream = format!("{{ connect_timeout: 2s, read_timeout: 10s, preserve_header_case: {preserve} }}");
        let t = s.start("a");
        let (_, part_a) = t.mint("globex", TOKEN);

        // HTTP/1.1 with a lower-case `authorization` and a mixed-case header of the client's.
        let raw = format!(
            "GET /h1?q=1 HTTP/1.1\r\nHost: saas.globex.test\r\nauthorization: Bearer {part_a}\r\nX-Client-Case: kept\r\nConnection: close\r\n\r\n"
        );
        let answer = tls_exchange(t.ports.https, "saas.globex.test", &s.ca_pem, raw.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let got = rec.texts().pop().unwrap();
        check(&got, "GET /h1?q=1 HTTP/1.1", "saas.globex.test");
        let spelled = [
            format!("\r\nAuthorization: Bearer {TOKEN}\r\n"),
            "\r\nX-Client-Case: kept\r\n".into(),
        ];
        let lower = [
            format!("\r\nauthorization: Bearer {TOKEN}\r\n"),
            "\r\nx-client-case: kept\r\n".into(),
        ];
        for (want, not) in if preserve {
            spelled.iter().zip(&lower)
        } else {
            lower.iter().zip(&spelled)
        } {
            assert!(
                got.contains(want.as_str()),
                "preserve_header_case: {preserve}: want {want:?} in {got}"
            );
            assert!(
                !got.contains(not.as_str()),
                "preserve_header_case: {preserve}: {not:?} in {got}"
            );
        }
        assert!(got.contains("\r\nHost: "), "Host keeps its usual spelling: {got}");
        // The response: the upstream's spelling of its own header names likewise, the reason
        // phrase and the echoed request id in any case.
        let (want, not) = if preserve {
            ("\r\nX-Upstream-Case: kept\r\n", "\r\nx-upstream-case: kept\r\n")
        } else {
            ("\r\nx-upstream-case: kept\r\n", "\r\nX-Upstream-Case: kept\r\n")
        };
        assert!(
            answer.contains(want),
            "preserve_header_case: {preserve}: want {want:?} in {answer}"
        );
        assert!(
            !answer.contains(not),
            "preserve_header_case: {preserve}: {not:?} in {answer}"
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(header_values(&answer, "x-request-id").len(), 1, "{answer}");

        // HTTP/2: `:scheme`, `:authority` and `:path` become an origin-form HTTP/1.1 request.
        let c = client_for(&s.ca_pem, t.ports.https, &["saas.globex.test"], true);
        let r = c
            .get(t.url("saas.globex.test", "/h2/x?y=2"))
            .bearer_auth(&part_a)
            .header("X-Client-Case", "kept")
            .send()
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let authority = format!("saas.globex.test:{}", t.ports.https);
        check(&rec.texts().pop().unwrap(), "GET /h2/x?y=2 HTTP/1.1", &authority);
    }
}

/// Finding 6: `Content-Length` lists and leading zeros reach the upstream as one canonical
/// value; disagreeing values are refused before the upstream.
#[test]
fn content_length_is_normalised_or_refused() {
    let rec = Recorder::start();
    let s = Setup::new(vec![
        TenantSpec::new("acme", &["saas.acme.test"], rec.addr).extra("    auth: none")
    ]);
    let t = s.start("a");
    for cl in ["5, 5", "005"] {
        let raw = format!(
            "POST /u HTTP/1.1\r\nHost: saas.acme.test\r\nContent-Length: {cl}\r\nConnection: close\r\n\r\nhello"
        );
        let answer = plain_exchange(t.ports.http, raw.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 200"), "{cl}: {answer}");
        let got = rec.texts().pop().unwrap();
        assert_eq!(header_values(&got, "content-length"), ["5"], "{cl}: {got}");
        assert!(got.ends_with("\r\n\r\nhello"), "{got}");
    }
    let before = rec.count();
    let raw = "POST /u HTTP/1.1\r\nHost: saas.acme.test\r\nContent-Length: 5, 6\r\nConnection: close\r\n\r\nhello";
    let answer = plain_exchange(t.ports.http, raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(rec.count(), before);
}

/// Finding 7: `Connection: authorization` (or any managed header) is a 400 that says why.
#[test]
fn connection_listing_a_managed_header_is_a_clear_400() {
    let rec = Recorder::start();
    let (s, _) = two_tenants(&rec);
    let t = s.start("a");
    let (_, part_a) = t.mint("acme", TOKEN);
    for listed in ["authorization", "X-Tenant-Id", "x-forwarded-for"] {
        let raw = format!(
            "GET /r HTTP/1.1\r\nHost: saas.acme.test\r\nAuthorization: Bearer {part_a}\r\nConnection: {listed}\r\n\r\n"
        );
        let answer = tls_exchange(t.ports.https, "saas.acme.test", &s.ca_pem, raw.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{listed}: {answer}");
        assert!(
            answer.contains("Connection header lists a header Tessera manages"),
            "{answer}"
        );
    }
    assert_eq!(rec.count(), 0);
    assert!(
        t.metric(
            "tessera_bad_requests_total",
            &[("reason", "connection_lists_managed_header")]
        ) >= 3.0
    );
}

/// A client `X-Request-Id` is kept only when short and plain; a Part-A-shaped one is replaced.
#[test]
fn request_id_is_strict() {
    let rec = Recorder::start();
    let s = Setup::new(vec![
        TenantSpec::new("acme", &["saas.acme.test"], rec.addr).extra("    auth: none")
    ]);
    let t = s.start("a");
    let part_a_shaped = format!("tsr_{}", "A".repeat(78));
    for (sent, kept) in [("abc-123", true), (part_a_shaped.as_str(), false), ("a b", false)] {
        let raw =
            format!("GET / HTTP/1.1\r\nHost: saas.acme.test\r\nX-Request-Id: {sent}\r\nConnection: close\r\n\r\n");
        let answer = plain_exchange(t.ports.http, raw.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let got = rec.texts().pop().unwrap();
        let ids = header_values(&got, "x-request-id");
        assert_eq!(ids.len(), 1, "{got}");
        assert_eq!(ids[0] == sent, kept, "{sent} -> {ids:?}");
    }
}

/// Tenant confusion: SNI for acme with Host of globex is refused before any upstream work.
#[test]
fn sni_and_host_of_different_tenants_are_refused() {
    let rec = Recorder::start();
    let (s, _) = two_tenants(&rec);
    let t = s.start("a");
    let (_, part_a) = t.mint("globex", TOKEN);
    let raw = format!("GET /r HTTP/1.1\r\nHost: saas.globex.test\r\nAuthorization: Bearer {part_a}\r\n\r\n");
    let answer = tls_exchange(t.ports.https, "saas.acme.test", &s.ca_pem, raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert_eq!(rec.count(), 0);
}

/// Smuggling: a body that hides a second request behind `Transfer-Encoding` +
/// `Content-Length` (and a chunked body that ends early) never turns into a second upstream
/// request: on the plaintext listener (pingora-proxy throughout) and over TLS, where the lean
/// path reads the head and hands the request to pingora-proxy with the bytes it read.
#[test]
fn smuggled_requests_never_reach_the_upstream() {
    let rec = Recorder::start();
    let s = Setup::new(vec![
        TenantSpec::new("acme", &["saas.acme.test"], rec.addr).extra("    auth: none")
    ]);
    let t = s.start("a");
    let smuggled = "GET /admin HTTP/1.1\r\nHost: saas.acme.test\r\n\r\n";
    let attacks = [
        format!(
            "POST /a HTTP/1.1\r\nHost: saas.acme.test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
            5 + smuggled.len()
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: saas.acme.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!("POST /a HTTP/1.1\r\nHost: saas.acme.test\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n{smuggled}"),
    ];
    for a in &attacks {
        let _ = plain_exchange(t.ports.http, a.as_bytes());
        let _ = tls_exchange(t.ports.https, "saas.acme.test", &s.ca_pem, a.as_bytes());
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Three on the plaintext listener, and the CL + TE one handed over from the lean path (the
    // other two heads are refused by the parser itself before anything is chosen).
    assert_eq!(
        t.metric("tessera_request_paths_total", &[("path", "pingora_proxy")]),
        4.0
    );
    for got in rec.texts() {
        assert!(
            !got.starts_with("GET /admin"),
            "a smuggled request reached the upstream as its own request: {got}"
        );
    }
}

/// The lean path's hand-over (HTTP/1.1 requests with a body go to pingora-proxy after the lean
/// path read their head) replays exactly the bytes the client sent: here leading empty lines and
/// a body sent in the head's own write (a body sent in later writes, chunked, on a kept-alive
/// connection: `tests/proxy.rs` `lean_path_http1_hands_bodies_to_pingora_proxy_on_the_same_connection`).
/// A head Pingora's parser rewrote (its escaping of an illegal request line) cannot be replayed
/// byte for byte and is refused, never guessed.
#[test]
fn lean_hand_over_replays_exactly_what_the_client_sent() {
    let rec = Recorder::start();
    let s = Setup::new(vec![
        TenantSpec::new("acme", &["saas.acme.test"], rec.addr).extra("    auth: none")
    ]);
    let t = s.start("a");
    let send = |raw: &str| tls_exchange(t.ports.https, "saas.acme.test", &s.ca_pem, raw.as_bytes());
    let answer = send(
        "\r\n\r\nPOST /one HTTP/1.1\r\nHost: saas.acme.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = rec.texts().pop().unwrap();
    assert!(got.starts_with("POST /one HTTP/1.1\r\n"), "{got}");
    assert_eq!(header_values(&got, "content-length"), ["5"], "{got}");
    assert!(got.ends_with("\r\n\r\nhello"), "{got}");

    // An illegal request line (a space in the target) with a body: 400, nothing upstream.
    let before = rec.count();
    let answer = send("POST /a b HTTP/1.1\r\nHost: saas.acme.test\r\nContent-Length: 5\r\n\r\nhello");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(rec.count(), before);
    assert_eq!(
        t.metric("tessera_bad_requests_total", &[("reason", "unreplayable")]),
        1.0
    );
    // The same line without a body stays on the lean path, which forwards Pingora's escaped
    // target, as pingora-proxy does.
    let answer = send("GET /a b HTTP/1.1\r\nHost: saas.acme.test\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = rec.texts().pop().unwrap();
    assert!(got.starts_with("GET /a%20b HTTP/1.1\r\n"), "{got}");
}
