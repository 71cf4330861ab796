use clap::Parser;

fn main() {
    let cli = loki::commands::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match rt.block_on(loki::commands::main(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    // Do not wait for blocking tasks that may still run (a stuck git call).
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}
