//! Colour-mapped saliency images: the jet colour map (as OpenCV's `COLORMAP_JET`, which
//! pytorch-grad-cam's `show_cam_on_image` uses), heat maps, overlays on the input image, and 8-bit
//! grey-level PNGs of maps for the report (its pop-up colours them in the browser).
use base64::Engine;
use image::{GrayImage, Luma, Rgb, RgbImage};

use super::Maps;

/// Jet colour of `v` in [0, 1] (clamped): dark blue → blue → cyan → yellow → red → dark red.
pub fn jet(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0);
    let ch = |c: f32| ((1.5 - (4.0 * v - c).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [ch(3.0), ch(2.0), ch(1.0)]
}

/// Map `i` of `maps` (values in [0, 1]) as a jet-coloured image.
pub fn heatmap(maps: &Maps, i: usize) -> RgbImage {
    let m = maps.map(i);
    RgbImage::from_fn(maps.w as u32, maps.h as u32, |x, y| Rgb(jet(m[y as usize * maps.w + x as usize])))
}

/// `(1 − alpha) · image + alpha · jet(map)`, the map (values in [0, 1]) resized to the image first;
/// `alpha = 0.5` is pytorch-grad-cam's default blend.
pub fn overlay(img: &RgbImage, maps: &Maps, i: usize, alpha: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let m = maps.one(i).upsampled(h as usize, w as usize);
    RgbImage::from_fn(w, h, |x, y| {
        let c = jet(m.data[(y * w + x) as usize]);
        let p = img.get_pixel(x, y).0;
        Rgb(std::array::from_fn(|k| ((1.0 - alpha) * p[k] as f32 + alpha * c[k] as f32).round() as u8))
    })
}

/// Map `i` (values in [0, 1]) as an 8-bit grey-level PNG, base64-encoded.
pub fn gray_png_base64(maps: &Maps, i: usize) -> String {
    let m = maps.map(i);
    let img = GrayImage::from_fn(maps.w as u32, maps.h as u32, |x, y| {
        Luma([(m[y as usize * maps.w + x as usize].clamp(0.0, 1.0) * 255.0).round() as u8])
    });
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("PNG encoding in memory");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Overlays (alpha 0.5) of each map, min-max normalised, on its test image: map `k` belongs to image
/// `indices[k]` of `data`.
pub fn overlays(data: &crate::data::Dataset, indices: &[usize], maps: &Maps) -> Vec<RgbImage> {
    let norm = maps.normalized();
    indices.iter().enumerate().map(|(k, &i)| overlay(&data.rgb_image(i), &norm, k, 0.5)).collect()
}
