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

/// Runs `work` over `items` on one scoped worker per entry of `states`,
/// each worker with its own state (a repo handle, a decompressor…): the
/// items are taken in order from one queue. An error stops every worker
/// from taking another item and is returned (if two workers fail at once,
/// the first worker's).
pub fn try_for_each<T: Sync, S: Send>(
    items: &[T],
    states: Vec<S>,
    work: impl Fn(&mut S, &T) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let queue = std::sync::Mutex::new(items.iter());
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = states
            .into_iter()
            .map(|mut state| {
                let (queue, failed, work) = (&queue, &failed, &work);
                s.spawn(move || -> anyhow::Result<()> {
                    while !failed.load(Ordering::Relaxed) {
                        let Some(item) = queue.lock().expect("queue lock").next() else {
                            break;
                        };
                        if let Err(e) = work(&mut state, item) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("worker thread panicked"))
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

#[cfg(test)]
mod tests {
    #[test]
    fn try_for_each_does_every_item_or_stops_at_an_error() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let items: Vec<usize> = (0..100).collect();
        let sum = AtomicUsize::new(0);
        super::try_for_each(&items, vec![0usize; 3], |seen, i| {
            *seen += 1;
            sum.fetch_add(*i, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!(sum.into_inner(), 4950);
        // One worker: items in order, nothing taken after the failing one.
        let done = AtomicUsize::new(0);
        let e = super::try_for_each(&items, vec![()], |(), i| {
            if *i == 10 {
                anyhow::bail!("item {i} failed");
            }
            done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "item 10 failed");
        assert_eq!(done.into_inner(), 10);
    }
}
