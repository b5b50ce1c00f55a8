fn main() -> std::process::ExitCode {
    platform::cli::main("order", order::run)
}
