//! The console: the agent's stderr is `/dev/console`, i.e. ttyS0, which the host keeps as
//! `console.log`. Every line the agent logs starts with `shoji-agent: `, so agent lines stand out
//! from the kernel's in the console tail a failure prints.

use std::io::Write;

/// The prefix of every agent log line.
pub const PREFIX: &str = "shoji-agent";

/// Writes one whole line (newline included) with one `write_all`, so lines logged by several
/// threads at once never interleave.
pub fn write_line(line: &str) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
