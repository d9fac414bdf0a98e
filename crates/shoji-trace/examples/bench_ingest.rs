//! Ingest benchmark: a load generator posting OTLP/HTTP protobuf batches of 512 spans to a
//! real `shoji trace serve` process on loopback, for a fixed time; prints spans/s accepted and
//! stored, loss, and the server's peak memory (VmHWM).
//!
//!     cargo build --release -p shoji-cli
//!     cargo run --release -p shoji-trace --example bench_ingest -- [--seconds 30] \
//!         [--connections 4] [--shoji target/release/shoji]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

const BATCH: u64 = 512;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..KeyValue::default()
    }
}

/// Batch `n` of connection `conn`: one trace of 512 spans with realistic attributes.
fn batch(conn: u64, n: u64) -> Vec<u8> {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&conn.to_be_bytes());
    trace_id[8..].copy_from_slice(&n.to_be_bytes());
    trace_id[0] |= 0x80;
    let t0 = 1_764_000_000_000_000_000u64 + n * 1_000_000;
    let spans = (1..=BATCH)
        .map(|i| Span {
            trace_id: trace_id.to_vec(),
            span_id: i.to_be_bytes().to_vec(),
            parent_span_id: if i == 1 {
                vec![]
            } else {
                (i / 2).to_be_bytes().to_vec()
            },
            name: format!("agent.op{}", i % 16),
            kind: 1,
            start_time_unix_nano: t0 + i * 1000,
            end_time_unix_nano: t0 + i * 1000 + 800,
            attributes: vec![
                kv("source", "agent"),
                kv("package", "shoji_agent"),
                kv("subsystem", "container"),
                kv("sandbox_id", "0123456789abcdef"),
            ],
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "shoji-agent")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// One keep-alive HTTP/1.1 POST; returns the status code.
fn post(stream: &mut BufReader<TcpStream>, host: &str, body: &[u8]) -> std::io::Result<u16> {
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let s = stream.get_mut();
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut status = 0;
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(code) = l.strip_prefix("HTTP/1.1 ") {
            status = code.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        } else if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf)?;
    Ok(status)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = arg("--seconds")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(30);
    let conns: u64 = arg("--connections")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(4);
    let shoji = arg("--shoji").unwrap_or_else(|| "target/release/shoji".into());
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

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|c| {
            let (stop, acked, failed, host) =
                (stop.clone(), acked.clone(), failed.clone(), host.clone());
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut s = BufReader::new(TcpStream::connect(&host)?);
                s.get_ref().set_nodelay(true)?;
                let mut n = 0;
                let mut next = batch(c, n);
                while !stop.load(Ordering::Relaxed) {
                    match post(&mut s, &host, &next) {
                        Ok(200) => acked.fetch_add(BATCH, Ordering::Relaxed),
                        _ => failed.fetch_add(BATCH, Ordering::Relaxed),
                    };
                    n += 1;
                    next = batch(c, n);
                }
                Ok(())
            })
        })
        .collect();
    let mut peak = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(200));
        peak = peak.max(vm_hwm_kib(server.id()));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| "worker panicked")??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    peak = peak.max(vm_hwm_kib(server.id()));
    // SIGTERM: graceful stop; then count what is really in the store.
    Command::new("kill").arg(server.id().to_string()).status()?;
    server.wait()?;
    let store = shoji_trace::store::Store::open(dir.path())?;
    let (stored, bytes) = store.totals()?;
    let acked = acked.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
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
