//! Stdio between the host terminal and a container process. The host listens on
//! `<vsock>_<port>` per stream and the agent connects to it; raw bytes, no framing.

use std::os::fd::AsFd;
use std::path::Path;

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
            relay.stdin = Some(tokio::spawn(async move {
                if let Ok((mut conn, _)) = l.accept().await {
                    let mut input = tokio::io::stdin();
                    let _ = tokio::io::copy(&mut input, &mut conn).await;
                    let _ = conn.shutdown().await;
                }
            }));
        }
        let l = listen(&sb.host_port_socket(first_port + 1))?;
        ports.stdout_port = first_port + 1;
        relay.outputs.push(tokio::spawn(async move {
            if let Ok((mut conn, _)) = l.accept().await {
                let mut out = tokio::io::stdout();
                let _ = tokio::io::copy(&mut conn, &mut out).await;
                let _ = out.flush().await;
            }
        }));
        if !terminal {
            let l = listen(&sb.host_port_socket(first_port + 2))?;
            ports.stderr_port = first_port + 2;
            relay.outputs.push(tokio::spawn(async move {
                if let Ok((mut conn, _)) = l.accept().await {
                    let mut err = tokio::io::stderr();
                    let _ = tokio::io::copy(&mut conn, &mut err).await;
                    let _ = err.flush().await;
                }
            }));
        }
        Ok((ports, relay))
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
