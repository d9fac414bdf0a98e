//! `shoji run`'s default network, QEMU's user-mode stack: the container reaches a server on the
//! host's loopback through the gateway 10.0.2.2 (and over IPv6, `::1` through
//! fd53:686f:6a69::2), and `-p` publishes a container port on the
//! host's loopback. Bad network options fail before any VM boots. Traffic stays on this machine.

use crate::common;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{busybox_image, text, TestEnv};

fn image() -> String {
    busybox_image().0.display().to_string()
}

#[test]
fn vm_container_reaches_a_server_on_the_hosts_loopback() {
    let env = TestEnv::new();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let served = std::thread::spawn(move || {
        // One connection, then the thread ends (the listener with it).
        server.set_nonblocking(false).unwrap();
        let (mut s, peer) = server.accept().unwrap();
        s.write_all(b"hello-from-host\n").unwrap();
        peer
    });
    // IPv6 too: the host's ::1 is the gateway's IPv6 address.
    let server6 = TcpListener::bind("[::1]:0").unwrap();
    let port6 = server6.local_addr().unwrap().port();
    let served6 = std::thread::spawn(move || {
        let (mut s, peer) = server6.accept().unwrap();
        s.write_all(b"hello-from-host-over-ipv6\n").unwrap();
        peer
    });
    // IPv6 first, once, as soon as the container starts: the guest's address must be usable at
    // once (no duplicate address detection). While it was tentative, the kernel sent the SYN
    // from lo's ::1, slirp connected to this server for it and the answer never reached the
    // guest: the one connection this server accepts was spent and every retry was refused.
    let out = env.run(&[
        "run",
        "--rm",
        &image(),
        "--",
        "sh",
        "-c",
        &format!(
            "nc -w 10 fd53:686f:6a69::2 {port6}; \
             ip -6 addr show eth0 | grep 'fd53:686f:6a69::15/' | grep -o 'inet6 [0-9a-f:/]*\\|tentative'; \
             ip -6 route | grep -o 'default via fd53:686f:6a69::2 dev eth0'; \
             ip -4 addr show eth0 | grep -o 'inet [0-9./]*'; ip route | grep default; nc -w 10 10.0.2.2 {port}; \
             sleep 2; echo global=$(ip -6 addr show eth0 scope global | grep -c inet6) \
             defaults=$(ip -6 route | grep -c ^default)"
        ),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().map(str::trim_end).collect();
    assert_eq!(
        lines,
        [
            "hello-from-host-over-ipv6",
            "inet6 fd53:686f:6a69::15/64",
            "default via fd53:686f:6a69::2 dev eth0",
            "inet 10.0.2.15/24",
            "default via 10.0.2.2 dev eth0",
            "hello-from-host",
            // slirp's router advertisements add no address or route: the host's description
            // is the whole network.
            "global=1 defaults=1",
        ],
        "{stdout}"
    );
    // User-mode networking makes the connection from the host's own socket.
    let peer = served.join().unwrap();
    assert!(peer.ip().is_loopback(), "{peer}");
    let peer = served6.join().unwrap();
    assert!(peer.ip().is_loopback(), "{peer}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn vm_published_port_reaches_a_server_in_the_container() {
    let env = TestEnv::new();
    let port = free_port();
    let child = env
        .cmd()
        .args([
            "run",
            "--rm",
            "-p",
            &format!("{port}:7000"),
            &image(),
            "--",
            "sh",
            "-c",
            "echo hello-from-container | nc -l -p 7000",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The forward is up as soon as QEMU runs; until the container listens, a connection is
    // accepted by QEMU and closed empty. Keep trying, within a deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = String::new();
    while Instant::now() < deadline && got.is_empty() {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.read_to_string(&mut got);
        }
        if got.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(got, "hello-from-container\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Published on the loopback only: the forward is gone with the VM.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    env.assert_nothing_left();
}

#[test]
fn bad_network_options_fail_before_any_vm_boots() {
    let env = TestEnv::new();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-p".into(), "80".into()],
            "both a host port and a container port",
        ),
        (vec!["-p".into(), "0:80".into()], "host port 0"),
        (vec!["-p".into(), "8080:80/sctp".into()], "tcp or udp"),
        (
            vec![
                "-p".into(),
                "18081:80".into(),
                "-p".into(),
                "18081:81".into(),
            ],
            "both publish tcp port 18081",
        ),
        (vec!["-p".into(), format!("{taken}:80")], "is not free"),
        (
            vec!["--network".into(), "bridge".into()],
            "unknown network mode \"bridge\"",
        ),
        (
            vec![
                "--network".into(),
                "none".into(),
                "-p".into(),
                "18082:80".into(),
            ],
            "needs user-mode networking",
        ),
        (vec!["--add-host".into(), "db".into()], "expected NAME:IP"),
        (
            vec!["--dns".into(), "resolver".into()],
            "expected an IP address",
        ),
        (vec!["--hostname".into(), "a b".into()], "invalid hostname"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["run".to_string(), "--rm".into()];
        args.extend(flags.iter().cloned());
        args.extend([image(), "--".into(), "true".into()]);
        let started = Instant::now();
        let out = env.cmd().args(&args).output().expect("running shoji");
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{flags:?} was accepted");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        // Refused before a VM (2-5 s to boot under TCG) could even start; nothing made.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{flags:?} took {:?}",
            started.elapsed()
        );
        assert!(
            !env.sandbox_root().exists()
                || std::fs::read_dir(env.sandbox_root())
                    .unwrap()
                    .next()
                    .is_none(),
            "{flags:?} left a sandbox"
        );
    }
    drop(held);
}
