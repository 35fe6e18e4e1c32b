fn main() {
    let d = kdscope::data::synthetic::shapes20(&kdscope::data::synthetic::SynthConfig {
        train_per_class: 4,
        test_per_class: 1,
        ..Default::default()
    });
    let ds = &d.train;
    let (cols, rows, s, z) = (20usize, 4usize, 32usize, 3usize);
    let mut img = image::RgbImage::new((cols * s * z) as u32, (rows * s * z) as u32);
    for i in 0..ds.len() {
        let (r, c) = (i / 20, ds.labels[i]);
        let px = ds.image(i);
        for y in 0..s * z {
            for x in 0..s * z {
                let p = |ch: usize| px[ch * 1024 + (y / z) * 32 + x / z];
                img.put_pixel((c * s * z + x) as u32, (r * s * z + y) as u32, image::Rgb([p(0), p(1), p(2)]));
            }
        }
    }
    img.save("/tmp/grid.png").unwrap();
}
