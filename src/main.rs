fn main() -> std::process::ExitCode {
    notification_scheduler::cli::main()
}
