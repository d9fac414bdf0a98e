//! `shoji trace serve`: OTLP receivers (gRPC, HTTP) and a Zipkin v2 receiver into the store,
//! and the Jaeger-compatible query API with the viewer beside it. Every HTTP listener checks
//! `Host` ([`host`]); gRPC needs HTTP/2 without TLS, which no browser speaks.
//!
//! Threads: one tokio runtime; decoding runs on its workers, and every store call runs in
//! `spawn_blocking`, because SQLite blocks (and may wait for another process's write lock).
//! A request is acknowledged only after its transaction has committed.

mod api;
mod grpc;
pub mod host;
mod http;
mod viewer_api;
mod zipkin;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::retention::RetentionPolicy;
use crate::store::Store;

/// Default request size limit (every receiver): a larger request is refused, not read.
/// 64 MiB holds one OTLP/HTTP request of 50,000 typical spans in JSON (about 30 MB; protobuf
/// is a third of that), well above what the OpenTelemetry SDKs send by default (batches of
/// 512 spans) and what a Collector's batch processor sends (8,192).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address every listener binds to; loopback unless told otherwise.
    pub listen: IpAddr,
    pub grpc_port: u16,
    pub http_port: u16,
    pub query_port: u16,
    /// Zipkin v2 receiver (`POST /api/v2/spans`).
    pub zipkin_port: u16,
    /// Host names (besides loopback names and addresses, and the listen address) that HTTP
    /// requests may name in `Host`: see [`host`].
    pub allowed_hosts: Vec<String>,
    pub max_request_bytes: usize,
    pub retention: RetentionPolicy,
    /// How often retention runs.
    pub retention_interval: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            grpc_port: 4317,
            http_port: 4318,
            query_port: 16686,
            zipkin_port: 9411,
            allowed_hosts: Vec::new(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            retention: RetentionPolicy::default(),
            retention_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} for {what}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A started server: its bound addresses (ports resolved when 0 was asked for).
#[derive(Debug)]
pub struct RunningServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub query_addr: SocketAddr,
    pub zipkin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Waits until the listeners stop (they only stop on shutdown or a fatal error).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn bind(what: &'static str, ip: IpAddr, port: u16) -> Result<TcpListener, ServerError> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// Binds all three listeners, then serves in background tasks on the current runtime.
pub async fn start(store: Store, cfg: ServeConfig) -> Result<RunningServer, ServerError> {
    let grpc_l = bind("OTLP/gRPC", cfg.listen, cfg.grpc_port).await?;
    let http_l = bind("OTLP/HTTP", cfg.listen, cfg.http_port).await?;
    let query_l = bind("the query API and viewer", cfg.listen, cfg.query_port).await?;
    let zipkin_l = bind("Zipkin", cfg.listen, cfg.zipkin_port).await?;
    let local = |l: &TcpListener, what, port| {
        l.local_addr().map_err(|source| ServerError::Bind {
            what,
            addr: SocketAddr::new(cfg.listen, port),
            source,
        })
    };
    let grpc_addr = local(&grpc_l, "OTLP/gRPC", cfg.grpc_port)?;
    let http_addr = local(&http_l, "OTLP/HTTP", cfg.http_port)?;
    let query_addr = local(&query_l, "the query API", cfg.query_port)?;
    let zipkin_addr = local(&zipkin_l, "Zipkin", cfg.zipkin_port)?;

    let (tx, rx) = watch::channel(false);
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(grpc::serve(
        grpc_l,
        store.clone(),
        cfg.max_request_bytes,
        stop(rx.clone()),
    )));
    let allowed = Arc::new(host::AllowedHosts::new(cfg.listen, &cfg.allowed_hosts));
    let checked = |r: Router| {
        r.layer(axum::middleware::from_fn_with_state(
            allowed.clone(),
            host::check,
        ))
    };
    let http_app = checked(http::router(store.clone(), cfg.max_request_bytes));
    let s = stop(rx.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(http_l, http_app)
            .with_graceful_shutdown(s)
            .await
        {
            tracing::error!(error = %e, "OTLP/HTTP server stopped");
        }
    }));
    let zipkin_app = checked(zipkin::router(store.clone(), cfg.max_request_bytes));
    let s = stop(rx.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(zipkin_l, zipkin_app)
            .with_graceful_shutdown(s)
            .await
        {
            tracing::error!(error = %e, "Zipkin server stopped");
        }
    }));
    let query_app = checked(api::router(store.clone()).merge(shoji_viewer::router()));
    let s = stop(rx.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(query_l, query_app)
            .with_graceful_shutdown(s)
            .await
        {
            tracing::error!(error = %e, "query server stopped");
        }
    }));
    if cfg.retention.is_enabled() {
        tasks.push(tokio::spawn(retention_loop(
            store,
            cfg.retention.clone(),
            cfg.retention_interval,
            rx,
        )));
    }
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        query_addr,
        zipkin_addr,
        shutdown: tx,
        tasks,
    })
}

async fn retention_loop(
    store: Store,
    policy: RetentionPolicy,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let s = store.clone();
        let p = policy.clone();
        match tokio::task::spawn_blocking(move || s.enforce_retention(&p)).await {
            Ok(Ok(r)) if r.traces > 0 => {
                tracing::info!(
                    traces = r.traces,
                    spans = r.spans,
                    "retention removed traces"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "retention failed"),
            Err(e) => tracing::warn!(error = %e, "retention task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
