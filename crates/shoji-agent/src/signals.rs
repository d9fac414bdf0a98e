//! Signals to a container's init that arrive before it can catch them.
//!
//! The kernel drops a signal sent to a PID namespace's init when the init has no handler for it
//! (SIGKILL and SIGSTOP aside). A container's init installs its handlers a little after it
//! starts; under emulation (TCG) that is tens of milliseconds, long enough for a stop that
//! follows the start at once (a kubelet's, critest's) to send SIGTERM into that gap, where it is
//! lost and the stop waits out its whole grace period. So after such a signal the agent watches
//! the init for a short while and sends the signal again once a handler for it is installed.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// How long after the signal the init is watched for a handler.
const WINDOW: Duration = Duration::from_secs(5);
/// How often its handlers are looked at.
const POLL: Duration = Duration::from_millis(10);

/// If `sig` reached `pid` (a PID-namespace init) while it had no handler for it, sends it again
/// once it has one (within [`WINDOW`]), from a thread of its own.
pub fn redeliver_once_caught(pid: i32, sig: Signal) {
    if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
        return;
    }
    let Some(started) = start_time(pid) else {
        return;
    };
    if catches(pid, sig) != Some(false) {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("signal-redeliver".into())
        .spawn(move || {
            let deadline = Instant::now() + WINDOW;
            while Instant::now() < deadline {
                std::thread::sleep(POLL);
                // The same process still (a pid is reused only after its exit is reaped).
                if start_time(pid) != Some(started) {
                    return;
                }
                if catches(pid, sig) == Some(true) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                    return;
                }
            }
        });
}

/// Whether `pid` has a handler for `sig` (its `SigCgt` in `/proc/PID/status`).
fn catches(pid: i32, sig: Signal) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    caught_mask(&status).map(|mask| mask & (1u64 << (sig as i32 - 1)) != 0)
}

/// The `SigCgt` mask of a `/proc/PID/status` text.
fn caught_mask(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The start time of `pid` (field 22 of `/proc/PID/stat`), which tells a reused pid apart.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_start_time(&stat)
}

fn stat_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_caught_mask_and_the_start_time() {
        let status = "Name:\ttop\nSigIgn:\t0000000000000000\nSigCgt:\t0000000003807a27\n";
        let mask = caught_mask(status).unwrap();
        assert_ne!(mask & (1 << (Signal::SIGTERM as i32 - 1)), 0);
        assert_eq!(mask & (1 << (Signal::SIGCHLD as i32 - 1)), 0);
        assert_eq!(caught_mask("Name:\tx\n"), None);
        let stat = "42 (a) b c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 7777 1000 200";
        assert_eq!(stat_start_time(stat), Some(7777));
        assert_eq!(stat_start_time("42 (x"), None);
    }

    #[test]
    fn a_process_of_our_own_is_seen() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert!(catches(me, Signal::SIGTERM).is_some());
    }
}
