//! Readers for the article and name tables, with errors that name the file,
//! the column and the row.
//!
//! Formats, picked by extension: `.parquet` (polars), `.jsonl`/`.json` (one JSON
//! object per line), `.csv` (with a header), and, for names only, `.txt` (one
//! name per line). A directory stands for every `.parquet` file under it.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::DataError;

/// One article of the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    /// The article's title (a Pokémon name for the articles that are kept).
    pub title: String,
    /// The article's text, the only part trained on.
    pub content: String,
}

/// The table formats this stage reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Parquet,
    JsonLines,
    Csv,
    Text,
}

fn format_of(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "parquet" => Some(Format::Parquet),
        "jsonl" | "json" | "ndjson" => Some(Format::JsonLines),
        "csv" => Some(Format::Csv),
        "txt" => Some(Format::Text),
        _ => None,
    }
}

/// String columns read from one or more files.
struct Table {
    files: Vec<PathBuf>,
    columns: Vec<Vec<String>>,
}

fn describe(files: &[PathBuf]) -> String {
    match files {
        [one] => one.display().to_string(),
        many => format!("{} (and {} more files)", many[0].display(), many.len() - 1),
    }
}

/// Reads the string columns `wanted` from `paths` (concatenated in order).
fn read_table(paths: &[PathBuf], wanted: &[&str], field: &'static str) -> Result<Table, DataError> {
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); wanted.len()];
    for path in paths {
        let format = format_of(path).ok_or_else(|| DataError::UnsupportedFormat { field, path: path.clone() })?;
        let part = match format {
            Format::Parquet | Format::Csv => read_polars(path, format, wanted, field)?,
            Format::JsonLines => read_jsonl(path, wanted, field)?,
            Format::Text if wanted == ["name"] => vec![read_lines(path, field)?],
            Format::Text => return Err(DataError::UnsupportedFormat { field, path: path.clone() }),
        };
        for (all, new) in columns.iter_mut().zip(part) {
            all.extend(new);
        }
    }
    Ok(Table { files: paths.to_vec(), columns })
}

fn read_polars(
    path: &Path,
    format: Format,
    wanted: &[&str],
    field: &'static str,
) -> Result<Vec<Vec<String>>, DataError> {
    let unreadable = |reason: String| DataError::Unreadable { field, path: path.to_path_buf(), reason };
    let file = File::open(path).map_err(|e| DataError::Open { field, path: path.to_path_buf(), source: e })?;
    let df = match format {
        Format::Parquet => ParquetReader::new(file).finish(),
        Format::Csv => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0)) // every column as a string
            .into_reader_with_file_handle(file)
            .finish(),
        _ => unreachable!("only parquet and csv go through polars"),
    }
    .map_err(|e| unreadable(e.to_string()))?;
    let available: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    wanted
        .iter()
        .map(|&name| {
            let column = df.column(name).map_err(|_| DataError::MissingColumn {
                field,
                path: path.to_path_buf(),
                column: name.to_string(),
                available: available.clone(),
            })?;
            let strings = column.str().map_err(|_| DataError::WrongType {
                field,
                path: path.to_path_buf(),
                column: name.to_string(),
                found: column.dtype().to_string(),
            })?;
            let mut values = Vec::with_capacity(strings.len());
            for (row, value) in strings.iter().enumerate() {
                match value {
                    Some(v) => values.push(v.to_string()),
                    None => {
                        return Err(DataError::NullValue {
                            field,
                            path: path.to_path_buf(),
                            column: name.to_string(),
                            row,
                            count: strings.null_count(),
                        });
                    }
                }
            }
            Ok(values)
        })
        .collect()
}

fn read_jsonl(path: &Path, wanted: &[&str], field: &'static str) -> Result<Vec<Vec<String>>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Open { field, path: path.to_path_buf(), source: e })?;
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); wanted.len()];
    let mut first_row = true;
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bad = |reason: String| DataError::BadLine { field, path: path.to_path_buf(), line: line_no, reason };
        let text = std::str::from_utf8(line).map_err(|e| bad(format!("not valid UTF-8 ({e})")))?;
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
        let object = value.as_object().ok_or_else(|| bad("expected a JSON object per line".into()))?;
        for (column, name) in columns.iter_mut().zip(wanted) {
            match object.get(*name) {
                Some(serde_json::Value::String(s)) => column.push(s.clone()),
                None if first_row => {
                    return Err(DataError::MissingColumn {
                        field,
                        path: path.to_path_buf(),
                        column: name.to_string(),
                        available: object.keys().cloned().collect(),
                    });
                }
                None | Some(serde_json::Value::Null) => {
                    return Err(bad(format!("`{name}` is missing or null; every row needs it")));
                }
                Some(other) => {
                    return Err(bad(format!("`{name}` is {}, expected a string", json_kind(other))));
                }
            }
        }
        first_row = false;
    }
    Ok(columns)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn read_lines(path: &Path, field: &'static str) -> Result<Vec<String>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Open { field, path: path.to_path_buf(), source: e })?;
    let mut names = Vec::new();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|e| DataError::BadLine {
            field,
            path: path.to_path_buf(),
            line: index + 1,
            reason: format!("not valid UTF-8 ({e})"),
        })?;
        if !text.trim().is_empty() {
            names.push(text.to_string());
        }
    }
    Ok(names)
}

/// Expands a local source into the files to read: a file as is, a directory as
/// every `.parquet` file under it (sorted).
pub fn local_files(path: &Path, field: &'static str) -> Result<Vec<PathBuf>, DataError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.exists() {
        return Err(DataError::Open {
            field,
            path: path.to_path_buf(),
            // The OS's own words ("No such file or directory"), not the kind's.
            source: std::fs::metadata(path).err().unwrap_or_else(|| std::io::ErrorKind::NotFound.into()),
        });
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| DataError::Open { field, path: dir.clone(), source: e })?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if format_of(&p) == Some(Format::Parquet) {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(DataError::UnsupportedFormat { field, path: path.to_path_buf() });
    }
    Ok(files)
}

/// Reads articles (`title`, `content`) from `files`.
pub fn read_articles(files: &[PathBuf]) -> Result<Vec<Article>, DataError> {
    let table = read_table(files, &["title", "content"], "data.articles")?;
    let mut columns = table.columns.into_iter();
    let (titles, contents) = (columns.next().unwrap_or_default(), columns.next().unwrap_or_default());
    if titles.is_empty() {
        return Err(DataError::Empty { field: "data.articles", what: "articles", path: describe(&table.files) });
    }
    Ok(titles.into_iter().zip(contents).map(|(title, content)| Article { title, content }).collect())
}

/// Reads names (`name` column, or one per line in a `.txt`) from `files`.
pub fn read_names(files: &[PathBuf]) -> Result<Vec<String>, DataError> {
    let table = read_table(files, &["name"], "data.names")?;
    let names = table.columns.into_iter().next().unwrap_or_default();
    if names.iter().all(|n| n.trim().is_empty()) {
        return Err(DataError::Empty { field: "data.names", what: "names", path: describe(&table.files) });
    }
    Ok(names)
}

/// Writes articles as a parquet table (`title`, `content`).
pub fn write_articles(path: &Path, articles: &[Article]) -> Result<(), DataError> {
    let titles: Vec<&str> = articles.iter().map(|a| a.title.as_str()).collect();
    let contents: Vec<&str> = articles.iter().map(|a| a.content.as_str()).collect();
    write_parquet(
        path,
        vec![Column::new("title".into(), titles), Column::new("content".into(), contents)],
        articles.len(),
    )
}

/// Writes names as a parquet table (`name`).
pub fn write_names(path: &Path, names: &[String]) -> Result<(), DataError> {
    write_parquet(path, vec![Column::new("name".into(), names)], names.len())
}

fn write_parquet(path: &Path, columns: Vec<Column>, height: usize) -> Result<(), DataError> {
    let mut df = DataFrame::new(height, columns)
        .map_err(|e| DataError::Write { path: path.to_path_buf(), reason: e.to_string() })?;
    tp06_artifact::fs::write_atomic_with(path, |writer| {
        ParquetWriter::new(writer)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(&mut df)
            .map(|_| ())
            .map_err(|e| DataError::Write { path: path.to_path_buf(), reason: e.to_string() })
    })
}

/// Reads the `train.parquet` / `valid.parquet` artifact of the data stage.
pub fn read_articles_artifact(path: &Path) -> Result<Vec<Article>, DataError> {
    read_articles(&[path.to_path_buf()])
}
