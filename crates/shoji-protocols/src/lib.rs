//! The host-guest contracts of Shoji, and nothing else: the agent's ttRPC API (generated from
//! `protos/agent.proto`), the `SHJT` frame that carries OTLP spans from guest to host, and the
//! agent's trace level as the kernel command line carries it.
//!
//! Anything that crosses the VM boundary is defined here, so both sides compile against one
//! definition (see `docs/adr/001-host-guest-contracts.md`).

pub mod frame;
pub mod trace_level;

pub use trace_level::{TraceLevel, TraceLevelError, TRACE_LEVEL_CMDLINE_KEY};

/// Code generated from `protos/agent.proto` by ttrpc-codegen (rust-protobuf messages, async
/// ttRPC client and server).
#[allow(
    clippy::all,
    nonstandard_style,
    unknown_lints,
    unused_attributes,
    unused_mut,
    unused_imports,
    dead_code,
    missing_docs
)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/agent.rs"));
}

/// Generated async ttRPC client and server stubs for [`agent`].
#[allow(
    clippy::all,
    nonstandard_style,
    unknown_lints,
    unused_attributes,
    unused_mut,
    unused_imports,
    dead_code,
    missing_docs
)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
}

/// An error and its sources, as one line (`: `-separated), step first and root cause last:
/// what a user, a log line, a span's status or a failed request's status shows of an error.
/// One formatting for the host and the guest (both sides of this contract use it), applied once,
/// where the error is reported.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Guest vsock port the agent serves ttRPC on.
/// The mounts (destination, type) the agent's container init makes itself for every container
/// (runc's `spec` lists them): the host accepts them in a spec and leaves them to the agent,
/// which takes only `/dev/shm`'s size and mode from them.
pub const STANDARD_MOUNTS: [(&str, &str); 8] = [
    ("/proc", "proc"),
    ("/dev", "tmpfs"),
    ("/dev/pts", "devpts"),
    ("/dev/shm", "tmpfs"),
    ("/dev/mqueue", "mqueue"),
    ("/sys", "sysfs"),
    ("/sys/fs/cgroup", "cgroup"),
    ("/sys/fs/cgroup", "cgroup2"),
];

pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Host vsock port the agent connects to once it serves ttRPC ("READY\n"); the host connects to
/// the agent only after that.
pub const READY_VSOCK_PORT: u32 = 1025;
/// Host vsock port the agent sends span frames to.
pub const TRACE_VSOCK_PORT: u32 = 10240;
/// The host's vsock context id, as seen from the guest.
pub const HOST_CID: u32 = 2;
/// ttRPC metadata key carrying the W3C trace context.
pub const TRACEPARENT_KEY: &str = "traceparent";
/// ttRPC metadata key carrying the W3C trace state.
pub const TRACESTATE_KEY: &str = "tracestate";
