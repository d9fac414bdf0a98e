//! A container's statistics as containerd reads them: the agent's cgroup v2 files from the guest
//! (`StatsContainer`) made into containerd's `io.containerd.cgroups.v2.Metrics`, in the `Any` of
//! the task API's `Stats` answer (`ctr task metrics`, CRI's container stats).

use std::collections::HashMap;

use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{MessageField, MessageFull};
use shoji_protocols::agent::StatsContainerResponse;

/// The type URL containerd resolves the metrics by (as runc's shim sends them).
pub const METRICS_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("encoding the container's cgroup metrics")]
    Encode(#[source] containerd_shim::protos::protobuf::Error),
}

/// The cgroup files' values in containerd's cgroups v2 metrics.
pub fn from_guest(s: &StatsContainerResponse) -> Metrics {
    let get = |m: &HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let (cpu, mem, ev) = (&s.cpu_stat, &s.memory_stat, &s.memory_events);
    Metrics {
        pids: MessageField::some(PidsStat {
            current: s.pids_current,
            limit: s.pids_max,
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat {
            usage_usec: get(cpu, "usage_usec"),
            user_usec: get(cpu, "user_usec"),
            system_usec: get(cpu, "system_usec"),
            nr_periods: get(cpu, "nr_periods"),
            nr_throttled: get(cpu, "nr_throttled"),
            throttled_usec: get(cpu, "throttled_usec"),
            nr_bursts: get(cpu, "nr_bursts"),
            burst_usec: get(cpu, "burst_usec"),
            ..Default::default()
        }),
        memory: MessageField::some(MemoryStat {
            anon: get(mem, "anon"),
            file: get(mem, "file"),
            kernel_stack: get(mem, "kernel_stack"),
            slab: get(mem, "slab"),
            sock: get(mem, "sock"),
            shmem: get(mem, "shmem"),
            file_mapped: get(mem, "file_mapped"),
            file_dirty: get(mem, "file_dirty"),
            file_writeback: get(mem, "file_writeback"),
            anon_thp: get(mem, "anon_thp"),
            inactive_anon: get(mem, "inactive_anon"),
            active_anon: get(mem, "active_anon"),
            inactive_file: get(mem, "inactive_file"),
            active_file: get(mem, "active_file"),
            unevictable: get(mem, "unevictable"),
            slab_reclaimable: get(mem, "slab_reclaimable"),
            slab_unreclaimable: get(mem, "slab_unreclaimable"),
            pgfault: get(mem, "pgfault"),
            pgmajfault: get(mem, "pgmajfault"),
            workingset_refault: get(mem, "workingset_refault"),
            workingset_activate: get(mem, "workingset_activate"),
            workingset_nodereclaim: get(mem, "workingset_nodereclaim"),
            pgrefill: get(mem, "pgrefill"),
            pgscan: get(mem, "pgscan"),
            pgsteal: get(mem, "pgsteal"),
            pgactivate: get(mem, "pgactivate"),
            pgdeactivate: get(mem, "pgdeactivate"),
            pglazyfree: get(mem, "pglazyfree"),
            pglazyfreed: get(mem, "pglazyfreed"),
            thp_fault_alloc: get(mem, "thp_fault_alloc"),
            thp_collapse_alloc: get(mem, "thp_collapse_alloc"),
            usage: s.memory_current,
            usage_limit: s.memory_max,
            max_usage: s.memory_peak,
            swap_usage: s.swap_current,
            swap_limit: s.swap_max,
            ..Default::default()
        }),
        memory_events: MessageField::some(MemoryEvents {
            low: get(ev, "low"),
            high: get(ev, "high"),
            max: get(ev, "max"),
            oom: get(ev, "oom"),
            oom_kill: get(ev, "oom_kill"),
            oom_group_kill: get(ev, "oom_group_kill"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `metrics` as the `Any` of a `Stats` answer.
pub fn to_any(metrics: &Metrics) -> Result<Any, MetricsError> {
    let value = containerd_shim::protos::protobuf::Message::write_to_bytes(metrics)
        .map_err(MetricsError::Encode)?;
    debug_assert_eq!(Metrics::descriptor().full_name(), METRICS_TYPE_URL);
    Ok(Any {
        type_url: METRICS_TYPE_URL.into(),
        value,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::Message;

    #[test]
    fn guest_cgroup_files_become_containerds_v2_metrics() {
        let s = StatsContainerResponse {
            cpu_stat: [("usage_usec".to_string(), 1500), ("user_usec".into(), 1000)].into(),
            memory_stat: [("anon".to_string(), 8192)].into(),
            memory_events: [("oom_kill".to_string(), 1)].into(),
            memory_current: 65536,
            memory_max: 1 << 25,
            pids_current: 2,
            pids_max: u64::MAX,
            ..Default::default()
        };
        let any = to_any(&from_guest(&s)).expect("encode");
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = Metrics::parse_from_bytes(&any.value).expect("decode");
        assert_eq!(m.cpu.usage_usec, 1500);
        assert_eq!(m.cpu.user_usec, 1000);
        assert_eq!(m.memory.usage, 65536);
        assert_eq!(m.memory.usage_limit, 1 << 25);
        assert_eq!(m.memory.anon, 8192);
        assert_eq!(m.memory_events.oom_kill, 1);
        assert_eq!((m.pids.current, m.pids.limit), (2, u64::MAX));
    }
}
