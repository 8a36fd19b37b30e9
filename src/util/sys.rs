//! The few system calls keelson needs that have no safe wrapper, in one
//! place: everything else goes through `rustix`. The only module allowed
//! `unsafe` (Cargo.toml's lints deny it elsewhere).
#![allow(unsafe_code)]

use std::path::Path;

use anyhow::{Context, Result};

/// The child gets SIGKILL when the thread that spawned it dies, so a killed
/// keelson leaves no mmdebstrap, ostree or dracut running. Also for a
/// parent that died between fork and exec.
pub fn die_with_parent(c: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs between fork and exec and only makes two
    // async-signal-safe system calls.
    unsafe {
        c.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
}

/// Move this process into a mount namespace of its own (what `ostree
/// admin` does before remounting /sysroot writable). Must run before any
/// thread is started.
pub fn private_mount_namespace() -> Result<()> {
    // SAFETY: CLONE_NEWNS only detaches the mount table; it shares nothing
    // the Rust runtime relies on (unlike CLONE_FILES or CLONE_VM).
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .map_err(std::io::Error::from)
        .context("unshare(CLONE_NEWNS)")
}

/// FIFREEZE then FITHAW on the filesystem mounted at `mountpoint`: the
/// kernel writes everything of it to disk.
pub fn freeze_thaw(mountpoint: &Path) -> Result<()> {
    use rustix::ioctl::{NoArg, Opcode, ioctl, opcode};
    const FIFREEZE: Opcode = opcode::read_write::<CInt>(b'X', 119);
    const FITHAW: Opcode = opcode::read_write::<CInt>(b'X', 120);
    type CInt = i32;
    let f = std::fs::File::open(mountpoint)
        .with_context(|| format!("{}: cannot open", mountpoint.display()))?;
    // SAFETY: FIFREEZE and FITHAW take no argument; the fd is a directory
    // on the filesystem to freeze.
    match unsafe { ioctl(&f, NoArg::<FIFREEZE>::new()) } {
        Ok(()) => {}
        // Already frozen by someone else: thaw anyway.
        Err(rustix::io::Errno::BUSY) => {}
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("FIFREEZE {}", mountpoint.display()));
        }
    }
    unsafe { ioctl(&f, NoArg::<FITHAW>::new()) }
        .map_err(std::io::Error::from)
        .with_context(|| format!("FITHAW {}", mountpoint.display()))
}

/// A field of /proc/meminfo text (`MemTotal`, `MemAvailable`), in KiB.
pub fn meminfo_kib(meminfo: &str, field: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn meminfo_fields() {
        let text = "MemTotal:        2030712 kB\nMemAvailable:  1000 kB\nMemAvailableX: 5 kB\n";
        assert_eq!(super::meminfo_kib(text, "MemTotal"), Some(2030712));
        assert_eq!(super::meminfo_kib(text, "MemAvailable"), Some(1000));
        assert_eq!(super::meminfo_kib(text, "MemFree"), None);
    }

    #[test]
    fn freeze_opcodes_match_the_kernels() {
        use rustix::ioctl::opcode;
        // _IOWR('X', 119, int) and _IOWR('X', 120, int) from linux/fs.h.
        assert_eq!(opcode::read_write::<i32>(b'X', 119), 0xC004_5877);
        assert_eq!(opcode::read_write::<i32>(b'X', 120), 0xC004_5878);
    }

    /// The death signal follows the spawning thread: a child spawned from a
    /// thread that ends is killed at once.
    #[test]
    fn children_die_with_their_parent() {
        use std::os::unix::process::ExitStatusExt;
        let child = std::thread::spawn(|| {
            let mut c = std::process::Command::new("sleep");
            c.arg("30");
            super::die_with_parent(&mut c);
            c.spawn().unwrap()
        })
        .join()
        .unwrap();
        let mut child = child;
        let start = std::time::Instant::now();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
        assert!(start.elapsed().as_secs() < 10);
    }
}
