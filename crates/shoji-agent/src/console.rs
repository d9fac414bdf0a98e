//! The console log writer: every line the agent logs goes to stderr (the agent's stderr is
//! `/dev/console`, i.e. ttyS0, which the host keeps as `console.log`) with a `shoji-agent: `
//! prefix, so agent lines stand out from the kernel's in the console tail a failure prints.

use std::io::Write;

/// A `tracing_subscriber` writer that prefixes each formatted event with `shoji-agent: `.
#[derive(Clone, Copy, Default)]
pub struct PrefixedStderr;

impl Write for PrefixedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The fmt layer hands over one whole event per call; one write_all keeps the prefix and
        // the line together even when threads log at once.
        let mut line = Vec::with_capacity(buf.len() + 13);
        line.extend_from_slice(b"shoji-agent: ");
        line.extend_from_slice(buf);
        std::io::stderr().lock().write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for PrefixedStderr {
    type Writer = PrefixedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        PrefixedStderr
    }
}
