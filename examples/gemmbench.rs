use std::time::Instant;
fn run(
    name: &str,
    m: usize,
    n: usize,
    k: usize,
    a_rs: isize,
    a_cs: isize,
    b_rs: isize,
    b_cs: isize,
    c_rs: isize,
    c_cs: isize,
) {
    let a = vec![1.0f32; m * k];
    let b = vec![1.0f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let iters = 2000;
    let t = Instant::now();
    for _ in 0..iters {
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                c_cs,
                c_rs,
                false,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    let s = t.elapsed().as_secs_f64() / iters as f64;
    println!("{name}: m{m} n{n} k{k}: {:.1} us {:.1} GFLOP/s", s * 1e6, 2.0 * (m * n * k) as f64 / s / 1e9);
}
fn main() {
    run("dW rm", 16, 144, 1024, 1024, 1, 1, 1024, 144, 1);
    run("dWT c-colmajor", 144, 16, 1024, 1024, 1, 1, 1024, 1, 144);
    run("dWT c-rowmajor", 144, 16, 1024, 1024, 1, 1, 1024, 16, 1);
    run("dW as gout x colT, c colmajor", 16, 144, 1024, 1024, 1, 1, 1024, 1, 16);
    run("fwd rm", 16, 1024, 144, 144, 1, 1024, 1, 1024, 1);
    run("fwd c colmajor (out^T)", 16, 1024, 144, 144, 1, 1024, 1, 1, 16);
    run("fwd k-major col (col stored HWxKK)", 16, 1024, 144, 144, 1, 1, 144, 1024, 1);
    run("l3 fwd", 64, 64, 576, 576, 1, 64, 1, 64, 1);
    run("l3 dWT", 576, 64, 64, 64, 1, 1, 64, 1, 576);
}
