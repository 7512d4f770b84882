use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "hello")]
    text: String,
}

#[derive(Serialize, Deserialize, Debug)]
struct Record {
    text: String,
    hash: String,
    compressed: usize,
}

#[derive(thiserror::Error, Debug)]
enum Failure {
    #[error("compression failed: {0}")]
    Compress(#[from] std::io::Error),
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args = Args::parse();
    let compressed = zstd::encode_all(args.text.as_bytes(), 3)?;
    let record = Record {
        hash: blake3::hash(args.text.as_bytes()).to_hex().to_string(),
        compressed: compressed.len(),
        text: args.text,
    };
    tracing::info!("{}", serde_json::to_string(&record).unwrap());
    println!("{}", toml::to_string(&record).unwrap());
    Ok(())
}
