//! Where the trace store lives: one directory shared by the runtime and `shoji trace serve`.

use std::path::{Path, PathBuf};

/// The data directory: `flag`, else `$SHOJI_DATA_DIR`, else `$XDG_DATA_HOME/shoji`, else
/// `$HOME/.local/share/shoji`, else `./.shoji` (no home at all, e.g. a bare container).
///
/// Empty variables count as unset, as the XDG base-directory specification asks.
pub fn resolve(flag: Option<&Path>) -> PathBuf {
    resolve_with(flag, |k| std::env::var_os(k))
}

fn resolve_with(flag: Option<&Path>, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty("SHOJI_DATA_DIR") {
        return dir;
    }
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return xdg.join("shoji");
    }
    if let Some(home) = non_empty("HOME") {
        return home.join(".local/share/shoji");
    }
    PathBuf::from(".shoji")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn precedence_is_flag_env_xdg_home() {
        let all = [
            ("SHOJI_DATA_DIR", "/s"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            resolve_with(Some(Path::new("/f")), env(&all)),
            PathBuf::from("/f")
        );
        assert_eq!(resolve_with(None, env(&all)), PathBuf::from("/s"));
        assert_eq!(
            resolve_with(None, env(&all[1..])),
            PathBuf::from("/x/shoji")
        );
        assert_eq!(
            resolve_with(None, env(&all[2..])),
            PathBuf::from("/h/.local/share/shoji")
        );
        assert_eq!(
            resolve_with(None, env(&[("SHOJI_DATA_DIR", ""), ("HOME", "/h")])),
            PathBuf::from("/h/.local/share/shoji")
        );
    }
}
