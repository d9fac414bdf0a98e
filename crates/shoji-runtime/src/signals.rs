//! The signals a host command forwards or stops on, as one stream: `shoji run` and `exec`
//! forward them to the container's process, `create` and the sandbox process stop on them.

use std::task::Poll;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// What an interactive command passes on to its process: Ctrl-C, Ctrl-\, `kill`, a hangup.
pub const FORWARDED: &[i32] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The terminal changed size: passed on as a resize, with a terminal.
pub const RESIZED: &[i32] = &[libc::SIGWINCH];

/// What makes a background process stop cleanly.
pub const STOPPING: &[i32] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Handlers for a set of signals, received one at a time as their numbers. A handler that
/// cannot be installed is left out: that signal keeps its default action.
#[derive(Debug)]
pub struct Signals(Vec<(i32, Signal)>);

impl Signals {
    pub fn new(signals: &[i32]) -> Self {
        Self(
            signals
                .iter()
                .filter_map(|&n| signal(SignalKind::from_raw(n)).ok().map(|s| (n, s)))
                .collect(),
        )
    }

    /// The next signal received; never returns if there are no handlers.
    pub async fn recv(&mut self) -> i32 {
        std::future::poll_fn(|cx| {
            for (n, s) in &mut self.0 {
                if s.poll_recv(cx).is_ready() {
                    return Poll::Ready(*n);
                }
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_received_is_named_by_its_number() {
        let mut s = Signals::new(&[libc::SIGUSR1, libc::SIGUSR2]);
        // SAFETY: raise(3) only sends a signal to this process, which handles it now.
        unsafe { libc::raise(libc::SIGUSR2) };
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), s.recv()).await;
        assert_eq!(got.ok(), Some(libc::SIGUSR2));
    }

    #[tokio::test]
    async fn no_handlers_wait_forever() {
        let mut s = Signals::new(&[]);
        let got = tokio::time::timeout(std::time::Duration::from_millis(50), s.recv()).await;
        assert!(got.is_err());
    }
}
