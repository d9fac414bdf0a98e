//! The agent's span export: each finished span becomes an OTLP request in a `SHJT` frame,
//! written to the host (vsock CID 2, port 10240). The connection is made lazily and remade once
//! per failed write; when the host is not there the spans are dropped and counted, never
//! queued without bound, and the workload never waits on it (it runs in other processes).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;
use prost::Message;

use crate::convert;

#[derive(Debug, Default)]
pub struct GuestCounters {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Debug)]
pub struct FrameExporter {
    port: u32,
    conn: Mutex<Option<vsock::VsockStream>>,
    counters: Arc<GuestCounters>,
    resource: Resource,
}

impl FrameExporter {
    fn write(&self, frame: &[u8]) -> bool {
        let Ok(mut conn) = self.conn.lock() else {
            return false;
        };
        for _ in 0..2 {
            if conn.is_none() {
                *conn =
                    vsock::VsockStream::connect_with_cid_port(shoji_protocols::HOST_CID, self.port)
                        .ok();
            }
            let Some(c) = conn.as_mut() else { return false };
            if c.write_all(frame).is_ok() {
                return true;
            }
            *conn = None;
        }
        false
    }
}

impl opentelemetry_sdk::trace::SpanExporter for FrameExporter {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        let n = batch.len() as u64;
        let req = convert::to_request(batch, &self.resource);
        let ok = shoji_protocols::frame::encode(&req.encode_to_vec())
            .ok()
            .is_some_and(|frame| self.write(&frame));
        let counter = if ok {
            &self.counters.exported
        } else {
            &self.counters.dropped
        };
        counter.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

/// A tracer provider exporting through [`FrameExporter`] to host `port`.
pub fn provider(service: &str, port: u32) -> (SdkTracerProvider, Arc<GuestCounters>) {
    let counters = Arc::new(GuestCounters::default());
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .build();
    let exporter = FrameExporter {
        port,
        conn: Mutex::new(None),
        counters: counters.clone(),
        resource: resource.clone(),
    };
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_simple_exporter(exporter)
        .build();
    (provider, counters)
}
