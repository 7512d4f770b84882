//! cachet: a compiler cache with a background server and a GNU make jobserver.
//!
//! The path of a compile request: [`client`] → [`protocol`] → [`server`] → [`compiler`]
//! → [`cache`] and [`process`] (which runs children under the jobserver and [`memory`]
//! admission).

#![deny(missing_docs)]

pub(crate) mod background;
pub(crate) mod cache;
pub mod cli;
pub(crate) mod client;
pub(crate) mod compiler;
pub(crate) mod config;
mod daemon;
pub(crate) mod execution;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod logging;
pub(crate) mod memory;
pub mod paths;
pub(crate) mod process;
pub mod protocol;
pub(crate) mod reapi;
pub(crate) mod server;
pub(crate) mod stats;
pub(crate) mod trace;
pub(crate) mod units;
