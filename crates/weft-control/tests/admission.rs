//! Who a subscribing proxy is, against a real control plane (`weft_control::app`) and real gRPC
//! clients of the discovery API that send whatever they like: a subscription is believed only
//! as far as its token and that token's Workload document go (shared/ARCHITECTURE.md, "Trust
//! from the first packet").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use weft_api::proto::discovery_client::DiscoveryClient;
use weft_api::proto::discovery_request::Kind;
use weft_api::proto::{DiscoveryRequest, DiscoveryResponse, Subscribe};
use weft_control::app::{self, ControlOptions, Running};
use weft_control::push::ConfigSource as _;
use weft_control::tokens::Grant;

const MESH: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings}\nspec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}\n---\napiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: reviews-v1}\nspec: {labels: {app: reviews, version: v1}, serviceAccount: reviews, ports: [{port: 9080}]}\n---\napiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: ratings-v1}\nspec: {labels: {app: ratings, version: v1}, serviceAccount: ratings, ports: [{port: 9080}]}\n";

struct Control {
    running: Running,
    root: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.running.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn control(name: &str) -> Control {
    let root = std::env::temp_dir().join(format!("weft-admission-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("config")).expect("config dir");
    std::fs::write(root.join("config/mesh.yaml"), MESH).expect("write");
    let mut options = ControlOptions::new(vec![root.join("config")], root.join("state"));
    options.listen = "127.0.0.1:0".parse().expect("addr");
    options.admin = "127.0.0.1:0".parse().expect("addr");
    options.endpoint_grace = Duration::from_millis(300);
    let running = app::start(options).await.expect("control plane starts");
    Control { running, root }
}

/// An open discovery stream: the first push, and the sender that keeps it open.
struct Stream {
    _tx: mpsc::Sender<DiscoveryRequest>,
    _responses: tonic::Streaming<DiscoveryResponse>,
}

/// Subscribes with `sub`: the open stream once the first push arrives, or the refusal.
async fn subscribe(addr: SocketAddr, sub: Subscribe) -> Result<Stream, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        kind: Some(Kind::Subscribe(sub)),
    })
    .await
    .expect("send");
    let mut responses = DiscoveryClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("a first push in time")?;
    assert!(first.is_some(), "the stream ended without a push");
    Ok(Stream {
        _tx: tx,
        _responses: responses,
    })
}

fn sub(id: &str, token: &str) -> Subscribe {
    Subscribe {
        instance_id: id.into(),
        token: token.into(),
        mesh_port: 15008,
        app_ports: [(9080, 19080)].into(),
        ..Subscribe::default()
    }
}

/// The endpoints (address, identity) of `service` in the config the control plane computes.
fn endpoints(cp: &Control, service: &str) -> Vec<(SocketAddr, Option<String>)> {
    let config = cp.running.source.config_for("any").expect("config");
    config
        .endpoints
        .iter()
        .filter(|e| e.service == service)
        .flat_map(|e| e.endpoints.iter().map(|ep| (ep.address, ep.identity.clone())))
        .collect()
}

fn refusal(result: Result<Stream, tonic::Status>) -> tonic::Status {
    match result {
        Ok(_) => panic!("admitted"),
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_token_with_false_claims_is_refused_or_gets_only_its_own_document() {
    let cp = control("claims").await;
    let addr = cp.running.listen;
    let tokens = cp.running.source.tokens();
    let reviews = tokens
        .create(&Grant::new("reviews-v1", "default", "reviews"))
        .expect("token");
    let ratings = tokens
        .create(&Grant::new("ratings-v1", "default", "ratings"))
        .expect("token");
    let real = subscribe(addr, sub("reviews-v1-0", &reviews))
        .await
        .expect("reviews admitted");
    assert_eq!(
        endpoints(&cp, "reviews"),
        vec![(
            "127.0.0.1:19080".parse().expect("addr"),
            Some("spiffe://cluster.local/ns/default/sa/reviews".into())
        )]
    );

    // Ratings' token, reviews' labels.
    let s = refusal(
        subscribe(
            addr,
            Subscribe {
                labels: [("app".into(), "reviews".into())].into(),
                ..sub("ratings-v1-x", &ratings)
            },
        )
        .await,
    );
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}");
    assert_eq!(
        s.message(),
        "the Workload document default/ratings-v1 has labels {app=ratings,version=v1}, but the subscription claims {app=reviews}; labels come from the document"
    );
    // Ratings' token, reviews' workload and service account.
    let s = refusal(
        subscribe(
            addr,
            Subscribe {
                workload: "reviews-v1".into(),
                ..sub("ratings-v1-x", &ratings)
            },
        )
        .await,
    );
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}");
    assert!(s.message().contains("bound to workload \"ratings-v1\""), "{s}");
    let s = refusal(
        subscribe(
            addr,
            Subscribe {
                service_account: "reviews".into(),
                ..sub("ratings-v1-x", &ratings)
            },
        )
        .await,
    );
    assert!(
        s.message().contains("bound to service account \"ratings\""),
        "{s}"
    );
    // An address elsewhere.
    let s = refusal(
        subscribe(
            addr,
            Subscribe {
                ip: "10.1.2.3".into(),
                ..sub("ratings-v1-x", &ratings)
            },
        )
        .await,
    );
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}");
    assert_eq!(
        s.message(),
        "the subscription claims address \"10.1.2.3\", but it connects from 127.0.0.1"
    );
    // Reviews' instance id, with ratings' token, and with reviews' own (a copy).
    let s = refusal(subscribe(addr, sub("reviews-v1-0", &ratings)).await);
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}");
    assert!(
        s.message()
            .contains("instance id \"reviews-v1-0\" is not named after workload \"ratings-v1\""),
        "{s}"
    );
    // Squatting: an id of a reviews replica that has not started yet, taken first by another
    // workload's token, would lock the real replica out. Refused by name: ids are named after
    // their workload, and the longest workload name that prefixes an id owns it.
    let s = refusal(subscribe(addr, sub("reviews-v1-7", &ratings)).await);
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}");
    let short = tokens
        .create(&Grant::new("reviews", "default", "reviews"))
        .expect("token");
    let s = refusal(subscribe(addr, sub("reviews-v1-3", &short)).await);
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}");
    assert!(
        s.message().contains("not named after workload \"reviews\""),
        "{s}"
    );
    // The same workload name in another namespace: named after it, but the id is held.
    let other = tokens
        .create(&Grant::new("reviews-v1", "other", "reviews"))
        .expect("token");
    let s = refusal(subscribe(addr, sub("reviews-v1-0", &other)).await);
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}");
    assert!(
        s.message().contains("belongs to workload default/reviews-v1"),
        "{s}"
    );
    let s = refusal(subscribe(addr, sub("reviews-v1-0", &reviews)).await);
    assert_eq!(s.code(), tonic::Code::AlreadyExists, "{s}");
    assert!(s.message().contains("held by another live connection"), "{s}");
    // A wrong token.
    let s = refusal(subscribe(addr, sub("x", "not-a-token")).await);
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s}");

    // None of it moved reviews' endpoint.
    assert_eq!(endpoints(&cp, "reviews").len(), 1);
    assert_eq!(
        endpoints(&cp, "reviews")[0].1.as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/reviews")
    );

    // The ratings token claiming nothing is admitted, as what its document says: an endpoint of
    // ratings with the ratings identity, never of reviews.
    let _ratings = subscribe(addr, sub("ratings-v1-0", &ratings))
        .await
        .expect("ratings admitted");
    assert_eq!(
        endpoints(&cp, "ratings"),
        vec![(
            "127.0.0.1:19080".parse().expect("addr"),
            Some("spiffe://cluster.local/ns/default/sa/ratings".into())
        )]
    );
    assert_eq!(endpoints(&cp, "reviews").len(), 1);

    // The real instance leaves; past the grace its endpoint goes, and it gets it back when it
    // reconnects (its own id, its own token).
    drop(real);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !endpoints(&cp, "reviews").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the endpoint stayed after its proxy left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _back = subscribe(addr, sub("reviews-v1-0", &reviews))
        .await
        .expect("reviews back");
    assert_eq!(endpoints(&cp, "reviews").len(), 1);
}

/// A token minted before tokens named their workload still gets its certificate's identity but
/// cannot subscribe: it would let its holder claim any workload in its namespace.
#[tokio::test]
async fn an_unbound_token_is_refused_with_what_to_do() {
    let cp = control("unbound").await;
    let token = cp
        .running
        .source
        .tokens()
        .create(&Grant {
            workload: String::new(),
            namespace: "default".into(),
            service_account: "reviews".into(),
            expires_at: None,
        })
        .expect("token");
    let s = refusal(subscribe(cp.running.listen, sub("reviews-v1-0", &token)).await);
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}");
    assert!(s.message().contains("weft token create --workload"), "{s}");
}
