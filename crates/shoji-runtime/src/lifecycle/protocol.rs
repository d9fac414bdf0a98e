//! The control protocol between the lifecycle commands and a sandbox process: JSON lines over
//! the Unix socket `<state dir>/control.sock` (ADR 007). A client connects, writes one
//! [`Request`] line and reads [`Reply`] lines; one request per connection.
//!
//! `exec` keeps its connection: the sandbox process answers `started`, then `exited` when the
//! process ends; meanwhile the client may write `kill` lines (forwarded to the exec'd process),
//! and closing the connection early kills the process. Stdio bytes never cross this socket: the
//! client listens on the hybrid-vsock ports itself (see [`ExecRequest::stdio`]).
//!
//! Lines are bounded ([`MAX_LINE`]); the socket is only reachable by whoever may enter the state
//! directory, but a malformed line is still an error answered, never a panic.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::state::OciState;
use crate::spec::ProcessOptions;

/// Longest line either side accepts.
pub const MAX_LINE: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    State,
    Start,
    /// To the container's init; on an `exec` connection, to the exec'd process.
    Kill {
        signal: i32,
    },
    Delete {
        force: bool,
    },
    /// Boxed: the process options are far larger than the other requests.
    Exec(Box<ExecRequest>),
    /// On an `exec` connection with a terminal: the caller's terminal changed size.
    Resize {
        rows: u32,
        cols: u32,
    },
}

/// An extra process in the running container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub exec_id: String,
    /// Command, extra environment, cwd, user, terminal; the rest comes from the container's
    /// own process.
    pub process: ProcessOptions,
    /// Host ports the client already listens on (`<state dir>/vm.vsock_<port>`); 0 = none.
    pub stdin_port: u32,
    pub stdout_port: u32,
    pub stderr_port: u32,
    /// The client's terminal size (rows, cols), with a terminal.
    #[serde(default)]
    pub terminal_size: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    State(OciState),
    Done,
    Started { pid: u32 },
    Exited { exit_code: i32 },
    Error { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("control socket i/o")]
    Io(#[from] std::io::Error),
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("malformed message {line:?}: {message}")]
    Malformed { line: String, message: String },
}

/// Reads one message; `None` at end of stream.
pub async fn read<T, R>(r: &mut R) -> Result<Option<T>, ProtocolError>
where
    T: DeserializeOwned,
    R: AsyncBufRead + Unpin,
{
    let mut line = String::new();
    let n = r.take(MAX_LINE + 1).read_line(&mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    if n as u64 > MAX_LINE {
        return Err(ProtocolError::TooLong);
    }
    serde_json::from_str(line.trim_end())
        .map(Some)
        .map_err(|e| ProtocolError::Malformed {
            line: line.chars().take(200).collect(),
            message: e.to_string(),
        })
}

/// Writes one message as a line.
pub async fn write<T, W>(w: &mut W, msg: &T) -> Result<(), ProtocolError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let mut line = serde_json::to_vec(msg).map_err(|e| ProtocolError::Malformed {
        line: String::new(),
        message: e.to_string(),
    })?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_as_lines() {
        let msgs = vec![
            Request::State,
            Request::Kill { signal: 15 },
            Request::Delete { force: true },
            Request::Exec(Box::new(ExecRequest {
                exec_id: "e1".into(),
                process: ProcessOptions {
                    args: vec!["echo".into(), "a b".into()],
                    ..Default::default()
                },
                stdin_port: 0,
                stdout_port: 30001,
                stderr_port: 30002,
                terminal_size: Some((24, 80)),
            })),
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            write(&mut buf, m).await.unwrap();
        }
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), msgs.len());
        assert!(buf.starts_with(b"{\"op\":\"state\"}\n"));
        let mut r = tokio::io::BufReader::new(&buf[..]);
        for m in &msgs {
            let got: Request = read(&mut r).await.unwrap().unwrap();
            assert_eq!(&got, m);
        }
        assert!(read::<Request, _>(&mut r).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bad_lines_are_errors_not_panics() {
        for bad in [
            &b"{\"op\":\"fly\"}\n"[..],
            b"\xff\xfe\n",
            b"{\"op\":\"kill\"}\n",
        ] {
            let mut r = tokio::io::BufReader::new(bad);
            assert!(read::<Request, _>(&mut r).await.is_err(), "{bad:?}");
        }
        let long = vec![b'x'; MAX_LINE as usize + 10];
        let mut r = tokio::io::BufReader::new(&long[..]);
        assert!(matches!(
            read::<Request, _>(&mut r).await,
            Err(ProtocolError::TooLong)
        ));
    }
}
