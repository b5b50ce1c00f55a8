fn main() -> std::process::ExitCode {
    platform::cli::main("gateway", gateway::run)
}
