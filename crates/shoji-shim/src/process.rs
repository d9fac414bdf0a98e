//! One process of a container as the shim keeps it: a container's init (exec id `""`) or one
//! of its execs. Its stdio runs between the agent's vsock streams and containerd's FIFOs; its
//! exit is a watch that `Wait` waits on.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use containerd_shim::asynchronous::io::{IoTasks, Stdio};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use shoji_protocols::agent::StdioPorts;
use shoji_runtime::stdio::{StdioError, StdioListeners};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub status: u32,
    pub at: Timestamp,
}

/// The exit status containerd reports for a process whose end was not seen (its VM died).
pub const UNKNOWN_EXIT: u32 = 255;

/// One process: its stdio and its exit.
pub struct Proc {
    pub exec_id: String,
    pub stdio: Stdio,
    /// The process's spec (an exec's `process` JSON), kept until `Start`.
    pub spec_json: Vec<u8>,
    io: IoTasks,
    listeners: Mutex<Option<StdioListeners>>,
    relays: Mutex<Vec<JoinHandle<()>>>,
    exit_tx: watch::Sender<Option<Exit>>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("exec_id", &self.exec_id)
            .field("stdio", &self.stdio)
            .finish_non_exhaustive()
    }
}

impl Proc {
    /// Binds the host ends of the process's streams (`<uds>_<first_port>` and the next two)
    /// for the agent to connect to; relaying starts with [`Self::relay`].
    pub fn new(
        exec_id: &str,
        stdio: Stdio,
        spec_json: Vec<u8>,
        uds: &Path,
        first_port: u32,
    ) -> Result<Self, StdioError> {
        let listeners =
            StdioListeners::bind(uds, first_port, !stdio.stdin.is_empty(), stdio.terminal)?;
        Ok(Self {
            exec_id: exec_id.into(),
            stdio,
            spec_json,
            io: IoTasks::default(),
            listeners: Mutex::new(Some(listeners)),
            relays: Mutex::new(Vec::new()),
            exit_tx: watch::channel(None).0,
        })
    }

    /// The ports the agent is to connect to, for `CreateContainer` / `ExecProcess`.
    pub fn ports(&self) -> StdioPorts {
        lock(&self.listeners)
            .as_ref()
            .map(StdioListeners::ports)
            .unwrap_or_default()
    }

    /// Relays each stream between the agent's connection and containerd's FIFO once the agent
    /// connects. Output with no FIFO is read and dropped, so the process never blocks on it.
    pub fn relay(&self) {
        let Some(l) = lock(&self.listeners).take() else {
            return;
        };
        let mut relays = lock(&self.relays);
        relays.push(self.output(l.stdout.1, &self.stdio.stdout));
        if let Some((_, l)) = l.stderr {
            relays.push(self.output(l, &self.stdio.stderr));
        }
        if let Some((_, l)) = l.stdin {
            let (io, path) = (self.io.clone(), self.stdio.stdin.clone());
            relays.push(tokio::spawn(async move {
                if let Ok((conn, _)) = l.accept().await {
                    if let Err(e) = io.copy_from_fifo(&path, conn) {
                        tracing::warn!(error = %e, fifo = %path, "stdin not relayed");
                    }
                }
            }));
        }
    }

    fn output(&self, l: UnixListener, path: &str) -> JoinHandle<()> {
        let (io, path) = (self.io.clone(), path.to_string());
        tokio::spawn(async move {
            let Ok((mut conn, _)) = l.accept().await else {
                return;
            };
            if path.is_empty() {
                let _ = tokio::io::copy(&mut conn, &mut tokio::io::sink()).await;
            } else if let Err(e) = io.copy_to_fifo(conn, &path) {
                tracing::warn!(error = %e, fifo = %path, "output not relayed");
            }
        })
    }

    /// CloseIO: lets the process's stdin reach EOF once containerd's writer is gone.
    pub fn close_stdin(&self) {
        self.io.close_input();
    }

    /// The process has ended: its output is delivered (the agent closes the streams before it
    /// answers `WaitProcess`; bounded all the same), then its exit is told to every waiter.
    pub async fn exited(&self, status: u32) -> Exit {
        let relays: Vec<_> = lock(&self.relays).drain(..).collect();
        for r in relays {
            let abort = r.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), r)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.io.shutdown().await;
        let exit = Exit {
            status,
            at: containerd_shim::util::timestamp().unwrap_or_default(),
        };
        self.exit_tx.send_replace(Some(exit.clone()));
        exit
    }

    /// The exit, once there is one.
    pub fn exit(&self) -> Option<Exit> {
        self.exit_tx.borrow().clone()
    }

    /// Waits for the exit.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit_tx.subscribe();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return Exit {
                    status: UNKNOWN_EXIT,
                    at: Timestamp::default(),
                };
            }
        }
    }

    /// Stops relaying at once (a process deleted, or one that never ran).
    pub async fn abort(&self) {
        for r in lock(&self.relays).drain(..) {
            r.abort();
        }
        lock(&self.listeners).take();
        self.io.abort().await;
    }
}

/// A poisoned lock still holds usable data here: nothing panics while holding these.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
