//! The guest's serial console: QEMU connects to a Unix socket in the sandbox directory and the
//! runtime copies what arrives into `console.log`, at most `[runtime] log_max_size` bytes
//! ([`crate::capped_log`]). QEMU writing the file itself (`-serial file:`) had no bound: a root
//! container can `mknod` the console and fill the host's disk through it.

use tokio::task::JoinHandle;

use super::SandboxDir;
use crate::stdio::StdioError;

/// Listens on [`SandboxDir::console_socket`] for QEMU and copies the console into
/// [`SandboxDir::console_log`] (0600, made once QEMU connects), keeping at most `cap` bytes and
/// reading the rest, so the guest never blocks on its console. The task ends when QEMU closes
/// the socket; aborting it stops the copy.
pub fn capture(sb: &SandboxDir, cap: u64) -> Result<JoinHandle<()>, StdioError> {
    let path = sb.console_log();
    let sock = sb.console_socket();
    let listener = tokio::net::UnixListener::bind(&sock).map_err(|source| StdioError::Listen {
        path: sock.display().to_string(),
        source,
    })?;
    Ok(tokio::spawn(async move {
        let Ok((conn, _)) = listener.accept().await else {
            return;
        };
        match crate::private_fs::private_file(&path) {
            Ok(f) => {
                let mut file = tokio::fs::File::from_std(f);
                crate::capped_log::copy_capped_logged(conn, &mut file, cap, "console").await;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot create the console log; dropping the console");
                crate::capped_log::copy_capped(conn, &mut tokio::io::sink(), 0).await;
            }
        }
    }))
}
