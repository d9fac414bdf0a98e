//! The Rust `opentelemetry-otlp` exporter, over gRPC and over HTTP protobuf, talking to the
//! real server: the spans land in the store with their parents, attributes and service.

use crate::common;

use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

fn emit(provider: &SdkTracerProvider) -> [u8; 16] {
    let tracer = provider.tracer("test");
    let root = tracer.start("sandbox.create");
    let cx = opentelemetry::Context::current_with_span(root);
    let trace_id = cx.span().span_context().trace_id().to_bytes();
    {
        let mut child = tracer.start_with_context("vm.boot", &cx);
        child.set_attribute(KeyValue::new("source", "hypervisor"));
        child.end();
    }
    cx.span().end();
    provider.force_flush().expect("flush");
    trace_id
}

fn check(store: &shoji_trace::store::Store, trace_id: [u8; 16], service: &str) {
    let t = store.trace(&trace_id).expect("read").expect("trace stored");
    assert_eq!(t.spans.len(), 2);
    let root = t
        .spans
        .iter()
        .find(|s| s.name() == "sandbox.create")
        .expect("root");
    let child = t
        .spans
        .iter()
        .find(|s| s.name() == "vm.boot")
        .expect("child");
    assert_eq!(child.parent_id, Some(root.span_id));
    assert_eq!(root.parent_id, None);
    assert_eq!(child.attr("source").as_deref(), Some("hypervisor"));
    assert_eq!(child.service, service);
}

#[test]
fn grpc_exporter_spans_are_stored() {
    let srv = common::TestServer::start();
    let _guard = srv.rt.enter();
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(srv.grpc_url())
        .build()
        .expect("exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("rust-grpc").build())
        .build();
    let id = emit(&provider);
    check(&srv.store, id, "rust-grpc");
    let _ = provider.shutdown();
}

#[test]
fn http_protobuf_exporter_spans_are_stored() {
    let srv = common::TestServer::start();
    let url = srv.http_url();
    // The blocking reqwest client must not live on a tokio worker: use a plain thread.
    let (store, id) = std::thread::scope(|s| {
        s.spawn(|| {
            let exporter = SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(url)
                .build()
                .expect("exporter");
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter)
                .with_resource(Resource::builder().with_service_name("rust-http").build())
                .build();
            let id = emit(&provider);
            let _ = provider.shutdown();
            (srv.store.clone(), id)
        })
        .join()
        .expect("thread")
    });
    check(&store, id, "rust-http");
}
