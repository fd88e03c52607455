//! The `weft` command: argument parsing and printing only; each verb is a thin call into the
//! library crates (shared/ARCHITECTURE.md).

mod cmd;

/// `--version`: the crate version and the git commit built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WEFT_GIT_COMMIT"), ")");

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weft", version = VERSION, about = "Weft service mesh")]
struct Cli {
    /// Log filter (`info`, `debug`, `weft_proxy=trace`...). Default: RUST_LOG, else `info`.
    #[arg(long, global = true)]
    log: Option<String>,
    /// Log lines as `text` (RFC 3339 times; colour only on a terminal) or `json` (one object
    /// per line, for machines). Set as WEFT_LOG_FORMAT in the environment, it reaches the
    /// sidecars `weft up` starts too.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], env = "WEFT_LOG_FORMAT")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a sidecar proxy from a ProxyConfig file (YAML or JSON).
    Proxy(cmd::proxy::ProxyArgs),
    /// Install the iptables rules that capture a pod's traffic into its sidecar.
    InitIptables(cmd::init_iptables::InitIptablesArgs),
    /// Run the whole mesh on this machine: control plane, every workload with its sidecar.
    Up(cmd::up::UpArgs),
    /// Stop a running `weft up`.
    Down(cmd::up::DownArgs),
    /// Show a workload's logs from a running `weft up`.
    Logs(cmd::up::LogsArgs),
    /// Run a small meshed demo on this machine: two backends each behind a sidecar, a client
    /// sidecar balancing between them, and the URLs to try.
    Demo(cmd::demo::DemoArgs),
    /// Check Istio, Linkerd, SMI and Gateway API documents (like `istioctl analyze`).
    Analyze(cmd::analyze::AnalyzeArgs),
    /// Show which rule a request matches and where it goes.
    Explain(cmd::explain::ExplainArgs),
    /// Run the control plane: watch mesh documents, push each proxy its config.
    Control(cmd::control::ControlArgs),
    /// Bootstrap tokens for proxies.
    #[command(subcommand)]
    Token(cmd::token::TokenCommand),
    /// Show every proxy connected to the control plane and whether it is in sync.
    Status(cmd::status::StatusArgs),
    /// Check how soon the mesh's certificates expire (CA and workloads); exit 1 if one has.
    Check(cmd::check::CheckArgs),
    /// Send GET requests at a fixed rate and count the answers per status.
    Load(cmd::load::LoadArgs),
    /// Every proxy, the config version it ACKed, in sync or stale, and since when.
    ProxyStatus(cmd::views::proxy_status::ProxyStatusArgs),
    /// One proxy's compiled config: listeners, services, routes, endpoints, secrets.
    ProxyConfig(cmd::views::proxy_config::ProxyConfigArgs),
    /// The routes of a mesh service, in the order the proxies try them.
    Routes(cmd::views::routes::RoutesArgs),
    /// Success rate, requests/s, latency percentiles and mTLS share per workload, service or route.
    Stat(cmd::views::stat::StatArgs),
    /// Who talks to whom, with their identities and whether the edge is mTLS.
    Edges(cmd::views::edges::EdgesArgs),
    /// Watch requests live as the proxies see them: path, status, latency, flags, identities.
    Tap(cmd::views::tap::TapArgs),
    /// The most requested paths by source and destination, live in the terminal.
    Top(cmd::views::top::TopArgs),
    /// This client's version and commit, and the running mesh's (control plane, each proxy).
    Version(cmd::version::VersionArgs),
    #[command(hide = true)]
    DemoApp(cmd::demo_app::DemoAppArgs),
    #[command(hide = true, name = "run-child")]
    RunChild(cmd::run_child::RunChildArgs),
}

fn main() -> std::process::ExitCode {
    weft_api::version::set_commit(env!("WEFT_GIT_COMMIT"));
    let cli = Cli::parse();
    // `weft up` talks to a person: its own progress lines, and only warnings from the planes.
    let quiet = matches!(cli.command, Command::Up(_)).then_some("warn");
    init_logging(cli.log.as_deref(), quiet, cli.log_format == "json");
    let result = match cli.command {
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::InitIptables(args) => {
            cmd::init_iptables::run(args).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Up(args) => cmd::up::up(args),
        Command::Down(args) => cmd::up::down(args),
        Command::Logs(args) => cmd::up::logs(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Analyze(args) => cmd::analyze::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Control(args) => cmd::control::run(args),
        Command::Token(cmd) => cmd::token::run(cmd),
        Command::Status(args) => cmd::status::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Load(args) => cmd::load::run(args),
        Command::Version(args) => cmd::version::run(args),
        Command::DemoApp(args) => cmd::demo_app::run(args),
        Command::ProxyStatus(args) => cmd::views::proxy_status::run(args),
        Command::ProxyConfig(args) => cmd::views::proxy_config::run(args),
        Command::Routes(args) => cmd::views::routes::run(args),
        Command::Stat(args) => cmd::views::stat::run(args),
        Command::Edges(args) => cmd::views::edges::run(args),
        Command::Tap(args) => cmd::views::tap::run(args),
        Command::Top(args) => cmd::views::top::run(args),
        Command::RunChild(args) => cmd::run_child::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(flag: Option<&str>, default: Option<&str>, json: bool) {
    let filter = flag
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.unwrap_or("info").to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
        return;
    }
    // Colour only for a person at a terminal: log files and pipes get plain text.
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
