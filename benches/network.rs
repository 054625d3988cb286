//! The MAP-GA hot loop on the shipped MNIST consistency model (`models/mnist/cm`, with the
//! denoiser `models/mnist/denoiser` for the prior term), at batch 1 and 16:
//!
//! * `forward`: `cm(z, t)`;
//! * `vjp`: the gradient in z of `sum(cm(z, t) * v)`;
//! * `iteration`: one MAP-GA inner step of box25 inpainting (CM forward, likelihood and prior
//!   surrogates with one denoiser forward, backward to z, sgd step), as the interpreter runs it.
//!
//! The operations are those of `bench/problem.rs`, shared with `bench/compare_pytorch.py`'s
//! worker, which times the same work side by side with PyTorch.
//!
//!     cargo bench --bench network                # all
//!     cargo bench --bench network -- vjp/16      # one
//!
//! Threads: all cores, or `RAYON_NUM_THREADS=N`.

#[path = "../bench/problem.rs"]
mod problem;

use std::path::Path;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use problem::Problem;

fn bench_network(c: &mut Criterion) {
    mapga::cli::set_threads(mapga::cli::default_threads()).expect("thread pool");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mnist");
    let cm = problem::load(&root.join("cm.safetensors")).expect("models/mnist/cm");
    let den = problem::load(&root.join("denoiser.safetensors")).expect("models/mnist/denoiser");
    let mut group = c.benchmark_group("mnist_cm");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for batch in [1, 16] {
        let p = Problem::new(cm.clone(), Some(den.clone()), batch).expect("problem");
        group.bench_function(format!("forward/{batch}"), |b| {
            b.iter(|| black_box(p.forward().expect("forward")))
        });
        group.bench_function(format!("vjp/{batch}"), |b| {
            b.iter(|| black_box(p.vjp().expect("vjp")))
        });
        group.bench_function(format!("iteration/{batch}"), |b| {
            b.iter(|| black_box(p.iteration().expect("iteration")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_network);
criterion_main!(benches);
