//! Table-driven tests of the compiler on a hand-built bookinfo: no sockets, no tasks.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use weft_api::model::{
    DestinationPolicy, Dialect, HostRoutes, Mesh, Service, ServicePort as ModelPort, Subset, Workload,
    WorkloadPort,
};
use weft_api::proxy_config::{EndpointSet, LoadBalancer, Protocol, ProxyConfig};
use weft_api::route::{Action, Backend, Origin, PathMatch, RequestMatch, Rule};

use super::*;
use crate::registry::{Instance, Registry};

const NS: &str = "default";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn origin(kind: &str, name: &str) -> Origin {
    Origin {
        kind: kind.into(),
        namespace: NS.into(),
        name: name.into(),
        file: Some("mesh.yaml".into()),
        line: Some(1),
    }
}

fn fqdn(name: &str) -> String {
    ProxyConfig::fqdn(name, NS)
}

fn service(name: &str, selector: &[(&str, &str)], port: u16) -> Service {
    Service {
        name: name.into(),
        namespace: NS.into(),
        ports: vec![ModelPort {
            port,
            name: Some("http".into()),
            protocol: Protocol::Http,
            target_port: port,
        }],
        selector: labels(selector),
        origin: origin("Service", name),
    }
}

fn workload(name: &str, app: &str, version: &str) -> Workload {
    Workload {
        name: name.into(),
        namespace: NS.into(),
        labels: labels(&[("app", app), ("version", version)]),
        service_account: format!("bookinfo-{app}"),
        ports: vec![WorkloadPort {
            name: Some("http".into()),
            port: 9080,
            protocol: Protocol::Http,
        }],
        command: Vec::new(),
        env: BTreeMap::new(),
        replicas: 1,
        address: None,
        tap_disabled: false,
        origin: origin("Workload", name),
    }
}

fn instance(id: &str, wl: &Workload, actual: u16, mesh_port: u16) -> Instance {
    Instance {
        id: id.into(),
        workload: wl.name.clone(),
        namespace: wl.namespace.clone(),
        labels: wl.labels.clone(),
        service_account: wl.service_account.clone(),
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        app_ports: [(9080, actual)].into(),
        mesh_port: Some(mesh_port),
    }
}

fn forward_rule(name: &str, index: usize, path: Option<PathMatch>, backends: Vec<Backend>) -> Rule {
    Rule {
        origin: origin("VirtualService", name),
        index,
        name: None,
        matches: path
            .map(|p| {
                vec![RequestMatch {
                    path: Some(p),
                    ..RequestMatch::default()
                }]
            })
            .unwrap_or_default(),
        action: Action::Forward(backends),
        policies: Default::default(),
    }
}

fn backend(service: &str, subset: Option<&str>, weight: u32) -> Backend {
    Backend {
        service: fqdn(service),
        subset: subset.map(Into::into),
        port: None,
        weight,
        filters: None,
    }
}

/// Bookinfo's productpage and reviews (v1, v2), a DestinationRule with subsets v1/v2, a
/// VirtualService splitting reviews 80/20, and `reviews-v1`/`reviews-v2` services (the shape
/// SMI and Gateway API splits point at).
fn bookinfo() -> (Mesh, Registry) {
    let productpage = workload("productpage-v1", "productpage", "v1");
    let reviews_v1 = workload("reviews-v1", "reviews", "v1");
    let reviews_v2 = workload("reviews-v2", "reviews", "v2");
    let mesh = Mesh {
        // Deliberately out of order: the compiler sorts.
        services: vec![
            service("reviews", &[("app", "reviews")], 9080),
            service("productpage", &[("app", "productpage")], 9080),
            service("reviews-v2", &[("app", "reviews"), ("version", "v2")], 9080),
            service("reviews-v1", &[("app", "reviews"), ("version", "v1")], 9080),
        ],
        workloads: vec![productpage.clone(), reviews_v1.clone(), reviews_v2.clone()],
        routes: vec![HostRoutes {
            dialect: Dialect::Istio,
            host: fqdn("reviews"),
            port: None,
            origin: origin("VirtualService", "reviews"),
            rules: vec![forward_rule(
                "reviews",
                0,
                None,
                vec![
                    backend("reviews", Some("v1"), 80),
                    backend("reviews", Some("v2"), 20),
                ],
            )],
            creation_timestamp: None,
            seen: 0,
        }],
        destinations: vec![DestinationPolicy {
            host: fqdn("reviews"),
            origin: origin("DestinationRule", "reviews"),
            load_balancer: Some(LoadBalancer::RoundRobin),
            connection_pool: None,
            tls_mode: None,
            subsets: vec![
                Subset {
                    name: "v2".into(),
                    labels: labels(&[("version", "v2")]),
                    load_balancer: None,
                },
                Subset {
                    name: "v1".into(),
                    labels: labels(&[("version", "v1")]),
                    load_balancer: None,
                },
            ],
        }],
        ..Default::default()
    };
    let mut registry = Registry::load(None).expect("registry");
    registry.upsert(instance("reviews-v2-0", &reviews_v2, 19082, 15082));
    registry.upsert(instance("productpage-v1-0", &productpage, 19080, 15080));
    registry.upsert(instance("reviews-v1-0", &reviews_v1, 19081, 15081));
    (mesh, registry)
}

fn productpage() -> ProxyRef {
    ProxyRef {
        instance_id: "productpage-v1-0".into(),
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn set<'a>(config: &'a ProxyConfig, service: &str, subset: Option<&str>) -> &'a EndpointSet {
    config
        .endpoints
        .iter()
        .find(|e| e.service == service && e.port == 9080 && e.subset.as_deref() == subset)
        .unwrap_or_else(|| panic!("no endpoint set {service} {subset:?}"))
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("weft-control-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn productpage_workload_and_inbound_listener() {
    let (mesh, mut registry) = bookinfo();
    let out = compile(&mesh, &mut registry, &productpage());
    assert_eq!(out.errors, Vec::<String>::new());
    let c = &out.config;
    assert_eq!(c.workload.name, "productpage-v1");
    assert_eq!(c.workload.namespace, NS);
    assert_eq!(c.workload.service_account, "bookinfo-productpage");
    assert_eq!(
        c.workload.labels,
        labels(&[("app", "productpage"), ("version", "v1")])
    );
    assert_eq!(c.inbound.listeners.len(), 1);
    let l = &c.inbound.listeners[0];
    assert_eq!(
        (l.port, l.app, l.protocol, l.listen),
        (9080, Some(local(19080)), Protocol::Http, None)
    );
    // What the launcher sets stays at its default.
    let d = ProxyConfig::default();
    assert_eq!(
        (&c.admin, &c.limits, &c.outbound),
        (&d.admin, &d.limits, &d.outbound)
    );
    assert_eq!(c.inbound.mesh, d.inbound.mesh);
}

#[test]
fn inbound_listeners_cover_service_target_ports_not_declared_by_the_workload() {
    let (mut mesh, mut registry) = bookinfo();
    // A service whose target port (9443 -> actual 19443) the workload does not list, and one
    // whose target port the instance has no mapping for (declared port used as is).
    let mut extra = service("productpage-admin", &[("app", "productpage")], 8443);
    extra.ports[0].target_port = 9443;
    extra.ports[0].protocol = Protocol::Grpc;
    mesh.services.push(extra);
    let mut metrics = service("productpage-metrics", &[("app", "productpage")], 9090);
    metrics.ports[0].protocol = Protocol::Auto;
    mesh.services.push(metrics);
    let mut inst = registry.instance("productpage-v1-0").cloned().expect("instance");
    inst.app_ports.insert(9443, 19443);
    registry.upsert(inst);

    let c = compile(&mesh, &mut registry, &productpage()).config;
    let got: Vec<_> = c
        .inbound
        .listeners
        .iter()
        .map(|l| (l.port, l.app, l.protocol))
        .collect();
    assert_eq!(
        got,
        vec![
            (9080, Some(local(19080)), Protocol::Http),
            (9090, Some(local(9090)), Protocol::Auto),
            (9443, Some(local(19443)), Protocol::Grpc),
        ]
    );
    // The instance lacks 9090, so it is no endpoint of productpage-metrics.
    let admin = c
        .endpoints
        .iter()
        .find(|e| e.service == "productpage-admin")
        .expect("set");
    assert_eq!((admin.port, admin.endpoints[0].address), (8443, local(19443)));
    let metrics = c
        .endpoints
        .iter()
        .find(|e| e.service == "productpage-metrics")
        .expect("set");
    assert!(metrics.endpoints.is_empty());
}

#[test]
fn services_sorted_with_vips_stable_across_save_and_load() {
    let dir = TempDir::new("vips");
    let state = dir.0.join("state").join("vips.json");
    let (mesh, _) = bookinfo();
    let mut first = Registry::load(Some(&state)).expect("load");
    let shared = compile_services(&mesh, &mut first);
    assert!(shared.errors.is_empty());
    let names: Vec<String> = shared.services.iter().map(|s| s.service.name.clone()).collect();
    // By fully qualified name ('-' sorts before '.').
    assert_eq!(names, ["productpage", "reviews-v1", "reviews-v2", "reviews"]);
    let vips: Vec<_> = shared.services.iter().map(|s| s.service.vip).collect();
    assert!(vips
        .iter()
        .all(|v| matches!(v, Some(IpAddr::V4(ip)) if ip.octets()[..2] == [240, 240])));
    assert_eq!(vips.iter().collect::<HashSet<_>>().len(), 4);
    first.save().expect("save");
    assert!(state.exists());
    // No temp file left behind.
    let files: Vec<_> = std::fs::read_dir(state.parent().expect("dir"))
        .expect("read dir")
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .expect("entries");
    assert_eq!(files, vec![std::ffi::OsString::from("vips.json")]);

    // A restarted control plane, and a mesh whose services arrive in another order with a new
    // one first: the old services keep their VIPs even if the new name hashes onto one.
    let mut again = Registry::load(Some(&state)).expect("reload");
    let mut mesh2 = mesh.clone();
    mesh2.services.reverse();
    mesh2.services.insert(0, service("aaa", &[("app", "aaa")], 80));
    let shared2 = compile_services(&mesh2, &mut again);
    for s in &shared.services {
        let s2 = shared2
            .services
            .iter()
            .find(|x| x.service.name == s.service.name)
            .expect("service kept");
        assert_eq!(s2.service.vip, s.service.vip, "{}", s.service.name);
    }
}

#[test]
fn ports_protocols_and_load_balancers() {
    let (mesh, mut registry) = bookinfo();
    let c = compile(&mesh, &mut registry, &productpage()).config;
    let get = |name: &str| c.services.iter().find(|s| s.name == name).expect("service");
    let reviews = get("reviews");
    assert_eq!(reviews.namespace, NS);
    assert_eq!(reviews.ports.len(), 1);
    assert_eq!(
        (
            reviews.ports[0].port,
            reviews.ports[0].name.as_deref(),
            reviews.ports[0].protocol
        ),
        (9080, Some("http"), Protocol::Http)
    );
    // From the DestinationRule, else the default.
    assert_eq!(reviews.load_balancer, LoadBalancer::RoundRobin);
    assert_eq!(get("productpage").load_balancer, LoadBalancer::LeastRequest);
}

#[test]
fn reviews_endpoint_sets_whole_and_per_subset() {
    let (mesh, mut registry) = bookinfo();
    let c = compile(&mesh, &mut registry, &productpage()).config;
    let ep = |service: &str, subset: Option<&str>| -> Vec<(SocketAddr, Option<u16>, Option<String>)> {
        set(&c, service, subset)
            .endpoints
            .iter()
            .map(|e| (e.address, e.mesh_port, e.workload.clone()))
            .collect()
    };
    let v1 = (local(19081), Some(15081), Some("reviews-v1".to_string()));
    let v2 = (local(19082), Some(15082), Some("reviews-v2".to_string()));
    let pp = (local(19080), Some(15080), Some("productpage-v1".to_string()));
    let cases: Vec<(&str, Option<&str>, Vec<_>)> = vec![
        ("reviews", None, vec![v1.clone(), v2.clone()]),
        ("reviews", Some("v1"), vec![v1.clone()]),
        ("reviews", Some("v2"), vec![v2.clone()]),
        ("reviews-v1", None, vec![v1.clone()]),
        ("reviews-v2", None, vec![v2.clone()]),
        ("productpage", None, vec![pp]),
    ];
    for (service, subset, want) in cases {
        assert_eq!(ep(service, subset), want, "{service} {subset:?}");
    }
    // Sets in order: per service (by fully qualified name), the whole service, then subsets
    // by name.
    let order: Vec<_> = c
        .endpoints
        .iter()
        .map(|e| (e.service.as_str(), e.subset.as_deref()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("productpage", None),
            ("reviews-v1", None),
            ("reviews-v2", None),
            ("reviews", None),
            ("reviews", Some("v1")),
            ("reviews", Some("v2")),
        ]
    );
    let e = &set(&c, "reviews", Some("v2")).endpoints[0];
    assert_eq!(e.weight, 1);
    assert_eq!(e.labels, labels(&[("app", "reviews"), ("version", "v2")]));
}

#[test]
fn endpoints_skip_instances_of_other_namespaces_and_without_the_port() {
    let (mesh, mut registry) = bookinfo();
    let wl = mesh.workloads[1].clone(); // reviews-v1
    let mut elsewhere = instance("reviews-v1-other", &wl, 19091, 15091);
    elsewhere.namespace = "other".into();
    registry.upsert(elsewhere);
    let mut portless = instance("reviews-v1-1", &wl, 19092, 15092);
    portless.app_ports.clear();
    registry.upsert(portless);
    let c = compile(&mesh, &mut registry, &productpage()).config;
    let addrs: Vec<_> = set(&c, "reviews", Some("v1"))
        .endpoints
        .iter()
        .map(|e| e.address)
        .collect();
    assert_eq!(addrs, vec![local(19081)]);
}

#[test]
fn route_tables_only_where_routes_exist() {
    let (mesh, mut registry) = bookinfo();
    let c = compile(&mesh, &mut registry, &productpage()).config;
    for s in &c.services {
        if s.name == "reviews" {
            assert_eq!(s.routes.len(), 1);
            assert_eq!(s.routes[0].port, 9080);
            assert_eq!(s.routes[0].table, mesh.route_table(&fqdn("reviews"), 9080));
            assert_eq!(s.routes[0].table.rules.len(), 1);
        } else {
            assert!(s.routes.is_empty(), "{}", s.name);
        }
    }
}

#[test]
fn a_linkerd_profile_alone_gives_a_service_a_route_table() {
    let (mut mesh, mut registry) = bookinfo();
    mesh.profiles.push(weft_api::model::HostProfile {
        host: fqdn("reviews-v1"),
        origin: origin("ServiceProfile", "reviews-v1.default.svc.cluster.local"),
        profile: weft_api::route::Profile {
            timeout_ms: Some(1000),
            ..Default::default()
        },
    });
    let c = compile(&mesh, &mut registry, &productpage()).config;
    let profiled = c
        .services
        .iter()
        .find(|s| s.name == "reviews-v1")
        .expect("reviews-v1");
    assert_eq!(profiled.routes.len(), 1);
    let table = &profiled.routes[0].table;
    assert!(table.rules.is_empty());
    assert_eq!(table.profile.as_ref().and_then(|p| p.timeout_ms), Some(1000));
}

#[test]
fn bad_regex_is_reported_and_the_service_still_served() {
    let (mut mesh, mut registry) = bookinfo();
    mesh.routes.push(HostRoutes {
        dialect: Dialect::Istio,
        host: fqdn("productpage"),
        port: Some(9080),
        origin: origin("VirtualService", "productpage"),
        rules: vec![forward_rule(
            "productpage",
            0,
            Some(PathMatch::Regex {
                value: "/api/(unclosed".into(),
                ignore_case: false,
            }),
            vec![backend("productpage", None, 100)],
        )],
        creation_timestamp: None,
        seen: 1,
    });
    let out = compile(&mesh, &mut registry, &productpage());
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert!(
        out.errors[0].contains("productpage.default.svc.cluster.local"),
        "{}",
        out.errors[0]
    );
    assert!(out.errors[0].contains("(unclosed"), "{}", out.errors[0]);
    let pp = out
        .config
        .services
        .iter()
        .find(|s| s.name == "productpage")
        .expect("still served");
    assert!(pp.routes.is_empty());
    assert_eq!(set(&out.config, "productpage", None).endpoints.len(), 1);
    // The other services are untouched.
    let reviews = out
        .config
        .services
        .iter()
        .find(|s| s.name == "reviews")
        .expect("reviews");
    assert_eq!(reviews.routes.len(), 1);
}

#[test]
fn same_inputs_give_byte_identical_json() {
    let (mesh, mut registry) = bookinfo();
    let a = compile(&mesh, &mut registry, &productpage());
    let b = compile(&mesh, &mut registry, &productpage());
    let json = |c: &Compiled| serde_json::to_string(&c.config).expect("json");
    assert_eq!(json(&a), json(&b));

    // The same mesh and instances given in another order compile the same.
    let (mut mesh2, registry2) = bookinfo();
    mesh2.services.reverse();
    mesh2.workloads.reverse();
    let mut registry3 = Registry::load(None).expect("registry");
    let mut instances: Vec<_> = registry2.instances().cloned().collect();
    instances.reverse();
    for i in instances {
        registry3.upsert(i);
    }
    let c = compile(&mesh2, &mut registry3, &productpage());
    assert_eq!(json(&a), json(&c));
}

#[test]
fn shared_services_compile_once_for_many_proxies() {
    let (mesh, mut registry) = bookinfo();
    let shared = compile_services(&mesh, &mut registry);
    for id in ["productpage-v1-0", "reviews-v1-0", "reviews-v2-0"] {
        let proxy = ProxyRef {
            instance_id: id.into(),
        };
        let with = compile_with(&mesh, &registry, &shared, &proxy);
        let alone = compile(&mesh, &mut registry, &proxy);
        assert_eq!(with, alone, "{id}");
    }
    let reviews = compile_with(
        &mesh,
        &registry,
        &shared,
        &ProxyRef {
            instance_id: "reviews-v2-0".into(),
        },
    );
    assert_eq!(reviews.config.workload.name, "reviews-v2");
    assert_eq!(reviews.config.inbound.listeners[0].app, Some(local(19082)));
}

#[test]
fn unknown_instance_or_workload_is_an_error_not_a_panic() {
    let (mesh, mut registry) = bookinfo();
    let out = compile(
        &mesh,
        &mut registry,
        &ProxyRef {
            instance_id: "nobody".into(),
        },
    );
    assert_eq!(out.errors.len(), 1);
    assert!(out.errors[0].contains("nobody"));
    assert!(out.config.inbound.listeners.is_empty());
    assert_eq!(out.config.services.len(), 4);

    // An instance whose workload has no document: its own registration is used.
    let mut ghost = instance("ghost-0", &mesh.workloads[0], 19999, 15999);
    ghost.workload = "ghost".into();
    ghost.app_ports = [(7000, 17000)].into();
    registry.upsert(ghost);
    let out = compile(
        &mesh,
        &mut registry,
        &ProxyRef {
            instance_id: "ghost-0".into(),
        },
    );
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert_eq!(out.config.workload.name, "ghost");
    // Labels app=productpage: productpage's target port 9080, plus its own 7000.
    let ports: Vec<_> = out
        .config
        .inbound
        .listeners
        .iter()
        .map(|l| (l.port, l.app))
        .collect();
    assert_eq!(ports, vec![(7000, Some(local(17000))), (9080, Some(local(9080)))]);
}

#[test]
fn compiled_config_is_what_the_proxy_loads() {
    let (mesh, mut registry) = bookinfo();
    for id in ["productpage-v1-0", "reviews-v1-0", "reviews-v2-0"] {
        let out = compile(
            &mesh,
            &mut registry,
            &ProxyRef {
                instance_id: id.into(),
            },
        );
        assert!(
            out.config.validate().is_empty(),
            "{id}: {:?}",
            out.config.validate()
        );
        // Through JSON, as pushed. (Not through `ProxyConfig::from_yaml`: its YAML parser wants
        // `!forward` tags for the route enums and refuses their JSON map form; a weft-api fix.)
        let json = serde_json::to_string_pretty(&out.config).expect("json");
        let loaded: ProxyConfig = serde_json::from_str(&json).expect("parses back");
        assert_eq!(loaded, out.config, "{id}");
    }
}

#[test]
fn duplicate_and_portless_services_are_left_out_with_an_error() {
    let (mut mesh, mut registry) = bookinfo();
    let mut dup = service("reviews", &[("app", "other")], 9080);
    dup.origin.name = "reviews-again".into();
    mesh.services.push(dup);
    let mut bare = service("bare", &[("app", "bare")], 80);
    bare.ports.clear();
    mesh.services.push(bare);
    let out = compile(&mesh, &mut registry, &productpage());
    assert_eq!(out.errors.len(), 2, "{:?}", out.errors);
    assert!(out
        .errors
        .iter()
        .any(|e| e.contains("defined twice") && e.contains("reviews-again")));
    assert!(out
        .errors
        .iter()
        .any(|e| e.contains("bare") && e.contains("no ports")));
    assert_eq!(out.config.services.len(), 4);
    // The first definition (selector app=reviews) won.
    assert_eq!(set(&out.config, "reviews", None).endpoints.len(), 2);
    assert!(out.config.validate().is_empty());
}

#[test]
fn peer_authentication_and_authorization_reach_the_inbound_side() {
    use weft_api::model::{AuthorizationPolicy, PeerAuthentication};
    use weft_api::proxy_config::{AuthzAction, AuthzPolicy, MtlsMode};
    let (mut mesh, mut registry) = bookinfo();
    // No policy: PERMISSIVE everywhere, nothing to check.
    let c = compile(&mesh, &mut registry, &productpage()).config;
    assert_eq!(c.inbound.mtls, MtlsMode::Permissive);
    assert!(c.inbound.authorization.is_empty());
    assert_eq!(c.inbound.listeners[0].mtls, None);

    let pa =
        |ns: &str, selector: Option<&[(&str, &str)]>, mode, ports: &[(u16, MtlsMode)]| PeerAuthentication {
            name: "pa".into(),
            namespace: ns.into(),
            selector: selector.map(labels),
            mode,
            port_level: ports.iter().map(|(p, m)| (*p, Some(*m))).collect(),
            origin: origin("PeerAuthentication", "pa"),
        };
    mesh.peer_authentications = vec![
        pa("weft-system", None, Some(MtlsMode::Strict), &[]),
        pa(
            NS,
            Some(&[("app", "productpage")]),
            None,
            &[(9080, MtlsMode::Permissive)],
        ),
    ];
    let ap = |ns: &str, name: &str, selector: Option<&[(&str, &str)]>, action| AuthorizationPolicy {
        selector: selector.map(labels),
        workloads: None,
        policy: AuthzPolicy {
            name: name.into(),
            namespace: ns.into(),
            action,
            rules: Vec::new(),
            ..Default::default()
        },
        origin: Origin {
            namespace: ns.into(),
            ..origin("AuthorizationPolicy", name)
        },
    };
    mesh.authorization_policies = vec![
        ap(
            NS,
            "reviews-only",
            Some(&[("app", "reviews")]),
            AuthzAction::Allow,
        ),
        ap(NS, "ns-deny", None, AuthzAction::Deny),
        ap("weft-system", "mesh-deny", None, AuthzAction::Deny),
        ap("shop", "elsewhere", None, AuthzAction::Deny),
    ];
    let c = compile(&mesh, &mut registry, &productpage()).config;
    assert_eq!(c.inbound.mtls, MtlsMode::Strict);
    assert_eq!(c.inbound.listeners[0].mtls, Some(MtlsMode::Permissive));
    let names: Vec<_> = c.inbound.authorization.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["ns-deny", "mesh-deny"]);
}
