//! Progress display for long steps: a spinner on a terminal, log lines
//! otherwise (CI), and the elapsed time of every step in the log.

use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

/// Run `f` as a named step; returns its result and logs how long it took.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("static template"),
        );
        pb.set_message(name.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        Some(pb)
    } else {
        None
    };
    tracing::info!("{name}…");
    let r = f();
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64();
    match &r {
        Ok(_) => tracing::info!("{name}: done in {secs:.1}s"),
        Err(_) => tracing::error!("{name}: failed after {secs:.1}s"),
    }
    r
}
