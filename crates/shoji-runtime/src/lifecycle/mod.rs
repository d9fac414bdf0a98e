//! The OCI-runtime-shaped lifecycle: `shoji create|start|state|kill|delete|exec|list`.
//!
//! How the parts compose (decisions in `docs/adr/007-lifecycle.md`): `shoji create` makes the
//! container's state directory `<sandbox_root>/<id>` (atomically, so a second create of the same
//! id fails) and starts the sandbox process ([`daemon`]: `shoji __sandbox`, in its own session)
//! with a [`daemon::CreateRequest`] on its stdin. The sandbox process boots the VM
//! ([`crate::sandbox::SandboxVm`]), creates the container, writes `state.json` ([`state`]), listens on
//! `control.sock` and answers on its stdout; from then on it owns QEMU, the helpers and the
//! container's output (`stdout.log`, `stderr.log`) until `delete`. Every other command is a
//! client ([`client::StateRoot`]) that reads `state.json` and talks [`protocol`] to the sandbox
//! process while it lives; once it is gone, the state says `stopped` and `delete` removes what
//! is left by itself, and ends the root span of the sandbox's trace if the sandbox process
//! could not ([`client::LostRoot`], from the record in [`state::TraceRoot`]).

pub mod client;
pub mod daemon;
pub mod protocol;
pub mod state;
pub mod status;

use std::path::PathBuf;

use crate::sandbox::BootError;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("container id {id:?} makes socket paths under {root} longer than the 107 bytes Unix sockets allow; use a shorter id or sandbox_root")]
    PathTooLong { id: String, root: PathBuf },
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error("a container {id:?} already exists in {root}")]
    Exists { id: String, root: PathBuf },
    #[error("no container {id:?} in the state root {root} ([runtime] sandbox_root)")]
    NotFound { id: String, root: PathBuf },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid state {path}: {message}")]
    BadState { path: PathBuf, message: String },
    #[error("container {id}: cannot talk to its sandbox process on {path}")]
    Control {
        id: String,
        path: PathBuf,
        #[source]
        source: protocol::ProtocolError,
    },
    #[error("container {id}: its sandbox process did not answer within {secs} s")]
    Timeout { id: String, secs: u64 },
    #[error("{message}")]
    Refused { message: String },
    #[error("container {id} is stopped: its sandbox process is gone (`shoji delete {id}` removes what is left)")]
    Gone { id: String },
    #[error(
        "container {id} is still being created; wait for `shoji create` or use delete --force"
    )]
    Creating { id: String },
    #[error("cannot start the sandbox process {exe}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id} was not created: {message}")]
    CreateFailed { id: String, message: String },
    #[error("invalid signal {value:?}: give a name (TERM, SIGKILL) or a number (1-31)")]
    BadSignal { value: String },
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Private(#[from] crate::private_fs::PrivateFsError),
}

/// `TERM`, `SIGTERM`, `term` or `15` to a signal number.
pub fn parse_signal(value: &str) -> Result<i32, LifecycleError> {
    use std::str::FromStr;
    let bad = || LifecycleError::BadSignal {
        value: value.to_string(),
    };
    let sig = match value.parse::<i32>() {
        Ok(n) => nix::sys::signal::Signal::try_from(n).map_err(|_| bad())?,
        Err(_) => {
            let upper = value.to_ascii_uppercase();
            let name = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            nix::sys::signal::Signal::from_str(&name).map_err(|_| bad())?
        }
    };
    Ok(sig as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        for bad in ["", "0", "99", "-1", "FOO", "SIG"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }
}
