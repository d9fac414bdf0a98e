//! shoji-runtime's integration tests, one binary: each file beside this one is a module of it, and
//! `common/` the harness they share. One binary instead of one per file: the harness and
//! the dependencies' generic code are compiled and linked once, not 30 times. cargo-nextest still
//! runs every test in a process of its own. A new test file must be named here (Cargo's discovery of
//! `tests/*.rs` is off, `autotests = false`): the runtime's suite checks every crate's.

mod common;

mod agent_spans_join_runtime_trace;
mod bad_run_options_are_refused_before_boot;
mod bad_volumes_are_refused_before_boot;
mod console_output_is_capped;
mod container_has_loopback_and_docker_etc_files;
mod container_runs_in_a_vm;
mod container_security_fields_apply_in_the_guest;
mod containers_of_one_image_share_layers_and_keep_their_writes;
mod created_container_has_a_network;
mod faults_leave_nothing_behind;
mod guest_runs_shojis_kernel;
mod image_layers_apply_whiteouts_in_the_guest;
mod image_store_unpacks_once_and_survives_kill;
mod images_pull_from_a_loopback_registry;
mod jaeger_reads_back_what_shoji_shows;
mod killed_runs_are_reclaimed;
mod lifecycle_commands_drive_a_container;
mod lifecycle_is_one_trace;
mod local_layouts_take_a_tag;
mod log_records_become_span_events;
mod netns_network_joins_a_prepared_namespace;
mod removing_pulled_images_keeps_what_others_use;
mod sandbox_is_closed_to_other_users;
mod tcg_guests_skip_the_apic_timer_calibration;
mod trace_levels_and_sampling_keep_traces_whole;
mod traces_export_over_otlp;
mod tty_gives_the_process_a_terminal;
mod user_mode_network_reaches_and_publishes;
mod user_names_resolve_in_the_guest;
mod volumes_reach_the_container;

/// Every `tests/*.rs` of every crate with a `tests/suite.rs` is one of that suite's modules: a
/// file left out would never be compiled, its tests silently gone.
#[test]
fn every_test_file_of_the_workspace_is_a_module_of_its_suite() {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut suites = 0;
    for krate in std::fs::read_dir(&crates).unwrap() {
        let tests = krate.unwrap().path().join("tests");
        let Ok(suite) = std::fs::read_to_string(tests.join("suite.rs")) else {
            continue;
        };
        suites += 1;
        for entry in std::fs::read_dir(&tests).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            match name.strip_suffix(".rs") {
                Some(module) if module != "suite" => assert!(
                    suite.contains(&format!("\nmod {module};\n")),
                    "{}/{name} is not compiled: add `mod {module};` to its suite.rs",
                    tests.display()
                ),
                _ => {}
            }
        }
    }
    assert!(
        suites >= 5,
        "found {suites} suites under {}",
        crates.display()
    );
}
