//! The exploration report: the seed notebook's lessons, written from a real
//! run directory. Every figure is read from the stages' artifacts (manifests,
//! metrics, samples, weights, the `explore` demos); a stage that has not run
//! leaves its section marked missing, with the command to run.
//!
//! Writes `RUN_DIR/report/index.html` (self-contained) and `report.md` with
//! its SVG figures beside it.

pub mod charts;
pub mod doc;
pub mod rows;
mod sections;

use std::path::PathBuf;
use std::str::FromStr;

use tp06_artifact::{RunDir, fs};

pub use doc::{Block, Report, Section};

/// The report's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// French, as the course.
    #[default]
    Fr,
    /// English.
    En,
}

impl Lang {
    /// `fr` or `en`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    /// The text in this language.
    pub fn t<'a>(self, fr: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Fr => fr,
            Lang::En => en,
        }
    }
}

impl FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fr" => Ok(Lang::Fr),
            "en" => Ok(Lang::En),
            other => Err(format!("unknown report language `{other}` (use `fr` or `en`)")),
        }
    }
}

/// Where the report went and what it lacks.
#[derive(Debug, Clone)]
pub struct Written {
    /// `report/index.html`.
    pub html: PathBuf,
    /// `report/report.md`.
    pub markdown: PathBuf,
    /// Sections written in full.
    pub complete: usize,
    /// Titles and reasons of the missing sections.
    pub missing: Vec<(String, String)>,
}

/// Report errors (writing only: missing inputs are sections marked missing).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run directory does not exist.
    #[error("run directory `{0}` does not exist; run the pipeline first (cargo xtask pipeline) or pass --run-dir")]
    NoRun(PathBuf),
    /// A file could not be written.
    #[error(transparent)]
    Fs(#[from] fs::FsError),
}

/// The directory the report is written to.
pub fn report_dir(run: &RunDir) -> PathBuf {
    run.root().join("report")
}

/// The demos' directory (`tp06 explore` writes there).
pub fn explore_dir(run: &RunDir) -> PathBuf {
    run.root().join("explore")
}

/// Builds the report of `run` without writing it.
pub fn build(run: &RunDir, lang: Lang) -> Result<Report, ReportError> {
    if !run.root().is_dir() {
        return Err(ReportError::NoRun(run.root().to_path_buf()));
    }
    Ok(sections::build(run, lang))
}

/// Builds and writes the report of `run`.
pub fn write(run: &RunDir, lang: Lang) -> Result<Written, ReportError> {
    let report = build(run, lang)?;
    let dir = report_dir(run);
    fs::create_dir_all(&dir)?;
    for (file, svg) in report.figures() {
        fs::write_atomic(&dir.join(file), svg.as_bytes())?;
    }
    let markdown = dir.join("report.md");
    fs::write_atomic(&markdown, report.markdown().as_bytes())?;
    let html = dir.join("index.html");
    fs::write_atomic(&html, report.html(lang.code()).as_bytes())?;
    let missing: Vec<(String, String)> =
        report.sections.iter().flat_map(|s| s.missing.iter().map(|why| (s.title.clone(), why.clone()))).collect();
    let complete = report.sections.iter().filter(|s| s.missing.is_empty()).count();
    Ok(Written { html, markdown, complete, missing })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_stages_gets_every_section_marked_missing_with_its_command() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let written = write(&run, Lang::En).unwrap();
        assert_eq!(written.complete, 0);
        assert_eq!(written.missing.len(), 7);
        let wants = ["data", "data", "vocab", "model", "model", "train", "sample"];
        for ((_, why), stage) in written.missing.iter().zip(wants) {
            assert!(why.contains(&format!("cargo xtask {stage} --run-dir")), "{why}");
        }
        let html = std::fs::read_to_string(&written.html).unwrap();
        assert_eq!(html.matches("class=\"missing\"").count(), 7);
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("lang=\"en\""));
        assert!(std::fs::read_to_string(&written.markdown).unwrap().contains("## 7. Generation"));
    }

    #[test]
    fn no_run_directory_is_an_error_and_languages_parse() {
        let dir = tempfile::tempdir().unwrap();
        let err = build(&RunDir::new(dir.path().join("nope")), Lang::Fr).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert_eq!("en".parse::<Lang>().unwrap(), Lang::En);
        assert!("de".parse::<Lang>().unwrap_err().contains("fr"));
    }
}
