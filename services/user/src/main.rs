fn main() -> std::process::ExitCode {
    platform::cli::main("user", user::run)
}
