//! A container's state directory and the `state.json` in it: the OCI runtime state (what
//! `shoji state` prints, with runc's `created` and an `exitCode` once stopped) plus the host
//! processes that cleanup must make sure are gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LifecycleError;

/// OCI runtime-spec version the state follows.
pub const OCI_VERSION: &str = "1.2.0";

/// The files of a state directory `<sandbox_root>/<id>`.
pub const STATE_FILE: &str = "state.json";
pub const CONTROL_SOCKET: &str = "control.sock";
pub const SANDBOX_LOG: &str = "sandbox.log";
pub const STDOUT_LOG: &str = "stdout.log";
pub const STDERR_LOG: &str = "stderr.log";

/// The annotation that names the sandbox's trace (32 hex digits), when its runtime spans are
/// exported: `shoji trace show <id>` shows it, live while the sandbox runs.
pub const TRACE_ID_ANNOTATION: &str = "shoji.trace_id";

/// The annotation that names the root span of the sandbox's trace (`sandbox`, 16 hex digits),
/// next to [`TRACE_ID_ANNOTATION`].
pub const ROOT_SPAN_ID_ANNOTATION: &str = "shoji.root_span_id";

/// The annotation `false` when the sandbox's runtime spans would be exported but head
/// sampling left its trace out (`[tracing] sample_ratio`): there is no trace to look for.
pub const TRACE_SAMPLED_ANNOTATION: &str = "shoji.trace_sampled";

/// Made (exclusively) by whoever ends the root span of the sandbox's trace while the state
/// directory still exists: the sandbox process when a signal stops it, or `delete` (or a failed
/// `create`) in place of a sandbox process that died without ending it. Whoever makes it
/// first ends the root; nobody else does.
pub const ROOT_ENDED_MARKER: &str = "root-span.ended";

/// Longest id accepted. The id names a directory that holds Unix sockets, whose paths the
/// kernel limits to 107 bytes.
pub const MAX_ID_LEN: usize = 64;

pub use super::status::Status;

/// The OCI runtime state of a container, as `shoji state` prints it.
///
/// `pid` is the host PID of the container's sandbox process: the container's own processes run
/// in the guest, where no host PID names them (their guest PID is the `shoji.guest_pid`
/// annotation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub bundle: PathBuf,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339, UTC, like runc's.
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// A host process and its start time (clock ticks since boot, `/proc/<pid>/stat` field 22),
/// so that a recycled PID is never mistaken for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRecord {
    pub what: String,
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessRecord {
    /// Records a live process; `None` if it is already gone.
    pub fn capture(what: &str, pid: u32) -> Option<Self> {
        let start_time = proc_stat(pid)?.start_time;
        Some(Self {
            what: what.into(),
            pid,
            start_time,
        })
    }

    /// Running (not a zombie) and still the same process.
    pub fn is_alive(&self) -> bool {
        proc_stat(self.pid)
            .is_some_and(|s| s.start_time == self.start_time && s.state != 'Z' && s.state != 'X')
    }

    /// Whether `pid` now names another process. While a session has members its id cannot be
    /// given to a new process, so if this is false, every member of session `pid` is ours.
    pub fn pid_reused(&self) -> bool {
        proc_stat(self.pid).is_some_and(|s| s.start_time != self.start_time)
    }

    /// How the process ended (`killed by SIGKILL`), while it is still a zombie that nobody
    /// has reaped; `None` once it is gone or while it runs.
    pub fn death(&self) -> Option<String> {
        let s = proc_stat(self.pid)?;
        (s.start_time == self.start_time && s.state == 'Z')
            .then_some(s.exit_status)
            .flatten()
            .map(describe_wait_status)
    }

    /// SIGKILLs the process if it is still the one recorded.
    pub fn kill(&self) {
        if self.is_alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// What cleanup (and a helper's stop, `process`) needs from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) state: char,
    /// The process group.
    pub(crate) pgrp: u32,
    session: u32,
    start_time: u64,
    /// The wait status, for a zombie (field 52, Linux 3.5 and later).
    exit_status: Option<i32>,
}

pub(crate) fn proc_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself:
    // fields resume after the last ')', with the state (field 3) first.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
        exit_status: fields.get(49).and_then(|f| f.parse().ok()),
    })
}

/// How a process ended, from its wait status: `killed by SIGKILL`, `exit status 1`.
pub fn describe_wait_status(status: i32) -> String {
    let signal = status & 0x7f;
    if signal == 0 {
        return format!("exit status {}", (status >> 8) & 0xff);
    }
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(s) => format!("killed by {s}"),
        Err(_) => format!("killed by signal {signal}"),
    }
}

/// Live (not zombie) processes of session `sid`: everything a sandbox process (a session
/// leader, see `client::spawn_and_wait`) started, whether it was recorded or not.
pub fn session_members(sid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            proc_stat(*pid).is_some_and(|s| s.session == sid && s.state != 'Z' && s.state != 'X')
        })
        .collect()
}

/// Where the sandbox process sends its spans, as it resolved it (configuration, then
/// environment): the root that `delete` ends in its place goes to the same place, whatever the
/// environment of `delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "sink",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum TraceExport {
    /// The embedded store in this data directory.
    Store { data_dir: PathBuf },
    /// OTLP/gRPC.
    Grpc { endpoint: String },
    /// OTLP/HTTP (protobuf).
    Http { endpoint: String },
    /// OTLP/HTTP (JSON).
    HttpJson { endpoint: String },
}

/// The root span `sandbox` of the sandbox's trace, as far as another process needs it to end
/// the root when the sandbox process cannot (it was killed): recorded from `creating` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceRoot {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// When the root started, Unix nanoseconds (taken just before the span was made, so no
    /// span of the trace starts earlier).
    pub start_unix_nano: u64,
    /// The `service.name` of the runtime's spans.
    pub service_name: String,
    pub export: TraceExport,
    /// The root's `shoji.clock_offset_ns`, once measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ns: Option<i64>,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateFile {
    #[serde(flatten)]
    pub oci: OciState,
    /// The sandbox process that owns the VM and serves `control.sock`.
    pub sandbox_process: ProcessRecord,
    /// What it started (QEMU, the helpers); they die with it, and `delete` makes sure.
    #[serde(default)]
    pub processes: Vec<ProcessRecord>,
    /// The root span of the sandbox's trace, with runtime tracing on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_root: Option<TraceRoot>,
}

impl StateFile {
    pub fn read(dir: &Path) -> Result<Self, LifecycleError> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read(&path).map_err(|source| LifecycleError::Io {
            what: "cannot read",
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|e| LifecycleError::BadState {
            path,
            message: e.to_string(),
        })
    }

    /// Writes atomically (temporary file, then rename): a reader never sees half a file.
    pub fn write(&self, dir: &Path) -> Result<(), LifecycleError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(".state.json.tmp");
        let io = |source| LifecycleError::Io {
            what: "cannot write",
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| LifecycleError::BadState {
            path: path.clone(),
            message: e.to_string(),
        })?;
        crate::private_fs::write_private(&tmp, &text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Why the sandbox process is gone when it is, and how it ended if that can still be read.
    pub fn sandbox_process_died(&self) -> String {
        match self.sandbox_process.death() {
            Some(how) => format!("the sandbox process exited unexpectedly ({how})"),
            None => "the sandbox process exited unexpectedly".into(),
        }
    }

    /// The state as it stands: if the sandbox process is gone, the container is stopped
    /// whatever the file last said.
    pub fn current(&self) -> OciState {
        let mut oci = self.oci.clone();
        if oci.status != Status::Stopped && !self.sandbox_process.is_alive() {
            oci.status = Status::Stopped;
            oci.annotations
                .insert("shoji.error".into(), self.sandbox_process_died());
        }
        if oci.status == Status::Stopped {
            oci.pid = None;
        }
        oci
    }
}

/// Claims the ending of the root span of the sandbox in `dir` ([`ROOT_ENDED_MARKER`]): true for
/// the one caller that gets to end it, false if someone already has (or the directory is gone).
pub fn claim_root_end(dir: &Path) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(ROOT_ENDED_MARKER))
        .is_ok()
}

/// Checks a container id: it names a directory and a guest cgroup, so it must be a plain name.
pub fn validate_id(id: &str) -> Result<(), LifecycleError> {
    id_problem(id).map_err(|reason| LifecycleError::InvalidId {
        id: id.to_string(),
        reason,
    })
}

/// What is wrong with a container id (`shoji create ID`, `shoji run --name`), if anything.
pub fn id_problem(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("it is empty");
    }
    if id.len() > MAX_ID_LEN {
        return Err("it is longer than 64 characters");
    }
    if !id.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("it must start with a letter or a digit");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+'))
    {
        return Err("only letters, digits and _ - . + are allowed");
    }
    Ok(())
}

pub use shoji_units::now_rfc3339;

#[cfg(test)]
impl StateFile {
    /// Container `c1`, running, its sandbox process pid 7 (start time 1: not this one).
    pub(crate) fn example() -> Self {
        Self {
            oci: OciState {
                oci_version: OCI_VERSION.into(),
                id: "c1".into(),
                status: Status::Running,
                pid: Some(7),
                bundle: "/b".into(),
                annotations: BTreeMap::new(),
                created: "1970-01-01T00:00:00.000000000Z".into(),
                exit_code: None,
            },
            sandbox_process: ProcessRecord {
                what: "sandbox".into(),
                pid: 7,
                start_time: 1,
            },
            processes: vec![],
            trace_root: None,
        }
    }
}

#[cfg(test)]
impl TraceRoot {
    /// A root whose spans go to the store in `/d`.
    pub(crate) fn example() -> Self {
        Self {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            start_unix_nano: 5,
            service_name: "shoji-runtime".into(),
            export: TraceExport::Store {
                data_dir: "/d".into(),
            },
            clock_offset_ns: Some(-3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "web-1", "x.y_z+1", &"a".repeat(64)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", ".a", "-a", "a/b", "a b", "é", &"a".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stat_lines_with_odd_command_names() {
        let line = "42 (a) b (c)) S 1 42 41 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                pgrp: 42,
                session: 41,
                start_time: 12345,
                exit_status: None,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R"), None);
    }

    #[test]
    fn a_zombies_wait_status_says_how_it_died() {
        // Fields 3..52 of a zombie killed by SIGKILL: wait status 9 at the end.
        let mut fields = vec!["0"; 50];
        fields[0] = "Z";
        fields[19] = "777";
        fields[49] = "9";
        let line = format!("42 (shoji) {}", fields.join(" "));
        let st = parse_stat(&line).unwrap();
        assert_eq!(
            (st.state, st.start_time, st.exit_status),
            ('Z', 777, Some(9))
        );
        assert_eq!(describe_wait_status(9), "killed by SIGKILL");
        assert_eq!(describe_wait_status(1 << 8), "exit status 1");
        assert_eq!(describe_wait_status(15 | 0x80), "killed by SIGTERM");
    }

    #[test]
    fn the_root_end_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        assert!(claim_root_end(dir.path()));
        assert!(!claim_root_end(dir.path()));
        assert!(!claim_root_end(&dir.path().join("gone")));
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessRecord::capture("test", std::process::id()).unwrap();
        assert!(me.is_alive());
        let other = ProcessRecord {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
    }

    #[test]
    fn this_process_is_in_its_session() {
        let sid = nix::unistd::getsid(None).unwrap().as_raw() as u32;
        assert!(session_members(sid).contains(&std::process::id()));
    }

    #[test]
    fn state_json_is_the_oci_state_with_bookkeeping_beside_it() {
        let st = StateFile::example();
        let v: serde_json::Value = serde_json::to_value(&st).unwrap();
        assert_eq!(v["ociVersion"], OCI_VERSION);
        assert_eq!(v["status"], "running");
        assert_eq!(v["pid"], 7);
        assert_eq!(v["bundle"], "/b");
        let back: StateFile = serde_json::from_value(v).unwrap();
        assert_eq!(back, st);
        let st = StateFile {
            trace_root: Some(TraceRoot::example()),
            ..st
        };
        let v: serde_json::Value = serde_json::to_value(&st).unwrap();
        assert_eq!(v["traceRoot"]["export"]["sink"], "store");
        assert_eq!(v["traceRoot"]["export"]["dataDir"], "/d");
        assert_eq!(v["traceRoot"]["startUnixNano"], 5);
        assert_eq!(serde_json::from_value::<StateFile>(v).unwrap(), st);
        // Its sandbox process (pid 7, start time 1) is not alive: the state says stopped.
        let cur = st.current();
        assert_eq!(cur.status, Status::Stopped);
        assert_eq!(cur.pid, None);
    }
}
