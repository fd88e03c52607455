//! Every schema error of a document in one run, each at its line and column.

use crate::finding::{codes, Finding};
use crate::resources::{parse_file, Loaded};
use crate::translate::translate;

fn findings(yaml: &str) -> Vec<Finding> {
    let mut loaded = Loaded::default();
    parse_file("mesh.yaml", yaml, &mut loaded);
    let t = translate(&loaded.documents);
    assert!(
        t.mesh.routes.is_empty(),
        "a document with schema errors is left out"
    );
    t.findings
}

fn placed(f: &[Finding]) -> Vec<(&'static str, usize, usize)> {
    f.iter()
        .map(|f| (f.code, f.line.unwrap_or(0), f.column.unwrap_or(0)))
        .collect()
}

#[test]
fn a_bad_weight_does_not_hide_the_bad_attempts_nor_the_misspelled_timeout() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: ten
    retries: {attempts: three}
    timeot: 2s
";
    let f = findings(yaml);
    assert_eq!(
        placed(&f),
        [
            (codes::SCHEMA, 9, 15),
            (codes::SCHEMA, 10, 25),
            (codes::UNKNOWN_FIELD, 11, 5)
        ],
        "{f:?}"
    );
    assert!(
        f[0].message
            .contains("spec.http[0].route[0].weight: `ten` is not an integer"),
        "{}",
        f[0]
    );
    assert!(
        f[2].message
            .contains("unknown field `timeot`; did you mean `timeout`?"),
        "{}",
        f[2]
    );
    assert_eq!(f[2].fix.as_deref(), Some("rename `timeot` to `timeout`"));
}

#[test]
fn missing_required_fields_and_values_out_of_range_are_each_reported() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {subset: v1}
    - destination: {host: reviews, port: {number: 70000}}
      weight: -5
  - route:
    - weight: 3
  - directResponse: {status: 200}
    rewrite: {urii: /x}
";
    let f = findings(yaml);
    assert_eq!(
        placed(&f),
        [
            (codes::MISSING_FIELD, 8, 20),
            (codes::SCHEMA, 9, 51),
            (codes::SCHEMA, 10, 15),
            (codes::MISSING_FIELD, 12, 7),
            (codes::UNKNOWN_FIELD, 14, 15),
        ],
        "{f:?}"
    );
    assert!(
        f[0].message
            .contains("spec.http[0].route[0].destination: missing required field `host`"),
        "{}",
        f[0]
    );
    // Item 0 was taken out of the copy: the message still says route[1], as written.
    assert!(
        f[1].message
            .contains("spec.http[0].route[1].destination.port.number: `70000` is out of range"),
        "{}",
        f[1]
    );
    assert!(
        f[2].message
            .contains("`-5` is out of range (it must not be negative)"),
        "{}",
        f[2]
    );
    assert!(
        f[3].message
            .contains("spec.http[1].route[0]: missing required field `destination`"),
        "{}",
        f[3]
    );
    assert!(f[4].message.contains("did you mean `uri`?"), "{}", f[4]);
}

#[test]
fn a_required_field_with_a_bad_type_is_reported_once() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: [reviews]}
";
    let f = findings(yaml);
    assert_eq!(placed(&f), [(codes::SCHEMA, 8, 27)], "{f:?}");
    assert!(f[0].message.contains("expected a string"), "{}", f[0]);
}

#[test]
fn an_unknown_field_far_from_every_known_one_gets_no_guess() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  zebra: 1
";
    let f = findings(yaml);
    assert_eq!(placed(&f), [(codes::UNKNOWN_FIELD, 6, 3)], "{f:?}");
    assert!(!f[0].message.contains("did you mean"), "{}", f[0]);
    assert_eq!(f[0].fix, None);
}
