//! A small test runner for the `harness = false` targets, whose binary is
//! also a helper process the tests start (libtest cannot be told to run
//! something that is not a test). It takes what `cargo test` passes: name
//! filters, `--exact`, `--list`, `--ignored` (nothing here is ignored);
//! other flags are accepted and ignored. Tests run in parallel threads.

use std::panic::AssertUnwindSafe;

/// A named test function.
pub type Test = (&'static str, fn());

/// Runs the `tests` that the command line selects and exits with libtest's
/// codes (0 passed, 101 failed).
pub fn run_tests(tests: &[Test]) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exact = args.iter().any(|a| a == "--exact");
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--skip" => skips.extend(it.next().cloned()),
            // libtest's options that take their value as the next argument.
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" | "--shuffle-seed" => {
                it.next();
            }
            _ if a.starts_with('-') => {}
            _ => filters.push(a.clone()),
        }
    }
    let matches = |name: &str, f: &str| if exact { name == f } else { name.contains(f) };
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
        .filter(|(name, _)| !skips.iter().any(|f| matches(name, f)))
        .filter(|_| !args.iter().any(|a| a == "--ignored"))
        .collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        std::process::exit(0);
    }
    let n = selected.len();
    println!("\nrunning {n} test{}", if n == 1 { "" } else { "s" });
    let started = std::time::Instant::now();
    let handles: Vec<_> = selected
        .iter()
        .map(|&&(name, f)| {
            let h = std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || std::panic::catch_unwind(AssertUnwindSafe(f)).is_ok())
                .expect("spawning a test thread");
            (name, h)
        })
        .collect();
    let mut failed = Vec::new();
    for (name, h) in handles {
        let ok = h.join().unwrap_or(false);
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(name);
        }
    }
    let passed = selected.len() - failed.len();
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    std::process::exit(if failed.is_empty() { 0 } else { 101 });
}
