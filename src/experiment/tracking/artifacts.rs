//! Artifacts: where a run's artifact URI points (the server's proxy or a
//! local directory), and the files uploaded there.

use super::client::Result;
use crate::error::TrackingError;
use std::path::{Path, PathBuf};
use url::Url;

/// Where a run's artifacts are written.
#[derive(Debug, PartialEq)]
pub(super) enum ArtifactRoot {
    /// PUT each file to this URL plus its path.
    Http(Url),
    /// Copy each file below this directory.
    Local(PathBuf),
}

impl ArtifactRoot {
    /// The URL of the artifact at `segments` below an HTTP root.
    pub(super) fn file_url(root: &Url, segments: &[&str]) -> Url {
        let mut url = root.clone();
        url.path_segments_mut()
            .expect("http URLs have a path")
            .pop_if_empty()
            .extend(segments);
        url
    }
}

/// Resolves a run's `artifact_uri` against the tracking server's `base`
/// URL; `None` for schemes this client cannot write.
///
/// Mirrors MLflow's `MlflowArtifactsRepository.resolve_uri`: an
/// `mlflow-artifacts:` URI's path goes below the tracking URI's path prefix
/// and `/api/2.0/mlflow-artifacts/artifacts`, and its host, when it names
/// one, replaces the tracking URI's.
pub(super) fn artifact_root(base: &Url, artifact_uri: &str) -> Option<ArtifactRoot> {
    const SERVICE: [&str; 4] = ["api", "2.0", "mlflow-artifacts", "artifacts"];
    // A one-letter "scheme" is a Windows drive (C:\...), so a bare path.
    let parsed = Url::parse(artifact_uri)
        .ok()
        .filter(|url| url.scheme().len() > 1);
    let Some(uri) = parsed else {
        return Some(ArtifactRoot::Local(PathBuf::from(artifact_uri)));
    };
    match uri.scheme() {
        "mlflow-artifacts" => {
            let mut root = base.clone();
            if let Some(host) = uri.host_str().filter(|h| !h.is_empty()) {
                root.set_host(Some(host)).ok()?;
                root.set_port(uri.port()).ok()?;
            }
            let path: Vec<&str> = uri.path_segments()?.filter(|s| !s.is_empty()).collect();
            root.path_segments_mut()
                .ok()?
                .pop_if_empty()
                .extend(SERVICE)
                .extend(path);
            Some(ArtifactRoot::Http(root))
        }
        "http" | "https" => {
            let mut root = uri;
            root.path_segments_mut().ok()?.pop_if_empty();
            Some(ArtifactRoot::Http(root))
        }
        // file:///p, file:/p and file://localhost/p name a local path; a
        // file URI naming another host does not.
        "file" => uri.to_file_path().ok().map(ArtifactRoot::Local),
        _ => None,
    }
}

/// The `/`-separated segments of a relative artifact path, refusing what
/// MLflow refuses (`..`, absolute paths, `\`, `#`) and empty or `.` segments.
pub(super) fn artifact_segments(path: &str) -> Result<Vec<&str>> {
    let invalid = |reason| TrackingError::InvalidArtifactPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("empty"));
    }
    if path.starts_with('/') {
        return Err(invalid("must be relative to the run's artifact root"));
    }
    if path.contains(['\\', '#']) || path.chars().any(char::is_control) {
        return Err(invalid(
            "contains '\\', '#' or a control character, which MLflow refuses",
        ));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(invalid("has an empty, '.' or '..' segment"));
    }
    Ok(segments)
}

pub(super) fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|source| TrackingError::Io {
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::copy(from, to).map_err(|source| TrackingError::Io {
        path: from.to_owned(),
        source,
    })?;
    Ok(())
}

/// Appends every file below `dir` to `out` as (path, `/`-joined path
/// relative to the walk's root), in name order.
pub(super) fn collect_files(
    dir: &Path,
    relative: &mut Vec<String>,
    out: &mut Vec<(PathBuf, String)>,
) -> Result<()> {
    let io = |source| TrackingError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io)?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let name =
            entry
                .file_name()
                .into_string()
                .map_err(|name| TrackingError::InvalidArtifactPath {
                    path: name.to_string_lossy().into_owned(),
                    reason: "file name is not valid UTF-8",
                })?;
        let file_type = entry.file_type().map_err(io)?;
        let is_dir = file_type.is_dir();
        let is_file = if file_type.is_symlink() {
            // Follow links to files only; a link to a directory could loop.
            std::fs::metadata(&path).is_ok_and(|m| m.is_file())
        } else {
            file_type.is_file()
        };
        relative.push(name);
        if is_dir {
            collect_files(&path, relative, out)?;
        } else if is_file {
            out.push((path, relative.join("/")));
        }
        relative.pop();
    }
    Ok(())
}
