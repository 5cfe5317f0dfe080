//! Whole-file writes: a unique temporary file next to the target, synced, then renamed
//! over it.
//!
//! The temporary file is created with `create_new` under a name no other writer uses
//! (`.<name>.<pid>.<n>.tmp`, `n` from a process-wide counter), so two threads or two
//! processes writing the same file, or files whose names once mapped to one temporary
//! name, never write into each other's temporary. A reader of the target sees the old
//! content or the new, never a mix; a failed write leaves the old file as it was and
//! removes its temporary.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Characters of the target's name kept in the temporary's name, so the temporary's
/// name stays under the usual 255-byte limit.
const NAME_CHARS: usize = 96;

/// Write `path` with what `fill` writes, atomically (see the module docs).
///
/// ```
/// use std::io::Write;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("baseline.json");
/// cortex_support::file::write_atomic(&path, |out| out.write_all(b"{}"))?;
/// assert_eq!(std::fs::read(&path)?, b"{}");
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// The I/O error when the temporary cannot be created, written, synced or renamed, or
/// when `fill` fails; the caller names `path` in its own error.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> io::Result<()> {
    let (file, tmp) = create_temp(path)?;
    let written = (|| {
        let mut out = BufWriter::new(&file);
        fill(&mut out)?;
        out.flush()?;
        drop(out);
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // Best effort: the write error is the one worth reporting.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&tmp);
    Ok(())
}

/// Create a new, empty temporary file in the directory of `path`.
fn create_temp(path: &Path) -> io::Result<(File, PathBuf)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let name: String = name.to_string_lossy().chars().take(NAME_CHARS).collect();
    let pid = std::process::id();
    // A temporary left by a crashed process whose pid came back already exists: take
    // the next number instead of writing into it.
    let mut last = None;
    for _ in 0..64 {
        let n = NEXT.fetch_add(1, Relaxed);
        let tmp = path.with_file_name(format!(".{name}.{pid}.{n}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary file name")))
}

/// Make the rename durable: sync the directory that holds it (best effort; not every
/// platform or file system can open a directory).
fn sync_dir(file_in_dir: &Path) {
    #[cfg(unix)]
    if let Some(dir) = file_in_dir.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = file_in_dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_replace_the_file_and_leave_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_atomic(&path, |w| w.write_all(b"one")).unwrap();
        write_atomic(&path, |w| w.write_all(b"two")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(names_in(dir.path()), ["out.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_its_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_atomic(&path, |w| w.write_all(b"old")).unwrap();
        let err = write_atomic(&path, |w| {
            // Enough to reach the file before failing half way.
            w.write_all(&[b'x'; 64 << 10])?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names_in(dir.path()), ["out.json"]);
    }

    #[test]
    fn temporaries_sit_next_to_the_target_under_distinct_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.json");
        let (_a, tmp_a) = create_temp(&path).unwrap();
        let (_b, tmp_b) = create_temp(&path).unwrap();
        assert_ne!(tmp_a, tmp_b);
        assert_eq!(tmp_a.parent(), Some(dir.path()));
        assert!(tmp_a.to_string_lossy().ends_with(".tmp"));
        // A long name still gives a temporary name the file system accepts.
        let long = dir.path().join("x".repeat(250));
        write_atomic(&long, |w| w.write_all(b"{}")).unwrap();
        assert!(create_temp(Path::new("/")).is_err());
    }
}
