//! Every container has a working loopback, and `/etc/hosts`, `/etc/hostname` and
//! `/etc/resolv.conf` written as Docker writes them (issue 13), whatever the network mode. The
//! test image has none of these files: the agent creates and mounts them. Tests here boot VMs.

use crate::common;
use common::{busybox_image, text, TestEnv};

fn image() -> String {
    busybox_image().0.display().to_string()
}

/// Serves a file on 127.0.0.1 inside the container and fetches it back.
const LOOPBACK_CHECK: &str = "mkdir -p /tmp/www && echo served-on-loopback > /tmp/www/index.html \
     && httpd -p 127.0.0.1:8000 -h /tmp/www && wget -q -O- http://127.0.0.1:8000/";

#[test]
fn vm_user_mode_container_has_loopback_its_name_and_docker_etc_files() {
    let env = TestEnv::new();
    let script = format!(
        "{LOOPBACK_CHECK}; echo host=$(hostname) env=$HOSTNAME; echo ---; cat /etc/hostname; \
         echo ---; cat /etc/hosts; echo ---; cat /etc/resolv.conf"
    );
    let out = env.run(&[
        "run",
        "--rm",
        "--name",
        "web-1",
        "--add-host",
        "db:192.168.1.5",
        &image(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let parts: Vec<&str> = stdout.split("---\n").collect();
    assert_eq!(parts.len(), 4, "{stdout}");
    assert_eq!(parts[0], "served-on-loopback\nhost=web-1 env=web-1\n");
    assert_eq!(parts[1], "web-1\n");
    let hosts: Vec<&str> = parts[2].lines().collect();
    assert_eq!(hosts[0], "127.0.0.1\tlocalhost");
    assert_eq!(hosts[1], "::1\tlocalhost ip6-localhost ip6-loopback");
    assert_eq!(
        hosts[6..],
        [
            "192.168.1.5\tdb",
            "10.0.2.15\tweb-1",
            "fd53:686f:6a69::15\tweb-1"
        ]
    );
    // The host's loopback resolvers (if any) become user-mode's DNS forwarders; there is always
    // at least one nameserver.
    let resolv = parts[3];
    assert!(resolv.contains("nameserver "), "{resolv}");
    assert!(!resolv.contains("nameserver 127."), "{resolv}");
    assert!(!resolv.contains("nameserver ::1\n"), "{resolv}");
}

#[test]
fn vm_network_none_has_loopback_only_and_flags_set_the_files() {
    let env = TestEnv::new();
    let script = format!(
        "{LOOPBACK_CHECK}; echo; ls /sys/class/net; echo ---; hostname; echo ---; \
         cat /etc/hosts; echo ---; grep nameserver /etc/resolv.conf"
    );
    let out = env.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--hostname",
        "box",
        "--dns",
        "192.0.2.53",
        "--dns",
        "2001:db8::53",
        &image(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let parts: Vec<&str> = stdout.split("---\n").collect();
    assert_eq!(parts.len(), 4, "{stdout}");
    assert_eq!(parts[0], "served-on-loopback\n\nlo\n");
    assert_eq!(parts[1], "box\n");
    // No address of its own: Docker writes only the loopback entries for --network none.
    assert_eq!(parts[2].lines().count(), 6, "{}", parts[2]);
    // --dns of either family is written as given, IPv6 too (the user's choice, as Docker).
    assert_eq!(parts[3], "nameserver 192.0.2.53\nnameserver 2001:db8::53\n");
}
