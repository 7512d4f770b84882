fn main() -> std::process::ExitCode {
    cachet::cli::main()
}
