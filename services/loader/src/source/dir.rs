//! A directory of NDJSON files (the edge's `dir:` sink), walked recursively.
//! Hidden files (the sink's temporary files) are never read.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Delivery, Object};

pub struct DirSource {
    root: PathBuf,
    label: String,
    done: HashSet<String>,
}

fn is_event_file(name: &str) -> bool {
    !name.starts_with('.')
        && (name.ends_with(".ndjson") || name.ends_with(".ndjson.gz") || name.ends_with(".gz"))
}

impl DirSource {
    pub fn new(root: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&root).map_err(|e| {
            anyhow::anyhow!(
                "EARSHOT_SOURCE: cannot use directory {}: {e}",
                root.display()
            )
        })?;
        let abs = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
        Ok(Self {
            label: format!("dir:{}", abs.display()),
            root,
            done: HashSet::new(),
        })
    }

    fn walk(&self, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ty = entry.file_type()?;
            if ty.is_dir() && !name.starts_with('.') {
                self.walk(&entry.path(), out)?;
            } else if ty.is_file() && is_event_file(&name) {
                let rel = entry
                    .path()
                    .strip_prefix(&self.root)
                    .unwrap_or(&entry.path())
                    .to_string_lossy()
                    .into_owned();
                if !self.done.contains(&rel) {
                    out.push(rel);
                }
            }
        }
        Ok(())
    }

    /// Files not yet handled by this process, oldest name first (the sink
    /// names files by time).
    pub fn poll(&mut self) -> anyhow::Result<Vec<Delivery>> {
        let mut keys = Vec::new();
        self.walk(&self.root.clone(), &mut keys)
            .map_err(|e| anyhow::anyhow!("listing {}: {e}", self.root.display()))?;
        keys.sort();
        Ok(keys
            .into_iter()
            .map(|key| Delivery {
                objects: vec![Object {
                    source: self.label.clone(),
                    key,
                    etag: None,
                }],
                receipt: None,
            })
            .collect())
    }

    /// The file's bytes and sha256, read and hashed on a blocking thread.
    pub async fn fetch(&self, obj: &Object) -> anyhow::Result<(Vec<u8>, String)> {
        let path = self.root.join(&obj.key);
        let (from, key) = (obj.source.clone(), obj.key.clone());
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    return anyhow::Error::new(super::Unfetchable {
                        from,
                        key,
                        why: super::Permanent::NotFound,
                    });
                }
                anyhow::anyhow!("reading {}: {e}", path.display())
            })?;
            let etag = hex::encode(Sha256::digest(&bytes));
            Ok((bytes, etag))
        })
        .await?
    }

    pub fn done(&mut self, d: &Delivery) {
        for o in &d.objects {
            self.done.insert(o.key.clone());
        }
    }
}
