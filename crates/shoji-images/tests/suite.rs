//! shoji-images's integration tests, one binary: each file beside this one is a module of it, and
//! `common/` the harness they share. One binary instead of one per file: the harness and
//! the dependencies' generic code are compiled and linked once, not 6 times. cargo-nextest still
//! runs every test in a process of its own. A new test file must be named here (Cargo's discovery of
//! `tests/*.rs` is off, `autotests = false`): the runtime's suite checks every crate's.

mod common;

mod a_full_disk_is_reported_with_the_file;
mod a_hostile_registry_cannot_make_a_pull_read_without_bound;
mod archive_members_are_read_as_regular_files;
mod blobs_are_verified_against_digests;
mod hostile_layers_stay_inside_the_root;
mod stored_layers_are_shared_under_overlays;
