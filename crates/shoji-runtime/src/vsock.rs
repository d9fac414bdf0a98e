//! Hybrid vsock, Firecracker-style, as `vhost-device-vsock` implements it: the host reaches guest
//! port P by connecting to the Unix socket and writing `CONNECT P\n` (answer `OK <n>\n`); a guest
//! connecting to host port P arrives at the Unix socket `<uds>_P`.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("cannot connect to {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("guest port {port} refused the connection (answer {answer:?})")]
    Refused { port: u32, answer: String },
}

/// Connects to guest `port` through the hybrid-vsock socket `uds`.
pub async fn connect(uds: &Path, port: u32) -> Result<UnixStream, VsockError> {
    let mut s = UnixStream::connect(uds)
        .await
        .map_err(|source| VsockError::Connect {
            path: uds.display().to_string(),
            source,
        })?;
    let io = |source| VsockError::Connect {
        path: uds.display().to_string(),
        source,
    };
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(io)?;
    // Read the answer byte by byte: anything after the newline belongs to the guest's protocol.
    let mut answer = Vec::with_capacity(16);
    loop {
        let mut b = [0u8; 1];
        let n = s.read(&mut b).await.map_err(io)?;
        if n == 0 || answer.len() > 64 {
            return Err(VsockError::Refused {
                port,
                answer: String::from_utf8_lossy(&answer).into_owned(),
            });
        }
        if b[0] == b'\n' {
            break;
        }
        answer.push(b[0]);
    }
    if answer.starts_with(b"OK ") {
        Ok(s)
    } else {
        Err(VsockError::Refused {
            port,
            answer: String::from_utf8_lossy(&answer).into_owned(),
        })
    }
}
