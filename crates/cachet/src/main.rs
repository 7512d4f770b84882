fn main() {
    std::process::exit(cachet::cli::main());
}
