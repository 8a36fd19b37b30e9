//! Small shared helpers: running commands, progress display, file helpers.

pub mod cmd;
pub mod fsutil;
pub mod progress;
