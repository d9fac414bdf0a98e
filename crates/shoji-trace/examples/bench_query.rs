//! Query benchmark: a store of >= 1,000,000 spans holding one 10,000-span trace; times
//! `shoji trace show` (open, resolve, load, render), `GET /api/traces/{id}` on the real
//! server, and `shoji trace ls --limit 20`. Prints medians and worst cases.
//!
//!     cargo run --release -p shoji-trace --example bench_query -- [--spans 1000000] \
//!         [--data-dir DIR (reused if it already holds the data)]

use std::time::{Duration, Instant};

use shoji_trace::cli::{ColorChoice, LsArgs, ShowArgs};
use shoji_trace::server::{self, ServeConfig};
use shoji_trace::store::Store;

mod common;
use common::{arg, request};

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:<34} median {:>7.1} ms   max {:>7.1} ms   (n={})",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target: u64 = arg("--spans")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir()?;
    let dir = arg("--data-dir")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().into());
    let store = Store::open(&dir)?;
    let big: [u8; 16] = [0xbe; 16];
    let t0 = 1_764_000_000_000_000_000u64;
    let (have, _) = store.totals()?;
    if have < target {
        let started = Instant::now();
        let mut n = 0u64;
        let mut stored = have;
        // Half of the background before the big trace and half after it, so it is neither
        // the newest nor the oldest.
        while stored < target / 2 {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&n.to_be_bytes());
            stored += store
                .ingest(&request(id, 1, 512, t0 + n * 10_000_000))?
                .stored;
            n += 1;
        }
        for chunk in 0..20 {
            store.ingest(&request(big, 1 + chunk * 500, 500, t0 + n * 10_000_000))?;
        }
        stored += 10_000;
        while stored < target + 10_000 {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&n.to_be_bytes());
            stored += store
                .ingest(&request(id, 1, 512, t0 + n * 10_000_000))?
                .stored;
            n += 1;
        }
        println!(
            "filled store: {stored} spans in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let (spans, bytes) = store.totals()?;
    let file = std::fs::metadata(store.path())?.len();
    println!(
        "store: {spans} spans, {bytes} span bytes, database file {:.0} MiB",
        file as f64 / 1048576.0
    );
    let big_hex = hex::encode(big);

    let mut show = Vec::new();
    for _ in 0..15 {
        let args = ShowArgs {
            id: big_hex[..12].to_string(),
            verbose: false,
            color: ColorChoice::Never,
        };
        let t = Instant::now();
        let out = args.run(&dir)?;
        show.push(t.elapsed());
        assert!(out.lines().count() > 10_000);
    }
    report("trace show <10,000-span trace>", show);

    let mut ls = Vec::new();
    for _ in 0..15 {
        let args = LsArgs {
            service: None,
            operation: None,
            tags: Vec::new(),
            min_duration: None,
            since: None,
            limit: 20,
            json: false,
        };
        let t = Instant::now();
        let out = args.run(&dir)?;
        ls.push(t.elapsed());
        assert_eq!(out.text.lines().count(), 21);
    }
    report("trace ls --limit 20", ls);

    let rt = tokio::runtime::Runtime::new()?;
    let running = rt.block_on(server::start(
        store.clone(),
        ServeConfig {
            grpc_port: 0,
            http_port: 0,
            query_port: 0,
            zipkin_port: 0,
            ..ServeConfig::default()
        },
    ))?;
    let url = format!("http://{}/api/traces/{big_hex}", running.query_addr);
    let client = reqwest::blocking::Client::new();
    let mut api = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let body = client.get(&url).send()?.bytes()?;
        api.push(t.elapsed());
        assert!(body.len() > 1_000_000);
    }
    report("GET /api/traces/{id} (10,000 spans)", api);
    let url = format!(
        "http://{}/api/traces?service=shoji-agent&limit=20",
        running.query_addr
    );
    let mut search = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        client.get(&url).send()?.bytes()?;
        search.push(t.elapsed());
    }
    report("GET /api/traces?service=&limit=20", search);
    rt.block_on(running.shutdown());
    Ok(())
}
