//! containerd's runtime v2 shim for Shoji: one shim process is one sandbox, one VM; containerd
//! drives it over ttRPC with the task API (`containerd.task.v3.Task`, and the same service as
//! `containerd.task.v2.Task` for containerd 1.6/1.7).
//!
//! How the parts compose (decisions in `docs/adr/016-containerd-shim.md`, `020-pods.md`):
//! containerd's own `containerd-shim` crate does the shim protocol (the `start`/`delete`
//! actions, the stdio FIFOs), with `start`'s reply made readable for every containerd by
//! [`start`]; [`serve`] is the ttRPC server (the crate's parts, both task API names);
//! [`shim`] answers the crate's `Shim` trait (spawning the server, cleaning up after a dead
//! one, `-info` from [`info`]); [`events`] sends containerd the task events, in
//! order and across a containerd restart; [`service`] is the task
//! API on a [`pod::Pod`]: one [`shoji_runtime::sandbox::SandboxVm`] holding containers, each
//! with its init and execs ([`process`]) in the lifecycle's status model
//! ([`shoji_runtime::lifecycle::status`]), and each with its root filesystem mounted on the
//! host from containerd's snapshot ([`rootfs`]) and shared with the guest over virtio-fs. A
//! pod's VM is plugged into the pod's CNI network namespace ([`network`]).
//!
//! Tracing: every task request is a server span `containerd.task.v3.Task/<Method>` whose parent
//! is the W3C `traceparent` containerd sends in the ttRPC metadata, when it sends one; the boot
//! and the agent's spans are its children, as in `shoji run`. The sandbox has a lifetime trace
//! of its own besides, linked both ways with the request traces ([`lifetime`]).

/// One line to the shim's stderr (containerd's log FIFO for the server, a buffer for the
/// `delete` action), a failed write ignored: while containerd is down the FIFO has no reader,
/// and `log_line!` would panic on EPIPE and take the VM with it.
macro_rules! log_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod events;
pub mod info;
pub mod lifetime;
pub mod metrics;
pub mod mounts;
pub mod network;
pub mod ops;
pub mod pod;
pub mod process;
pub mod rootfs;
pub mod serve;
pub mod service;
pub mod shim;
pub mod start;

/// The runtime type containerd names this shim by.
pub const RUNTIME_ID: &str = "io.containerd.shoji.v2";

/// Whether this process is the task server containerd-shim's `spawn` starts: no action, a
/// socket to serve.
fn is_server(flags: &containerd_shim::Flags) -> bool {
    !flags.info && !flags.version && flags.action.is_empty() && !flags.socket.is_empty()
}

/// What the containerd-shim crate is told about this shim (for `start`, `delete` and `-info`,
/// which it runs, and for the server, [`serve`]).
fn shim_config() -> containerd_shim::Config {
    containerd_shim::Config {
        // QEMU and the helpers are tokio children, reaped by tokio: the crate's SIGCHLD reaper
        // (waitpid(-1)) would take their exit statuses, and the shim runs no process of the
        // container on the host to reap.
        no_reaper: true,
        no_sub_reaper: true,
        // The shim logs through `tracing` (which also takes the crate's `log` records) to its
        // stderr, which the server points at containerd's log FIFO.
        no_setup_logger: true,
        ..Default::default()
    }
}

/// Runs the shim for whatever action containerd asked for (`-info`, `start`, `delete`, or
/// serving the task API).
pub fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // Bad flags: the crate's own `run` says so, as it always did.
    let flags = containerd_shim::parse(&args).ok();
    let server = flags.as_ref().is_some_and(is_server);
    // Before the async runtime starts a thread: unshare(CLONE_NEWNS) moves the calling thread
    // alone. Only the server (no action, a socket to serve) lives long enough to stage mounts.
    if server {
        shim::log_to_containerd();
        match mounts::enter_own_namespace() {
            Ok(true) => {}
            Ok(false) => log_line!(
                "{RUNTIME_ID}: not root: serving from the host's mount namespace (no mounts are staged)"
            ),
            Err(e) => {
                log_line!("{RUNTIME_ID}: {}", shoji_runtime::error_chain(&e));
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    // One thread: QEMU and the helpers get PR_SET_PDEATHSIG from the thread that forks them,
    // so that must be the thread that lives as long as the shim (as for the lifecycle's
    // sandbox process, ADR 007).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log_line!("{RUNTIME_ID}: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let run_crate = || {
        rt.block_on(containerd_shim::asynchronous::run::<shim::ShojiShim>(
            RUNTIME_ID,
            Some(shim_config()),
        ))
    };
    let done = match flags {
        Some(flags) if server => rt
            .block_on(serve::serve(flags))
            .map_err(|e| shoji_runtime::error_chain(&e)),
        Some(flags) if flags.action == "start" && !flags.info && !flags.version => {
            start::run_capturing_reply(run_crate).map_err(|e| shoji_runtime::error_chain(&e))
        }
        _ => {
            run_crate();
            Ok(())
        }
    };
    match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log_line!("{RUNTIME_ID}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
