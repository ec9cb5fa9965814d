//! Everything the binary shows people: logs, progress bars, errors.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

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

/// Progress bars through indicatif.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bars;

struct Bar(ProgressBar);

impl Progress for Bars {
    fn begin(&self, name: &str, total: u64) -> Box<dyn ProgressTask> {
        if *QUIET.get().unwrap_or(&false) {
            return Box::new(tp06_artifact::NoProgress);
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
