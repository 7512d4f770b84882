//! cachet: a compiler cache with a background server and a GNU make jobserver.
//!
//! The path of a compile request: [`client`] → [`protocol`] → [`server`] → [`compiler`]
//! → [`cache`] and [`process`] (which runs children under the jobserver).

pub mod cache;
pub mod cli;
pub mod client;
pub mod compiler;
pub mod config;
mod daemon;
pub mod logging;
pub mod paths;
pub mod process;
pub mod protocol;
pub mod server;
pub mod stats;
pub mod units;
