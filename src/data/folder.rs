//! Image folders: one sub-folder per class (sorted by name), any format the `image` crate reads,
//! converted to RGB and resized to a chosen square size.
use std::path::Path;

use super::{sha256_hex, DataError, DataSplit, Dataset, Normalization};

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(),
        Some("png" | "jpg" | "jpeg" | "bmp")
    )
}

fn sorted_entries(dir: &Path) -> Result<Vec<std::path::PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::Io { path: dir.to_path_buf(), source: e })?;
    let mut v: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// Loads `root/<class>/<image>` files, resized to `size x size` RGB. Class names are the sorted
/// sub-folder names; `classes` fixes them (and their order) when given, e.g. for a test split.
pub fn load_image_folder(
    root: impl AsRef<Path>,
    size: usize,
    classes: Option<&[String]>,
) -> Result<Dataset, DataError> {
    let root = root.as_ref();
    let found: Vec<String> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let class_names: Vec<String> = match classes {
        Some(c) => {
            if let Some(extra) = found.iter().find(|f| !c.contains(f)) {
                return Err(DataError::Invalid(format!(
                    "{}: class folder '{extra}' is not among the known classes",
                    root.display()
                )));
            }
            c.to_vec()
        }
        None => found,
    };
    if class_names.is_empty() {
        return Err(DataError::Invalid(format!("{}: no class sub-folders", root.display())));
    }
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (ci, cname) in class_names.iter().enumerate() {
        let cdir = root.join(cname);
        if !cdir.is_dir() {
            continue;
        }
        for p in sorted_entries(&cdir)?.into_iter().filter(|p| is_image(p)) {
            let img = image::open(&p)
                .map_err(|e| DataError::Invalid(format!("{}: not a readable image: {e}", p.display())))?;
            let rgb = image::imageops::resize(
                &img.to_rgb8(),
                size as u32,
                size as u32,
                image::imageops::FilterType::Triangle,
            );
            for ch in 0..3 {
                pixels.extend(rgb.pixels().map(|px| px.0[ch]));
            }
            labels.push(ci);
        }
    }
    if labels.is_empty() {
        return Err(DataError::Invalid(format!(
            "{}: no images (png, jpg, jpeg, bmp) in the class folders",
            root.display()
        )));
    }
    let digest = sha256_hex(&pixels);
    Ok(Dataset {
        name: root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "images".into()),
        channels: 3,
        height: size,
        width: size,
        pixels,
        labels,
        class_names,
        hierarchy: None,
        norm: Normalization::cifar100(),
        provenance: vec![(root.display().to_string(), format!("pixels sha256 {digest}"))],
    })
}

/// Loads `root/train/<class>/…` and `root/test/<class>/…`.
pub fn load_image_folder_split(root: impl AsRef<Path>, size: usize) -> Result<DataSplit, DataError> {
    let root = root.as_ref();
    let train = load_image_folder(root.join("train"), size, None)?;
    let test = load_image_folder(root.join("test"), size, Some(&train.class_names))?;
    Ok(DataSplit { train, test })
}
