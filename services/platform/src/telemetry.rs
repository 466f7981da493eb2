//! JSON logs (or pretty ones for humans), filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let pretty = std::env::var("EARSHOT_LOG_FORMAT").is_ok_and(|v| v == "pretty");
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = if pretty {
        b.try_init()
    } else {
        b.json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    };
}
