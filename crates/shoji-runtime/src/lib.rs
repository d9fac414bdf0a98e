//! Host runtime: configuration, sandbox lifecycle, hypervisor, helpers, agent client.
