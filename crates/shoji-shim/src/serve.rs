//! The server action (no action, `-socket` given): the process `start` spawns, serving the task
//! API to containerd until the sandbox is shut down.
//!
//! The containerd-shim crate's `run` does this too, but registers the task service under
//! `containerd.task.v3.Task` only. containerd before 2.0 (and 2.0-2.2 when `start` answers with a
//! bare address, [`crate::start`]) call `containerd.task.v2.Task`: the same messages under the
//! older name. So the server is assembled here from the crate's public parts, keeping what its
//! `run` does: one server per socket (a second one for the same group hands back the running
//! one's address and exits), telling `start` the server is up by closing the stdout pipe it
//! reads, SIGTERM/SIGINT/SIGPIPE caught and ignored, and on exit the server shut down (its
//! socket is removed by [`ShojiShim`]'s `wait`, before the shutdown). ADR 020.

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::util::write_str_to_file;
use containerd_shim::protos::shim_async::{create_task, Client};
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::ttrpc::r#async::transport::Listener;
use containerd_shim::protos::ttrpc::r#async::{Server, Service};
use containerd_shim::{Flags, Shim as _, Task};
use tokio::signal::unix::{signal, SignalKind};

use crate::shim::ShojiShim;
use crate::RUNTIME_ID;

/// The task API's service name in containerd 2.x (`containerd-shim-protos` generates this one).
pub const TASK_V3: &str = "containerd.task.v3.Task";
/// The same service under the name containerd 1.6 and 1.7 call.
pub const TASK_V2: &str = "containerd.task.v2.Task";

/// How long a server that finds its socket taken waits for the one listening there to answer
/// before taking the socket over (the crate's rule: 200 tries, 5 ms apart).
const IN_USE_TRIES: u32 = 200;
const IN_USE_INTERVAL: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("containerd passed no TTRPC_ADDRESS to the shim: start the shim through containerd")]
    NoTtrpcAddress,
    #[error("cannot listen on the shim socket {socket}")]
    Listen {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove the stale shim socket {socket}")]
    RemoveStale {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot record the shim address {socket} in the bundle")]
    WriteAddress {
        socket: String,
        #[source]
        source: containerd_shim::Error,
    },
    #[error("cannot connect to containerd's event service at {address}")]
    Publisher {
        address: String,
        #[source]
        source: containerd_shim::Error,
    },
    #[error("cannot hand the shim socket {socket} to the async runtime")]
    Listener {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the task server on {socket}")]
    Start {
        socket: String,
        #[source]
        source: ttrpc::Error,
    },
    #[error("cannot tell the start action that the server is up")]
    Signal(#[source] nix::Error),
}

/// The task service under both its names.
pub fn task_services(task: Arc<dyn Task + Send + Sync>) -> HashMap<String, Service> {
    let mut services = create_task(task.clone());
    if let Some(v2) = create_task(task).remove(TASK_V3) {
        services.insert(TASK_V2.to_string(), v2);
    }
    services
}

/// Serves the task API on `flags.socket` until the shim is told to exit.
pub async fn serve(flags: Flags) -> Result<(), ServeError> {
    ignore_signals();
    let socket = flags.socket.clone();
    let Some(listener) = listen(&socket).await? else {
        // Another server of the group serves this socket: `address` names it, and this process
        // has nothing to do.
        return server_started();
    };
    let served = serve_on(flags, listener).await;
    if served.is_err() {
        // Bound but never served, or failed while serving: a socket nobody answers on would
        // stay in containerd's socket directory.
        remove_socket(&socket);
    }
    served
}

async fn serve_on(
    flags: Flags,
    listener: std::os::unix::net::UnixListener,
) -> Result<(), ServeError> {
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| ServeError::NoTtrpcAddress)?;
    let mut config = crate::shim_config();
    let mut shim = ShojiShim::new(RUNTIME_ID, &flags, &mut config).await;
    let publisher = RemotePublisher::new(&ttrpc_address)
        .await
        .map_err(|source| ServeError::Publisher {
            address: ttrpc_address.clone(),
            source,
        })?;
    let task: Arc<dyn Task + Send + Sync> = Arc::new(shim.create_task_service(publisher).await);
    let start_err = |source| ServeError::Start {
        socket: flags.socket.clone(),
        source,
    };
    let listener = Listener::try_from(listener).map_err(|source| ServeError::Listener {
        socket: flags.socket.clone(),
        source,
    })?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(task_services(task));
    server.start().await.map_err(start_err)?;
    server_started()?;
    shim.wait().await;
    let _ = server.shutdown().await;
    Ok(())
}

/// The listener on `socket`, or `None` when a live server of the same group already listens
/// there (then `address` in the bundle names that socket, as `start` expects). A socket nobody
/// answers on is a dead server's: removed and bound again.
async fn listen(socket: &str) -> Result<Option<std::os::unix::net::UnixListener>, ServeError> {
    let path = socket_path(socket);
    let bind = || {
        if let Some(parent) = Path::new(path).parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::net::UnixListener::bind(path)
    };
    let listen_err = |source| ServeError::Listen {
        socket: socket.to_string(),
        source,
    };
    match bind() {
        Ok(l) => return Ok(Some(l)),
        Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => return Err(listen_err(e)),
        Err(_) => {}
    }
    for _ in 0..IN_USE_TRIES {
        if Client::connect(socket).await.is_ok() {
            write_str_to_file("address", socket)
                .await
                .map_err(|source| ServeError::WriteAddress {
                    socket: socket.to_string(),
                    source,
                })?;
            return Ok(None);
        }
        tokio::time::sleep(IN_USE_INTERVAL).await;
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path).map_err(|source| ServeError::RemoveStale {
            socket: socket.to_string(),
            source,
        })?;
    }
    bind().map(Some).map_err(listen_err)
}

/// The path of the `unix://` address `socket` (the crate's `spawn` always gives one; a bare
/// path is taken as it is).
fn socket_path(socket: &str) -> &str {
    crate::shim::socket_path(socket).unwrap_or(socket)
}

/// Removes the socket this server bound, if it is still a socket.
fn remove_socket(socket: &str) {
    let path = socket_path(socket);
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if let Err(e) = std::fs::remove_file(path) {
            log_line!("shoji-shim: cannot remove the shim socket {path}: {e}");
        }
    }
}

/// `start` copies this process's stdout until it closes: pointing stdout at stderr (the log
/// FIFO, or nothing) closes the pipe, and `start` answers containerd.
fn server_started() -> Result<(), ServeError> {
    nix::unistd::dup2_stdout(std::io::stderr()).map_err(ServeError::Signal)
}

/// containerd's shims outlive signals meant for containerd's process group: SIGTERM and
/// SIGINT are caught and ignored, as the crate's server does (the shim ends on `Shutdown`).
fn ignore_signals() {
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::pipe(),
    ] {
        match signal(kind) {
            Ok(mut s) => {
                tokio::spawn(async move { while s.recv().await.is_some() {} });
            }
            Err(e) => log_line!(
                "shoji-shim: cannot catch signal {}: {e}",
                kind.as_raw_value()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_service_is_served_under_both_names() {
        struct Nothing;
        impl Task for Nothing {}
        let services = task_services(Arc::new(Nothing));
        let mut names: Vec<&str> = services.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, [TASK_V2, TASK_V3]);
        let methods = |name: &str| {
            let mut m: Vec<String> = services[name].methods.keys().cloned().collect();
            m.sort_unstable();
            m
        };
        assert_eq!(methods(TASK_V2), methods(TASK_V3));
        assert!(methods(TASK_V2).iter().any(|m| m == "Create"));
    }

    #[test]
    fn a_socket_address_is_its_path() {
        assert_eq!(
            socket_path("unix:///run/containerd/s/ab"),
            "/run/containerd/s/ab"
        );
        assert_eq!(socket_path("/run/containerd/s/ab"), "/run/containerd/s/ab");
    }
}
