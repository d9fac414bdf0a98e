//! The one way a guest's bytes reach a host log file: at most a cap per stream (`[runtime]
//! log_max_size`, 64 MiB by default), the rest read and dropped, so that the writer (the
//! container's output, the guest's serial console, QEMU or a helper) is never blocked and the
//! guest cannot fill the host's disk. Used for `stdout.log`, `stderr.log`, `console.log` and
//! what QEMU and the helpers write into `sandbox.log`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Default cap of one log stream.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 64 << 20;

/// What a capped copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub written: u64,
    pub dropped: u64,
}

/// Copies `from` into `to` until EOF, writing at most `cap` bytes and dropping the rest. Each
/// chunk is flushed as it comes, so a reader of the file (a boot failure's console tail) sees
/// it at once. A write error stops the writing, not the reading.
pub async fn copy_capped<R, W>(from: R, to: &mut W, cap: u64) -> Copied
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    copy_capped_noting(from, to, cap, None).await
}

/// [`copy_capped`]; once the cap is first reached, a warning naming `stream` (if given), so that
/// a long-lived sandbox's log says so while it runs, not only when the stream ends.
async fn copy_capped_noting<R, W>(mut from: R, to: &mut W, cap: u64, stream: Option<&str>) -> Copied
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 << 10];
    let mut c = Copied::default();
    let mut writable = true;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let keep = (cap.saturating_sub(c.written)).min(n as u64) as usize;
        if writable && keep > 0 {
            let ok = to.write_all(&buf[..keep]).await.is_ok() && to.flush().await.is_ok();
            writable = ok;
        }
        c.written += keep as u64;
        if let (0, true, Some(stream)) = (c.dropped, keep < n, stream) {
            tracing::warn!(
                stream,
                limit = cap,
                "the log limit is reached; further output is dropped"
            );
        }
        c.dropped += (n - keep) as u64;
    }
    c
}

/// [`copy_capped`], then a warning naming `stream` if anything was dropped.
pub async fn copy_capped_logged<R, W>(from: R, to: &mut W, cap: u64, stream: &str) -> Copied
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let c = copy_capped_noting(from, to, cap, Some(stream)).await;
    if c.dropped > 0 {
        tracing::warn!(
            stream,
            dropped_bytes = c.dropped,
            limit = cap,
            "output over the log limit was dropped"
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_up_to_the_cap_and_reads_the_rest() {
        let input = vec![b'x'; 100_000];
        let mut out = Vec::new();
        let c = copy_capped(&input[..], &mut out, 1000).await;
        assert_eq!(out.len(), 1000);
        assert_eq!(
            c,
            Copied {
                written: 1000,
                dropped: 99_000
            }
        );
        let mut out = Vec::new();
        let c = copy_capped(&b"short"[..], &mut out, 1000).await;
        assert_eq!((out.as_slice(), c.dropped), (&b"short"[..], 0));
    }
}
