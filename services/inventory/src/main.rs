fn main() -> std::process::ExitCode {
    platform::cli::main("inventory", inventory::run)
}
