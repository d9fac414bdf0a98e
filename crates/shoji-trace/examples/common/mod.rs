//! The benchmarks' OTLP load: batches of spans posted over keep-alive OTLP/HTTP protobuf
//! connections for a fixed time, and the server's peak memory while it runs. Shared by the
//! examples (`mod common;`), each using a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

/// Spans per request (and per trace) of the load.
pub const BATCH: u64 = 512;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..KeyValue::default()
    }
}

/// The trace id of batch `n` of connection `conn`.
pub fn trace_id(conn: u64, n: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&conn.to_be_bytes());
    id[8..].copy_from_slice(&n.to_be_bytes());
    id[0] |= 0x80;
    id
}

/// Now, in nanoseconds since the epoch: the load's spans are recent, so time-bounded searches
/// (Jaeger's default look-back) find them.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One OTLP request: spans `first..first + n` of a trace (a binary tree, span 1 the root) with
/// realistic attributes, service `shoji-agent`, the trace starting at `t0` ns.
pub fn request(trace_id: [u8; 16], first: u64, n: u64, t0: u64) -> ExportTraceServiceRequest {
    let spans = (first..first + n)
        .map(|i| Span {
            trace_id: trace_id.to_vec(),
            span_id: i.to_be_bytes().to_vec(),
            parent_span_id: if i == 1 {
                vec![]
            } else {
                (i / 2).max(1).to_be_bytes().to_vec()
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
}

/// A whole trace of `spans` spans in one request, encoded as OTLP protobuf.
pub fn trace_request(trace_id: [u8; 16], spans: u64, t0: u64) -> Vec<u8> {
    request(trace_id, 1, spans, t0).encode_to_vec()
}

/// One keep-alive HTTP/1.1 POST to `/v1/traces`; returns the status code.
pub fn post(stream: &mut BufReader<TcpStream>, host: &str, body: &[u8]) -> std::io::Result<u16> {
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

/// The value after `--name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A process's peak resident memory (`VmHWM`), KiB.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// What a load run did.
pub struct Load {
    pub elapsed_s: f64,
    pub acked: u64,
    pub refused: u64,
    /// Per connection, the batches acknowledged (`trace_id(conn, n)` for each `n` below).
    pub acked_batches: Vec<Vec<u64>>,
    pub peak_rss_kib: u64,
}

/// Posts batches of [`BATCH`] spans to `host` (`HOST:PORT`, OTLP/HTTP) from `conns` connections
/// for `seconds`, sampling `pid`'s peak memory.
pub fn drive(host: &str, conns: u64, seconds: u64, pid: u32) -> std::io::Result<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let t0 = now_ns();
    let start = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|c| {
            let (stop, acked, refused, host) = (
                stop.clone(),
                acked.clone(),
                refused.clone(),
                host.to_string(),
            );
            std::thread::spawn(move || -> std::io::Result<Vec<u64>> {
                let mut s = BufReader::new(TcpStream::connect(&host)?);
                s.get_ref().set_nodelay(true)?;
                let mut ok = Vec::new();
                let mut n = 0;
                let mut next = trace_request(trace_id(c, n), BATCH, t0 + n * 1_000_000);
                while !stop.load(Ordering::Relaxed) {
                    match post(&mut s, &host, &next) {
                        Ok(200) => {
                            acked.fetch_add(BATCH, Ordering::Relaxed);
                            ok.push(n);
                        }
                        _ => {
                            refused.fetch_add(BATCH, Ordering::Relaxed);
                        }
                    };
                    n += 1;
                    next = trace_request(trace_id(c, n), BATCH, t0 + n * 1_000_000);
                }
                Ok(ok)
            })
        })
        .collect();
    let mut peak = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(200));
        peak = peak.max(vm_hwm_kib(pid));
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked_batches = Vec::new();
    for w in workers {
        acked_batches.push(
            w.join()
                .map_err(|_| std::io::Error::other("a load worker panicked"))??,
        );
    }
    Ok(Load {
        elapsed_s: start.elapsed().as_secs_f64(),
        acked: acked.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        acked_batches,
        peak_rss_kib: peak.max(vm_hwm_kib(pid)),
    })
}
