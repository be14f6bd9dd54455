//! The host directory each workload keeps whatever the backend (process, Docker, kube):
//! its log files (`shim::LOG`, `shim::LOG_ROTATED`) and its recorded end
//! (`shim::EXIT`, an `ExitInfo` as JSON). One reading of that layout for every backend.

use std::path::Path;

use super::shim::{write_atomic, EXIT, LOG, LOG_ROTATED};
use super::{ExitInfo, LogFiles, RuntimeError};

/// Maps an I/O error on `path` to `RuntimeError::Io`.
pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The workload's log files in `dir`, oldest first; `NotFound(id)` without the dir.
pub fn log_files(dir: &Path, id: &str) -> Result<LogFiles, RuntimeError> {
    if !dir.exists() {
        return Err(RuntimeError::NotFound(id.to_string()));
    }
    let files = [LOG_ROTATED, LOG]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect();
    Ok(LogFiles { files })
}

/// The end recorded in `dir`, if one was written and parses.
pub fn read_exit(dir: &Path) -> Option<ExitInfo> {
    std::fs::read(dir.join(EXIT))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Records the end in `dir` (atomically: a reader sees the old file or the new one).
pub fn write_exit(dir: &Path, exit: &ExitInfo) -> Result<(), RuntimeError> {
    let json = serde_json::to_vec(exit).map_err(|e| RuntimeError::Io {
        path: dir.join(EXIT),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&dir.join(EXIT), &json).map_err(io_err(dir))
}
