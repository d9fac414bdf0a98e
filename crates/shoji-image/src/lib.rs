//! Builds the guest image: a Debian kernel and an initramfs whose /init is shoji-agent.

use std::path::PathBuf;

/// Where `shoji image build` puts the guest image: `$SHOJI_GUEST_DIR`, else
/// `$XDG_DATA_HOME/shoji/guest`, else `~/.local/share/shoji/guest`.
pub fn guest_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHOJI_GUEST_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("shoji/guest");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
    home.join(".local/share/shoji/guest")
}
