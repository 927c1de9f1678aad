//! Writing files so that readers see the old content or the new, never half.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// renamed into place once complete and synced.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".upsell-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    file.write_all(bytes).map_err(|e| Error::io(path, e))?;
    make_readable(file.as_file(), path)?;
    file.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    file.persist(path).map_err(|e| Error::io(path, e.error))?;
    sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Makes a rename in `dir` durable: until the directory itself is synced, a
/// power cut may forget the new name even though the file's bytes are on
/// disk. A no-op where directories cannot be opened (Windows).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    let _ = dir;
    Ok(())
}

/// Gives a finished temporary file the usual permissions of an output
/// (`rw-r--r--`); temporary files are created private.
pub fn make_readable(file: &std::fs::File, path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(path, e))?;
    }
    let _ = (file, path);
    Ok(())
}

/// Writes the directory `dir`, which must not exist, so that readers see it
/// whole or not at all: `fill` writes its content into a hidden sibling
/// (named `prefix` and random characters), which is given the usual
/// permissions of an output directory (`rwxr-xr-x`) and renamed into place.
/// On any failure the sibling is removed.
///
/// I/O failures are reported through `io(path, error)`; an existing `dir`
/// through `exists()`. Returns what `fill` returns.
pub fn write_dir<T, E>(
    dir: &Path,
    prefix: &str,
    io: impl Fn(&Path, std::io::Error) -> E,
    exists: impl FnOnce() -> E,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    if dir.exists() {
        return Err(exists());
    }
    let staging = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .map_err(|e| io(parent, e))?;
    let value = fill(staging.path())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(staging.path(), mode).map_err(|e| io(staging.path(), e))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        io(dir, e)
    })?;
    sync_dir(parent).map_err(|e| io(parent, e))?;
    Ok(value)
}
