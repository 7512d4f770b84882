//! Command-line entry: compile mode (`cachet gcc …`, or a `gcc -> cachet` symlink) or one
//! of the management commands.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

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
    after_help = "Use it as a wrapper: CC=\"cachet gcc\" make -j8, or RUSTC_WRAPPER=cachet cargo build.\n`cachet explain [PATH…] [--last N]` says why compiles missed; `cachet trace --output FILE` writes the server's timeline, `cachet report --output FILE.html` a page of it.\n`eval \"$(cachet jobserver-env)\"` lets make 4.4+, ninja or cargo join the machine-wide pool.\nConfiguration: $XDG_CONFIG_HOME/cachet/config.toml or CACHET_CONFIG; CACHET_* variables override it."
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

/// What this process is for, decided from its arguments before anything else runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Compile mode: the compiler as the build named it, and its arguments.
    Compile {
        /// The compiler as named (a path, or a name to find on PATH).
        compiler: OsString,
        /// Its arguments.
        args: Vec<OsString>,
    },
    /// `cachet jobserver-env`: shell settings that join the server's pool.
    JobserverEnv,
    /// `cachet explain [PATH…] [--last N] [--json]`: why compiles missed.
    Explain(commands::ExplainArgs),
    /// `cachet trace --output FILE [--since DURATION]`: the server's timeline.
    Trace(commands::TraceArgs),
    /// `cachet report --output FILE.html [--since DURATION]`: the build as a page.
    Report(commands::TraceArgs),
    /// `--internal-run-server`: be the server, in the foreground.
    RunServer,
    /// Management actions, in the order they run (see [`Action`]).
    Manage(Vec<Action>),
    /// Options, but no action: print the help.
    Help,
}

/// One management action. They run in the order of this enum, whatever the order of the
/// flags: upkeep first, then what reports on it, and a stop last, so `-s --stop-server`
/// shows the stats of the server that ran, never of one started to show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// `-z`: zero the statistics.
    ZeroStats,
    /// `--clear`: remove every entry of the local cache.
    Clear,
    /// `--cleanup`: trim the local cache to its size limit.
    Cleanup,
    /// `--start-server`.
    StartServer,
    /// `--flush`: wait for pending cache writes.
    Flush,
    /// `--show-config`.
    ShowConfig,
    /// `-s`, as JSON with `--json`.
    ShowStats {
        /// Print JSON.
        json: bool,
    },
    /// `--stop-server`, after running compiles and pending writes.
    StopServer,
}

impl Action {
    fn run(self, config: &Config) -> commands::Outcome {
        match self {
            Action::ZeroStats => commands::zero_stats(config),
            Action::Clear => commands::clear(config),
            Action::Cleanup => commands::cleanup(config),
            Action::StartServer => commands::start_server(config),
            Action::Flush => commands::flush(config),
            Action::ShowConfig => commands::show_config(config),
            Action::ShowStats { json } => commands::show_stats(config, json),
            Action::StopServer => commands::stop_server(config),
        }
    }
}

/// The mode of a process started with `argv` (`argv[0]` included). Exits with clap's
/// message on options it cannot parse.
pub fn mode(mut argv: Vec<OsString>) -> Mode {
    let invoked_as = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_owned())
        .unwrap_or_default();
    // Invoked through a symlink named after a compiler.
    if !invoked_as.to_string_lossy().starts_with("cachet") {
        argv.remove(0);
        return Mode::Compile {
            compiler: invoked_as,
            args: argv,
        };
    }
    // `cachet jobserver-env`: the one word that is not a compiler.
    if argv.get(1).is_some_and(|a| a == "jobserver-env") {
        return Mode::JobserverEnv;
    }
    if argv.get(1).is_some_and(|a| a == "explain") {
        return match commands::ExplainArgs::parse(&argv[2..]) {
            Ok(args) => Mode::Explain(args),
            Err(usage) => {
                eprintln!("{usage}");
                std::process::exit(2)
            }
        };
    }
    if let Some(word) = argv.get(1).filter(|a| *a == "trace" || *a == "report") {
        let report = word == "report";
        return match commands::TraceArgs::parse(&argv[2..]) {
            Ok(args) if report => Mode::Report(args),
            Ok(args) => Mode::Trace(args),
            Err(usage) => {
                eprintln!("{usage}");
                std::process::exit(2)
            }
        };
    }
    // `cachet <compiler> args…`: the first argument is not an option. Words that name
    // cachet itself (`cachet cachet gcc`) are skipped.
    while argv.len() > 2 && client::names_cachet(&argv[1]) {
        argv.remove(1);
    }
    if argv.len() > 1 && !argv[1].to_string_lossy().starts_with('-') {
        let compiler = argv.remove(1);
        argv.remove(0);
        return Mode::Compile {
            compiler,
            args: argv,
        };
    }
    let cli = Cli::parse_from(argv);
    if cli.run_server {
        return Mode::RunServer;
    }
    let chosen = [
        (cli.zero_stats, Action::ZeroStats),
        (cli.clear, Action::Clear),
        (cli.cleanup, Action::Cleanup),
        (cli.start_server, Action::StartServer),
        (cli.flush, Action::Flush),
        (cli.show_config, Action::ShowConfig),
        (cli.show_stats, Action::ShowStats { json: cli.json }),
        (cli.stop_server, Action::StopServer),
    ];
    let mut actions: Vec<Action> = chosen
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, action)| action)
        .collect();
    actions.sort();
    if actions.is_empty() {
        Mode::Help
    } else {
        Mode::Manage(actions)
    }
}

/// Everything `main` does; the exit code is the compiler's in compile mode, else 0 when
/// every action succeeded, 1 when one failed and 2 for a usage or configuration error.
pub fn main() -> ExitCode {
    let code = match mode(std::env::args_os().collect()) {
        Mode::Compile { compiler, args } => client::compile(&compiler, args),
        Mode::Help => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            2
        }
        other => match Config::load() {
            Ok(config) => run(other, config),
            Err(e) => {
                eprintln!("cachet: {e}");
                2
            }
        },
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run(mode: Mode, config: Config) -> i32 {
    match mode {
        Mode::JobserverEnv => report(commands::jobserver_env(&config)),
        Mode::Explain(args) => report(commands::explain(&config, &args)),
        Mode::Trace(args) => report(commands::trace(&config, &args, false)),
        Mode::Report(args) => report(commands::trace(&config, &args, true)),
        Mode::RunServer => {
            crate::logging::init_server(config.log.as_deref());
            server::run(config)
        }
        Mode::Manage(actions) => {
            crate::logging::init_client(config.log.as_deref());
            actions
                .into_iter()
                .map(|action| report(action.run(&config)))
                .max()
                .unwrap_or(0)
        }
        Mode::Compile { .. } | Mode::Help => unreachable!("handled by main"),
    }
}

/// Prints a command's answer. A reader that went away (`cachet -s | head -3`) ends the
/// output quietly, as it ends other tools' output: no panic, no message.
fn report(outcome: commands::Outcome) -> i32 {
    use std::io::Write;
    let (written, code) = match outcome {
        Ok(text) => (writeln!(std::io::stdout(), "{text}"), 0),
        Err(e) => (writeln!(std::io::stderr(), "cachet: {e}"), 1),
    };
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => 1,
        _ => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(args: &[&str]) -> Mode {
        mode(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn the_mode_comes_from_the_arguments() {
        assert_eq!(
            mode_of(&["/usr/lib/cachet/gcc", "-c", "a.c"]),
            Mode::Compile {
                compiler: "gcc".into(),
                args: vec!["-c".into(), "a.c".into()]
            }
        );
        assert_eq!(
            mode_of(&["cachet", "cachet", "gcc", "-c"]),
            Mode::Compile {
                compiler: "gcc".into(),
                args: vec!["-c".into()]
            }
        );
        assert_eq!(mode_of(&["cachet", "jobserver-env"]), Mode::JobserverEnv);
        assert_eq!(
            mode_of(&["cachet", "--internal-run-server"]),
            Mode::RunServer
        );
        assert_eq!(
            mode_of(&["cachet", "--json", "-s"]),
            Mode::Manage(vec![Action::ShowStats { json: true }])
        );
    }

    #[test]
    fn actions_run_in_the_stated_order_whatever_the_flags_order() {
        assert_eq!(
            mode_of(&["cachet", "--stop-server", "-s", "--show-config", "-z"]),
            Mode::Manage(vec![
                Action::ZeroStats,
                Action::ShowConfig,
                Action::ShowStats { json: false },
                Action::StopServer
            ])
        );
    }
}
