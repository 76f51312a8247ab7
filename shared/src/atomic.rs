//! The one way files are written: to a temporary file in the destination's folder, flushed to
//! disk, then renamed over the destination. A killed process leaves either the old file or the
//! whole new one, never a half-written file that a resumed run would take as done.

use std::io::Write;
use std::path::Path;
use tempfile::NamedTempFile;

/// Writes `dest` atomically with `fill`, which writes into the temporary file (it has a path, for
/// writers that take one, and ends in `dest`'s extension, for writers that choose a format by
/// name). The destination's folder is created if needed. On any error the temporary file is
/// removed and `dest` is left as it was.
pub fn write_atomically<E: From<std::io::Error>>(
    dest: &Path,
    fill: impl FnOnce(&mut NamedTempFile) -> Result<(), E>,
) -> Result<(), E> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let suffix = dest
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(&suffix)
        .tempfile_in(dir)?;
    fill(&mut file)?;
    file.flush()?;
    file.as_file().sync_all()?;
    file.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/out.txt");
        write_atomically::<std::io::Error>(&dest, |f| f.write_all(b"first")).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"first");
        let failed = write_atomically::<std::io::Error>(&dest, |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("killed"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"first", "old file kept");
        let left: Vec<_> = std::fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "the temporary file is gone");
        write_atomically::<std::io::Error>(&dest, |f| {
            assert!(f.path().to_string_lossy().ends_with(".txt"));
            f.write_all(b"second")
        })
        .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"second");
    }
}
