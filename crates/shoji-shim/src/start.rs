//! The `start` action's reply, in a form every containerd reads.
//!
//! The containerd-shim crate's `start` answers containerd's legacy start protocol (flags and
//! environment: every containerd before 2.3) with JSON, `{"version":3,"address":...}`, which only
//! containerd 2.0-2.2 understand; 1.6 and 1.7 read the whole of stdout as the socket address and
//! fail to dial it. Every legacy-protocol containerd accepts a bare address (2.x then speak task
//! API 2, which [`crate::serve`] also serves). containerd 2.3 and later use the bootstrap
//! protocol (protobuf on stdin and stdout), whose reply must stay exactly as the crate writes it.
//!
//! So `start` runs the crate's own code with its stdout captured, and the captured reply is
//! passed on unchanged unless it is the legacy JSON, which becomes its bare address: which
//! protocol containerd spoke is decided once, by the crate. ADR 020.

use std::io::{Read, Write};
use std::os::fd::AsFd;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot capture the start action's stdout")]
    Capture(#[source] std::io::Error),
    #[error("cannot restore the start action's stdout")]
    Restore(#[source] std::io::Error),
    #[error("cannot read the start action's captured reply")]
    Read(#[source] std::io::Error),
    #[error("cannot write the start action's reply to containerd")]
    Write(#[source] std::io::Error),
}

/// The reply to send containerd for the crate's `reply`: a legacy JSON reply's bare address,
/// anything else (the bootstrap protocol's `BootstrapResult`) as it is.
pub fn reply_for_containerd(reply: &[u8]) -> Vec<u8> {
    let address = serde_json::from_slice::<serde_json::Value>(reply)
        .ok()
        .and_then(|v| v.get("address")?.as_str().map(str::to_owned));
    match address {
        Some(a) => a.into_bytes(),
        None => reply.to_vec(),
    }
}

/// Runs `start` (the crate's action) with fd 1 on a pipe, then writes what it wrote there,
/// made readable for containerd ([`reply_for_containerd`]), to the real stdout.
///
/// The reply is read after `start` returns: it is one short message (an address, or a small
/// protobuf), far below a pipe's capacity, so `start`'s write never waits on a reader. If
/// `start` fails the crate exits the process with its error on stderr, and containerd sees the
/// failure as before.
pub fn run_capturing_reply(start: impl FnOnce()) -> Result<(), StartError> {
    let stdout = std::io::stdout();
    // F_DUPFD_CLOEXEC: neither the saved stdout nor the pipe reaches the spawned server.
    let saved = stdout
        .as_fd()
        .try_clone_to_owned()
        .map_err(StartError::Capture)?;
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| StartError::Capture(e.into()))?;
    nix::unistd::dup2_stdout(&write_end).map_err(|e| StartError::Capture(e.into()))?;
    drop(write_end);
    start();
    // fd 1 back on containerd's pipe: the last write end of ours closes, the read sees EOF.
    nix::unistd::dup2_stdout(&saved).map_err(|e| StartError::Restore(e.into()))?;
    let mut reply = Vec::new();
    std::fs::File::from(read_end)
        .read_to_end(&mut reply)
        .map_err(StartError::Read)?;
    let mut out = stdout.lock();
    out.write_all(&reply_for_containerd(&reply))
        .and_then(|()| out.flush())
        .map_err(StartError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_json_reply_becomes_the_bare_address() {
        let json = br#"{"address":"unix:///run/containerd/s/abc","protocol":"ttrpc","version":3}"#;
        assert_eq!(
            reply_for_containerd(json),
            b"unix:///run/containerd/s/abc".to_vec()
        );
    }

    #[test]
    fn a_bootstrap_reply_passes_unchanged() {
        use containerd_shim::bootstrap::BootstrapResult;
        use containerd_shim::protos::protobuf::Message;
        let result = BootstrapResult {
            version: 3,
            address: "unix:///run/containerd/s/abc".into(),
            protocol: "ttrpc".into(),
            ..Default::default()
        };
        let bytes = result.write_to_bytes().expect("encoding a BootstrapResult");
        assert_eq!(reply_for_containerd(&bytes), bytes);
    }

    #[test]
    fn anything_else_passes_unchanged() {
        for reply in [&b""[..], b"unix:///run/containerd/s/abc", b"{}", b"[1]"] {
            assert_eq!(reply_for_containerd(reply), reply.to_vec());
        }
    }
}
