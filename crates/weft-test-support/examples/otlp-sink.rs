//! An OTLP/gRPC trace collector that counts spans and keeps none: the collector `bench/run.sh`
//! gives the proxies when it measures tracing. Prints `listening http://ADDR`, then, every
//! second while spans arrive, the running count; stops on SIGTERM or Ctrl-C.
//!
//! `cargo run --release -p weft-test-support --example otlp-sink -- [ADDR]` (default
//! `127.0.0.1:4317`).

use std::net::SocketAddr;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => SocketAddr::from(([127, 0, 0, 1], 4317)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let sink = weft_test_support::OtlpCollector::start_on(addr, false).await?;
        println!("listening {}", sink.endpoint());
        let mut last = 0;
        let stop = tokio::signal::ctrl_c();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let n = sink.received();
                    if n != last {
                        println!("spans {n}");
                        last = n;
                    }
                }
            }
        }
        println!("spans {}", sink.received());
        anyhow::Ok(())
    })
}
