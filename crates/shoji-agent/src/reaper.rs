//! PID 1 reaps every process in the VM: orphans of containers are reparented to it. Statuses of
//! processes somebody waits for are delivered to them; others are kept in a small bounded map in
//! case their waiter registers late, then forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// Exit status: (shell-style code, signal or 0).
pub type Status = (i32, i32);

const KEEP_UNCLAIMED: usize = 1024;

#[derive(Default)]
struct Inner {
    waiters: HashMap<i32, Vec<oneshot::Sender<Status>>>,
    unclaimed: HashMap<i32, Status>,
    order: VecDeque<i32>,
}

#[derive(Clone, Default)]
pub struct Reaper {
    inner: Arc<Mutex<Inner>>,
}

impl Reaper {
    /// Starts reaping on SIGCHLD.
    pub fn start() -> std::io::Result<Self> {
        let reaper = Self::default();
        let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                sig.recv().await;
            }
        });
        Ok(reaper)
    }

    fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.deliver(pid.as_raw(), (code, 0)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.deliver(pid.as_raw(), (128 + sig as i32, sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn deliver(&self, pid: i32, status: Status) {
        let Ok(mut g) = self.inner.lock() else { return };
        if let Some(ws) = g.waiters.remove(&pid) {
            for w in ws {
                let _ = w.send(status);
            }
            return;
        }
        g.unclaimed.insert(pid, status);
        g.order.push_back(pid);
        while g.order.len() > KEEP_UNCLAIMED {
            if let Some(old) = g.order.pop_front() {
                g.unclaimed.remove(&old);
            }
        }
    }

    /// Resolves when `pid` exits.
    pub fn wait(&self, pid: i32) -> oneshot::Receiver<Status> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut g) = self.inner.lock() {
            if let Some(s) = g.unclaimed.remove(&pid) {
                let _ = tx.send(s);
            } else {
                g.waiters.entry(pid).or_default().push(tx);
            }
        }
        rx
    }
}
