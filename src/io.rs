//! File helpers every part of kdscope writes through: atomic writes (a crash never leaves a
//! half-written file in place) and JSON files with errors that name the file.
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{de::DeserializeOwned, Serialize};

/// Writes `bytes` to a temporary file in `path`'s folder (created if needed), syncs it and renames it
/// into place, so readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// `v` as pretty JSON, written atomically.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, v: &T) -> anyhow::Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(v)?)
}

/// Reads a JSON file into `T`; errors name the file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: unexpected content", path.display()))
}

/// A progress bar on stderr counting `unit`s (hidden when `show` is false).
pub fn progress_bar(len: u64, label: &str, unit: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    let template = format!("{{prefix:>24}} {{bar:30}} {{pos}}/{{len}} {unit} {{elapsed_precise}} eta {{eta}} {{msg}}");
    pb.set_style(indicatif::ProgressStyle::with_template(&template).expect("valid template"));
    pb.set_prefix(label.to_string());
    pb
}

/// The commit of the working directory's git checkout, if any (with `+dirty` for local changes).
pub fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    Some(if dirty { format!("{rev}+dirty") } else { rev })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file holds the new bytes, no temporary file is left, and a missing folder is created.
    #[test]
    fn atomic_write_replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("a.json");
        write_json(&p, &[1, 2]).unwrap();
        write_json(&p, &[3]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), vec![3]);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        let e = read_json::<Vec<u32>>(&dir.path().join("missing.json")).unwrap_err().to_string();
        assert!(e.contains("missing.json"), "{e}");
    }
}
