//! Accelerator choice. `auto` uses KVM only where a probe shows it works at a sane speed: nested
//! KVM can open `/dev/kvm` and run `KVM_RUN` yet be a thousand times slower than native, which is
//! worse than TCG. The probe runs a 20-million-iteration loop in a one-page real-mode guest
//! through rust-vmm's `kvm-ioctls` and gives it 500 ms (native: about 10 ms). The verdict is
//! cached per host boot in the sandbox root.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator and why it was chosen (recorded on the trace and shown by `shoji env`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

const LOOPS: u32 = 20_000_000;
const PROBE_BUDGET: Duration = Duration::from_millis(500);

/// Decides the accelerator for `configured`, probing (or reading the cached probe) for `auto`.
pub fn choose(configured: config::Accel, cache_dir: &Path) -> AccelChoice {
    match configured {
        config::Accel::Kvm => AccelChoice {
            accel: Accel::Kvm,
            reason: "accel = \"kvm\" in the configuration".into(),
        },
        config::Accel::Tcg => AccelChoice {
            accel: Accel::Tcg,
            reason: "accel = \"tcg\" in the configuration".into(),
        },
        config::Accel::Auto => cached_probe(cache_dir),
    }
}

fn cached_probe(cache_dir: &Path) -> AccelChoice {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cache = cache_dir.join("accel-probe");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        let mut parts = text.splitn(3, '\n');
        if let (Some(id), Some(acc), Some(reason)) = (parts.next(), parts.next(), parts.next()) {
            if id == boot_id && !boot_id.is_empty() {
                let accel = if acc == "kvm" { Accel::Kvm } else { Accel::Tcg };
                return AccelChoice {
                    accel,
                    reason: format!("{reason} (probe cached for this host boot)"),
                };
            }
        }
    }
    let choice = probe();
    let _ = std::fs::create_dir_all(cache_dir);
    let _ = std::fs::write(
        &cache,
        format!("{boot_id}\n{}\n{}", choice.accel.as_str(), choice.reason),
    );
    choice
}

/// Runs the KVM speed probe now.
pub fn probe() -> AccelChoice {
    let tcg = |reason: String| AccelChoice {
        accel: Accel::Tcg,
        reason,
    };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return tcg(format!("auto: /dev/kvm is not usable ({e})"));
    }
    match run_loop_with_budget() {
        Ok(elapsed) => AccelChoice {
            accel: Accel::Kvm,
            reason: format!(
                "auto: KVM probe ran {LOOPS} guest loop iterations in {} ms",
                elapsed.as_millis()
            ),
        },
        Err(why) => tcg(format!("auto: KVM probed unusable: {why}")),
    }
}

fn run_loop_with_budget() -> Result<Duration, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            let r = run_loop();
            let _ = tx.send(r);
        })
        .map_err(|e| format!("cannot start probe thread: {e}"))?;
    match rx.recv_timeout(PROBE_BUDGET) {
        Ok(r) => {
            let _ = handle.join();
            r
        }
        Err(_) => {
            // The vCPU thread is still inside KVM_RUN. Interrupt it with a signal whose handler
            // does nothing: KVM_RUN returns EINTR and the thread ends.
            interrupt_thread(&handle);
            let _ = rx.recv_timeout(Duration::from_secs(5));
            Err(format!(
                "the probe guest did not finish {LOOPS} loop iterations within {} ms (native KVM needs about 10 ms): KVM is too slow here, probably nested",
                PROBE_BUDGET.as_millis()
            ))
        }
    }
}

extern "C" fn noop_handler(_: libc::c_int) {}

fn interrupt_thread(handle: &std::thread::JoinHandle<()>) {
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: installs a handler that does nothing for SIGUSR1 (no SA_RESTART, so KVM_RUN returns
    // EINTR); the handler touches no state, so it is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = noop_handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    for _ in 0..50 {
        // SAFETY: the pthread id comes from a JoinHandle that has not been joined, so it names a
        // live or exited-but-unjoined thread; pthread_kill on it is defined.
        let rc = unsafe { libc::pthread_kill(handle.as_pthread_t(), libc::SIGUSR1) };
        if rc != 0 || handle.is_finished() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_loop() -> Result<Duration, String> {
    use kvm_ioctls::{Kvm, VcpuExit};
    let kvm = Kvm::new().map_err(|e| format!("KVM_CREATE: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    const MEM: usize = 0x4000;
    // SAFETY: an anonymous private mapping; checked for MAP_FAILED below and unmapped at the end.
    let host = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if host == libc::MAP_FAILED {
        return Err("mmap failed".into());
    }
    let result = (|| {
        // Real mode at 0x1000: mov ecx, LOOPS; l: dec ecx; jnz l; hlt
        let n = LOOPS.to_le_bytes();
        let code = [
            0x66, 0xb9, n[0], n[1], n[2], n[3], 0x66, 0x49, 0x75, 0xfc, 0xf4,
        ];
        // SAFETY: `host` is a live mapping of MEM bytes and the code fits at offset 0x1000.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), (host as *mut u8).add(0x1000), code.len())
        };
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot: 0,
            guest_phys_addr: 0,
            memory_size: MEM as u64,
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: the region points at our mapping, which outlives the VM (unmapped after it
        // is dropped at the end of this closure).
        unsafe { vm.set_user_memory_region(region) }.map_err(|e| format!("memory: {e}"))?;
        let mut vcpu = vm.create_vcpu(0).map_err(|e| format!("vcpu: {e}"))?;
        let mut sregs = vcpu.get_sregs().map_err(|e| format!("sregs: {e}"))?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.set_sregs(&sregs).map_err(|e| format!("sregs: {e}"))?;
        let regs = kvm_bindings::kvm_regs {
            rip: 0x1000,
            rflags: 2,
            ..Default::default()
        };
        vcpu.set_regs(&regs).map_err(|e| format!("regs: {e}"))?;
        let start = Instant::now();
        match vcpu.run() {
            Ok(VcpuExit::Hlt) => Ok(start.elapsed()),
            Ok(other) => Err(format!("unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR => Err("interrupted".into()),
            Err(e) => Err(format!("KVM_RUN: {e}")),
        }
    })();
    // SAFETY: unmapping the mapping made above; the VM using it has been dropped.
    unsafe { libc::munmap(host, MEM) };
    result
}
