use std::path::PathBuf;

/// Errors from reading or validating datasets. Format errors name the file, the byte offset and
/// what was expected there.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: at byte offset {offset}: expected {expected}, found {found}")]
    Format { path: PathBuf, offset: u64, expected: String, found: String },
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn format(
        path: &std::path::Path,
        offset: usize,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            offset: offset as u64,
            expected: expected.into(),
            found: found.into(),
        }
    }
}
