//! `route::resolve` allocates nothing on a match: the proxy calls it on every request, and the
//! decision borrows from the table (shared/ARCHITECTURE.md, "canonical once, per-target state
//! built once"). One test in its own binary, so no other test thread allocates meanwhile.

#[path = "support/routes.rs"]
mod routes;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use weft_api::route::{resolve, DecisionKind, Source};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

#[test]
fn resolving_against_100_routes_allocates_nothing_on_a_match() {
    let table = routes::table(100);
    let first = routes::request_for(0);
    let last = routes::request_for(99);
    let (first, last) = (first.head(), last.head());
    let source = Source {
        namespace: "default",
        labels: None,
    };
    let region = Region::new(GLOBAL);
    for _ in 0..1000 {
        for req in [&first, &last] {
            let d = resolve(&table, req, &source, false);
            assert_eq!(d.kind, DecisionKind::Route);
            assert_eq!(d.backends.len(), 2);
            assert_eq!(d.policies.timeout_ms, Some(2000));
        }
    }
    let stats = region.change();
    assert_eq!(
        (stats.allocations, stats.reallocations),
        (0, 0),
        "allocations while resolving: {stats:?}"
    );
    // The counter is live: building a decision that owns its parts does allocate.
    let region = Region::new(GLOBAL);
    let owned = resolve(&table, &last, &source, false).into_owned();
    assert!(region.change().allocations > 0);
    assert_eq!(owned.matched.map(|m| m.rule), Some(99));
}
