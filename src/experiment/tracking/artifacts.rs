//! Artifacts: where a run's artifact URI points (the server's proxy or a
//! local directory), and the files uploaded there.

use super::client::Result;
use crate::error::TrackingError;
use std::path::{Path, PathBuf};

/// Where a run's artifacts are written.
#[derive(Debug, PartialEq)]
pub(super) enum ArtifactRoot {
    /// PUT each file to this URL prefix plus its path.
    Http(String),
    /// Copy each file below this directory.
    Local(PathBuf),
}

/// Resolves a run's `artifact_uri` against the tracking server's `base`
/// URL; `None` for schemes this client cannot write.
///
/// Mirrors MLflow's `MlflowArtifactsRepository.resolve_uri`: an
/// `mlflow-artifacts:` URI's path goes below the tracking URI's path prefix
/// and `/api/2.0/mlflow-artifacts/artifacts`, and its host, when it names
/// one, replaces the tracking URI's.
pub(super) fn artifact_root(base: &str, artifact_uri: &str) -> Option<ArtifactRoot> {
    const SERVICE: &str = "api/2.0/mlflow-artifacts/artifacts";
    if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
        let after_scheme = base.strip_prefix("http://")?;
        let (base_host, prefix) = after_scheme
            .split_once('/')
            .map_or((after_scheme, ""), |(host, prefix)| (host, prefix));
        let (host, path) = match rest.strip_prefix("//") {
            Some(authority_and_path) => {
                let (host, path) = authority_and_path
                    .split_once('/')
                    .unwrap_or((authority_and_path, ""));
                (if host.is_empty() { base_host } else { host }, path)
            }
            None => (base_host, rest),
        };
        let segments = [prefix, SERVICE, path]
            .into_iter()
            .flat_map(|part| part.split('/'))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        return Some(ArtifactRoot::Http(format!("http://{host}/{segments}")));
    }
    if artifact_uri.starts_with("http://") {
        return Some(ArtifactRoot::Http(
            artifact_uri.trim_end_matches('/').to_owned(),
        ));
    }
    if let Some(rest) = artifact_uri.strip_prefix("file:") {
        // file:///p, file:/p and file://localhost/p name a local path; a
        // file URI naming another host does not.
        let path = match rest.strip_prefix("//") {
            Some(authority_and_path) => {
                let slash = authority_and_path.find('/')?;
                let host = &authority_and_path[..slash];
                if !(host.is_empty() || host == "localhost") {
                    return None;
                }
                &authority_and_path[slash..]
            }
            None => rest,
        };
        return Some(ArtifactRoot::Local(PathBuf::from(percent_decode(path)?)));
    }
    // A bare path. A one-letter "scheme" is a Windows drive (C:\...).
    let scheme_len = artifact_uri.find(':').filter(|&i| {
        artifact_uri[..i]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    match scheme_len {
        Some(len) if len > 1 => None,
        _ => Some(ArtifactRoot::Local(PathBuf::from(artifact_uri))),
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

/// Percent-encodes each segment (everything but RFC 3986 unreserved
/// characters) and joins them with `/`.
pub(super) fn encode_segments(segments: &[&str]) -> String {
    let mut out = String::new();
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` when they are malformed or not UTF-8.
pub(super) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
