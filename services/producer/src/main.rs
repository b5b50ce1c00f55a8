fn main() -> std::process::ExitCode {
    platform::cli::main("producer", producer::run)
}
