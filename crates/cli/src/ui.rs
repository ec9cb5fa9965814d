//! Everything the binary shows people: logs, progress bars, errors.

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tp06_artifact::{Progress, ProgressTask};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

static BARS: OnceLock<MultiProgress> = OnceLock::new();
static QUIET: OnceLock<bool> = OnceLock::new();

fn bars() -> &'static MultiProgress {
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)))
}

/// Writes log lines above the progress bars.
#[derive(Clone, Copy)]
struct AboveBars;

struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.0);
        bars().suspend(|| {
            let _ = std::io::stderr().write_all(&bytes);
        });
    }
}

impl<'a> MakeWriter<'a> for AboveBars {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(Vec::new())
    }
}

/// Installs the log subscriber (`RUST_LOG` overrides the level).
pub fn init(verbosity: Verbosity) {
    let default = match verbosity {
        Verbosity::Quiet => "warn",
        Verbosity::Normal => "info",
        Verbosity::Verbose => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = QUIET.set(verbosity == Verbosity::Quiet);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        // Colour codes only for a terminal: a log redirected to a file stays plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(AboveBars)
        .try_init();
}

/// Prints a result for people (stdout), above any progress bar.
pub fn print(text: &str) {
    bars().suspend(|| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", text.trim_end());
    });
}

/// Prints an error and its whole chain of causes on one line, with its hint.
pub fn error(err: &anyhow::Error) {
    let mut message = String::from("error: ");
    message += &err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message += ": ";
            message += &cause;
        }
    }
    // One line, whatever the libraries put in their messages.
    let message = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    bars().suspend(|| eprintln!("{message}"));
}

/// Progress bars through indicatif on a terminal; where standard error is
/// not one (a CI log, `nohup`, `2> file`), a plain log line at a steady pace
/// instead ([`LogLines`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Bars;

struct Bar(ProgressBar);

impl Progress for Bars {
    fn begin(&self, name: &str, total: u64) -> Box<dyn ProgressTask> {
        if *QUIET.get().unwrap_or(&false) {
            return Box::new(tp06_artifact::NoProgress);
        }
        if !std::io::stderr().is_terminal() {
            return Box::new(LogLines::start(name, total, log_every()));
        }
        let bar = bars().add(if total == 0 { ProgressBar::new_spinner() } else { ProgressBar::new(total) });
        let template = if total == 0 {
            "{spinner} {prefix} [{elapsed_precise}] {pos} {msg}"
        } else {
            "{prefix} [{elapsed_precise}] [{wide_bar}] {pos}/{len} ({eta}) {msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        Box::new(Bar(bar))
    }
}

impl ProgressTask for Bar {
    fn set_position(&mut self, position: u64) {
        self.0.set_position(position);
    }
    fn set_message(&mut self, message: String) {
        self.0.set_message(message);
    }
    fn finish(&mut self) {
        self.0.finish();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.abandon();
        }
    }
}

/// The pace of [`LogLines`]: `TP06_PROGRESS_EVERY` seconds, 10 by default.
fn log_every() -> Duration {
    let seconds = std::env::var("TP06_PROGRESS_EVERY").ok().and_then(|v| v.trim().parse::<f64>().ok());
    Duration::from_secs_f64(seconds.filter(|s| s.is_finite() && *s > 0.0).unwrap_or(10.0))
}

/// Where a task stands, as [`LogLines`] prints it.
struct Standing {
    name: String,
    total: u64,
    position: u64,
    message: String,
    started: Instant,
    /// Lines printed so far.
    lines: usize,
}

impl Standing {
    /// `train: 12/104 (11.5 %), 1m20s, ETA 9m12s — loss 3.1`; without a total,
    /// `train: 12, 1m20s`.
    fn line(&self) -> String {
        let elapsed = self.started.elapsed();
        let mut line = format!("{}: {}", self.name, self.position);
        if self.total > 0 {
            let done = self.position.min(self.total) as f64 / self.total as f64;
            line += &format!("/{} ({:.1} %), {}", self.total, 100.0 * done, duration(elapsed));
            if done > 0.0 && done < 1.0 {
                line += &format!(", ETA {}", duration(elapsed.mul_f64((1.0 - done) / done)));
            }
        } else {
            line += &format!(", {}", duration(elapsed));
        }
        if !self.message.is_empty() {
            line += " — ";
            line += &self.message;
        }
        line
    }
}

impl Standing {
    /// `train: done, 104/104 in 3m05s`, or `train: ended at 12/104 after 1m20s`.
    fn end(&self) -> String {
        let (name, position, total) = (&self.name, self.position, self.total);
        let elapsed = duration(self.started.elapsed());
        match total {
            0 => format!("{name}: done, {position} in {elapsed}"),
            _ if position >= total => format!("{name}: done, {position}/{total} in {elapsed}"),
            _ => format!("{name}: ended at {position}/{total} after {elapsed}"),
        }
    }
}

/// `2.5s`, `45s`, `3m05s`, `2h07m`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..10 => format!("{:.1}s", d.as_secs_f64()),
        10..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// A task shown as log lines: every `every`, a thread of its own logs where
/// the task stands — also while one piece of the work (a long step, a big
/// tensor) holds the task's own thread — so that a redirected log shows the
/// run alive. A task that logged at all logs its end.
struct LogLines {
    standing: Arc<Mutex<Standing>>,
    ticker: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl LogLines {
    fn start(name: &str, total: u64, every: Duration) -> Self {
        let standing = Arc::new(Mutex::new(Standing {
            name: name.to_string(),
            total,
            position: 0,
            message: String::new(),
            started: Instant::now(),
            lines: 0,
        }));
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = Arc::clone(&standing);
        let ticker = std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let mut standing = shared.lock().unwrap_or_else(|e| e.into_inner());
                standing.lines += 1;
                tracing::info!("{}", standing.line());
            }
        });
        Self { standing, ticker: Some((stop, ticker)) }
    }

    fn standing(&self) -> std::sync::MutexGuard<'_, Standing> {
        self.standing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ProgressTask for LogLines {
    fn set_position(&mut self, position: u64) {
        self.standing().position = position;
    }
    fn set_message(&mut self, message: String) {
        self.standing().message = message;
    }
    fn finish(&mut self) {
        if !self.stop_ticker() {
            return;
        }
        let standing = self.standing();
        if standing.lines > 0 {
            tracing::info!("{}", standing.end());
        }
    }
}

impl LogLines {
    /// Stops the ticker's thread; false when it was already stopped.
    fn stop_ticker(&mut self) -> bool {
        let Some((stop, ticker)) = self.ticker.take() else { return false };
        let _ = stop.send(());
        let _ = ticker.join();
        true
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        self.stop_ticker();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(total: u64, position: u64, seconds: u64, message: &str) -> Standing {
        let started = Instant::now() - Duration::from_secs(seconds);
        Standing { name: "train".into(), total, position, message: message.into(), started, lines: 1 }
    }

    #[test]
    fn durations_read_as_seconds_minutes_and_hours() {
        assert_eq!(duration(Duration::from_millis(2540)), "2.5s");
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(2 * 3600 + 7 * 60 + 59)), "2h07m");
    }

    /// A quarter done in 60 s: three quarters to go at the same pace, 180 s.
    #[test]
    fn a_log_line_says_what_how_far_and_the_eta() {
        assert_eq!(standing(104, 26, 60, "loss 3.1").line(), "train: 26/104 (25.0 %), 1m00s, ETA 3m00s — loss 3.1");
        assert_eq!(standing(0, 7, 15, "").line(), "train: 7, 15s");
        assert_eq!(standing(10, 0, 15, "").line(), "train: 0/10 (0.0 %), 15s", "no ETA before the first unit");
        assert_eq!(standing(10, 10, 15, "").end(), "train: done, 10/10 in 15s");
        assert_eq!(standing(10, 4, 15, "").end(), "train: ended at 4/10 after 15s");
    }

    /// The ticker logs while the task's own thread does nothing, and stops
    /// with the task.
    #[test]
    fn log_lines_tick_on_their_own_thread_and_stop_with_the_task() {
        let mut task = LogLines::start("eval", 4, Duration::from_millis(20));
        task.set_position(1);
        std::thread::sleep(Duration::from_millis(150));
        task.finish();
        let lines = task.standing().lines;
        assert!(lines >= 2, "{lines} lines in 150 ms at 20 ms");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(task.standing().lines, lines, "no line after the end");
    }
}
