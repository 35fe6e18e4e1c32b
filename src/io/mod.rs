//! File helpers every part of kdscope writes through: atomic writes (a crash never leaves a
//! half-written file in place), JSON files with errors that name the file, third-party readers run
//! under [`guard`] and Parquet headers checked before decoding ([`parquet`]).
pub mod parquet;

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{de::DeserializeOwned, Serialize};

/// Writes `bytes` to a temporary file in `path`'s folder (created if needed), syncs it and renames it
/// into place, so readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = folder_of(path);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    fault_point("created");
    f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fault_point("written");
    f.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
    fault_point("synced");
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    fault_point("renamed");
    // The rename itself reaches the disk with the folder's entry (best effort: not every file system
    // lets a folder be opened for that).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    fault_point("folder synced");
    Ok(())
}

/// The folder a file path is in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Crash injection for the resume tests: with `KDSCOPE_FAULT_AT=n`, the process aborts (as a kill
/// would stop it: no unwinding, no clean-up) at the `n`-th step of atomic writes (counted from 1 over
/// the process's life: temporary file created, written, synced, renamed, folder synced), after printing
/// the step to stderr. Unset, it costs one lookup per step.
fn fault_point(step: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static AT: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let at = *AT.get_or_init(|| std::env::var("KDSCOPE_FAULT_AT").ok().and_then(|v| v.parse().ok()));
    if let Some(at) = at {
        let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
        if n == at {
            eprintln!("KDSCOPE_FAULT_AT={at}: aborting after step '{step}'");
            std::process::abort();
        }
    }
}

/// Removes the temporary files [`write_atomic`] left for `path` in processes that are gone
/// (`.<name>.<pid>.tmp`; a writer still running keeps its file).
pub fn remove_stale_temporaries(path: &Path) -> anyhow::Result<()> {
    let dir = folder_of(path);
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_string()) else { return Ok(()) };
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let f = e.file_name().to_string_lossy().to_string();
        let Some(pid) = f.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp")) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            std::fs::remove_file(e.path()).with_context(|| format!("removing stale {}", e.path().display()))?;
        }
    }
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

/// Runs a third-party reader that may panic on malformed input (polars' Parquet and CSV readers
/// assert on some corrupt files) and turns a panic into an error naming `what`. The panic hook is
/// silenced meanwhile so no "panicked at" line reaches the user; a panic elsewhere in the process at
/// that moment still fails as it would, only without its message.
pub fn guard<T>(what: impl std::fmt::Display, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    match r {
        Ok(r) => r,
        Err(payload) => {
            anyhow::bail!("{what}: the reader failed on malformed content ({})", panic_message(payload.as_ref()))
        }
    }
}

/// Peak resident memory of this process so far, in MiB: the kernel's high-water mark of its own
/// address space (`VmHWM`). Not `getrusage`'s `ru_maxrss` (the fallback where `/proc` is missing),
/// which a process started with `posix_spawn`/`vfork` inherits from its parent's peak (Linux carries it
/// across `execve`).
pub fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.unwrap_or_else(|| {
        // SAFETY: getrusage only writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        u.ru_maxrss as f64
    }) / 1024.0
}

/// Bytes (a digest) as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The message a panic carried (its `&str` or `String` payload).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no message".into())
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
