//! Stdio between the host terminal and a container process. The host listens on
//! `<vsock>_<port>` per stream and the agent connects to it; raw bytes, no framing.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use shoji_protocols::agent::StdioPorts;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::sandbox::SandboxDir;

/// First host port used for stdio.
pub const FIRST_STDIO_PORT: u32 = 20000;

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("cannot listen on {path}")]
    Listen {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The relay tasks of one process.
#[derive(Debug)]
pub struct StdioRelay {
    stdin: Option<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
}

fn listen(path: &Path) -> Result<UnixListener, StdioError> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|source| StdioError::Listen {
        path: path.display().to_string(),
        source,
    })
}

/// Copies everything the agent sends on the stream accepted from `l` into `out`.
fn spawn_output<W>(l: UnixListener, mut out: W) -> JoinHandle<()>
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Ok((mut conn, _)) = l.accept().await {
            let _ = tokio::io::copy(&mut conn, &mut out).await;
            let _ = out.flush().await;
        }
    })
}

/// Like [`spawn_output`] into a file, up to `cap` bytes ([`crate::capped_log`]).
fn spawn_capped(
    l: UnixListener,
    mut out: tokio::fs::File,
    stream: &'static str,
    cap: u64,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Ok((conn, _)) = l.accept().await {
            crate::capped_log::copy_capped_logged(conn, &mut out, cap, stream).await;
        }
    })
}

/// Copies the host's stdin to the stream accepted from `l`; EOF is passed on as shutdown.
fn spawn_stdin(l: UnixListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Ok((mut conn, _)) = l.accept().await {
            let mut input = tokio::io::stdin();
            let _ = tokio::io::copy(&mut input, &mut conn).await;
            let _ = conn.shutdown().await;
        }
    })
}

/// The listeners of one process's streams, each with its port.
#[derive(Debug)]
pub struct StdioListeners {
    pub stdin: Option<(u32, UnixListener)>,
    pub stdout: (u32, UnixListener),
    pub stderr: Option<(u32, UnixListener)>,
}

impl StdioListeners {
    /// Binds `<uds>_<port>` for `first_port` (stdin, with `interactive`), `first_port + 1`
    /// (stdout) and `first_port + 2` (stderr, unless `terminal`). A socket already there is an
    /// error (`AddrInUse`), never replaced: another process may be using it.
    pub fn bind(
        uds: &Path,
        first_port: u32,
        interactive: bool,
        terminal: bool,
    ) -> Result<Self, StdioError> {
        let mut made: Vec<PathBuf> = Vec::new();
        let mut bind = |port: u32| {
            let path = PathBuf::from(format!("{}_{port}", uds.display()));
            match UnixListener::bind(&path) {
                Ok(l) => {
                    made.push(path);
                    Ok((port, l))
                }
                Err(source) => {
                    // Leave no half-bound set behind.
                    for p in &made {
                        let _ = std::fs::remove_file(p);
                    }
                    Err(StdioError::Listen {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
        };
        let stdin = if interactive {
            Some(bind(first_port)?)
        } else {
            None
        };
        let stdout = bind(first_port + 1)?;
        let stderr = if terminal {
            None
        } else {
            Some(bind(first_port + 2)?)
        };
        Ok(Self {
            stdin,
            stdout,
            stderr,
        })
    }

    pub fn ports(&self) -> StdioPorts {
        StdioPorts {
            stdin_port: self.stdin.as_ref().map_or(0, |(p, _)| *p),
            stdout_port: self.stdout.0,
            stderr_port: self.stderr.as_ref().map_or(0, |(p, _)| *p),
            ..Default::default()
        }
    }
}

impl StdioRelay {
    /// Listens for the process's streams and starts relaying as soon as the agent connects.
    pub fn start(
        sb: &SandboxDir,
        first_port: u32,
        interactive: bool,
        terminal: bool,
    ) -> Result<(StdioPorts, Self), StdioError> {
        let mut ports = StdioPorts::default();
        let mut relay = Self {
            stdin: None,
            outputs: Vec::new(),
        };
        if interactive {
            let l = listen(&sb.host_port_socket(first_port))?;
            ports.stdin_port = first_port;
            relay.stdin = Some(spawn_stdin(l));
        }
        let l = listen(&sb.host_port_socket(first_port + 1))?;
        ports.stdout_port = first_port + 1;
        relay.outputs.push(spawn_output(l, tokio::io::stdout()));
        if !terminal {
            let l = listen(&sb.host_port_socket(first_port + 2))?;
            ports.stderr_port = first_port + 2;
            relay.outputs.push(spawn_output(l, tokio::io::stderr()));
        }
        Ok((ports, relay))
    }

    /// Relays bound `listeners` to the host's stdin, stdout and stderr.
    pub fn host(listeners: StdioListeners) -> (StdioPorts, Self) {
        let ports = listeners.ports();
        let mut outputs = vec![spawn_output(listeners.stdout.1, tokio::io::stdout())];
        if let Some((_, l)) = listeners.stderr {
            outputs.push(spawn_output(l, tokio::io::stderr()));
        }
        let relay = Self {
            stdin: listeners.stdin.map(|(_, l)| spawn_stdin(l)),
            outputs,
        };
        (ports, relay)
    }

    /// Relays stdout and stderr (no stdin) into files, for a process nobody is attached to.
    /// Each file takes at most `cap` bytes; the rest is read and dropped, so that the process
    /// is never blocked and a guest cannot fill the host's disk.
    pub fn to_files(
        sb: &SandboxDir,
        first_port: u32,
        stdout: std::fs::File,
        stderr: std::fs::File,
        cap: u64,
    ) -> Result<(StdioPorts, Self), StdioError> {
        let mut ports = StdioPorts::default();
        let l = listen(&sb.host_port_socket(first_port + 1))?;
        ports.stdout_port = first_port + 1;
        let mut outputs = vec![spawn_capped(
            l,
            tokio::fs::File::from_std(stdout),
            "stdout",
            cap,
        )];
        let l = listen(&sb.host_port_socket(first_port + 2))?;
        ports.stderr_port = first_port + 2;
        outputs.push(spawn_capped(
            l,
            tokio::fs::File::from_std(stderr),
            "stderr",
            cap,
        ));
        Ok((
            ports,
            Self {
                stdin: None,
                outputs,
            },
        ))
    }

    /// Waits (bounded) for the output streams to drain, then stops stdin.
    pub async fn finish(mut self, wait: std::time::Duration) {
        for h in self.outputs.drain(..) {
            let abort = h.abort_handle();
            if tokio::time::timeout(wait, h).await.is_err() {
                abort.abort();
            }
        }
        if let Some(h) = self.stdin.take() {
            h.abort();
        }
    }
}

impl Drop for StdioRelay {
    fn drop(&mut self) {
        for h in self.outputs.drain(..) {
            h.abort();
        }
        if let Some(h) = self.stdin.take() {
            h.abort();
        }
    }
}

/// Puts the host terminal in raw mode for `-t`; restores it on drop.
#[derive(Debug)]
pub struct RawTerminal {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawTerminal {
    pub fn enable() -> Self {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return Self { saved: None };
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &raw);
        Self { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// The host terminal's size (rows, cols), if stdin is a terminal.
pub fn terminal_size() -> Option<(u32, u32)> {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid struct we pass.
    let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some((u32::from(ws.ws_row), u32::from(ws.ws_col)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_fails_the_bind_and_leaves_no_half_bound_set() {
        let t = tempfile::tempdir().unwrap();
        let uds = t.path().join("vm.vsock");
        let first = StdioListeners::bind(&uds, 30000, false, false).unwrap();
        assert_eq!(
            (
                first.ports().stdin_port,
                first.ports().stdout_port,
                first.ports().stderr_port
            ),
            (0, 30001, 30002)
        );
        // stdin (30000) binds, stdout (30001) is taken: 30000 must not stay behind.
        let err = StdioListeners::bind(&uds, 30000, true, false).unwrap_err();
        let StdioError::Listen { source, .. } = err;
        assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        assert!(!t.path().join("vm.vsock_30000").exists());
        let tty = StdioListeners::bind(&uds, 30003, true, true).unwrap();
        assert_eq!(tty.ports().stderr_port, 0);
        assert_eq!(tty.ports().stdin_port, 30003);
    }

    #[tokio::test]
    async fn a_log_takes_at_most_its_cap_and_the_writer_is_never_blocked() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("out.sock");
        let log = t.path().join("out.log");
        let l = UnixListener::bind(&sock).unwrap();
        let file = tokio::fs::File::create(&log).await.unwrap();
        let relay = spawn_capped(l, file, "stdout", 10);
        let mut guest = tokio::net::UnixStream::connect(&sock).await.unwrap();
        // Far more than the cap and than a socket buffer: only a reader that keeps reading
        // lets this finish.
        let data = vec![b'x'; 4 << 20];
        guest.write_all(&data).await.unwrap();
        guest.shutdown().await.unwrap();
        drop(guest);
        relay.await.unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"xxxxxxxxxx");
    }
}
