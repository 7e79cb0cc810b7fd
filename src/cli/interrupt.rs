//! Ctrl-C (SIGINT), SIGTERM or SIGHUP during a command that writes temp files: it says
//! "interrupted", removes its own temp files (in the store and beside an output file) and exits
//! with 128 + the signal's number, as a shell reports it — instead of dying with its temp files
//! left for the next `prune`. (Temp files of a process killed harder are swept by the next
//! command that takes the store's lock: their owner pid is dead.)
use std::path::{Path, PathBuf};

use crate::mount::daemon;
use crate::store::Store;

/// Handles the signals from now on, in a thread of their own; call it before the command starts
/// threads (they inherit the blocked mask, so the signal goes to the handler alone).
/// `beside`: the directory of an output file written through a temp file (`create`, `pull -o`).
pub fn clean_up_on_interrupt(store: Option<&Store>, beside: Option<&Path>) {
    let Ok(set) = daemon::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]) else {
        return;
    };
    let store = store.cloned();
    let beside: Option<PathBuf> = beside.map(|p| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    });
    std::thread::spawn(move || {
        let Ok(sig) = daemon::sigwait(&set) else {
            return;
        };
        let mut removed = store.as_ref().map_or(0, Store::remove_own_temp_files);
        if let Some(d) = &beside {
            removed += remove_own_temp_files_in(d);
        }
        eprintln!("\nbfcfs: interrupted ({removed} temp files removed)");
        std::process::exit(128 + sig);
    });
}

/// Removes `.NAME.pPID.….tmp` files of this process in `dir`.
fn remove_own_temp_files_in(dir: &Path) -> u64 {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            && name.ends_with(".tmp")
            && crate::atomic_file::temp_owner(&name) == Some(me)
            && std::fs::remove_file(e.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}
