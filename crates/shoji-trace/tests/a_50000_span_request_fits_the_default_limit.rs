//! Issue 11: one OTLP/HTTP request of 50,000 spans (more than any OpenTelemetry SDK or Collector
//! batches by default) is accepted under the default request limit. Sent as JSON, the larger
//! encoding (protobuf is about a third of its size, see the printed sizes), so one request
//! proves both.

use crate::common;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use shoji_trace::server::DEFAULT_MAX_REQUEST_BYTES;

/// Spans shaped like real instrumentation's: a name, kind, status and five attributes.
fn request(trace: u8, n: u64) -> ExportTraceServiceRequest {
    let mut req = common::batch([trace; 16], 1, n);
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        s.kind = 3;
        s.attributes.push(common::kv("http.request.method", "GET"));
        s.attributes.push(common::kv(
            "url.full",
            "http://backend:8080/api/v1/items?page=2",
        ));
        s.attributes.push(common::kv("server.address", "backend"));
    }
    req
}

#[test]
fn fifty_thousand_spans_in_one_request_are_stored() {
    let srv = common::TestServer::start();
    let client = reqwest::blocking::Client::new();
    let json = serde_json::to_vec(&request(1, 50_000)).expect("json");
    let proto = request(1, 50_000).encode_to_vec();
    eprintln!(
        "50,000 spans: {} bytes as JSON, {} as protobuf; limit {}",
        json.len(),
        proto.len(),
        DEFAULT_MAX_REQUEST_BYTES
    );
    assert!(json.len() < DEFAULT_MAX_REQUEST_BYTES);
    assert!(proto.len() < json.len());
    let r = client
        .post(srv.http_url())
        .header("content-type", "application/json")
        .body(json)
        .send()
        .expect("POST");
    assert_eq!(r.status(), 200);
    assert_eq!(srv.store.totals().expect("totals").0, 50_000);
}
