//! Small shared helpers: running commands, progress display, file helpers.

pub mod cache_dir;
pub mod cmd;
pub mod fsutil;
pub mod progress;
pub mod sys;
pub mod tree;

/// Worker threads: the number given, else one per CPU.
pub fn threads(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// Print to standard output; a reader that went away (`| head`) is not an
/// error worth a panic.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
