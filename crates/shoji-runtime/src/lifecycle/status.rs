//! The lifecycle's states and the rules between them, on the types (as youki does), so that
//! handlers ask (`can_start`, `can_exec`...) instead of each re-deriving the rules.
//!
//! Shaped for one VM holding N containers, each with M processes (ADR 013): every process, a
//! container's init or one of its execs, has containerd's task status ([`TaskStatus`]); a
//! container's OCI status ([`Status`]) is its init's, plus `creating` before the init exists.
//! The standalone CLI is the one-container case: the sandbox process holds one [`Container`]
//! whose id is the sandbox's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A container's OCI status, as `state.json` and `shoji state` give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: table columns use width flags.
        f.pad(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

impl Status {
    /// `start` runs the init that `create` holds.
    pub fn can_start(self) -> bool {
        self == Status::Created
    }

    /// A signal reaches the init while it exists: held (a `kill` of a created container ends
    /// it), running or paused.
    pub fn can_kill(self) -> bool {
        matches!(self, Status::Created | Status::Running | Status::Paused)
    }

    /// An exec joins a running init's namespaces.
    pub fn can_exec(self) -> bool {
        self == Status::Running
    }

    /// `delete` takes a container that runs nothing (created or stopped); `--force` takes any.
    pub fn can_delete(self, force: bool) -> bool {
        force || matches!(self, Status::Created | Status::Stopped)
    }

    /// What a refused request says: `container c1 is stopped, not running`.
    pub fn refusal(self, id: &str, wanted: &'static str) -> Refused {
        Refused {
            id: id.to_string(),
            status: self,
            wanted,
        }
    }
}

/// A request the container's status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {id} is {status}, not {wanted}")]
pub struct Refused {
    pub id: String,
    pub status: Status,
    pub wanted: &'static str,
}

/// containerd's task status, per process: a container's init or one of its execs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Created,
    Running,
    Paused,
    Stopped,
}

impl From<TaskStatus> for Status {
    fn from(t: TaskStatus) -> Self {
        match t {
            TaskStatus::Created => Status::Created,
            TaskStatus::Running => Status::Running,
            TaskStatus::Paused => Status::Paused,
            TaskStatus::Stopped => Status::Stopped,
        }
    }
}

/// One process of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    pub status: TaskStatus,
    /// Its PID in the guest, once known.
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
}

impl Task {
    fn created(pid: Option<u32>) -> Self {
        Self {
            status: TaskStatus::Created,
            pid,
            exit_code: None,
        }
    }

    /// Stopped, with `exit_code`; the first report wins.
    fn exit(&mut self, exit_code: Option<i32>) {
        if self.status != TaskStatus::Stopped {
            self.status = TaskStatus::Stopped;
            self.exit_code = exit_code;
        }
    }
}

/// A container: its init (exec id `""`, as the agent names it) and its execs by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub init: Task,
    pub execs: BTreeMap<String, Task>,
}

impl Container {
    /// A container whose init is created (held) with guest PID `pid`.
    pub fn created(id: &str, pid: u32) -> Self {
        Self {
            id: id.to_string(),
            init: Task::created(Some(pid)),
            execs: BTreeMap::new(),
        }
    }

    /// The container's OCI status: its init's.
    pub fn status(&self) -> Status {
        self.init.status.into()
    }

    /// Claims `start`: the init counts as running from now, so that a second `start` is
    /// refused while the first one's call to the agent is in flight; [`Self::start_failed`]
    /// undoes it.
    pub fn start(&mut self) -> Result<(), Refused> {
        let status = self.status();
        if !status.can_start() {
            return Err(status.refusal(&self.id, "created"));
        }
        self.init.status = TaskStatus::Running;
        Ok(())
    }

    /// The agent refused `start`: the init is still held, unless it ended meanwhile.
    pub fn start_failed(&mut self) {
        if self.init.status == TaskStatus::Running {
            self.init.status = TaskStatus::Created;
        }
    }

    /// Claims `pause` (a running container) or `resume` (a paused one): the init counts as
    /// paused, or running, from now; [`Self::freeze_failed`] undoes it.
    pub fn freeze(&mut self, paused: bool) -> Result<(), Refused> {
        let (from, to, wanted) = if paused {
            (TaskStatus::Running, TaskStatus::Paused, "running")
        } else {
            (TaskStatus::Paused, TaskStatus::Running, "paused")
        };
        if self.init.status != from {
            return Err(self.status().refusal(&self.id, wanted));
        }
        self.init.status = to;
        Ok(())
    }

    /// The guest refused `pause` (`paused`) or `resume`: the init is as it was, unless it ended
    /// meanwhile.
    pub fn freeze_failed(&mut self, paused: bool) {
        let (claimed, back) = if paused {
            (TaskStatus::Paused, TaskStatus::Running)
        } else {
            (TaskStatus::Running, TaskStatus::Paused)
        };
        if self.init.status == claimed {
            self.init.status = back;
        }
    }

    pub fn check_kill(&self) -> Result<(), Refused> {
        let status = self.status();
        if status.can_kill() {
            Ok(())
        } else {
            Err(status.refusal(&self.id, "created or running"))
        }
    }

    /// Registers exec `exec_id` as created: the container must run, and the id be free.
    pub fn exec(&mut self, exec_id: &str) -> Result<(), ExecRefused> {
        let status = self.status();
        if !status.can_exec() {
            return Err(ExecRefused::Status(status.refusal(&self.id, "running")));
        }
        if exec_id.is_empty() {
            return Err(ExecRefused::EmptyId);
        }
        if self
            .execs
            .get(exec_id)
            .is_some_and(|t| t.status != TaskStatus::Stopped)
        {
            return Err(ExecRefused::Duplicate {
                exec_id: exec_id.to_string(),
            });
        }
        self.execs.insert(exec_id.to_string(), Task::created(None));
        Ok(())
    }

    /// Exec `exec_id` runs as guest PID `pid`.
    pub fn exec_started(&mut self, exec_id: &str, pid: u32) {
        if let Some(t) = self.execs.get_mut(exec_id) {
            if t.status == TaskStatus::Created {
                t.status = TaskStatus::Running;
                t.pid = Some(pid);
            }
        }
    }

    /// Process `exec_id` (`""`: the init) has ended, with `exit_code` if it is known. The
    /// init's end stops the container, and every exec with it (they live in its PID
    /// namespace).
    pub fn exited(&mut self, exec_id: &str, exit_code: Option<i32>) {
        if exec_id.is_empty() {
            self.init.exit(exit_code);
            for t in self.execs.values_mut() {
                t.exit(None);
            }
        } else if let Some(t) = self.execs.get_mut(exec_id) {
            t.exit(exit_code);
        }
    }

    /// Execs that are still created or running.
    pub fn live_execs(&self) -> usize {
        self.execs
            .values()
            .filter(|t| t.status != TaskStatus::Stopped)
            .count()
    }
}

/// Why an exec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecRefused {
    #[error(transparent)]
    Status(Refused),
    #[error("empty exec id")]
    EmptyId,
    #[error("exec id {exec_id:?} is in use by a live process")]
    Duplicate { exec_id: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_per_status() {
        // (status, start, kill, exec, delete, delete --force)
        let table = [
            (Status::Creating, false, false, false, false, true),
            (Status::Created, true, true, false, true, true),
            (Status::Running, false, true, true, false, true),
            (Status::Paused, false, true, false, false, true),
            (Status::Stopped, false, false, false, true, true),
        ];
        for (s, start, kill, exec, delete, force) in table {
            assert_eq!(s.can_start(), start, "{s} start");
            assert_eq!(s.can_kill(), kill, "{s} kill");
            assert_eq!(s.can_exec(), exec, "{s} exec");
            assert_eq!(s.can_delete(false), delete, "{s} delete");
            assert_eq!(s.can_delete(true), force, "{s} delete --force");
        }
    }

    #[test]
    fn start_is_claimed_once_and_undone_on_failure() {
        let mut c = Container::created("c1", 7);
        assert_eq!(c.status(), Status::Created);
        c.start().unwrap();
        assert_eq!(c.status(), Status::Running);
        let e = c.start().unwrap_err();
        assert_eq!(e.to_string(), "container c1 is running, not created");
        c.start_failed();
        assert_eq!(c.status(), Status::Created);
        // An init that ended meanwhile stays stopped.
        c.start().unwrap();
        c.exited("", Some(0));
        c.start_failed();
        assert_eq!(c.status(), Status::Stopped);
        assert_eq!(c.init.exit_code, Some(0));
    }

    #[test]
    fn pause_and_resume_go_between_running_and_paused() {
        let mut c = Container::created("c1", 7);
        let e = c.freeze(true).unwrap_err();
        assert_eq!(e.to_string(), "container c1 is created, not running");
        c.start().unwrap();
        c.freeze(true).unwrap();
        assert_eq!(c.status(), Status::Paused);
        assert!(c.freeze(true).is_err(), "paused twice");
        assert!(!c.status().can_exec(), "no exec into a paused container");
        c.freeze(false).unwrap();
        assert_eq!(c.status(), Status::Running);
        // A failed pause is undone; an init that ended meanwhile stays stopped.
        c.freeze(true).unwrap();
        c.freeze_failed(true);
        assert_eq!(c.status(), Status::Running);
        c.freeze(true).unwrap();
        c.exited("", Some(137));
        c.freeze_failed(true);
        assert_eq!(c.status(), Status::Stopped);
    }

    #[test]
    fn execs_need_a_running_init_and_a_free_id() {
        let mut c = Container::created("c1", 7);
        assert!(matches!(c.exec("e1"), Err(ExecRefused::Status(_))));
        c.start().unwrap();
        assert_eq!(c.exec(""), Err(ExecRefused::EmptyId));
        c.exec("e1").unwrap();
        assert!(matches!(c.exec("e1"), Err(ExecRefused::Duplicate { .. })));
        c.exec_started("e1", 12);
        assert_eq!(c.execs["e1"].status, TaskStatus::Running);
        assert_eq!(c.execs["e1"].pid, Some(12));
        c.exec("e2").unwrap();
        assert_eq!(c.live_execs(), 2);
        c.exited("e1", Some(3));
        assert_eq!(c.execs["e1"].exit_code, Some(3));
        // A stopped exec's id may be used again.
        c.exec("e1").unwrap();
        assert_eq!(
            c.status(),
            Status::Running,
            "execs leave the container's status alone"
        );
    }

    #[test]
    fn the_init_ending_stops_the_container_and_its_execs() {
        let mut c = Container::created("c1", 7);
        c.start().unwrap();
        c.exec("e1").unwrap();
        c.exec_started("e1", 12);
        c.exited("", Some(137));
        assert_eq!(c.status(), Status::Stopped);
        assert_eq!(c.init.exit_code, Some(137));
        assert_eq!(c.execs["e1"].status, TaskStatus::Stopped);
        assert_eq!(c.live_execs(), 0);
        // A later report does not overwrite the first.
        c.exited("", Some(0));
        assert_eq!(c.init.exit_code, Some(137));
        assert!(c.check_kill().is_err());
        assert!(c.status().can_delete(false));
        assert!(matches!(c.exec("e2"), Err(ExecRefused::Status(_))));
    }
}
