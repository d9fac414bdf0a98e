//! Issue 14: under TCG a one-vCPU guest boots with `noapictimer`: the kernel skips calibrating
//! the local APIC timer (2 x 100 ms of emulated time; TCG has no TSC-deadline timer) and ticks
//! on the PIT through the IO-APIC. Its timers still work (a sleep ends, the PIT's interrupt
//! counts). A guest with two vCPUs keeps the APIC timer. Boots VMs (`vm_*`).

use crate::common;
use common::{busybox_image, text, TestEnv};

/// Prints whether the command line has `noapictimer`, sleeps, then prints the counts of the
/// PIT's interrupt (IRQ 0) and of the local APIC timers.
const PROBE: &str = "grep -c noapictimer /proc/cmdline; sleep 0.3; \
    awk '$1 == \"0:\" {print $2} \
         $1 == \"LOC:\" {for (i = 2; $i ~ /^[0-9]+$/; i++) print $i}' /proc/interrupts";

fn probe(env: &TestEnv, cpus: &str) -> Vec<u64> {
    let image = busybox_image().0.display().to_string();
    let out = env.run(&[
        "run", "--rm", "--cpus", cpus, &image, "--", "sh", "-c", PROBE,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    // The LOC line has one count per CPU, then its name.
    stdout
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[test]
fn vm_tcg_guests_with_one_vcpu_tick_on_the_pit_without_apic_calibration() {
    let env = TestEnv::with_config("[hypervisor.qemu]\naccel = \"tcg\"\n");
    let one = probe(&env, "1");
    assert_eq!(one.len(), 3, "noapictimer, PIT, LOC: {one:?}");
    assert_eq!(one[0], 1, "noapictimer on the command line: {one:?}");
    assert!(one[1] > 0, "the PIT ticks: {one:?}");
    assert_eq!(one[2], 0, "no local APIC timer interrupts: {one:?}");

    let two = probe(&env, "2");
    assert_eq!(two.len(), 4, "noapictimer, PIT, LOC x2: {two:?}");
    assert_eq!(two[0], 0, "two vCPUs keep the APIC timer: {two:?}");
    assert!(two[2] > 0 && two[3] > 0, "local APIC timers tick: {two:?}");
}
