//! `weft demo`: the proxy's main job on one machine, in one process — two versions of a
//! `reviews` backend, each behind its own sidecar, and a client sidecar that balances between
//! them over the pooled HTTP/2 hop. (`weft up` with the bookinfo example replaces this once the
//! control plane and identity land.)

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use weft_api::proxy_config::{
    Endpoint, EndpointSet, InboundListener, LoadBalancer, MeshService, OutboundPort, Protocol, ProxyConfig,
    ServicePort, WorkloadInfo,
};
use weft_proxy::app::{self, Options, Running};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Port of the client sidecar's outbound port for `reviews` (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

const LOOPBACK_ANY: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    super::runtime(None)?.block_on(async move {
        let stop_backends = CancellationToken::new();
        let mut sidecars = Vec::new();
        let mut endpoints = Vec::new();
        for version in ["v1", "v2"] {
            let name = format!("reviews-{version}");
            let app = weft_demo::echo::start(&name, stop_backends.clone()).await?;
            let sidecar = app::start(server_sidecar(&name, version, app), Options::default())
                .await
                .with_context(|| format!("starting the {name} sidecar"))?;
            endpoints.push(Endpoint {
                address: app,
                mesh_port: Some(sidecar.bound.mesh.port()),
                weight: 1,
                labels: [
                    ("version".to_string(), version.to_string()),
                    ("app".to_string(), "reviews".to_string()),
                ]
                .into(),
                workload: Some(name),
                identity: None,
            });
            sidecars.push(sidecar);
        }
        let client = app::start(client_sidecar(endpoints, args.port), Options::default())
            .await
            .context("starting the productpage sidecar")?;
        print_banner(&client, &sidecars);
        super::shutdown_signal().await?;
        println!("stopping: draining every sidecar");
        client.drain().await;
        for s in sidecars {
            s.drain().await;
        }
        stop_backends.cancel();
        Ok(ExitCode::SUCCESS)
    })
}

fn server_sidecar(name: &str, version: &str, app: SocketAddr) -> ProxyConfig {
    let mut config = ProxyConfig {
        workload: WorkloadInfo {
            name: name.to_string(),
            labels: [
                ("app".into(), "reviews".into()),
                ("version".into(), version.into()),
            ]
            .into(),
            ..WorkloadInfo::default()
        },
        ..ProxyConfig::default()
    };
    config.admin.address = LOOPBACK_ANY;
    config.inbound.mesh = LOOPBACK_ANY;
    config.inbound.listeners = vec![InboundListener {
        port: app.port(),
        app: Some(app),
        protocol: Protocol::Http,
        listen: None,
        mtls: None,
        rate_limit: None,
    }];
    config.outbound.listen = None;
    config
}

fn client_sidecar(endpoints: Vec<Endpoint>, port: u16) -> ProxyConfig {
    let mut config = ProxyConfig {
        workload: WorkloadInfo {
            name: "productpage-v1".into(),
            labels: [
                ("app".into(), "productpage".into()),
                ("version".into(), "v1".into()),
            ]
            .into(),
            ..WorkloadInfo::default()
        },
        ..ProxyConfig::default()
    };
    config.admin.address = LOOPBACK_ANY;
    config.inbound.mesh = LOOPBACK_ANY;
    config.outbound.listen = Some(LOOPBACK_ANY);
    config.outbound.ports = vec![OutboundPort {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        service: "reviews".into(),
        port: 9080,
    }];
    config.services = vec![MeshService {
        name: "reviews".into(),
        namespace: "default".into(),
        vip: None,
        ports: vec![ServicePort {
            port: 9080,
            name: Some("http".into()),
            protocol: Protocol::Http,
        }],
        load_balancer: LoadBalancer::RoundRobin,
        outlier_detection: None,
        connection_pool: None,
        routes: Vec::new(),
    }];
    config.endpoints = vec![EndpointSet {
        service: "reviews".into(),
        namespace: "default".into(),
        port: 9080,
        subset: None,
        endpoints,
    }];
    config
}

fn print_banner(client: &Running, sidecars: &[Running]) {
    let b = &client.bound;
    let reviews = b
        .outbound_ports
        .first()
        .map_or_else(String::new, ToString::to_string);
    let proxy = b.outbound.map_or_else(String::new, |a| a.to_string());
    println!("Weft demo: productpage's sidecar balances reviews v1/v2 over the mesh hop (Ctrl-C stops it)\n");
    println!("  per-service port   curl http://{reviews}/");
    println!("  HTTP proxy port    curl -x http://{proxy} http://reviews:9080/");
    println!("  HTTP/2             curl --http2-prior-knowledge http://{reviews}/");
    println!("  metrics (client)   curl http://{}/metrics", b.admin);
    for (i, s) in sidecars.iter().enumerate() {
        println!(
            "  metrics (reviews-v{}) curl http://{}/metrics",
            i + 1,
            s.bound.admin
        );
    }
    println!("  config             curl http://{}/config_dump\n", b.admin);
}
