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
    publish(file.as_file(), path)?;
    file.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    file.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Gives a finished temporary file the usual permissions of an output
/// (`rw-r--r--`); temporary files are created private.
pub fn publish(file: &std::fs::File, path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(path, e))?;
    }
    let _ = (file, path);
    Ok(())
}
