//! The answer to `containerd-shim-shoji-v2 -info`: Shoji's own features, not runc's.
//!
//! The `containerd-shim` crate answers with the runtime's name alone when a shim does not say
//! more; runc's shim runs `runc features`. Shoji answers with what its agent gives a container
//! (OCI runtime-spec `features.json`): the namespaces it makes in the guest, cgroup v2 only, no
//! OCI hooks (nothing of the container runs on the host), the mount options a volume may carry
//! (`rro` among them: containerd's CRI plugin then offers recursive read-only mounts).

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};

/// containerd's type URL for an OCI runtime-spec `features.Features` (JSON in an `Any`).
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// Shoji's OCI runtime features, as `runc features` prints runc's.
pub fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": [],
        "mountOptions": shoji_runtime::volumes::FLAG_OPTIONS,
        "linux": {
            "namespaces": ["pid", "mount", "uts", "ipc", "cgroup"],
            "cgroup": { "v1": false, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": { "enabled": false },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": {
            "io.shoji.vm": "true",
            "io.shoji.version": env!("CARGO_PKG_VERSION")
        }
    })
}

/// The `-info` answer for `runtime_id`.
pub fn runtime_info(runtime_id: &str) -> RuntimeInfo {
    let features = Any {
        type_url: FEATURES_TYPE_URL.into(),
        value: features().to_string().into_bytes(),
        ..Default::default()
    };
    RuntimeInfo {
        name: runtime_id.into(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }),
        features: MessageField::some(features),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_shoji_and_carries_its_features_as_json() {
        let info = runtime_info("io.containerd.shoji.v2");
        assert_eq!(info.name, "io.containerd.shoji.v2");
        let any = info.features.as_ref().expect("features");
        assert_eq!(any.type_url, FEATURES_TYPE_URL);
        let f: serde_json::Value = serde_json::from_slice(&any.value).expect("JSON");
        assert_eq!(f["linux"]["cgroup"]["v2"], true);
        assert_eq!(f["hooks"], serde_json::json!([]));
        // containerd's CRI plugin offers recursive read-only mounts to runtimes that name it.
        assert!(f["mountOptions"]
            .as_array()
            .is_some_and(|o| o.iter().any(|x| x == "rro")));
        assert!(f["linux"]["namespaces"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x == "pid")));
    }
}
