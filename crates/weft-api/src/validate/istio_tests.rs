//! Istio's analyzers as a table: documents modelled on Istio's analyzer testdata
//! (pkg/config/analysis/analyzers/testdata), each case with every finding it must produce
//! (the Weft code, the Istio code its message starts with, line and column).

use super::tests::findings;
use crate::finding::Severity;

/// The services and subsets the routing cases refer to.
const BASE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}, {name: grpc, port: 9090}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
";
/// Lines of `BASE`: a case's own documents start at line 22.
const BASE_LINES: usize = 21;

struct Case {
    name: &'static str,
    yaml: &'static str,
    /// (Weft code, Istio code, severity, line in the case's own text, column).
    want: &'static [(&'static str, &'static str, Severity, usize, usize)],
}

const E: Severity = Severity::Error;
const W: Severity = Severity::Warning;
const I: Severity = Severity::Info;

const CASES: &[Case] = &[
    Case {
        // virtualservice_destinationhosts.yaml: a route and a mirror to hosts that do not exist.
        name: "destination and mirror hosts not found",
        yaml: "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-bogushost}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews-bogus}
    mirror:
      host: mirror-bogus
",
        want: &[
            ("WEFT0101", "IST0101", E, 8, 21),
            ("WEFT0101", "IST0101", E, 10, 7),
        ],
    },
    Case {
        // virtualservice_destinationhosts.yaml: multi-port service without a port selector, and
        // a port the service does not have.
        name: "port selector required and port not found",
        yaml: "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route:
    - destination: {host: ratings}
  - route:
    - destination:
        host: ratings
        port: {number: 7777}
",
        want: &[
            ("WEFT0109", "IST0112", E, 9, 21),
            ("WEFT0110", "IST0101", E, 13, 9),
        ],
    },
    Case {
        // virtualservice_destinationrules.yaml: a subset no DestinationRule defines, in a route
        // and in a mirror.
        name: "subsets not found",
        yaml: "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-bogussubset}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
    - destination: {host: reviews, subset: bogus}
    mirror: {host: reviews, subset: bogus-mirror}
",
        want: &[
            ("WEFT0105", "", W, 7, 5),
            ("WEFT0102", "IST0101", E, 9, 36),
            ("WEFT0102", "IST0101", E, 10, 14),
        ],
    },
    Case {
        // destinationrule-with-fake-host.yaml
        name: "destination rule for an unknown host",
        yaml: "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: fake}
spec:
  host: fake-host
",
        want: &[("WEFT0111", "IST0174", W, 5, 3)],
    },
    Case {
        name: "virtual service without hosts, and a gateway that does not exist",
        yaml: "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: nohosts}
spec:
  gateways: [mesh, bogus-gateway]
  http:
  - route: [{destination: {host: reviews}}]
",
        want: &[
            ("WEFT0006", "IST0106", E, 4, 1),
            ("WEFT0005", "", W, 5, 3),
            ("WEFT0103", "IST0101", E, 5, 20),
        ],
    },
    Case {
        // virtualservice_dupmatches.yaml: a rule whose matches earlier rules take, and a match
        // already taken beside a new one.
        name: "unreachable rule and ineffective match",
        yaml: "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: dupmatches}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /a}
    - uri: {prefix: /b}
    route: [{destination: {host: reviews}}]
  - match:
    - uri: {prefix: /a}
    route: [{destination: {host: reviews}}]
  - match:
    - uri: {prefix: /b}
    - uri: {prefix: /c}
    route: [{destination: {host: reviews}}]
",
        want: &[
            ("WEFT0107", "IST0130", W, 11, 5),
            ("WEFT0112", "IST0131", I, 15, 7),
        ],
    },
    Case {
        // conflicting-virtualservice hosts in one namespace.
        name: "two virtual services for one host",
        yaml: "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-a}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-b}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http: [{route: [{destination: {host: reviews}}]}]
",
        want: &[("WEFT0104", "IST0109", W, 12, 11)],
    },
    Case {
        // deprecation.yaml
        name: "deprecated fields",
        yaml: "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: deprecated}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    mirror: {host: reviews}
    mirrorPercent: 5
    fault:
      delay: {fixedDelay: 1s, percent: 10}
",
        want: &[
            ("WEFT0008", "IST0002", W, 9, 5),
            ("WEFT0008", "IST0002", W, 11, 31),
        ],
    },
];

#[test]
fn istio_analyzers_table() {
    for case in CASES {
        let yaml = format!("{BASE}{}", case.yaml);
        let got: Vec<_> = findings(&yaml)
            .into_iter()
            .filter(|f| f.line.is_some_and(|l| l > BASE_LINES))
            .collect();
        let placed: Vec<_> = got
            .iter()
            .map(|f| {
                let ist = f.message.split_once(':').map_or("", |(c, _)| c);
                let ist = if ist.starts_with("IST") { ist } else { "" };
                (
                    f.code,
                    ist,
                    f.severity,
                    f.line.unwrap_or(0) - BASE_LINES,
                    f.column.unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(placed, case.want, "{}: {got:#?}", case.name);
    }
}

/// authorizationpolicies.yaml: namespaces that exist (or whose pattern matches one) pass;
/// `*-bogus` and `bogus-*` match none (IST0101); a selector matching no Workload and a
/// namespace-wide policy in a namespace without workloads (IST0127); `request.auth` without
/// a RequestAuthentication (IST0172), and with one, no finding.
#[test]
fn authorization_policies_table() {
    let yaml = "\
apiVersion: v1
kind: Namespace
metadata: {name: prod-httpbin}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: httpbin, namespace: httpbin}
spec: {labels: {app: httpbin, version: v1}, ports: [{port: 80}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: httpbin}
spec:
  selector:
    matchLabels: {app: httpbin, version: v1}
  rules:
  - from:
    - source:
        namespaces: [httpbin, prod-*, \"*\", \"*-bogus\", bogus-*]
    when:
    - key: request.auth.claims[iss]
      values: [\"https://accounts.google.com\"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-nopods, namespace: httpbin}
spec:
  selector:
    matchLabels: {app: bogus-label}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: empty-namespace-wide, namespace: httpbin-empty}
spec:
  rules:
  - from:
    - source: {requestPrincipals: [\"*\"]}
";
    // (Translation's own NOT_IMPLEMENTED warnings on request principals are not this table's.)
    let got: Vec<_> = findings(yaml)
        .into_iter()
        .filter(|f| f.code != "WEFT0005")
        .map(|f| {
            let ist = f.message.split_once(':').map_or("", |(c, _)| c).to_string();
            (
                f.code,
                ist,
                f.severity,
                f.line.unwrap_or(0),
                f.column.unwrap_or(0),
            )
        })
        .collect();
    let want = [
        ("WEFT0113", "IST0101", Severity::Error, 19, 44),
        ("WEFT0113", "IST0101", Severity::Error, 19, 55),
        ("WEFT0115", "IST0172", Severity::Warning, 21, 7),
        ("WEFT0114", "IST0127", Severity::Warning, 29, 5),
        ("WEFT0114", "IST0127", Severity::Warning, 33, 40),
        ("WEFT0115", "IST0172", Severity::Warning, 37, 16),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(c, i, s, l, col)| (*c, i.to_string(), *s, *l, *col))
        .collect();
    assert_eq!(got, want);

    // With a RequestAuthentication in the namespace (or the root namespace), request.auth
    // conditions can hold: no IST0172.
    let with_authn = format!(
        "{yaml}---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: istio-system}}\nspec: {{}}\n"
    );
    assert!(
        !findings(&with_authn).iter().any(|f| f.code == "WEFT0115"),
        "{:?}",
        findings(&with_authn)
    );
}
