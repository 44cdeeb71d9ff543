//! The `waraka` binary.

fn main() -> std::process::ExitCode {
    match waraka::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waraka: {e:#}");
            // `waraka sendmail` exits as sysexits.h has it.
            match e.downcast_ref::<waraka::sendmail::Failure>() {
                Some(failure) => std::process::ExitCode::from(failure.status),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}
