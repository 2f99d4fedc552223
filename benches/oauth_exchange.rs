//! OAuth token-endpoint overhead: the whole token exchange as an integration sees it, straight
//! at the authorization server vs through Tessera's token swap, in the same run.
//!
//! Run:        cargo bench --bench oauth_exchange
//! Fewer:      N=200 cargo bench --bench oauth_exchange
//! One grant:  REFRESHES_PER_GRANT=550 cargo bench --bench oauth_exchange   (see below)
//! Smoke (CI): cargo bench --bench oauth_exchange -- --test     (N=5, no warm-up)
//!
//! Like criterion, the full run needs the `--bench` argument that `cargo bench` passes; run
//! without it (e.g. by `cargo test --benches`) or with `--test`, it is the smoke run.
//!
//! Setup (real parts only, the integration-test harness in `tests/common`): the real OpenID
//! Provider (`oidc-provider`, `tests/oauth/provider.js`, one node process), one private
//! `redis-server` on loopback, one `tessera serve` child (2 worker threads, `store: redis`,
//! session log to a file, logs at `warn` unless `TESSERA_TEST_LOG` says otherwise) with tenant
//! `acme`'s OAuth hostname in front of the provider.
//!
//! Six cases, interleaved (one exchange of each per round, so drift and noise hit all alike),
//! each on its own keep-alive connection (one blocking reqwest client per case), sequential:
//!
//! | case        | what the client does                                                      |
//! |-------------|---------------------------------------------------------------------------|
//! | cc direct   | `client_credentials` (`client_secret_post`) at `http://127.0.0.1:P/token`  |
//! | cc https    | the same at `https://oauth.acme.test/token` (Tessera, TLS)                 |
//! | cc http     | the same at Tessera's plaintext listener (no TLS: Tessera's own cost)     |
//! | rt direct   | `refresh_token` with the real refresh token of a grant made directly      |
//! | rt https    | `refresh_token` with the refresh Part A of a grant made through Tessera   |
//! | rt http     | the same at Tessera's plaintext listener                                  |
//!
//! The refresh client is `integration-static` (no rotation). Each refresh case starts on a
//! fresh grant every `REFRESHES_PER_GRANT` rounds (default 10; the code + PKCE flows that make
//! them are not timed): a grant record lists every access record that may still be live (a
//! grant revoke tombstones them), so it grows by one member per refresh until those expire, and
//! a refresh through Tessera reads and rewrites it (compare-and-set). Ten refreshes per grant
//! is an integration refreshing once per access-token lifetime; a grant refreshed hundreds of
//! times within one access-token lifetime costs more per refresh (set it to see how much).
//! Through Tessera a `client_credentials` exchange adds: form parse, the
//! exchange with the provider, JSON parse, one split (mint) and two Redis writes (record, grant
//! record); a refresh adds: Part A parse, the record and grant reads from Redis, two splits,
//! two record writes and the grant CAS (read + compare-and-set). Every answer must be 200
//! (the bench panics otherwise). A sample is the client's wall time for one whole exchange
//! (request written → answer read).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::oidc::*;
use common::{client_for, Redis, Setup};
use reqwest::blocking::Client;
use serde_json::Value;

const API_HOST: &str = "api.acme.test";
const OAUTH_HOST: &str = "oauth.acme.test";

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Case {
    name: &'static str,
    client: Client,
    url: String,
    form: Vec<(&'static str, String)>,
    basic: Option<(&'static str, &'static str)>,
    samples: Vec<f64>,
}

impl Case {
    /// One exchange; its wall time in milliseconds.
    fn exchange(&mut self) -> f64 {
        let mut req = self.client.post(&self.url).form(&self.form);
        if let Some((id, secret)) = self.basic {
            req = req.basic_auth(id, Some(secret));
        }
        let start = Instant::now();
        let resp = req.send().unwrap_or_else(|e| panic!("{}: {e}", self.name));
        let status = resp.status();
        let body = resp.bytes().unwrap_or_default();
        let ms = start.elapsed().as_secs_f64() * 1e3;
        assert_eq!(status, 200, "{}: {}", self.name, String::from_utf8_lossy(&body));
        ms
    }
}

fn refresh_token_of(answer: &Value) -> String {
    answer["refresh_token"]
        .as_str()
        .expect("a refresh token in the code exchange answer")
        .to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let n: usize = match (smoke, std::env::var("N")) {
        (true, _) => 5,
        (false, Ok(v)) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("N={v:?} is not a positive integer")),
        (false, Err(_)) => 500,
    };
    let warmup = if smoke { 0 } else { 50 };
    let per_grant: usize = match std::env::var("REFRESHES_PER_GRANT") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("REFRESHES_PER_GRANT={v:?} is not a positive integer")),
        Err(_) => 10,
    };
    println!(
        "OAuth token exchange, direct vs through Tessera: N={n} per case, {warmup} warm-up rounds, \
         a new grant every {per_grant} refreshes{}",
        if smoke { " [smoke run]" } else { "" }
    );

    let p = OidcProvider::start();
    let redis = Redis::start();
    let mut setup = Setup::new(vec![oauth_tenant("acme", API_HOST, OAUTH_HOST, &p, "")]);
    setup.redis_store(&redis, "");
    let log_level = std::env::var("TESSERA_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let t = setup.start_with_env("oauth-bench", &[("RUST_LOG", &log_level)]);
    t.wait_ready();
    let https = |path: &str| format!("https://{OAUTH_HOST}:{}{path}", t.ports.https);
    let http = |path: &str| format!("http://{OAUTH_HOST}:{}{path}", t.ports.http);
    let tls_client = || client_for(&setup.ca_pem, t.ports.https, &[OAUTH_HOST], false);
    let plain_client = || {
        Client::builder()
            .resolve(OAUTH_HOST, ([127, 0, 0, 1], t.ports.http).into())
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap()
    };

    // Grants made straight at the provider (real refresh token) and through Tessera (refresh
    // Part A).
    let direct_grant = || {
        let c = browser_builder().build().unwrap();
        let code = authorize(&c, &p.issuer, INTEGRATION_STATIC.id, CALLBACK, SCOPE);
        let (status, answer) = token_request(&c, &p.token_url(), &code.grant_form(), INTEGRATION_STATIC.basic());
        assert_eq!(status, 200, "direct code exchange: {answer}");
        refresh_token_of(&answer)
    };
    let browser = browser_builder()
        .add_root_certificate(reqwest::Certificate::from_pem(setup.ca_pem.as_bytes()).unwrap())
        .resolve(OAUTH_HOST, ([127, 0, 0, 1], t.ports.https).into())
        .build()
        .unwrap();
    let tessera_grant = || {
        let code = authorize(&browser, &https(""), INTEGRATION_STATIC.id, CALLBACK, SCOPE);
        let (status, answer) = token_request(
            &tls_client(),
            &https("/token"),
            &code.grant_form(),
            INTEGRATION_STATIC.basic(),
        );
        assert_eq!(status, 200, "code exchange through Tessera: {answer}");
        let rt = refresh_token_of(&answer);
        assert!(rt.starts_with("tsr_"), "Tessera hands out Part A values");
        rt
    };
    let (direct_rt, tessera_rt) = (direct_grant(), tessera_grant());

    let cc_form = vec![
        ("grant_type", "client_credentials".to_string()),
        ("scope", "api".to_string()),
        ("client_id", SERVICE.id.to_string()),
        ("client_secret", SERVICE.secret.to_string()),
    ];
    let rt_form = |rt: &str| {
        vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", rt.to_string()),
        ]
    };
    let case = |name, client, url, form, basic| Case {
        name,
        client,
        url,
        form,
        basic,
        samples: Vec::with_capacity(n),
    };
    let mut cases = vec![
        case("cc direct", Client::new(), p.token_url(), cc_form.clone(), None),
        case("cc https", tls_client(), https("/token"), cc_form.clone(), None),
        case("cc http", plain_client(), http("/token"), cc_form, None),
        case(
            "rt direct",
            Client::new(),
            p.token_url(),
            rt_form(&direct_rt),
            INTEGRATION_STATIC.basic(),
        ),
        case(
            "rt https",
            tls_client(),
            https("/token"),
            rt_form(&tessera_rt),
            INTEGRATION_STATIC.basic(),
        ),
        case(
            "rt http",
            plain_client(),
            http("/token"),
            rt_form(&tessera_rt),
            INTEGRATION_STATIC.basic(),
        ),
    ];

    let start = Instant::now();
    let mut grants = 1;
    for round in 0..warmup + n {
        if round > 0 && round % per_grant == 0 {
            let (d, t) = (direct_grant(), tessera_grant());
            grants += 1;
            for c in cases.iter_mut().filter(|c| c.name.starts_with("rt")) {
                let rt = if c.name.ends_with("direct") { &d } else { &t };
                c.form[1].1.clone_from(rt);
            }
        }
        for c in &mut cases {
            let ms = c.exchange();
            if round >= warmup {
                c.samples.push(ms);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} exchanges and {} code flows each way in {secs:.1} s",
        cases.len() * (warmup + n),
        grants
    );
    let exchanges = t.metric(
        "tessera_oauth_token_responses_total",
        &[("tenant", "acme"), ("result", "ok")],
    );
    println!("Tessera counted {exchanges} ok token answers");

    println!();
    println!(
        "{:<10} {:>5} {:>9} {:>9} {:>9} {:>9}   {:>13} {:>13}",
        "case", "n", "p50 ms", "p90 ms", "p99 ms", "mean ms", "p50 overhead", "p99 overhead"
    );
    let mut direct = (0.0, 0.0);
    for c in &mut cases {
        c.samples.sort_by(f64::total_cmp);
        let (p50, p90, p99) = (
            percentile(&c.samples, 50.0),
            percentile(&c.samples, 90.0),
            percentile(&c.samples, 99.0),
        );
        let mean = c.samples.iter().sum::<f64>() / c.samples.len() as f64;
        let overhead = if c.name.ends_with("direct") {
            direct = (p50, p99);
            String::new()
        } else {
            format!("{:>+12.3}  {:>+12.3}", p50 - direct.0, p99 - direct.1)
        };
        println!(
            "{:<10} {:>5} {p50:>9.3} {p90:>9.3} {p99:>9.3} {mean:>9.3}   {overhead}",
            c.name,
            c.samples.len()
        );
    }
    println!();
    println!("overhead = Tessera case - direct case of the same grant type (ms); every sample is one whole exchange");
    drop(t);
    drop(redis);
    drop(p);
}
