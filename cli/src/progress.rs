//! Progress on stderr for the long steps, with `indicatif`: only where stderr is a
//! terminal, only once a step has run about a second, and never with `--quiet`; so
//! scripts, pipes and quick runs see exactly the output they always did.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a step runs before its progress shows.
const DELAY: Duration = Duration::from_secs(1);
/// How often a shown bar or spinner redraws on its own (elapsed time, spinner).
const TICK: Duration = Duration::from_millis(120);

/// One step's progress: a bar of a known length, or a spinner. Hidden until the step
/// has run for [`DELAY`]; cleared when finished or dropped.
pub struct Progress {
    bar: ProgressBar,
    /// Set once finished, under the lock the reveal takes too, so a bar is never shown
    /// after it was cleared.
    finished: Arc<Mutex<bool>>,
}

impl Progress {
    /// A bar counting `len` `unit`s (rows, elements), labelled `message`.
    pub fn bar(enabled: bool, len: u64, unit: &str, message: &str) -> Self {
        let template = format!(
            "{{msg}} [{{wide_bar}}] {{human_pos}}/{{human_len}} {unit} ({{elapsed}}, {{eta}} left)"
        );
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        Self::start(enabled, Some(len), style, message)
    }

    /// A spinner for a step whose length is unknown, labelled `message`.
    pub fn spinner(enabled: bool, message: &str) -> Self {
        let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        Self::start(enabled, None, style, message)
    }

    fn start(enabled: bool, len: Option<u64>, style: ProgressStyle, message: &str) -> Self {
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden())
            .with_style(style)
            .with_message(message.to_string());
        let finished = Arc::new(Mutex::new(false));
        if enabled && std::io::stderr().is_terminal() {
            let (weak, finished) = (bar.downgrade(), Arc::clone(&finished));
            // A step that ends within DELAY is never drawn; a detached thread does not
            // keep the process alive.
            std::thread::spawn(move || {
                std::thread::sleep(DELAY);
                let Some(bar) = weak.upgrade() else { return };
                let finished = finished.lock().unwrap_or_else(|e| e.into_inner());
                if !*finished {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                    bar.enable_steady_tick(TICK);
                }
            });
        }
        Progress { bar, finished }
    }

    /// Counts `n` more units done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        *finished = true;
        self.bar.finish_and_clear();
    }
}
