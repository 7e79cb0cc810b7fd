//! The worker pool of pull and push: up to four threads take the layers' indices in turn; the
//! first error stops the others and is returned.
use super::{Error, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `work(i)` for every `i` in `0..n` on `jobs` threads (clamped to 1..=4 and to `n`);
/// returns the results in index order, or the first error. `store_root` names the store in the
/// error for a worker that stopped without a result.
pub(super) fn for_each_layer<T: Send>(
    n: usize,
    jobs: usize,
    store_root: &Path,
    work: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let results: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let jobs = jobs.clamp(1, 4).min(n.max(1));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n || failed.load(Ordering::SeqCst) {
                    break;
                }
                match work(i) {
                    Ok(r) => {
                        if let Ok(mut slot) = results[i].lock() {
                            *slot = Some(r);
                        }
                    }
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let out: Vec<T> = results
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect();
    if out.len() != n {
        return Err(Error::BadImage {
            path: store_root.to_path_buf(),
            why: "a layer worker stopped without a result".into(),
        });
    }
    Ok(out)
}
