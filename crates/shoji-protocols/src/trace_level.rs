//! How much each source of a sandbox's trace exports: `off`, `boot`, `lifecycle`, `rpc`,
//! `debug`, each including the ones before it. Part of the host-guest contract because the
//! agent's level travels on the kernel command line (`shoji.trace_level=<level>`); which span
//! belongs to which level is `shoji_telemetry::levels`.

use std::fmt;
use std::str::FromStr;

/// The kernel command line key that carries the agent's level.
pub const TRACE_LEVEL_CMDLINE_KEY: &str = "shoji.trace_level";

/// One source's instrumentation level; later variants include earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum TraceLevel {
    /// Nothing from this source.
    Off,
    /// The sandbox's root and its start: VM, helpers, QEMU, guest boot phases, clock sync.
    Boot,
    /// Containers and processes: create, start, wait, exec, kill, delete, network, stop.
    Lifecycle,
    /// Every host-agent ttRPC call, client and server side.
    Rpc,
    /// Everything: also the repeated calls (clock and readiness pings) and any span not
    /// classified yet. The default, which exports every span Shoji makes.
    #[default]
    Debug,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown trace level {0:?}: use off, boot, lifecycle, rpc or debug")]
pub struct TraceLevelError(pub String);

impl TraceLevel {
    pub const ALL: [TraceLevel; 5] = [
        TraceLevel::Off,
        TraceLevel::Boot,
        TraceLevel::Lifecycle,
        TraceLevel::Rpc,
        TraceLevel::Debug,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Boot => "boot",
            Self::Lifecycle => "lifecycle",
            Self::Rpc => "rpc",
            Self::Debug => "debug",
        }
    }
}

impl FromStr for TraceLevel {
    type Err = TraceLevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| TraceLevelError(s.to_string()))
    }
}

impl fmt::Display for TraceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_print_and_order() {
        for l in TraceLevel::ALL {
            assert_eq!(l.as_str().parse::<TraceLevel>(), Ok(l));
        }
        assert_eq!("RPC".parse::<TraceLevel>(), Ok(TraceLevel::Rpc));
        assert!(TraceLevel::Off < TraceLevel::Boot && TraceLevel::Rpc < TraceLevel::Debug);
        let e = "info".parse::<TraceLevel>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown trace level \"info\": use off, boot, lifecycle, rpc or debug"
        );
    }
}
