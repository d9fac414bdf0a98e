//! Bytes from a hostile guest on vsock port 10240: the SHJT frame decoder fed in arbitrary
//! chunkings, and every payload it yields decoded as OTLP, stamped and sized as the forwarder
//! and its pipeline do.
//! Must never panic or allocate past one header plus one 4 MiB payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shoji_protocols::frame::{FrameDecoder, MAX_PAYLOAD_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut dec = FrameDecoder::new(MAX_PAYLOAD_LEN);
    let mut input = rest;
    while !input.is_empty() {
        let n = dec.wanted().min(chunk).min(input.len()).max(1);
        dec.extend(&input[..n]);
        input = &input[n..];
        loop {
            match dec.next_frame() {
                Ok(Some(payload)) => {
                    if let Ok(mut req) =
                        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(payload)
                    {
                        let id = shoji_forwarder::Identity {
                            sandbox_id: "fuzz".into(),
                            service_name: "shoji-agent".into(),
                        };
                        shoji_forwarder::stamp(&mut req, &id, i64::from(chunk as u8) - 128);
                        // What the pipeline's byte bound charges for it.
                        let _ = shoji_telemetry::convert::heap_size(&req);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.finish();
});
