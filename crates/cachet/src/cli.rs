//! Command-line entry: compile mode (`cachet gcc …`, or a `gcc -> cachet` symlink) or one
//! of the management commands.

use std::ffi::OsString;
use std::path::Path;

use clap::Parser;

use crate::client::{self, commands};
use crate::config::Config;
use crate::server;

#[derive(Debug, Parser)]
#[command(
    name = "cachet",
    version,
    about = "A compiler cache with a background server and a GNU make jobserver",
    override_usage = "cachet <COMPILER> [ARGS]...\n       cachet [OPTIONS]",
    after_help = "Use it as a wrapper: CC=\"cachet gcc\" make -j8, or RUSTC_WRAPPER=cachet cargo build.\n`eval \"$(cachet jobserver-env)\"` lets make 4.4+, ninja or cargo join the machine-wide pool.\nConfiguration: $XDG_CONFIG_HOME/cachet/config.toml or CACHET_CONFIG; CACHET_* variables override it."
)]
struct Cli {
    /// Show the server's statistics.
    #[arg(short = 's', long)]
    show_stats: bool,
    /// With --show-stats: print JSON.
    #[arg(long, requires = "show_stats")]
    json: bool,
    /// Zero the statistics.
    #[arg(short = 'z', long)]
    zero_stats: bool,
    /// Start the server if it is not running.
    #[arg(long)]
    start_server: bool,
    /// Stop the server, after its running compiles and pending cache writes.
    #[arg(long)]
    stop_server: bool,
    /// Wait until every pending cache write, local and remote, is done (30 s at most).
    #[arg(long)]
    flush: bool,
    /// Remove every entry of the local cache.
    #[arg(long)]
    clear: bool,
    /// Trim the local cache to its size limit.
    #[arg(long)]
    cleanup: bool,
    /// Print the effective configuration and where each value came from.
    #[arg(long)]
    show_config: bool,
    /// Run the server in the foreground (used by the client to start it).
    #[arg(long = "internal-run-server", hide = true)]
    run_server: bool,
}

/// Everything `main` does.
pub fn main() -> i32 {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_owned())
        .unwrap_or_default();

    // Invoked through a symlink named after a compiler.
    if !invoked_as.to_string_lossy().starts_with("cachet") {
        argv.remove(0);
        return client::compile(&invoked_as, argv);
    }
    // `cachet jobserver-env`: the one word that is not a compiler.
    if argv.get(1).is_some_and(|a| a == "jobserver-env") {
        let config = match Config::load() {
            Ok(config) => config,
            Err(e) => {
                eprintln!("cachet: {e}");
                return 2;
            }
        };
        return report(commands::jobserver_env(&config));
    }
    // `cachet <compiler> args…`: the first argument is not an option. Words that name
    // cachet itself (`cachet cachet gcc`) are skipped.
    while argv.len() > 2 && client::names_cachet(&argv[1]) {
        argv.remove(1);
    }
    if argv.len() > 1 && !argv[1].to_string_lossy().starts_with('-') {
        let compiler = argv.remove(1);
        argv.remove(0);
        return client::compile(&compiler, argv);
    }

    let cli = Cli::parse_from(argv);
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cachet: {e}");
            return 2;
        }
    };
    if cli.run_server {
        crate::logging::init_server(config.log.as_deref());
        return server::run(config);
    }
    crate::logging::init_client(config.log.as_deref());

    type Command = fn(&Config) -> commands::Outcome;
    let mut actions: Vec<Command> = Vec::new();
    if cli.zero_stats {
        actions.push(commands::zero_stats);
    }
    if cli.clear {
        actions.push(commands::clear);
    }
    if cli.cleanup {
        actions.push(commands::cleanup);
    }
    if cli.start_server {
        actions.push(commands::start_server);
    }
    if cli.flush {
        actions.push(commands::flush);
    }
    if cli.show_config {
        actions.push(commands::show_config);
    }
    if cli.show_stats {
        // Before a stop: the stats of the server that runs, never of one started to show them.
        actions.push(if cli.json {
            |config| commands::show_stats(config, true)
        } else {
            |config| commands::show_stats(config, false)
        });
    }
    if cli.stop_server {
        actions.push(commands::stop_server);
    }
    if actions.is_empty() {
        use clap::CommandFactory;
        let _ = Cli::command().print_help();
        return 2;
    }
    let mut code = 0;
    for action in actions {
        code = code.max(report(action(&config)));
    }
    code
}

/// Prints a command's answer. A reader that went away (`cachet -s | head -3`) ends the
/// output quietly, as it ends other tools' output: no panic, no message.
fn report(outcome: commands::Outcome) -> i32 {
    use std::io::Write;
    let (written, code) = match outcome {
        Ok(text) => (writeln!(std::io::stdout(), "{text}"), 0),
        Err(text) => (writeln!(std::io::stderr(), "cachet: {text}"), 1),
    };
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => 1,
        _ => code,
    }
}
