//! shoji-agent's integration tests, one binary: each file beside this one is a module of it, and
//! `common/` the harness they share. One binary instead of one per file: the harness and
//! the dependencies' generic code are compiled and linked once, not 4 times. cargo-nextest still
//! runs every test in a process of its own. A new test file must be named here (Cargo's discovery of
//! `tests/*.rs` is off, `autotests = false`): the runtime's suite checks every crate's.

mod common;

mod agent_runs_containers_in_a_vm;
mod pod_containers_share_uts_and_ipc_namespaces;
mod seccomp_programs_from_the_host_are_checked_and_applied;
mod user_names_resolve_inside_the_guest;
