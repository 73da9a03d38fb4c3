//! Noticing that the configuration file was edited: its modification time and size.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug)]
pub struct ConfigWatch {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl ConfigWatch {
    /// Watches `path` from its state now.
    pub fn new(path: &Path) -> ConfigWatch {
        ConfigWatch {
            path: path.to_path_buf(),
            stamp: stamp(path),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file changed since the last call (or since [`ConfigWatch::new`]).
    pub fn changed(&mut self) -> bool {
        let now = stamp(&self.path);
        if now == self.stamp {
            return false;
        }
        self.stamp = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_is_noticed_once() {
        let dir = std::env::temp_dir().join(format!("xroute-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.yaml");
        std::fs::write(&path, "node: a\n").unwrap();
        let mut w = ConfigWatch::new(&path);
        assert!(!w.changed());
        // A different size is a change even within the clock's resolution.
        std::fs::write(&path, "node: abc\n").unwrap();
        assert!(w.changed());
        assert!(!w.changed());
        std::fs::remove_file(&path).unwrap();
        assert!(w.changed(), "a removed file is a change");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
