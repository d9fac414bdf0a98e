//! Bad input is refused with the status OTLP clients expect and a message; the server keeps
//! serving: malformed protobuf/JSON -> 400 / INVALID_ARGUMENT, over the limit -> 413 /
//! RESOURCE_EXHAUSTED.

use crate::common;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

/// Field 1 (`resource_spans`, a message) holding bytes that are not a valid message.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(bytes = "vec", tag = "1")]
    junk: Vec<u8>,
}

async fn grpc_raw(addr: &str, body: Garbage) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let codec: tonic_prost::ProstCodec<Garbage, Garbage> = tonic_prost::ProstCodec::default();
    grpc.unary(tonic::Request::new(body), path, codec)
        .await
        .expect_err("must be refused")
}

#[test]
fn malformed_http_bodies_get_400_with_a_message() {
    let srv = common::TestServer::start();
    let client = reqwest::blocking::Client::new();
    let r = client
        .post(srv.http_url())
        .header("content-type", "application/x-protobuf")
        .body(vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 400);
    let r = client
        .post(srv.http_url())
        .header("content-type", "application/json")
        .body("{\"resourceSpans\": [ {")
        .send()
        .expect("POST");
    assert_eq!(r.status(), 400);
    let text = r.text().expect("body");
    assert!(text.contains("invalid OTLP JSON"), "{text}");
    // Still serving afterwards.
    let ok = common::post_protobuf(
        &srv.http_url(),
        common::batch([3; 16], 1, 10).encode_to_vec(),
    );
    assert_eq!(ok.status(), 200);
}

#[test]
fn malformed_grpc_request_gets_invalid_argument() {
    let srv = common::TestServer::start();
    let url = srv.grpc_url();
    let status = srv.rt.block_on(grpc_raw(
        &url,
        Garbage {
            junk: vec![
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        },
    ));
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(!status.message().is_empty());
}

#[test]
fn oversized_requests_get_413_and_resource_exhausted() {
    let srv = common::TestServer::start_with(|c| c.max_request_bytes = 64 * 1024);
    let big = common::batch([5; 16], 1, 2000).encode_to_vec();
    assert!(big.len() > 64 * 1024);
    let r = common::post_protobuf(&srv.http_url(), big);
    assert_eq!(r.status(), 413);
    let url = srv.grpc_url();
    let status = srv.rt.block_on(async {
        let mut c = TraceServiceClient::connect(url).await.expect("connect");
        c.export(common::batch([5; 16], 1, 2000))
            .await
            .expect_err("refused")
    });
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(srv.store.trace(&[5; 16]).expect("read").is_none());
}

#[test]
fn default_limit_is_64_mib() {
    let srv = common::TestServer::start();
    let r = common::post_protobuf(&srv.http_url(), vec![0u8; 64 * 1024 * 1024 + 1]);
    assert_eq!(r.status(), 413);
}

#[test]
fn spans_with_invalid_ids_are_rejected_as_partial_success() {
    let srv = common::TestServer::start();
    let mut req = common::batch([6; 16], 1, 3);
    req.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![1, 2, 3];
    let r = common::post_protobuf(&srv.http_url(), req.encode_to_vec());
    assert_eq!(r.status(), 200);
    let resp =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(
            r.bytes().expect("body"),
        )
        .expect("response");
    assert_eq!(resp.partial_success.map(|p| p.rejected_spans), Some(1));
    assert_eq!(
        srv.store
            .trace(&[6; 16])
            .expect("read")
            .expect("trace")
            .spans
            .len(),
        2
    );
}
