//! earshot-edge: wires configuration, the app, and the runtime (Lambda or local).

use anyhow::Context;
use earshot_edge::config::{EdgeConfig, RunMode};
use earshot_edge::{lambda, local, telemetry, App};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let cfg = EdgeConfig::from_env().context("configuration")?;
    let mode = cfg.mode.clone();
    let app = App::build(cfg).await?;
    match mode {
        RunMode::Lambda => lambda::run(app).await.map_err(|e| anyhow::anyhow!(e)),
        RunMode::Local { addr } => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("EARSHOT_EDGE_ADDR: cannot listen on {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "earshot-edge listening (local mode)");
            local::serve(app, listener, local::shutdown_signal()).await?;
            Ok(())
        }
    }
}
