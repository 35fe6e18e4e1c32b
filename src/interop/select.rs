//! Where the state dict is inside a checkpoint. `torch.save` files are dictionaries: RepDistiller saves
//! `{'epoch', 'model', 'accuracy', 'optimizer'}`, mdistiller `{'model': …}` with DataParallel's
//! `module.` and, for a distiller, `student.` / `teacher.` inside; others use `state_dict`, `net`,
//! `model_state_dict`. Tensor names are dotted paths through those dictionaries, and [`choose`] picks the
//! subtree holding the model.
use std::collections::BTreeSet;

use anyhow::bail;

/// How to read a checkpoint made elsewhere.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The subtree holding the state dict, as a dotted path (`model.module.student`); guessed when `None`.
    /// On the command line it follows the path after `#`: `--teacher ckpt.pth#model.module.teacher`.
    pub select: Option<String>,
    /// Which of `student` / `teacher` to take from a distiller checkpoint that holds both (the command
    /// line sets it from the role: `--teacher` prefers `teacher`).
    pub prefer: Option<String>,
    /// The architecture (`resnet56`, `tv_resnet50`, …); inferred from the tensors when `None`.
    pub arch: Option<String>,
    /// Load tensors holding NaN or infinite values (with a warning naming them) instead of refusing
    /// the checkpoint (`--allow-non-finite`).
    pub allow_non_finite: bool,
}

impl ImportOptions {
    /// Options from a command-line path `file[#subtree]` (the `#` part only when the whole string is not
    /// an existing file), with a preferred role and an architecture.
    pub fn from_arg(arg: &std::path::Path, prefer: &str, arch: Option<&str>) -> (std::path::PathBuf, Self) {
        let s = arg.to_string_lossy();
        let (path, select) = match s.rsplit_once('#') {
            Some((p, sel)) if !arg.exists() && !sel.is_empty() => {
                (p.into(), Some(sel.trim_end_matches('.').to_string()))
            }
            _ => (arg.to_path_buf(), None),
        };
        (path, Self { select, prefer: Some(prefer.into()), arch: arch.map(str::to_string), allow_non_finite: false })
    }
}

/// Dictionary keys that wrap a state dict, in the order they are preferred when several are present.
pub const WRAPPERS: &[&str] = &["state_dict", "model_state_dict", "model_state", "model", "net", "network"];
/// Prefixes that mean nothing about the architecture, taken off when every name has them.
pub const PREFIXES: &[&str] = &["module", "_orig_mod", "model", "backbone", "net", "network", "state_dict"];
/// The two models of a distiller's state dict.
pub const ROLES: &[&str] = &["student", "teacher"];

fn first(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

fn under<'a>(names: &'a [String], prefix: &'a str) -> impl Iterator<Item = &'a String> + 'a {
    names.iter().filter(move |n| n.starts_with(prefix))
}

/// The prefix (ending in `.`, or empty) of the subtree holding the model among `names` (all tensors of the
/// file, dotted paths).
pub fn choose(names: Vec<String>, opts: &ImportOptions) -> anyhow::Result<String> {
    if names.is_empty() {
        bail!("the file holds no tensors");
    }
    let mut prefix = String::new();
    if let Some(sel) = &opts.select {
        prefix = format!("{sel}.");
        if under(&names, &prefix).next().is_none() {
            bail!("no tensor under '{sel}'; the file's top-level entries are {}", tops(&names, ""));
        }
    }
    loop {
        let here: Vec<&String> = under(&names, &prefix).collect();
        let keys: BTreeSet<&str> = here.iter().map(|n| first(&n[prefix.len()..])).collect();
        let single = (keys.len() == 1).then(|| *keys.iter().next().expect("one key"));
        let next = if let Some(k) = single.filter(|k| PREFIXES.contains(k)) {
            Some(k.to_string())
        } else if let Some(w) = WRAPPERS.iter().find(|w| keys.contains(*w)) {
            Some(w.to_string())
        } else if ROLES.iter().all(|r| keys.contains(r)) {
            match opts.prefer.as_deref().filter(|p| ROLES.contains(p)) {
                Some(p) => Some(p.to_string()),
                None => bail!(
                    "{} holds both a student and a teacher (a distiller's state dict); choose one with \
                     ImportOptions::select or `path#{}student`",
                    if prefix.is_empty() { "the file".to_string() } else { format!("'{prefix}'") },
                    prefix
                ),
            }
        } else {
            // one model of a distiller (beside its connectors, say), or `{'student': …}`
            ROLES.iter().find(|r| keys.contains(*r)).map(|r| r.to_string())
        };
        match next {
            Some(k) => prefix = format!("{prefix}{k}."),
            None => return Ok(prefix),
        }
    }
}

/// The distinct top-level entries of `names` under `prefix`, for messages.
pub fn tops(names: &[String], prefix: &str) -> String {
    let keys: BTreeSet<&str> = under(names, prefix).map(|n| first(&n[prefix.len()..])).collect();
    let shown: Vec<&str> = keys.iter().take(12).copied().collect();
    format!("{}{}", shown.join(", "), if keys.len() > 12 { ", …" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_the_state_dict_in_common_wrappers() {
        let o = ImportOptions::default();
        // RepDistiller: {'epoch', 'model', 'accuracy', 'optimizer'}
        let n = names(&["model.conv1.weight", "model.fc.weight", "optimizer.state.0.momentum_buffer"]);
        assert_eq!(choose(n, &o).unwrap(), "model.");
        // DataParallel inside a wrapper
        let n = names(&["state_dict.module.conv1.weight", "state_dict.module.fc.bias"]);
        assert_eq!(choose(n, &o).unwrap(), "state_dict.module.");
        // a plain state dict
        let n = names(&["conv1.weight", "layer1.0.conv1.weight", "fc.weight"]);
        assert_eq!(choose(n, &o).unwrap(), "");
        // an explicit subtree
        let o2 = ImportOptions { select: Some("model.module.teacher".into()), ..Default::default() };
        let n = names(&["model.module.student.fc.weight", "model.module.teacher.fc.weight"]);
        assert_eq!(choose(n, &o2).unwrap(), "model.module.teacher.");
    }

    #[test]
    fn a_distiller_checkpoint_needs_a_role() {
        let n = names(&["model.module.student.fc.weight", "model.module.teacher.fc.weight"]);
        let e = choose(n.clone(), &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("both a student and a teacher") && e.contains("model.module.student"), "{e}");
        let o = ImportOptions { prefer: Some("teacher".into()), ..Default::default() };
        assert_eq!(choose(n, &o).unwrap(), "model.module.teacher.");
        let e = choose(names(&["a.b"]), &ImportOptions { select: Some("x".into()), ..Default::default() })
            .unwrap_err()
            .to_string();
        assert!(e.contains("no tensor under 'x'") && e.contains("entries are a"), "{e}");
    }

    #[test]
    fn a_command_line_path_may_name_the_subtree() {
        let (p, o) =
            ImportOptions::from_arg(std::path::Path::new("/nonexistent/ckpt.pth#model.teacher"), "teacher", None);
        assert_eq!(p, std::path::PathBuf::from("/nonexistent/ckpt.pth"));
        assert_eq!(o.select.as_deref(), Some("model.teacher"));
        let (p, o) =
            ImportOptions::from_arg(std::path::Path::new("/nonexistent/ckpt.pth"), "student", Some("resnet20"));
        assert_eq!((p.to_str(), o.select, o.arch.as_deref()), (Some("/nonexistent/ckpt.pth"), None, Some("resnet20")));
    }
}
