//! `route::resolve` on tables of 1, 100 and 1,000 rules: the first rule matching, the last,
//! and none (BENCHMARKS.md target: < 1 µs with 100 routes). `cargo bench -p weft-api`.

#[path = "../tests/support/routes.rs"]
mod routes;

use criterion::{criterion_group, criterion_main, Criterion};
use weft_api::route::{resolve, Source};

fn bench(c: &mut Criterion) {
    let source = Source {
        namespace: "default",
        labels: None,
    };
    for n in [1, 100, 1000] {
        let table = routes::table(n);
        for (case, i) in [("first", 0), ("last", n - 1), ("none", n)] {
            let req = routes::request_for(i);
            let head = req.head();
            c.bench_function(&format!("resolve/{n} routes/{case} matches"), |b| {
                b.iter(|| resolve(&table, std::hint::black_box(&head), &source, false))
            });
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
