//! Builds the guest image: a Debian kernel and an initramfs whose /init is shoji-agent.
