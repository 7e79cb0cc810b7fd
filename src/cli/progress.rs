//! Progress bars (only on a TTY) and JSON output: the only code that knows about terminals.
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A byte progress bar on stderr when it is a terminal and the job is big enough to wait for;
/// hidden otherwise.
pub fn bytes_bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total < (64 << 20) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Prints `v` as pretty JSON on stdout.
pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Pull progress: a bar per layer on a TTY, one line per finished layer otherwise, nothing when
/// quiet.
pub struct PullProgress {
    mode: PullMode,
    bars: std::sync::Mutex<std::collections::HashMap<String, ProgressBar>>,
    multi: indicatif::MultiProgress,
}

enum PullMode {
    Quiet,
    Lines,
    Bars,
}

impl PullProgress {
    pub fn new(quiet: bool) -> PullProgress {
        let mode = if quiet {
            PullMode::Quiet
        } else if std::io::stderr().is_terminal() {
            PullMode::Bars
        } else {
            PullMode::Lines
        };
        PullProgress {
            mode,
            bars: Default::default(),
            multi: indicatif::MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        }
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl crate::image::Progress for PullProgress {
    fn start(&self, layer: &str, size: u64) {
        if let PullMode::Bars = self.mode {
            let pb = self.multi.add(ProgressBar::new(size));
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.set_message(short(layer).to_string());
            if let Ok(mut bars) = self.bars.lock() {
                bars.insert(layer.to_string(), pb);
            }
        }
    }

    fn bytes(&self, layer: &str, done: u64) {
        if let Ok(bars) = self.bars.lock() {
            if let Some(pb) = bars.get(layer) {
                pb.set_position(done);
            }
        }
    }

    fn finish(&self, layer: &str, how: &str) {
        match self.mode {
            PullMode::Quiet => {}
            PullMode::Lines => eprintln!("{}: {how}", short(layer)),
            PullMode::Bars => {
                let pb = self.bars.lock().ok().and_then(|mut b| b.remove(layer));
                match pb {
                    Some(pb) => pb.finish_with_message(format!("{} {how}", short(layer))),
                    None => {
                        let _ = self.multi.println(format!("{}: {how}", short(layer)));
                    }
                }
            }
        }
    }
}
