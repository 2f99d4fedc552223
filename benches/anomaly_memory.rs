//! Memory of the anomaly detector's per-token state with 1 M distinct token ids seen.
//!
//! Run:        cargo bench --bench anomaly_memory
//! Smoke (CI): cargo bench --bench anomaly_memory -- --test     (10 k ids)
//!
//! Like criterion, the full run needs the `--bench` argument that `cargo bench` passes; run
//! without it (e.g. by `cargo test --benches`) or with `--test`, it is the smoke run.
//!
//! A real `tessera::anomaly::Detector` over a real `TenantTable` built from a YAML config (one
//! tenant, demo certificate) is fed `observe` calls as the `logging` phase would make them
//! for verified requests (`VerifyResult::Ok`, status 200, a user agent, a client IP), each with a
//! new random token id. VmRSS is read from /proc/self/status before the config is loaded,
//! after `Detector::new`, after 10 % of the ids and after all of them; tracked states come
//! from `tessera_anomaly_tracked_tokens` after `Detector::sweep`.
//!
//! Two configurations: the default `anomaly.max_tracked_tokens` (100 000) and
//! `max_tracked_tokens: 1000000`. Each runs in its own child process (this binary re-executed
//! with `--child`), so one run's freed heap cannot hide the other's growth. RSS includes
//! allocator slack (glibc malloc, as in the `tessera` binary, which sets no global allocator);
//! "B/state" divides the growth since `Detector::new` by the states tracked.
//!
//! ns/observe is wall time per call on one thread, without contention, including generating
//! the id (a few ns: SplitMix64, distinct by construction).

use std::error::Error;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Instant;

use tessera::anomaly::{Detector, Observation};
use tessera::config::Config;
use tessera::demo::certs::DemoCa;
use tessera::tenants::Tenants;
use tessera::token::{TokenId, VerifyResult};

const USER_AGENT: &[u8] = b"acme-integration/2.4.1 (linux; x86_64)";

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    proc_status_kb("VmRSS:") * 1024
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(b: i64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// SplitMix64: a bijection on u64, so distinct inputs give distinct outputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `i`-th token id of this run: random-looking, distinct for distinct `i`.
fn token_id(seed: u64, i: u64) -> TokenId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&splitmix64(seed ^ i).to_le_bytes());
    b[8..].copy_from_slice(&splitmix64(!seed ^ i.rotate_left(17)).to_le_bytes());
    TokenId(b)
}

/// `tessera_anomaly_tracked_tokens{tenant="acme"}` as published by the last sweep.
fn tracked_tokens() -> i64 {
    let text = String::from_utf8_lossy(&tessera::metrics::global().render()).into_owned();
    text.lines()
        .filter(|l| l.starts_with("tessera_anomaly_tracked_tokens{") && l.contains("tenant=\"acme\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .map(|v| v as i64)
        .sum()
}

/// One configuration, in this (child) process. Prints a `ROW` line for the parent.
fn child(cap: Option<usize>, ids: u64) -> Result<(), Box<dyn Error>> {
    let rss_start = rss();
    let dir = tempfile::tempdir()?;
    let (cert, key) = DemoCa::new("x")?.issue(&["a.example"])?.write(dir.path(), "a")?;
    let anomaly = match cap {
        Some(c) => format!("anomaly: {{ max_tracked_tokens: {c} }}\n"),
        None => String::new(),
    };
    let yaml = format!(
        "listen: {{ https: \"127.0.0.1:0\" }}\nstore: {{ kind: embedded, path: \"{}\" }}\nkeys: {{ file: \"{}\" }}\n{anomaly}tenants:\n  - id: acme\n    hostnames: [\"a.example\"]\n    cert: \"{}\"\n    key: \"{}\"\n    upstream: \"http://127.0.0.1:9\"\n",
        dir.path().join("store.redb").display(),
        dir.path().join("keyring").display(),
        cert.display(),
        key.display(),
    );
    let path = dir.path().join("tessera.yaml");
    std::fs::write(&path, &yaml)?;
    let cfg = Config::from_yaml(&yaml, &path)?;
    let configured = cfg.tenants[0].anomaly.max_tracked_tokens;
    let tenants = Tenants::new(&cfg.tenants, &cfg.upstream, &cfg.strip_headers)?;
    let table = tenants.load_full();
    let tenant = table.get(0).ok_or("no tenant")?;
    let detector = Detector::new(tenants);
    detector.sweep();
    let rss_detector = rss();

    let seed = u64::from_le_bytes(TokenId::random().0[..8].try_into()?);
    let checkpoint = ids / 10;
    let mut points = Vec::new();
    let mut done = 0u64;
    for upto in [checkpoint, ids] {
        let start = Instant::now();
        for i in done..upto {
            let id = token_id(seed, i);
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i as u32 & 0x00ff_ffff)));
            black_box(detector.observe(&Observation {
                tenant,
                token_id: Some(&id),
                verify: Some(VerifyResult::Ok),
                ip: Some(ip),
                user_agent: Some(USER_AGENT),
                status: 200,
                bytes_out: 1_234,
                path: "/v1/items",
            }));
        }
        let ns = start.elapsed().as_nanos() as f64 / (upto - done).max(1) as f64;
        detector.sweep();
        points.push((upto, rss(), tracked_tokens(), ns));
        done = upto;
    }
    let peak = proc_status_kb("VmHWM:") * 1024;

    let label = match cap {
        Some(c) => format!("max_tracked_tokens: {c}"),
        None => format!("default (max_tracked_tokens {configured})"),
    };
    println!("{label}, {ids} distinct token ids");
    println!("  RSS at start            {:>9.1} MiB", mib(rss_start as i64));
    println!(
        "  RSS after Detector::new {:>9.1} MiB  (+{:.1} MiB for config, tenant table, empty cache)",
        mib(rss_detector as i64),
        mib(rss_detector as i64 - rss_start as i64)
    );
    for &(n, r, tracked, ns) in &points {
        let delta = r as i64 - rss_detector as i64;
        println!(
            "  after {n:>9} ids: RSS {:>9.1} MiB, +{:>7.1} MiB since Detector::new, {tracked:>8} tracked, {:>5.0} B/state, {ns:>6.0} ns/observe",
            mib(r as i64),
            mib(delta),
            delta as f64 / tracked.max(1) as f64,
        );
    }
    println!("  peak RSS (VmHWM)        {:>9.1} MiB", mib(peak as i64));
    let (n1, r1, t1, ns1) = points[0];
    let (n2, r2, t2, ns2) = points[1];
    println!("ROW\t{configured}\t{ids}\t{rss_detector}\t{n1}\t{r1}\t{t1}\t{ns1}\t{n2}\t{r2}\t{t2}\t{ns2}\t{peak}");
    drop(detector);
    Ok(())
}

struct Row {
    cap: u64,
    rss_detector: i64,
    n1: u64,
    rss1: i64,
    tracked1: i64,
    ns1: f64,
    n2: u64,
    rss2: i64,
    tracked2: i64,
    ns2: f64,
    peak: i64,
}

fn parse_row(line: &str) -> Option<Row> {
    let f: Vec<&str> = line.strip_prefix("ROW\t")?.split('\t').collect();
    if f.len() != 12 {
        return None;
    }
    Some(Row {
        cap: f[0].parse().ok()?,
        rss_detector: f[2].parse().ok()?,
        n1: f[3].parse().ok()?,
        rss1: f[4].parse().ok()?,
        tracked1: f[5].parse().ok()?,
        ns1: f[6].parse().ok()?,
        n2: f[7].parse().ok()?,
        rss2: f[8].parse().ok()?,
        tracked2: f[9].parse().ok()?,
        ns2: f[10].parse().ok()?,
        peak: f[11].parse().ok()?,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let cap = args.get(i + 1).ok_or("--child <cap|default> <ids>")?;
        let cap = if cap == "default" { None } else { Some(cap.parse()?) };
        let ids = args.get(i + 2).ok_or("--child <cap|default> <ids>")?.parse()?;
        return child(cap, ids);
    }
    let smoke = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let ids: u64 = if smoke { 10_000 } else { 1_000_000 };
    println!(
        "anomaly detector memory, {ids} distinct token ids{}",
        if smoke { " [smoke run]" } else { "" }
    );
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for cap in ["default", "1000000"] {
        let out = Command::new(&exe).args(["--child", cap, &ids.to_string()]).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            return Err(format!("child run ({cap}) failed: {}\n{stdout}", out.status).into());
        }
        for line in stdout.lines() {
            match parse_row(line) {
                Some(r) => rows.push(r),
                None => println!("{line}"),
            }
        }
    }

    println!();
    println!(
        "{:>18} {:>9} {:>10} {:>10} {:>9} {:>8} {:>10} {:>10} {:>9} {:>9} {:>8} {:>9}",
        "max_tracked_tokens",
        "ids",
        "tracked",
        "RSS +MiB",
        "B/state",
        "ns/obs",
        "ids",
        "tracked",
        "RSS +MiB",
        "B/state",
        "ns/obs",
        "peak MiB"
    );
    for r in &rows {
        let d1 = r.rss1 - r.rss_detector;
        let d2 = r.rss2 - r.rss_detector;
        println!(
            "{:>18} {:>9} {:>10} {:>10.1} {:>9.0} {:>8.0} {:>10} {:>10} {:>9.1} {:>9.0} {:>8.0} {:>9.1}",
            r.cap,
            r.n1,
            r.tracked1,
            mib(d1),
            d1 as f64 / r.tracked1.max(1) as f64,
            r.ns1,
            r.n2,
            r.tracked2,
            mib(d2),
            d2 as f64 / r.tracked2.max(1) as f64,
            r.ns2,
            mib(r.peak)
        );
    }
    println!();
    println!("RSS +MiB: growth since Detector::new. B/state: that growth / tracked states at that");
    println!("checkpoint. ns/obs: mean wall time per observe() over the ids since the previous");
    println!("checkpoint (first: every call creates a state; second: beyond the cap, every new id");
    println!("also evicts one).");
    Ok(())
}
