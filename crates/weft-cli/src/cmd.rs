//! The `weft` subcommands, one module each.

/// `println!` for verbs whose output people pipe into readers that may stop early
/// (`weft analyze DIR | head`): a closed pipe ends the output quietly, where `println!` would
/// panic. (Restoring SIGPIPE's default would need `unsafe`.)
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod analyze;
pub mod check;
pub mod control;
pub mod demo;
pub mod demo_app;
pub mod explain;
pub mod find_mesh;
pub mod init_iptables;
pub mod load;
pub mod logs;
pub mod proxy;
pub mod run_child;
pub mod status;
pub mod token;
pub mod up;
pub mod version;
pub mod views;

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
    shutdown_listener()?.await;
    Ok(())
}

/// Listens for SIGTERM and SIGINT (Ctrl-C) from now on; the future resolves at the first one.
/// Made before anything starts, a signal that arrives while things start is kept, not lost
/// (tokio sees a signal only once something listens for it).
pub fn shutdown_listener() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
