//! `weft demo-app productpage|details|reviews|ratings [--version v1] [--port N]` (hidden): one
//! of the Bookinfo-style demo applications (crates/weft-demo), as `weft up` starts them from
//! examples/bookinfo. The port comes from `PORT`, the address from `POD_IP` (as a Kubernetes
//! pod's downward API gives it; `weft up --netns` sets it), the upstreams from `DETAILS_URL`,
//! `REVIEWS_URL` and `RATINGS_URL`.

use std::process::ExitCode;

use weft_demo::{App, ReviewsVersion, Upstreams};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AppName {
    Productpage,
    Details,
    Reviews,
    Ratings,
}

#[derive(Debug, clap::Args)]
pub struct DemoAppArgs {
    /// Which application.
    pub app: AppName,
    /// The version (reviews: v1 no stars, v2 black stars, v3 red stars).
    #[arg(long, env = "WEFT_VERSION", default_value = "v1")]
    pub version: String,
    /// The port to listen on.
    #[arg(long, env = "PORT")]
    pub port: u16,
    /// The address to listen on: the pod's IP in a network namespace of its own.
    #[arg(long, env = "POD_IP", default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
}

pub fn run(args: DemoAppArgs) -> anyhow::Result<ExitCode> {
    let upstreams = Upstreams::from_env();
    let app = match args.app {
        AppName::Productpage => App::ProductPage { upstreams },
        AppName::Details => App::Details,
        AppName::Reviews => App::Reviews {
            version: args.version.parse::<ReviewsVersion>()?,
            upstreams,
        },
        AppName::Ratings => App::Ratings,
    };
    let rt = super::runtime(Some(2))?;
    rt.block_on(async {
        tokio::select! {
            res = weft_demo::run_app_on(app, std::net::SocketAddr::new(args.address, args.port)) => res.map(|()| ExitCode::SUCCESS),
            res = super::shutdown_signal() => res.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        }
    })
}
