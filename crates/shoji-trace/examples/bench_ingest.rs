//! Ingest benchmark: a load generator posting OTLP/HTTP protobuf batches of 512 spans to a
//! real `shoji trace serve` process on loopback, for a fixed time; prints spans/s accepted and
//! stored, loss, and the server's peak memory (VmHWM).
//!
//!     cargo build --release -p shoji-cli
//!     cargo run --release -p shoji-trace --example bench_ingest -- [--seconds 30] \
//!         [--connections 4] [--shoji target/release/shoji]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::BATCH;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = common::arg("--seconds")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(30);
    let conns: u64 = common::arg("--connections")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(4);
    let shoji = common::arg("--shoji").unwrap_or_else(|| "target/release/shoji".into());
    let dir = tempfile::tempdir()?;
    let mut server = Command::new(&shoji)
        .args([
            "trace",
            "serve",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--query-port",
            "0",
            "--zipkin-port",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot start {shoji} (build it with cargo build --release -p shoji-cli): {e}")
        })?;
    let mut lines = BufReader::new(server.stdout.take().ok_or("no stdout")?).lines();
    let host = loop {
        let line = lines.next().ok_or("server exited")??;
        if let Some(url) = line.strip_prefix("otlp-http http://") {
            break url.trim_end_matches("/v1/traces").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let load = common::drive(&host, conns, seconds, server.id())?;
    let (elapsed, peak) = (load.elapsed_s, load.peak_rss_kib);
    // SIGTERM: graceful stop; then count what is really in the store.
    Command::new("kill").arg(server.id().to_string()).status()?;
    server.wait()?;
    let store = shoji_trace::store::Store::open(dir.path())?;
    let (stored, bytes) = store.totals()?;
    let (acked, failed) = (load.acked, load.refused);
    println!("duration_s          {elapsed:.1}");
    println!("connections         {conns}");
    println!("batch_spans         {BATCH}");
    println!("spans_acked         {acked}");
    println!("spans_refused       {failed}");
    println!("spans_stored        {stored}");
    println!("spans_lost          {}", acked.saturating_sub(stored));
    println!("acked_spans_per_s   {:.0}", acked as f64 / elapsed);
    println!("stored_spans_per_s  {:.0}", stored as f64 / elapsed);
    println!("stored_span_bytes   {bytes}");
    println!("server_peak_rss_mib {:.1}", peak as f64 / 1024.0);
    Ok(())
}
