//! The `barge` binary: everything lives in `barge-cli`; this shim exists so that
//! `cargo run --release -- demo` works from the workspace root.
fn main() -> std::process::ExitCode {
    barge_cli::main()
}
