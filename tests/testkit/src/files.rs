//! Directories of a test's own.

use std::path::{Path, PathBuf};

/// A directory of its own under the system temp dir, removed on drop (some
/// tests write a few hundred MB).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new empty directory named after `tag` and a fresh UUID.
pub fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("earshot-{tag}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&d).expect("create a temp dir");
    TempDir(d)
}
