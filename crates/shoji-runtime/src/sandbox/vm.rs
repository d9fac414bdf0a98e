//! One booted sandbox: helpers, QEMU and a connected agent, each owned by a guard, so that
//! dropping a [`SandboxVm`] tears everything down. `shoji run` boots one per run; the lifecycle
//! commands' sandbox process keeps one until `shoji delete`.
//!
//! Field order is drop order: the agent connection, QEMU, the helpers, and the sandbox directory
//! last, once nothing uses it any more.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{info_span, Instrument};

use super::{Binaries, BootError, PastSpan, RunHooks, SandboxDir, SpanCount};
use crate::agent::{AgentClient, AgentError, ClockOffset};
use crate::config::Config;
use crate::helpers;
use crate::hypervisor::{accel, VmSpec};
use crate::process::ChildGuard;
use crate::spec::ProcessOptions;

/// How a VM is sized and what the agent is told on its kernel command line.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Turn the agent's tracing on (kernel command line `shoji.trace=1`).
    pub agent_tracing: bool,
    /// W3C traceparent for the agent's boot spans; filled from the hooks when tracing.
    pub traceparent: Option<String>,
    /// The VM's network device, if any.
    pub network: crate::network::VmNetwork,
    /// Cap of each log stream (`[runtime] log_max_size`).
    pub log_max_bytes: u64,
}

/// The smallest `--memory` accepted: Docker's minimum for a container's memory limit. Below it
/// the container cannot even start (0 and 1 byte used to give a 128 MiB VM silently).
pub const MIN_MEMORY_BYTES: u64 = 6 << 20;

/// Refuses a `--memory` the container or the VM cannot have: below [`MIN_MEMORY_BYTES`], or more
/// than the host's memory.
pub fn check_memory(bytes: u64) -> Result<(), BootError> {
    let given = if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    };
    let bad = |reason: String| BootError::Memory {
        given: given.clone(),
        reason,
    };
    if bytes < MIN_MEMORY_BYTES {
        return Err(bad(format!(
            "a container needs at least {} MiB; give e.g. 256M",
            MIN_MEMORY_BYTES >> 20
        )));
    }
    if let Some(total) = host_memory_bytes() {
        if bytes > total {
            return Err(bad(format!(
                "this host has {} MiB of memory in all; give less",
                total >> 20
            )));
        }
    }
    Ok(())
}

/// The host's memory in all (`sysinfo(2)`, as `MemTotal` in `/proc/meminfo`).
fn host_memory_bytes() -> Option<u64> {
    nix::sys::sysinfo::sysinfo().ok().map(|i| i.ram_total())
}

impl BootOptions {
    /// `--cpus` rounded up and `--memory` (the VM gets at least 128 MiB), else the configured
    /// defaults. A `--memory` outside what [`check_memory`] accepts, or a bad `[runtime]
    /// log_max_size`, is refused here, before anything boots.
    pub fn for_process(
        config: &Config,
        process: &ProcessOptions,
        agent_tracing: bool,
    ) -> Result<Self, BootError> {
        if let Some(b) = process.memory_bytes {
            check_memory(b)?;
        }
        let q = &config.hypervisor.qemu;
        Ok(Self {
            vcpus: process
                .cpus
                .map(|c| c.ceil().max(1.0) as u32)
                .unwrap_or(q.default_vcpus.max(1)),
            memory_mib: process
                .memory_bytes
                .map(|b| ((b >> 20) as u32).max(128))
                .unwrap_or(q.default_memory.max(128)),
            agent_tracing,
            traceparent: None,
            network: Default::default(),
            log_max_bytes: config.runtime.log_max_bytes()?,
        })
    }
}

/// A host process started for the sandbox, as the lifecycle state records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedProcess {
    pub what: &'static str,
    pub pid: u32,
}

/// A running VM with a connected agent.
#[derive(Debug)]
pub struct SandboxVm {
    pub client: AgentClient,
    pub accel: accel::AccelChoice,
    pub clock: ClockOffset,
    pub boot_phases: Vec<(String, u64)>,
    /// QEMU and the two helpers, for the lifecycle state record.
    pub processes: Vec<StartedProcess>,
    /// Their stderr pipes, until [`SandboxVm::drain_stderr`] copies them somewhere.
    stderr_pipes: Vec<(&'static str, tokio::process::ChildStderr)>,
    vm_exit: watch::Receiver<Option<String>>,
    vm_task: AbortOnDrop,
    /// Copies the serial console into `console.log`; after QEMU, so that its last lines land.
    _console: AbortOnDrop,
    /// Cap of each log stream, for [`SandboxVm::drain_stderr`] and the container's logs.
    pub log_max_bytes: u64,
    /// Agent spans the built-in forwarder has received, when there is one (see `stop`).
    agent_spans_received: Option<SpanCount>,
    _ready: tokio::net::UnixListener,
    fs_helper: ChildGuard,
    vsock_helper: ChildGuard,
    pub sb: SandboxDir,
}

impl SandboxVm {
    /// Starts the helpers and QEMU for `sb`, sharing `share` (the sandbox's share,
    /// [`SharedRootfs::share`](super::dir::SharedRootfs)) over virtio-fs as
    /// [`SHARE_TAG`](super::dir::SHARE_TAG), and connects to the agent. On any error everything started so far, `sb` included, is torn down.
    pub async fn boot(
        config: &Config,
        bins: &Binaries,
        sb: SandboxDir,
        share: &Path,
        opts: &BootOptions,
        hooks: &mut dyn RunHooks,
    ) -> Result<Self, BootError> {
        let q = &config.hypervisor.qemu;
        let root = sb
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let choice = accel::choose(q.accel(), &root);
        tracing::Span::current().record("vm.accel", choice.accel.as_str());
        tracing::info!(accel = choice.accel.as_str(), reason = %choice.reason, "accelerator chosen");
        hooks.sandbox_ready(&sb);

        let (vcpus, memory_mib) = (opts.vcpus, opts.memory_mib);
        let vm_span = info_span!("vm.start", source = "hypervisor", subsystem = "hypervisor", sandbox_id = %sb.id, vm.accel = choice.accel.as_str(), vm.vcpus = vcpus, vm.memory_mib = memory_mib, vm.vhost_net = tracing::field::Empty);
        let (mut vsock_helper, mut fs_helper) = async {
            let v = helpers::start_vsock(&bins.vsock, &sb.vhost_socket(), &sb.vsock_uds())
                .instrument(info_span!(
                    "helper.start",
                    source = "hypervisor",
                    subsystem = "hypervisor",
                    helper = "vhost-device-vsock"
                ))
                .await?;
            let f = helpers::start_virtiofsd(&bins.virtiofsd, &sb.virtiofs_socket(), share)
                .instrument(info_span!(
                    "helper.start",
                    source = "hypervisor",
                    subsystem = "hypervisor",
                    helper = "virtiofsd"
                ))
                .await?;
            Ok::<_, BootError>((v, f))
        }
        .instrument(vm_span.clone())
        .await?;

        // `guest.boot` runs from QEMU's launch until the agent answers. The agent's boot spans
        // are its children: its context rides the kernel command line.
        let boot_span = info_span!(parent: &vm_span, "guest.boot", source = "hypervisor", subsystem = "boot", sandbox_id = %sb.id);
        let boot_traceparent = hooks.context_injector().and_then(|inject| {
            boot_span
                .in_scope(inject)
                .into_iter()
                .find(|(k, _)| k == "traceparent")
                .map(|(_, tp)| tp)
        });
        let mut opts = opts.clone();
        if opts.agent_tracing && boot_traceparent.is_some() {
            opts.traceparent = boot_traceparent.clone();
        }
        let mut network = opts.network.clone();
        if matches!(network, crate::network::VmNetwork::Tap { .. }) {
            let vhost = crate::network::vhost::probe(
                choice.accel,
                Path::new(crate::network::vhost::DEVICE),
            );
            vm_span.record("vm.vhost_net", vhost.fd.is_some());
            vm_span.in_scope(|| tracing::info!(vhost_net = vhost.fd.is_some(), reason = %vhost.reason, "vhost-net for the TAP"));
            network.use_vhost(&vhost);
        }
        let vm = VmSpec {
            kernel: bins.kernel.clone(),
            initrd: bins.initrd.clone(),
            vcpus,
            memory_mib,
            kernel_cmdline: kernel_cmdline(
                config,
                &opts,
                &sb.id,
                choice.accel,
                bins.kernel_uses_acpi,
            ),
            vhost_vsock_socket: sb.vhost_socket(),
            virtiofs_socket: sb.virtiofs_socket(),
            virtiofs_tag: super::dir::SHARE_TAG.into(),
            console_socket: sb.console_socket(),
            accel: choice.clone(),
            network,
            acpi: bins.kernel_uses_acpi,
        };
        let console = AbortOnDrop(Some(super::console::capture(&sb, opts.log_max_bytes)?));
        let ready_path = sb.host_port_socket(shoji_protocols::READY_VSOCK_PORT);
        let ready = tokio::net::UnixListener::bind(&ready_path).map_err(|source| {
            crate::stdio::StdioError::Listen {
                path: ready_path.display().to_string(),
                source,
            }
        })?;
        let mut qemu_guard = vm_span.in_scope(|| bins.hypervisor.launch(&vm))?;
        // `vm.firmware` starts when QEMU was started (inside `qemu.launch`).
        let launched = qemu_guard.spawned_at();
        let processes = [
            ("vhost-device-vsock", vsock_helper.id()),
            ("virtiofsd", fs_helper.id()),
            (bins.hypervisor.name(), qemu_guard.id()),
        ]
        .into_iter()
        .filter_map(|(what, pid)| pid.map(|pid| StartedProcess { what, pid }))
        .collect();
        let stderr_pipes: Vec<_> = [
            ("vhost-device-vsock", vsock_helper.take_stderr()),
            ("virtiofsd", fs_helper.take_stderr()),
            (bins.hypervisor.name(), qemu_guard.take_stderr()),
        ]
        .into_iter()
        .filter_map(|(what, pipe)| pipe.map(|p| (what, p)))
        .collect();
        let (vm_exit_tx, vm_exit) = watch::channel::<Option<String>>(None);
        let vm_task = tokio::spawn(async move {
            let mut guard = qemu_guard;
            let status = guard.wait().await;
            let text = match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            let _ = vm_exit_tx.send(Some(text));
            // Keep the guard (and so the reaped child) until the task is dropped.
            std::future::pending::<()>().await;
        });
        let vm_task = AbortOnDrop(Some(vm_task));

        let boot_timeout = Duration::from_secs(q.boot_timeout.max(1));
        let uds = sb.vsock_uds();
        let exit_probe = vm_exit.clone();
        let client = AgentClient::connect(
            &uds,
            boot_timeout,
            Some(&ready),
            hooks.context_injector(),
            move || exit_probe.borrow().clone(),
        )
        .instrument(boot_span.clone())
        .await;
        drop(boot_span);
        let client = match client {
            Ok(c) => c,
            Err(source) => {
                // Give QEMU a moment to flush the console before reading its tail.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut stderr_pipes = stderr_pipes;
                let exited = vm_exit.borrow().is_some();
                let qemu_said = match exited {
                    true => hypervisor_stderr(bins.hypervisor.name(), &mut stderr_pipes).await,
                    false => String::new(),
                };
                return Err(BootError::Boot {
                    sandbox: sb.id.clone(),
                    cause: source,
                    output: format!(
                        "{qemu_said}--- last lines of the guest console ---\n{}",
                        sb.console_tail(20)
                    ),
                });
            }
        };
        drop(vm_span);

        let (clock, ping) = client
            .sync_clock(5)
            .instrument(info_span!(
                "clock.sync",
                source = "runtime",
                subsystem = "agent"
            ))
            .await
            .map_err(|cause| BootError::Agent {
                sandbox: sb.id.clone(),
                cause,
            })?;
        tracing::info!(
            offset_ns = clock.offset_ns,
            uncertainty_ns = clock.uncertainty_ns,
            "guest clock measured"
        );
        hooks.clock_measured(&sb.id, clock);
        if let Some(parent) = &boot_traceparent {
            if let Some(span) = firmware_span(launched, &ping.boot_phases, clock, &sb.id) {
                hooks.past_span(parent, span);
            }
        }
        let agent_spans_received = hooks.agent_spans_received();

        Ok(Self {
            client,
            accel: choice,
            clock,
            boot_phases: ping
                .boot_phases
                .iter()
                .map(|p| (p.name.clone(), p.time_unix_nano))
                .collect(),
            processes,
            stderr_pipes,
            vm_exit,
            vm_task,
            _console: console,
            log_max_bytes: opts.log_max_bytes,
            agent_spans_received,
            _ready: ready,
            fs_helper,
            vsock_helper,
            sb,
        })
    }

    /// Copies what QEMU and the helpers write on stderr to this process's stderr. A sandbox
    /// that lives long must do this: a pipe nobody reads fills up, and its writer then blocks.
    /// Each process's part is capped like every log.
    pub fn drain_stderr(&mut self) {
        let cap = self.log_max_bytes;
        for (what, pipe) in self.stderr_pipes.drain(..) {
            tokio::spawn(async move {
                let mut out = tokio::io::stderr();
                crate::capped_log::copy_capped_logged(pipe, &mut out, cap, what).await;
                tracing::debug!(process = what, "stderr closed");
            });
        }
    }

    /// QEMU's exit status once it has exited, `None` while it runs.
    pub fn exit_watch(&self) -> watch::Receiver<Option<String>> {
        self.vm_exit.clone()
    }

    /// Waits until QEMU exits and returns its status.
    pub async fn exited(&self) -> String {
        let mut exit = self.vm_exit.clone();
        let status = exit
            .wait_for(|s| s.is_some())
            .await
            .map(|s| s.clone().unwrap_or_default())
            .unwrap_or_default();
        status
    }

    /// The error for a VM that exited while it should not have, with the console's tail.
    pub async fn died(&self, status: String) -> BootError {
        // Give QEMU's last console lines a moment to reach the file.
        tokio::time::sleep(Duration::from_millis(100)).await;
        BootError::VmDied {
            sandbox: self.sb.id.clone(),
            status,
            console: self.sb.console_tail(20),
        }
    }

    /// A dead VM shows up first as a broken agent connection: says which it was.
    pub async fn explain(&self, cause: AgentError) -> BootError {
        let mut exit = self.vm_exit.clone();
        let died =
            tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|s| s.is_some())).await;
        if let Ok(Ok(st)) = died {
            let status = st.clone().unwrap_or_default();
            return BootError::VmDied {
                sandbox: self.sb.id.clone(),
                status,
                console: self.sb.console_tail(20),
            };
        }
        BootError::Agent {
            sandbox: self.sb.id.clone(),
            cause,
        }
    }

    /// Powers the guest off (the agent flushes its spans first), stops QEMU and the helpers and
    /// removes the sandbox directory. Returns what the agent says of its spans.
    pub async fn stop(mut self) -> AgentSpanCounts {
        let mut dropped = AgentSpanCounts::default();
        async {
            // A VM that already died (killed under its sandbox) has no agent to ask.
            let dead = self.vm_exit.borrow().is_some();
            let shutdown = if dead {
                Err(AgentError::VmExited {
                    status: self.vm_exit.borrow().clone().unwrap_or_default(),
                })
            } else {
                self.client.shutdown().await
            };
            match shutdown {
                Ok(r) => {
                    dropped = AgentSpanCounts {
                        dropped: r.dropped_spans,
                        left_out: r.level_dropped_spans,
                    };
                    // The agent answers once its spans are written and its filesystems synced:
                    // nothing in the guest needs the kernel's own power-off, which takes ~50 ms
                    // under TCG (issue #2). Once the spans it sent are here, QEMU is stopped, as
                    // Kata stops the VM after the agent's last call.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                    while self
                        .agent_spans_received
                        .as_ref()
                        .is_some_and(|n| (n.0)() < r.exported_spans)
                        && tokio::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    self.vm_task.stop().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "agent shutdown failed; stopping the VM");
                    let mut exit = self.vm_exit.clone();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        exit.wait_for(|s| s.is_some()),
                    )
                    .await;
                }
            }
        }
        .instrument(info_span!(
            "vm.stop",
            source = "hypervisor",
            subsystem = "hypervisor"
        ))
        .await;
        let Self {
            client,
            vm_task,
            _console: console,
            mut fs_helper,
            mut vsock_helper,
            sb,
            ..
        } = self;
        info_span!("sandbox.cleanup", source = "runtime", subsystem = "sandbox").in_scope(|| {
            drop(vm_task);
            drop(console);
            drop(client);
        });
        vsock_helper.stop().await;
        fs_helper.stop().await;
        drop(sb);
        dropped
    }
}

/// What an exited hypervisor wrote on stderr (QEMU's reason for refusing to start, say), at
/// most 4 KiB, as a section of an error message; empty if it said nothing.
async fn hypervisor_stderr(
    name: &str,
    pipes: &mut [(&'static str, tokio::process::ChildStderr)],
) -> String {
    use tokio::io::AsyncReadExt;
    let Some((_, pipe)) = pipes.iter_mut().find(|(what, _)| *what == name) else {
        return String::new();
    };
    let mut buf = Vec::new();
    let mut limited = pipe.take(4096);
    let read = limited.read_to_end(&mut buf);
    let _ = tokio::time::timeout(Duration::from_millis(500), read).await;
    match String::from_utf8_lossy(&buf).trim() {
        "" => String::new(),
        t => format!("--- {name}'s error output ---\n{t}\n"),
    }
}

/// Aborts (and so drops, killing QEMU) the wrapped task when dropped.
#[derive(Debug)]
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);
impl AbortOnDrop {
    /// Aborts the task and waits until it is gone (QEMU killed and reaped).
    async fn stop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            let _ = h.await;
        }
    }
}
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// `vm.firmware`: QEMU's launch until the guest kernel's first instruction (QEMU's start-up,
/// loading the kernel and initramfs, the firmware), the part of `guest.boot` before the agent's
/// `agent.boot`. The agent reports when the kernel was entered in guest time (`kernel.entered`:
/// its wall clock minus CLOCK_BOOTTIME at `/init`); the measured offset turns that into host time.
fn firmware_span(
    launched: SystemTime,
    phases: &[shoji_protocols::agent::BootPhase],
    clock: ClockOffset,
    sandbox_id: &str,
) -> Option<PastSpan> {
    let entered = phases.iter().find(|p| p.name == "kernel.entered")?;
    let host_ns =
        u64::try_from(i128::from(entered.time_unix_nano) - i128::from(clock.offset_ns)).ok()?;
    let end = SystemTime::UNIX_EPOCH + Duration::from_nanos(host_ns);
    // A kernel entry before the launch is a clock error larger than the phase, and one after
    // now is not a kernel entry (the time comes from the guest, which is not trusted): no span.
    end.duration_since(launched).ok()?;
    SystemTime::now().duration_since(end).ok()?;
    Some(PastSpan {
        name: "vm.firmware",
        start: launched,
        end,
        attributes: vec![
            ("source", "hypervisor".into()),
            ("subsystem", "boot".into()),
            ("package", "shoji_runtime::sandbox::vm".into()),
            ("sandbox_id", sandbox_id.into()),
        ],
    })
}

fn kernel_cmdline(
    config: &Config,
    opts: &BootOptions,
    sandbox_id: &str,
    accel: crate::hypervisor::accel::Accel,
    acpi: bool,
) -> String {
    // no_timer_check: Shoji's kernel has no ACPI (ADR 014), so it learns the interrupt routing
    // from qboot's MP table, which does not connect the PIT to the IO-APIC; the kernel's check
    // of that timer then fails (a panic, or seconds of fallbacks) although the guest runs on
    // the local APIC timer and the TSC. Harmless with Debian's kernel.
    let mut c = String::from("console=ttyS0 quiet panic=-1 reboot=t no_timer_check");
    if let Some(khz) = crate::hypervisor::host_tsc_khz() {
        // tsc=reliable: under TCG the guest's TSC is the host's, but the kernel's clocksource
        // watchdog judges it against jiffies, whose ticks TCG delivers late, marks it unstable
        // and falls back to refined-jiffies: a 4 ms clock that loses ticks under load, which
        // made agent span times coarse and drift from the host's (ADR 003).
        c.push_str(&format!(
            " tsc_early_khz={khz} lpj={} tsc=reliable",
            khz * 4
        ));
    }
    // noapictimer, under TCG with one vCPU and a kernel without ACPI (Shoji's) only: QEMU's
    // TCG has no TSC-deadline timer, so the kernel calibrates the local APIC timer against the
    // PIT and verifies it against jiffies, 2 x 100 ms of emulated time at every boot (KVM
    // guests have the deadline timer and skip both). Without the APIC timer the PIT is the
    // clock-event device, through the IO-APIC (pin 2 in qboot's MP table). With ACPI
    // (Debian's kernel; microvm's ACPI is hardware-reduced) the guest then had no working
    // timer and the agent never reported ready; with more vCPUs the PIT would have to wake the
    // others by IPI, so they keep the calibration. Measured in docs/benchmarks.md.
    if accel == crate::hypervisor::accel::Accel::Tcg && opts.vcpus <= 1 && !acpi {
        c.push_str(" noapictimer");
    }
    c.push_str(&format!(
        " shoji.sandbox_id={sandbox_id} shoji.launch_ns={}",
        crate::agent::now_unix_ns()
    ));
    // `[tracing] agent = "off"` sends nothing from the agent: no tracing at all there.
    if config.tracing.agent_traced(opts.agent_tracing) {
        c.push_str(" shoji.trace=1");
        c.push_str(&format!(
            " shoji.log={} {}={}",
            config.agent.shoji.trace_log_level,
            shoji_protocols::TRACE_LEVEL_CMDLINE_KEY,
            config.tracing.agent
        ));
    }
    if let Some(tp) = &opts.traceparent {
        c.push_str(&format!(" shoji.traceparent={tp}"));
    }
    let extra = config.hypervisor.qemu.kernel_params.trim();
    if !extra.is_empty() {
        c.push(' ');
        c.push_str(extra);
    }
    c
}

/// What the agent says of its spans at `Shutdown`, recorded on the sandbox's root span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentSpanCounts {
    /// Lost: queue full, no forwarder, not written before the flush gave up
    /// (`shoji.agent_dropped_spans`).
    pub dropped: u64,
    /// Left out by the agent's trace level (`shoji.agent_level_dropped_spans`).
    pub left_out: u64,
}

impl AgentSpanCounts {
    /// Records both counts on `span` (the root: `run`, `sandbox`).
    pub fn record_on(&self, span: &tracing::Span) {
        span.record("shoji.agent_dropped_spans", self.dropped);
        span.record("shoji.agent_level_dropped_spans", self.left_out);
    }
}
