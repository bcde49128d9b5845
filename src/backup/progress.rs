//! Progress of long dumps and restores on a terminal: a bar of bytes where the size is
//! known, a spinner with the bytes so far where it is not. Nothing is drawn when stderr
//! is not a terminal, nor for work that ends within half a second (a flash of a bar on
//! every quick run would be noise).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before its progress is shown.
const QUIET_FOR: Duration = Duration::from_millis(500);

/// The progress of one dump or restore; cleared from the terminal when dropped.
pub(crate) struct Progress {
    bar: ProgressBar,
    started: Instant,
    shown: bool,
}

impl Progress {
    /// Progress of `message` (`backing up the database`), `total` bytes when known.
    pub(crate) fn new(message: &str, total: Option<u64>) -> Progress {
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
                .with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()).with_style(
                ProgressStyle::with_template("{spinner} {msg}: {bytes} ({bytes_per_sec})")
                    .expect("a valid template"),
            ),
        };
        bar.set_message(message.to_string());
        Progress {
            bar,
            started: Instant::now(),
            shown: false,
        }
    }

    /// `done` bytes so far (of `total`, when it became known or changed).
    pub(crate) fn set(&mut self, done: u64, total: Option<u64>) {
        if let Some(total) = total {
            self.bar.set_length(total);
        }
        if !self.shown && (self.started.elapsed() >= QUIET_FOR || test_only_at_once()) {
            self.shown = true;
            // Hidden by indicatif itself when stderr is not a terminal.
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            if self.bar.length().is_none() {
                self.bar.enable_steady_tick(Duration::from_millis(120));
            }
            self.bar.set_position(done);
            self.bar.tick();
        } else {
            self.bar.set_position(done);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Test-only: `UPGRADER_TEST_ONLY_PROGRESS_AT_ONCE` shows progress without waiting, so a
/// test on a pseudo-terminal sees it for quick work. Debug builds only.
fn test_only_at_once() -> bool {
    cfg!(debug_assertions) && std::env::var_os("UPGRADER_TEST_ONLY_PROGRESS_AT_ONCE").is_some()
}
