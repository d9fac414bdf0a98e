//! shoji-shim's integration tests, one binary: each file beside this one is a module of it, and
//! `containerd/` the harness they share. One binary instead of one per file: the harness and
//! the dependencies' generic code are compiled and linked once, not 18 times. cargo-nextest still
//! runs every test in a process of its own. A new test file must be named here (Cargo's discovery of
//! `tests/*.rs` is off, `autotests = false`): the runtime's suite checks every crate's.

mod containerd;

mod containerd_1_6_drives_the_shim;
mod containerd_restarted_while_tasks_run;
mod containerd_to_agent_is_one_trace;
mod cri_request_to_agent_is_one_trace;
mod crictl_pod_pid_namespace_is_the_pause_containers;
mod crictl_runs_a_pod_in_one_vm;
mod crictl_stats_and_oom_killed_come_from_the_guest;
mod crictl_traces_reach_the_agent_and_their_sampling_is_followed;
mod crictl_volumes_reach_the_pod_and_leave_with_their_container;
mod ctr_oom_kill_while_the_task_runs_reaches_containerd;
mod ctr_run_drives_a_task_in_a_vm;
mod ctr_task_metrics_pause_and_oom_come_from_the_guest;
mod killed_shims_lifetime_root_is_ended_by_delete;
mod pod_network_on_a_cni_bridge;
mod pod_removed_while_a_container_starts_leaves_nothing;
mod pod_shim_killed_reports_every_container_exited;
mod pod_vm_killed_and_two_pods_leave_nothing_behind;
mod request_and_lifetime_traces_link_both_ways;
