//! The task API's resource requests on a container in the guest: `Stats` (its cgroup
//! statistics, [`crate::metrics`]), `Pause` and `Resume` (the guest's cgroup freezer), `Update`
//! (its cgroup's limits); the OOM kills the agent reports while the container runs
//! (`WaitOom`) or with a process's exit, told to containerd as `TaskOOM`; and a process's wait
//! raced with its VM's death.

use std::sync::Arc;

use containerd_shim::api::{Empty, StatsResponse};
use containerd_shim::protos::events::task::{TaskOOM, TaskPaused, TaskResumed};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc;
use containerd_shim::TtrpcResult;
use shoji_protocols::agent;
use shoji_runtime::error_chain;
use tracing::Instrument;

use crate::pod::Ctr;
use crate::service::{failed, Inner};

/// The least time between two `WaitOom` requests of one container (so between two `TaskOOM`s
/// a guest can cause).
const OOM_GAP: std::time::Duration = std::time::Duration::from_millis(250);

impl Inner {
    /// Tells containerd of each OOM kill in started container `ctr` as it happens (one
    /// `TaskOOM` per increase the agent reports), by long-polling `WaitOom` until the agent says
    /// the container ended, its init's exit is seen here, or the agent cannot be reached (the VM
    /// is gone). Runs in a span of its own, `container.oom_watch`, a child of the current one
    /// (the `Start` request's) that lasts as long as the watch: running in the request's own
    /// span would hold that span open, and `Start` would seem to last the container's life.
    pub fn watch_oom(self: &Arc<Self>, ctr: Arc<Ctr>) {
        let inner = self.clone();
        let span = tracing::info_span!("container.oom_watch", source = "runtime", subsystem = "container", container_id = %ctr.id);
        tokio::spawn(
            async move {
                loop {
                    // A guest answering at once every time would flood containerd's events:
                    // at most one request per OOM_GAP.
                    let next = tokio::time::Instant::now() + OOM_GAP;
                    let seen = *ctr.oom_kills.lock().await;
                    let r = tokio::select! {
                        r = ctr.client.wait_oom(&ctr.id, seen) => r,
                        _ = ctr.init.wait() => break,
                    };
                    match r {
                        Ok(r) => {
                            inner.oom_killed(&ctr, r.oom_kills).await;
                            if r.ended {
                                break;
                            }
                            tokio::time::sleep_until(next).await;
                        }
                        Err(e) => {
                            tracing::debug!(error = %error_chain(&e), "no more OOM events from the guest");
                            break;
                        }
                    }
                }
            }
            .instrument(span),
        );
    }

    /// `WaitProcess` for process `exec_id` of `ctr`, or an error once the sandbox's VM has
    /// exited (killed, or it crashed), whichever comes first.
    pub async fn wait_in_guest(
        &self,
        ctr: &Ctr,
        exec_id: &str,
    ) -> Result<agent::WaitProcessResponse, String> {
        let vm_exit = self.pod.lock().await.vm.as_ref().map(|vm| vm.exit_watch());
        let wait = ctr.client.wait_process(&ctr.id, exec_id);
        let Some(mut vm_exit) = vm_exit else {
            return wait.await.map_err(|e| error_chain(&e));
        };
        tokio::select! {
            r = wait => r.map_err(|e| error_chain(&e)),
            st = vm_exit.wait_for(|s| s.is_some()) => Err(format!(
                "the VM exited ({})",
                st.map(|s| s.clone().unwrap_or_default()).unwrap_or_default()
            )),
        }
    }

    /// `Stats`: the container's cgroup v2 statistics, read in the guest.
    pub async fn stats(&self, id: &str) -> TtrpcResult<StatsResponse> {
        let ctr = self.container(id).await?;
        let guest = ctr
            .client
            .stats_container(&ctr.id)
            .await
            .map_err(|e| failed(ttrpc::Code::INTERNAL, error_chain(&e)))?;
        let any = crate::metrics::to_any(&crate::metrics::from_guest(&guest))
            .map_err(|e| failed(ttrpc::Code::INTERNAL, error_chain(&e)))?;
        Ok(StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    /// `Pause` (`paused`) or `Resume`: freezes or thaws every process of the container in the
    /// guest, then tells containerd (`TaskPaused` / `TaskResumed`).
    pub async fn freeze(&self, id: &str, paused: bool) -> TtrpcResult<Empty> {
        let ctr = self.container(id).await?;
        ctr.record()
            .freeze(paused)
            .map_err(|r| failed(ttrpc::Code::FAILED_PRECONDITION, r.to_string()))?;
        if let Err(e) = ctr.client.freeze_container(&ctr.id, paused).await {
            ctr.record().freeze_failed(paused);
            return Err(failed(ttrpc::Code::INTERNAL, error_chain(&e)));
        }
        let container_id = ctr.id.clone();
        if paused {
            self.publish(
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(TaskPaused {
                    container_id,
                    ..Default::default()
                }),
            )
            .await;
        } else {
            self.publish(
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(TaskResumed {
                    container_id,
                    ..Default::default()
                }),
            )
            .await;
        }
        Ok(Empty::new())
    }

    /// `Update`: containerd's `linux.resources` (JSON in the `Any`, as runc's shim takes them)
    /// applied to the container's cgroup in the guest.
    pub async fn update(&self, id: &str, resources: Option<&Any>) -> TtrpcResult<Empty> {
        let ctr = self.container(id).await?;
        let json = resources.map(|a| a.value.clone()).unwrap_or_default();
        if let Err(e) = serde_json::from_slice::<oci_spec::runtime::LinuxResources>(&json) {
            return Err(failed(
                ttrpc::Code::INVALID_ARGUMENT,
                format!("update of {id}: the resources are not OCI linux.resources: {e}"),
            ));
        }
        ctr.client
            .update_container(&ctr.id, json)
            .await
            .map_err(|e| failed(ttrpc::Code::INTERNAL, error_chain(&e)))?;
        Ok(Empty::new())
    }

    /// The agent counted `oom_kills` OOM kills in the container's cgroup (by a process's exit,
    /// or while it runs, `watch_oom`): if that is more than containerd was told of, it gets one
    /// `TaskOOM` (before an exit's `TaskExit`, which the caller publishes next).
    pub async fn oom_killed(&self, ctr: &Ctr, oom_kills: u64) {
        let mut told = ctr.oom_kills.lock().await;
        if oom_kills <= *told {
            return;
        }
        *told = oom_kills;
        let span = tracing::info_span!("container.oom", source = "runtime", subsystem = "container", container_id = %ctr.id, oom_kills);
        self.publish(
            topics::TASK_OOM_EVENT_TOPIC,
            Box::new(TaskOOM {
                container_id: ctr.id.clone(),
                ..Default::default()
            }),
        )
        .instrument(span)
        .await;
    }
}
