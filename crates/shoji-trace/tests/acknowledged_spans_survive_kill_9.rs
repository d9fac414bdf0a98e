//! Every span the server acknowledged (HTTP 200, gRPC OK) is in the store after the server is
//! killed with SIGKILL right after the last acknowledgement.

use crate::common;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use shoji_trace::store::Store;

#[test]
fn acknowledged_spans_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = common::ChildServer::spawn(dir.path());
    let http_url = format!("http://{}/v1/traces", child.http);
    let trace_http = [0x11; 16];
    let trace_grpc = [0x22; 16];
    let client = reqwest::blocking::Client::new();
    for i in 0..20u64 {
        let body = common::batch(trace_http, 1 + i * 100, 100).encode_to_vec();
        let resp = client
            .post(&http_url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .expect("POST");
        assert_eq!(resp.status(), 200);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c = TraceServiceClient::connect(format!("http://{}", child.grpc))
            .await
            .expect("connect");
        for i in 0..20u64 {
            c.export(common::batch(trace_grpc, 1 + i * 100, 100))
                .await
                .expect("export acknowledged");
        }
    });
    child.kill9();
    let store = Store::open(dir.path()).expect("reopen after kill -9");
    for id in [trace_http, trace_grpc] {
        let t = store.trace(&id).expect("read").expect("trace present");
        assert_eq!(t.spans.len(), 2000, "all acknowledged spans survive");
        let summary = store.summary(&id).expect("read").expect("summary");
        assert_eq!(summary.span_count, 2000);
    }
}
