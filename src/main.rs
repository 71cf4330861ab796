use clap::Parser;

use loki::error::Error;

fn main() {
    let cli = loki::commands::Cli::parse();
    // The keeper is this very binary, whatever happens to the file on disk.
    if let Some(code) = cli.command.keeper() {
        std::process::exit(code);
    }
    loki::process::use_keeper("/proc/self/exe");
    loki::git::before_threads();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(
            &Error::environment("cannot start the async runtime")
                .with_source(e)
                .into(),
        ),
    };
    let outcome = rt.block_on(loki::commands::main(cli));
    // Do not wait for blocking tasks that may still run (a stuck git call).
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(&e),
    }
}

/// The one renderer: `error: …` with its causes and `help:` lines on
/// stderr, then the exit code of the error's kind.
fn fail(e: &anyhow::Error) -> ! {
    eprint!("{}", loki::error::render(e));
    std::process::exit(loki::commands::error_kind(e).exit_code());
}
