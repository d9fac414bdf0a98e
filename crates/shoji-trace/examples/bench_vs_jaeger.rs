//! Side-by-side benchmark: the same OTLP load and the same queries against `shoji trace serve`
//! and Jaeger's all-in-one (v2 configuration, Badger storage and memory storage), each started
//! fresh on free loopback ports, in one run, alternating targets round by round.
//!
//! Per target: a 10,000-span trace is posted, then `--seconds` of load (batches of 512 spans
//! over OTLP/HTTP protobuf, `--connections` keep-alive connections); every acknowledged trace is
//! then read back through the Jaeger query API both serve (`GET /api/traces/{id}`) and its
//! spans counted, so loss is measured the same way on both; then the queries are timed: the
//! 10,000-span trace and a search of 20 traces by service. Peak memory is the server's `VmHWM`.
//!
//!     scripts/bench-vs-jaeger.sh [--seconds 10] [--rounds 2]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{arg, trace_id, trace_request, BATCH};

type Error = Box<dyn std::error::Error>;

const BIG: u64 = 10_000;

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Shoji,
    JaegerBadger,
    JaegerMemory,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Shoji => "shoji trace serve",
            Target::JaegerBadger => "jaeger (badger)",
            Target::JaegerMemory => "jaeger (memory)",
        }
    }
}

/// A server under test: its process (killed on drop), OTLP/HTTP `HOST:PORT`, query base URL.
struct Server {
    child: Child,
    otlp: String,
    query: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_shoji(shoji: &str, dir: &Path) -> Result<Server, Error> {
    let mut child = Command::new(shoji)
        .args(["trace", "serve", "--grpc-port", "0", "--http-port", "0"])
        .args(["--query-port", "0", "--zipkin-port", "0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {shoji} (cargo build --release -p shoji-cli): {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut server = Server {
        child,
        otlp: String::new(),
        query: String::new(),
    };
    let mut lines = BufReader::new(out).lines();
    while server.otlp.is_empty() || server.query.is_empty() {
        let line = lines.next().ok_or("shoji trace serve exited")??;
        if let Some(u) = line.strip_prefix("otlp-http http://") {
            server.otlp = u.trim_end_matches("/v1/traces").to_string();
        } else if let Some(u) = line.strip_prefix("query ") {
            server.query = u.trim_end_matches('/').to_string();
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(server)
}

/// Jaeger v2 with the OTLP receiver, its recommended batch processor and one storage backend.
fn start_jaeger(jaeger: &str, dir: &Path, badger: bool) -> Result<Server, Error> {
    let (g, h, q, qg) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let backend = if badger {
        let d = dir.join("badger");
        format!(
            "badger:\n          directories:\n            keys: {k}\n            values: {k}\n          ephemeral: false",
            k = d.display()
        )
    } else {
        "memory:\n          max_traces: 1000000".to_string()
    };
    let config = format!(
        r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: store
    http:
      endpoint: 127.0.0.1:{q}
    grpc:
      endpoint: 127.0.0.1:{qg}
  jaeger_storage:
    backends:
      store:
        {backend}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{g}
      http:
        endpoint: 127.0.0.1:{h}
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: store
"#
    );
    let file = dir.join("jaeger.yaml");
    std::fs::write(&file, config)?;
    let log = std::fs::File::create(dir.join("jaeger.log"))?;
    let child = Command::new(jaeger)
        .arg("--config")
        .arg(&file)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {jaeger} (scripts/lib.sh ensure_jaeger): {e}"))?;
    let server = Server {
        child,
        otlp: format!("127.0.0.1:{h}"),
        query: format!("http://127.0.0.1:{q}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_json(&format!("{}/api/services", server.query)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("jaeger.log")).unwrap_or_default();
            return Err(format!("jaeger did not answer in 60 s: {log}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(server)
}

fn get_json(url: &str) -> Result<serde_json::Value, Error> {
    let r = reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(60))
        .send()?;
    if !r.status().is_success() {
        return Err(format!("GET {url}: {}", r.status()).into());
    }
    Ok(serde_json::from_slice(&r.bytes()?)?)
}

/// Spans of trace `id` as the query API returns it (0 when not found).
fn spans_of(query: &str, id: &[u8; 16]) -> usize {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    get_json(&format!("{query}/api/traces/{hex}"))
        .ok()
        .and_then(|v| v["data"][0]["spans"].as_array().map(Vec::len))
        .unwrap_or(0)
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_ms(f: impl Fn() -> bool) -> Result<f64, Error> {
    let t = Instant::now();
    if !f() {
        return Err("a timed query failed".into());
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Disk space a directory's files take (allocated blocks: Badger's value log is a sparse file
/// whose length says 2 GiB).
fn dir_bytes(p: &Path) -> u64 {
    walk(p.to_path_buf())
}

fn walk(p: PathBuf) -> u64 {
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(&p)
            .map(|rd| rd.flatten().map(|e| walk(e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.blocks() * 512,
        Err(_) => 0,
    }
}

struct Figures {
    target: Target,
    acked_per_s: f64,
    acked: u64,
    refused: u64,
    stored: u64,
    peak_mib: f64,
    disk_mib: f64,
    big_ms: f64,
    search_ms: f64,
}

fn measure(
    target: Target,
    shoji: &str,
    jaeger: &str,
    seconds: u64,
    conns: u64,
) -> Result<Figures, Error> {
    let dir = tempfile::tempdir()?;
    let server = match target {
        Target::Shoji => start_shoji(shoji, dir.path())?,
        Target::JaegerBadger => start_jaeger(jaeger, dir.path(), true)?,
        Target::JaegerMemory => start_jaeger(jaeger, dir.path(), false)?,
    };
    // The 10,000-span trace, one request.
    let big = trace_id(u64::MAX >> 1, 0);
    let mut s = BufReader::new(std::net::TcpStream::connect(&server.otlp)?);
    let status = common::post(
        &mut s,
        &server.otlp,
        &trace_request(big, BIG, common::now_ns()),
    )?;
    if status != 200 {
        return Err(format!("{}: the 10,000-span request got {status}", target.name()).into());
    }
    drop(s);
    let load = common::drive(&server.otlp, conns, seconds, server.child.id())?;
    // Read back every acknowledged trace; storage may still be writing (Jaeger's batch
    // processor): retry the missing ones for up to 30 s.
    let mut pending: Vec<[u8; 16]> = load
        .acked_batches
        .iter()
        .enumerate()
        .flat_map(|(c, ns)| ns.iter().map(move |n| trace_id(c as u64, *n)))
        .collect();
    let mut complete = 0u64;
    let mut partial;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = Instant::now() > deadline;
        partial = 0;
        pending.retain(|id| {
            let n = spans_of(&server.query, id) as u64;
            if n >= BATCH {
                complete += 1;
            } else {
                partial += n;
            }
            n < BATCH
        });
        if pending.is_empty() || last {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let stored = complete * BATCH + partial;
    let hex: String = big.iter().map(|b| format!("{b:02x}")).collect();
    let big_url = format!("{}/api/traces/{hex}", server.query);
    let big_ms = median_ms(
        (0..7)
            .map(|_| {
                time_ms(|| {
                    get_json(&big_url).is_ok_and(|v| {
                        v["data"][0]["spans"].as_array().map(Vec::len) == Some(BIG as usize)
                    })
                })
            })
            .collect::<Result<_, _>>()?,
    );
    let search_url = format!("{}/api/traces?service=shoji-agent&limit=20", server.query);
    let search_ms = median_ms(
        (0..7)
            .map(|_| {
                time_ms(|| {
                    get_json(&search_url)
                        .is_ok_and(|v| v["data"].as_array().is_some_and(|d| !d.is_empty()))
                })
            })
            .collect::<Result<_, _>>()?,
    );
    let peak = load.peak_rss_kib.max(common::vm_hwm_kib(server.child.id()));
    drop(server);
    Ok(Figures {
        target,
        acked_per_s: load.acked as f64 / load.elapsed_s,
        acked: load.acked,
        refused: load.refused,
        stored,
        peak_mib: peak as f64 / 1024.0,
        disk_mib: dir_bytes(dir.path()) as f64 / 1048576.0,
        big_ms,
        search_ms,
    })
}

fn main() -> Result<(), Error> {
    let seconds: u64 = arg("--seconds")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let rounds: u64 = arg("--rounds").map(|s| s.parse()).transpose()?.unwrap_or(2);
    let conns: u64 = arg("--connections")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(4);
    let shoji = arg("--shoji").unwrap_or_else(|| "target/release/shoji".into());
    let jaeger = arg("--jaeger").ok_or("--jaeger PATH (scripts/bench-vs-jaeger.sh finds it)")?;
    println!(
        "| round | server | spans/s acknowledged | acknowledged / stored / lost | refused | peak RSS | on disk | 10,000-span trace (median of 7) | search, 20 traces (median of 7) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        for target in [Target::Shoji, Target::JaegerBadger, Target::JaegerMemory] {
            let f = measure(target, &shoji, &jaeger, seconds, conns)?;
            println!(
                "| {round} | {} | {:.0} | {} / {} / {} | {} | {:.0} MiB | {:.0} MiB | {:.1} ms | {:.1} ms |",
                f.target.name(),
                f.acked_per_s,
                f.acked,
                f.stored,
                f.acked - f.stored,
                f.refused,
                f.peak_mib,
                f.disk_mib,
                f.big_ms,
                f.search_ms
            );
        }
    }
    Ok(())
}
