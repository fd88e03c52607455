//! The `weft` subcommands, one module each.

pub mod analyze;
pub mod check;
pub mod control;
pub mod demo;
pub mod demo_app;
pub mod explain;
pub mod init_iptables;
pub mod load;
pub mod proxy;
pub mod status;
pub mod token;
pub mod up;

/// A tokio runtime with `threads` workers (one thread: a current-thread runtime, which is
/// what per-core figures compare against).
pub fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let rt = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    Ok(rt)
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        res = tokio::signal::ctrl_c() => res?,
    }
    Ok(())
}
