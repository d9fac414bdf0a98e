//! OTLP/HTTP accepts the JSON encoding (hex ids, string or number int64s, as the OTLP spec
//! writes it) and gzip-compressed bodies, answering in the request's encoding.

use crate::common;

use std::io::Write;

use prost::Message;

const BODY: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"curl"}}]},
 "scopeSpans":[{"scope":{"name":"manual"},"spans":[
  {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173",
   "name":"child","kind":3,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
   "attributes":[{"key":"retries","value":{"intValue":"3"}},{"key":"ok","value":{"boolValue":true}}],
   "status":{"code":2,"message":"boom"}}]}]}]}"#;

#[test]
fn json_requests_are_stored() {
    let srv = common::TestServer::start();
    let r = reqwest::blocking::Client::new()
        .post(srv.http_url())
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .expect("POST");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let id: [u8; 16] = hex::decode("5b8efff798038103d269b633813fc60c")
        .expect("hex")
        .try_into()
        .expect("16 bytes");
    let t = srv.store.trace(&id).expect("read").expect("stored");
    let s = &t.spans[0];
    assert_eq!(s.name(), "child");
    assert_eq!(s.service, "curl");
    assert_eq!(s.span.kind, 3);
    assert_eq!(s.attr("retries").as_deref(), Some("3"));
    assert_eq!(s.duration_ns(), 1_000_000_000);
    assert_eq!(s.span.status.as_ref().map(|st| st.code), Some(2));
    assert!(
        s.parent_id.is_some(),
        "parent not yet arrived, still linked by id"
    );
}

#[test]
fn gzip_protobuf_requests_are_stored() {
    let srv = common::TestServer::start();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&common::batch([0x42; 16], 1, 100).encode_to_vec())
        .expect("gzip");
    let body = gz.finish().expect("gzip");
    let r = reqwest::blocking::Client::new()
        .post(srv.http_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .expect("POST");
    assert_eq!(r.status(), 200);
    assert_eq!(
        srv.store
            .trace(&[0x42; 16])
            .expect("read")
            .expect("stored")
            .spans
            .len(),
        100
    );
}

#[test]
fn a_gzip_bomb_is_refused_as_too_large() {
    let srv = common::TestServer::start_with(|c| c.max_request_bytes = 1 << 20);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 8 << 20]).expect("gzip");
    let body = gz.finish().expect("gzip");
    assert!(body.len() < 1 << 20);
    let r = reqwest::blocking::Client::new()
        .post(srv.http_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .expect("POST");
    assert_eq!(r.status(), 413);
}
