//! `shoji trace import` of OTLP JSON lines (and the format sniffing in front of it): any bytes
//! must give spans or an error, never a panic, hang or unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = shoji_trace::formats::otlp_json::import(text);
        let _ = shoji_trace::formats::import(text);
    }
});
