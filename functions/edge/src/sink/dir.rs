//! The local sink: the same NDJSON Firehose would carry, written to files in
//! a directory that `earshot load` reads (`EARSHOT_SOURCE=dir:PATH`).
//!
//! Lines go to a hidden temporary file (`.events-….ndjson.tmp`); the file is
//! renamed to `events-….ndjson` when it reaches [`ROTATE_BYTES`] or
//! [`ROTATE_AFTER`], and at shutdown. A reader therefore only ever sees
//! whole files, and a file it sees never changes.
//!
//! A process that dies without its shutdown (SIGKILL, a crash) leaves its
//! temporary file behind, holding events it acknowledged. The writer keeps
//! an exclusive lock on its file, so a sink can tell a dead writer's file
//! from a live one's: it gives the unlocked ones their final names, when it
//! starts ([`DirSink::new`]) and every [`ORPHAN_SWEEP_INTERVAL`] after, so
//! edges sharing a directory finalize what one of them left.
//!
//! A file is created under a third name (`.events-….ndjson.new`), locked,
//! and only then renamed to its temporary name: a sweep never sees a
//! temporary file its writer has not locked yet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{dead_letter, Deadline, Deliver};

/// Close a file at this size (similar to a Firehose object).
pub const ROTATE_BYTES: u64 = 8 * 1024 * 1024;
/// Close a file this long after it was opened, so events reach the loader
/// within about a second locally.
pub const ROTATE_AFTER: Duration = Duration::from_secs(1);
/// How often a running sink looks for files that dead writers left. A
/// directory shared by several edges gets the files of one that died
/// finalized by the others within this, not at the next start.
pub const ORPHAN_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// A `.new` file older than this lost its writer between creating and
/// renaming it (microseconds apart), so it is empty and is removed.
const STALE_NEW_FILE: Duration = Duration::from_secs(60);

struct OpenFile {
    file: std::fs::File,
    tmp: PathBuf,
    done: PathBuf,
    bytes: u64,
    opened: Instant,
}

/// Writes are plain blocking `write` calls on the runtime's thread: a batch
/// of a few KB lands in the page cache in microseconds, less than the two
/// thread hand-offs `tokio::fs` pays for every call. Only closing a file
/// (`fsync`, which can take milliseconds, and the rename) goes to the
/// blocking pool.
pub struct DirSink {
    dir: PathBuf,
    current: Mutex<Option<OpenFile>>,
    sweep_every: Duration,
    last_sweep: Mutex<Instant>,
}

impl DirSink {
    /// Creates the directory if needed, and finalizes the temporary files
    /// that writers which died left in it.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        log_recovered(recover_orphans(dir)?);
        Ok(Self {
            dir: dir.to_owned(),
            current: Mutex::new(None),
            sweep_every: ORPHAN_SWEEP_INTERVAL,
            last_sweep: Mutex::new(Instant::now()),
        })
    }

    /// Finalizes dead writers' files if a sweep is due.
    async fn sweep_if_due(&self) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < self.sweep_every {
                return;
            }
            *last = Instant::now();
        }
        let dir = self.dir.clone();
        match tokio::task::spawn_blocking(move || recover_orphans(&dir)).await {
            Ok(Ok(names)) => log_recovered(names),
            Ok(Err(e)) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "could not look for events files stopped processes left")
            }
            Err(e) => tracing::error!(error = %e, "the orphan sweep panicked"),
        }
    }

    fn open(&self) -> std::io::Result<OpenFile> {
        let now = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let name = format!("events-{stamp}-{}.ndjson", uuid::Uuid::now_v7().simple());
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let fresh = self.dir.join(format!(".{name}.new"));
        let file = std::fs::File::create(&fresh)?;
        // Held until the file has its final name: it tells a sweeping sink
        // that this file's writer is alive (`recover_orphans`). Taken before
        // the file has the name a sweep looks for, so no sweep ever finds
        // it unlocked while its writer lives.
        file.lock()?;
        std::fs::rename(&fresh, &tmp)?;
        Ok(OpenFile {
            file,
            tmp,
            done: self.dir.join(name),
            bytes: 0,
            opened: Instant::now(),
        })
    }

    /// Makes the file durable and gives it its final name; logs on failure
    /// (the lines stay in the temporary file, nothing is dropped).
    async fn close(f: OpenFile) {
        let shown = f.tmp.display().to_string();
        let closed = tokio::task::spawn_blocking(move || {
            f.file.sync_data()?;
            // Renamed while still locked, so no starting sink takes it for
            // an orphan in between.
            std::fs::rename(&f.tmp, &f.done)?;
            drop(f.file);
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = closed {
            tracing::error!(file = %shown, error = %e, "could not finalize events file; it stays under its temporary name");
        }
    }

    /// Appends `data`; returns the file if it is now full (to be closed).
    fn write(&self, data: &[u8]) -> std::io::Result<Option<OpenFile>> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.is_none() {
            *cur = Some(self.open()?);
        }
        let f = cur.as_mut().expect("opened above");
        f.file.write_all(data)?;
        f.bytes += data.len() as u64;
        Ok(if f.bytes >= ROTATE_BYTES {
            cur.take()
        } else {
            None
        })
    }
}

fn log_recovered(names: Vec<String>) {
    for name in names {
        tracing::warn!(file = %name, "finalized an events file a stopped process left unfinished");
    }
}

/// Gives every unlocked temporary file in `dir` its final name: its writer
/// died before closing it (a live writer holds its lock). The lines in it
/// were acknowledged, so they must reach the loader; a line cut short by
/// the crash is the loader's to quarantine. Returns the names given.
/// Also removes `.new` files whose writer died before renaming them.
fn recover_orphans(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut done = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_stale_new_file(&name, &entry)? {
            remove_unless_gone(&dir.join(&name))?;
            continue;
        }
        let Some(final_name) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .filter(|n| n.starts_with("events-") && n.ends_with(".ndjson"))
        else {
            continue;
        };
        let tmp = dir.join(&name);
        let file = match std::fs::File::options().write(true).open(&tmp) {
            Ok(f) => f,
            // Finalized by its writer since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        if file.metadata()?.len() == 0 {
            std::fs::remove_file(&tmp)?;
            continue;
        }
        file.sync_data()?;
        std::fs::rename(&tmp, dir.join(final_name))?;
        done.push(final_name.to_owned());
    }
    Ok(done)
}

/// An unrenamed `.events-….ndjson.new` file, older than [`STALE_NEW_FILE`].
fn is_stale_new_file(name: &str, entry: &std::fs::DirEntry) -> std::io::Result<bool> {
    if !(name.starts_with(".events-") && name.ends_with(".ndjson.new")) {
        return Ok(false);
    }
    let modified = match entry.metadata() {
        Ok(m) => m.modified()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(modified.elapsed().is_ok_and(|age| age >= STALE_NEW_FILE))
}

fn remove_unless_gone(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Deliver for DirSink {
    /// A local write: quick enough that no deadline is consulted.
    async fn deliver(&self, lines: Vec<Vec<u8>>, _deadline: &Deadline) {
        let data = lines.concat();
        match self.write(&data) {
            Ok(Some(full)) => Self::close(full).await,
            Ok(None) => {}
            Err(e) => {
                dead_letter(&data, &format!("writing to {}: {e}", self.dir.display()));
            }
        }
    }

    async fn maintain(&self, closing: bool) {
        let due = {
            let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            let due = cur
                .as_ref()
                .is_some_and(|f| closing || f.opened.elapsed() >= ROTATE_AFTER);
            if due {
                cur.take()
            } else {
                None
            }
        };
        if let Some(f) = due {
            Self::close(f).await;
        }
        if !closing {
            self.sweep_if_due().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn files_appear_whole_only_after_rotation_or_close() {
        let dir = std::env::temp_dir().join(format!(
            "earshot-dir-sink-{}",
            uuid::Uuid::now_v7().simple()
        ));
        let sink = DirSink::new(&dir).unwrap();
        sink.deliver(
            vec![b"{\"a\":1}\n".to_vec(), b"{\"a\":2}\n".to_vec()],
            &Deadline::none(),
        )
        .await;
        let n = names(&dir);
        assert_eq!(n.len(), 1);
        assert!(
            n[0].starts_with(".events-") && n[0].ends_with(".ndjson.tmp"),
            "{n:?}"
        );
        sink.maintain(false).await;
        assert_eq!(names(&dir).len(), 1, "not rotated before its time");
        sink.maintain(true).await;
        let n = names(&dir);
        assert!(
            n[0].starts_with("events-") && n[0].ends_with(".ndjson"),
            "{n:?}"
        );
        assert_eq!(
            std::fs::read(dir.join(&n[0])).unwrap(),
            b"{\"a\":1}\n{\"a\":2}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_starting_sink_finalizes_what_dead_writers_left_and_leaves_live_files_alone() {
        let dir = std::env::temp_dir().join(format!(
            "earshot-dir-orphans-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // A writer killed mid-file: its lock went with it.
        std::fs::write(dir.join(".events-dead.ndjson.tmp"), b"{\"a\":1}\n{\"a\":2").unwrap();
        // A writer killed before its first line.
        std::fs::write(dir.join(".events-empty.ndjson.tmp"), b"").unwrap();
        // A live writer (another process in the same directory).
        let live = std::fs::File::create(dir.join(".events-live.ndjson.tmp")).unwrap();
        live.lock().unwrap();
        // Not ours.
        std::fs::write(dir.join(".other.tmp"), b"x").unwrap();
        // A writer killed between creating its file and renaming it, and
        // one doing that right now.
        let stale = std::fs::File::create(dir.join(".events-stale.ndjson.new")).unwrap();
        stale
            .set_modified(std::time::SystemTime::now() - 2 * STALE_NEW_FILE)
            .unwrap();
        std::fs::write(dir.join(".events-fresh.ndjson.new"), b"").unwrap();

        let _sink = DirSink::new(&dir).unwrap();
        assert_eq!(
            names(&dir),
            vec![
                ".events-fresh.ndjson.new",
                ".events-live.ndjson.tmp",
                ".other.tmp",
                "events-dead.ndjson"
            ]
        );
        assert_eq!(
            std::fs::read(dir.join("events-dead.ndjson")).unwrap(),
            b"{\"a\":1}\n{\"a\":2"
        );
        drop(live);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_running_sink_finalizes_a_dead_writers_file_at_its_next_sweep_and_keeps_its_own() {
        let dir = std::env::temp_dir().join(format!(
            "earshot-dir-sweep-{}",
            uuid::Uuid::now_v7().simple()
        ));
        let mut sink = DirSink::new(&dir).unwrap();
        sink.deliver(vec![b"{\"own\":1}\n".to_vec()], &Deadline::none())
            .await;
        let own = names(&dir);
        assert_eq!(own.len(), 1);
        // Another edge sharing the directory dies after the sink started.
        std::fs::write(dir.join(".events-dead.ndjson.tmp"), b"{\"a\":1}\n").unwrap();
        sink.maintain(false).await;
        assert_eq!(
            names(&dir),
            vec![own[0].clone(), ".events-dead.ndjson.tmp".to_owned()],
            "no sweep before its interval"
        );
        sink.sweep_every = Duration::ZERO;
        sink.maintain(false).await;
        assert_eq!(
            names(&dir),
            vec![own[0].clone(), "events-dead.ndjson".to_owned()],
            "the dead writer's file is finalized; the sink's own open file is left alone"
        );
        sink.maintain(true).await;
        let done = names(&dir);
        assert_eq!(done.len(), 2);
        assert!(done.iter().all(|n| n.starts_with("events-")), "{done:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
