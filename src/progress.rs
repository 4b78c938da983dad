//! Progress of a pass over the rows: a bar (rows/s, ETA) when stderr is a terminal, otherwise a
//! plain line every ~10 s (CI logs, `nohup`, cluster jobs), so a long run never looks silent.
//! `AUTOLABEL_LOCAL_PROGRESS_INTERVAL` (seconds) changes the interval of the plain lines.

use indicatif::{ProgressBar, ProgressStyle};
use std::cell::Cell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Seconds between plain progress lines unless the environment says otherwise.
const DEFAULT_INTERVAL: f64 = 10.0;

pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    /// Rows done before this pass started (taken from the journal).
    base: usize,
    done: Cell<usize>,
    started: Instant,
    last_line: Cell<Instant>,
    interval: Duration,
}

impl Progress {
    /// Progress over `rows` rows of which `done` are already done.
    pub fn new(rows: usize, done: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(rows as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  ETA {eta}")
                    .expect("valid progress template"),
            );
            bar.inc(done as u64);
            bar.reset_eta();
            bar
        });
        let interval = std::env::var("AUTOLABEL_LOCAL_PROGRESS_INTERVAL")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(DEFAULT_INTERVAL);
        let now = Instant::now();
        Progress {
            bar,
            total: rows,
            base: done,
            done: Cell::new(done),
            started: now,
            last_line: Cell::new(now),
            interval: Duration::from_secs_f64(interval),
        }
    }

    pub fn inc(&self, n: usize) {
        self.done.set(self.done.get() + n);
        match &self.bar {
            Some(bar) => bar.inc(n as u64),
            None => {
                if self.last_line.get().elapsed() >= self.interval {
                    self.last_line.set(Instant::now());
                    eprintln!("{}", self.line());
                }
            }
        }
    }

    /// `progress: 120/2000 rows, 3.10 rows/s, ETA 10m 06s`.
    fn line(&self) -> String {
        let done = self.done.get();
        let secs = self.started.elapsed().as_secs_f64();
        let rate = (done - self.base) as f64 / secs.max(1e-9);
        let eta = if rate > 0.0 {
            let left = (self.total.saturating_sub(done)) as f64 / rate;
            format!("{}m {:02}s", (left / 60.0) as u64, (left % 60.0) as u64)
        } else {
            "unknown".into()
        };
        format!(
            "progress: {done}/{} rows, {rate:.2} rows/s, ETA {eta}",
            self.total
        )
    }

    pub fn finish_and_clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_names_rows_rate_and_eta() {
        let p = Progress {
            bar: None,
            total: 100,
            base: 10,
            done: Cell::new(10),
            started: Instant::now() - Duration::from_secs(10),
            last_line: Cell::new(Instant::now()),
            interval: Duration::from_secs(3600),
        };
        p.inc(20);
        let line = p.line();
        assert!(line.starts_with("progress: 30/100 rows, 2.0"), "{line}");
        assert!(
            line.ends_with("ETA 0m 35s") || line.ends_with("ETA 0m 34s"),
            "{line}"
        );
    }
}
