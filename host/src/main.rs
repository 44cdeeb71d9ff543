//! The `waraka` binary.

fn main() -> std::process::ExitCode {
    match waraka::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waraka: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
