//! shoji-agent: PID 1 inside the microVM. Mounts the kernel's filesystems, loads the modules
//! the image lists, serves the ttRPC agent API on vsock port 1024, runs containers, and powers
//! the VM off when told to. A fatal error is logged to the console and ends in a power-off,
//! never a hang.

mod boot;
mod cgroup;
mod console;
mod container;
mod init;
mod mounts;
mod network;
mod podns;
mod privileges;
mod reaper;
mod security;
mod service;
mod share;
mod signals;
mod telemetry;
mod user;

use std::time::Duration;

pub(crate) use shoji_protocols::error_chain;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("__container-init") {
        init::stage1();
    }
    let kernel_entered = boot::kernel_entered_ns();
    let init_reached = boot::now_unix_ns();
    let pid1 = std::process::id() == 1;
    if pid1 {
        boot::mount_basics();
        boot::open_console();
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params = boot::parse_cmdline(&cmdline);
    telemetry::init(&params);
    let mut phases = vec![
        ("kernel.entered".to_string(), kernel_entered),
        ("init.reached".to_string(), init_reached),
        // The basic mounts, the console and telemetry: `agent.setup`, apart from the modules.
        ("basics.ready".to_string(), boot::now_unix_ns()),
    ];
    match boot::load_modules() {
        Ok(n) => tracing::debug!(modules = n, "modules loaded"),
        Err(e) => fatal(&format!("loading kernel modules: {}", error_chain(&e))),
    }
    phases.push(("modules.loaded".into(), boot::now_unix_ns()));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fatal(&format!("starting the async runtime: {e}")),
    };
    if let Err(e) = rt.block_on(serve(params, phases)) {
        fatal(&format!("{e:#}"));
    }
    boot::power_off();
}

async fn serve(params: boot::BootParams, mut phases: Vec<(String, u64)>) -> anyhow::Result<()> {
    use anyhow::Context;
    let reaper = reaper::Reaper::start().context("while installing the child reaper")?;
    // Not fatal: a container without loopback is still better than no container, and the
    // console says why.
    if let Err(e) = network::loopback_up().await {
        tracing::error!("cannot bring up loopback: {e}");
    }
    let addr = format!("vsock://-1:{}", shoji_protocols::AGENT_VSOCK_PORT);
    phases.push(("agent.ready".into(), boot::now_unix_ns()));
    telemetry::boot_spans(&params, &phases);
    let agent = service::new(params, phases, reaper);
    let svc = shoji_protocols::agent_ttrpc::create_agent_service(agent.clone());
    let mut server = ttrpc::r#async::Server::new()
        .bind(&addr)
        .with_context(|| format!("while binding {addr}"))?
        .register_service(svc);
    server
        .start()
        .await
        .context("while starting the ttRPC server")?;
    tracing::info!("serving on {addr}");
    // A blocking connect (it waits out a timeout when no host listens): keep it off the workers.
    tokio::task::spawn_blocking(announce_ready);
    agent.shutdown.notified().await;
    // Let the Shutdown answer reach the host, then power off without waiting for the host to
    // hang up (the runtime waits for QEMU's exit, not for the connection).
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(server);
    Ok(())
}

/// Tells the host the agent serves, by connecting to it: the host never connects to the guest
/// before the guest's vsock transport is up (host-initiated connections made too early can wedge
/// the vsock device). See docs/ARCHITECTURE.md.
fn announce_ready() {
    use std::io::Write;
    let port = shoji_protocols::READY_VSOCK_PORT;
    match vsock::VsockStream::connect_with_cid_port(shoji_protocols::HOST_CID, port) {
        Ok(mut s) => {
            let _ = s.write_all(b"READY\n");
        }
        Err(e) => tracing::warn!("cannot announce readiness on host port {port}: {e}"),
    }
}

fn fatal(msg: &str) -> ! {
    eprintln!("shoji-agent: fatal: {msg}");
    boot::power_off();
}
