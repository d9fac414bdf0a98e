//! `shoji create` gives the container the network `shoji run` does (user mode by default): the
//! created container reaches a server on the host's loopback through 10.0.2.2, and `-p`
//! publishes its port on the host's loopback; its hostname is its id. Bad network options are
//! refused before any VM boots. Traffic stays on this machine.

use crate::common;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{busybox_image, text, DeleteOnDrop, TestEnv};

#[test]
fn vm_created_container_reaches_the_host_and_publishes_a_port() {
    let env = TestEnv::new();
    let id = "net-1";
    let _cleanup = DeleteOnDrop(&env, id);
    let host = TcpListener::bind("127.0.0.1:0").expect("a host server");
    let host_port = host.local_addr().expect("its address").port();
    let served = std::thread::spawn(move || {
        let (mut s, _) = host.accept().expect("the container's connection");
        s.write_all(b"hello-from-host\n").expect("answer");
    });
    let published = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let image = busybox_image().0.display().to_string();
    // The container fetches the host server's line and serves it, after its hostname, on the
    // published port.
    env.ok(&[
        "create",
        "-p",
        &format!("{published}:7000"),
        &image,
        id,
        "--",
        "sh",
        "-c",
        &format!("(hostname; nc -w 10 10.0.2.2 {host_port}) | nc -l -p 7000"),
    ]);
    env.ok(&["start", id]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = String::new();
    // Until the container listens, QEMU accepts the forward's connections and closes them.
    while got.is_empty() {
        assert!(Instant::now() < deadline, "nothing on port {published}");
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", published)) {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let _ = s.read_to_string(&mut got);
        }
        if got.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_eq!(got, format!("{id}\nhello-from-host\n"));
    served.join().expect("the host server");
    env.ok(&["delete", "--force", id]);
    env.assert_nothing_left();
}

#[test]
fn created_container_bad_network_options_fail_before_any_vm_boots() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    for (flags, says) in [
        (
            &["--network", "none", "-p", "18083:80"][..],
            "needs user-mode networking",
        ),
        (&["--network", "bridge"][..], "unknown network mode"),
    ] {
        let mut args = vec!["create"];
        args.extend_from_slice(flags);
        args.extend([image.as_str(), "bad-net", "--", "true"]);
        let out = env.cmd().args(&args).output().expect("running shoji");
        let err = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{flags:?} was accepted");
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    env.assert_nothing_left();
}
