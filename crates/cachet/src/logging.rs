//! `tracing` set-up. The client logs to stderr only when CACHET_LOG asks, so the hit path
//! pays nothing; the server logs to its log file (its stderr).

use tracing_subscriber::EnvFilter;

pub fn init_client(filter: Option<&str>) {
    if let Some(filter) = filter {
        init(filter);
    }
}

pub fn init_server(filter: Option<&str>) {
    init(filter.unwrap_or("info"));
}

fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
