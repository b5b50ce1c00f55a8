fn main() -> std::process::ExitCode {
    platform::cli::main("consumer", consumer::run)
}
