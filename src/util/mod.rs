//! Small shared helpers: running commands, progress display, file helpers.

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
