//! The report as data — sections of blocks — and its two renderings: one
//! self-contained HTML file and a Markdown file beside its SVG figures.

use std::fmt::Write;

/// One piece of a section.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A paragraph (plain text; `code` spans are written with backquotes).
    Para(String),
    /// A table: header and rows of cells.
    Table { head: Vec<String>, rows: Vec<Vec<String>> },
    /// A figure: an SVG drawing, its file name for the Markdown copy, and a caption.
    Figure { file: String, svg: String, caption: String },
    /// Preformatted text (an article excerpt, a generated sample).
    Pre(String),
    /// Horizontal probability bars: label, probability in [0, 1].
    Bars(Vec<(String, f64)>),
    /// A note that stands out (a course defect, a missing input).
    Note(String),
    /// A warning, in red: the run went wrong (it learned nothing).
    Alert(String),
}

/// One section of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Anchor, `s1` … `s7`.
    pub id: String,
    /// Heading.
    pub title: String,
    /// Content.
    pub blocks: Vec<Block>,
    /// What could not be written and the command that fills it; empty when complete.
    pub missing: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Document title.
    pub title: String,
    /// Lines under the title (run directory, preset, date).
    pub subtitle: Vec<String>,
    /// Sections in order.
    pub sections: Vec<Section>,
}

/// Escapes text for HTML and SVG.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes `text` and turns `code` spans into `<code>`.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", escape(part));
        } else {
            out.push_str(&escape(part));
        }
    }
    out
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#1f2328;line-height:1.5}
h1{font-size:1.8em;margin-bottom:.2em} h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
.sub{color:#57606a;margin:0} nav a{margin-right:1em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em} th,td{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f8fa;padding:.8em;white-space:pre-wrap;border-radius:6px;font-size:.9em}
code{background:#eff1f3;padding:0 .25em;border-radius:4px}
figure{margin:1em 0} figcaption{color:#57606a;font-size:.9em}
.note{background:#fff8c5;border-left:4px solid #d4a72c;padding:.5em .8em;margin:1em 0}
.missing{background:#ffebe9;border-left:4px solid #cf222e;padding:.5em .8em}
.alert{background:#ffebe9;border-left:4px solid #cf222e;color:#a40e26;font-weight:600;padding:.5em .8em;margin:1em 0}
.bars td{border:none;padding:.05em .5em} .bar{background:#0969da;height:.9em;display:inline-block;vertical-align:middle}
";

fn is_number(cell: &str) -> bool {
    let t = cell.trim().trim_end_matches('%').trim_end_matches('×');
    !t.is_empty()
        && t.chars().all(|c| c.is_ascii_digit() || " ,.−-+e\u{202f}".contains(c))
        && t.chars().any(|c| c.is_ascii_digit())
}

impl Report {
    /// One self-contained HTML file: inline CSS and SVG, nothing fetched.
    pub fn html(&self, lang: &str) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
            escape(&self.title),
            escape(&self.title)
        );
        for line in &self.subtitle {
            let _ = writeln!(out, "<p class=\"sub\">{}</p>", inline(line));
        }
        out.push_str("<nav>");
        for s in &self.sections {
            let _ = write!(out, "<a href=\"#{}\">{}</a>", s.id, escape(&s.title));
        }
        out.push_str("</nav>\n");
        for s in &self.sections {
            let _ = writeln!(out, "<section id=\"{}\">\n<h2>{}</h2>", s.id, escape(&s.title));
            for why in &s.missing {
                let _ = writeln!(out, "<p class=\"missing\">{}</p>", inline(why));
            }
            for block in &s.blocks {
                match block {
                    Block::Para(text) => {
                        let _ = writeln!(out, "<p>{}</p>", inline(text));
                    }
                    Block::Note(text) => {
                        let _ = writeln!(out, "<p class=\"note\">{}</p>", inline(text));
                    }
                    Block::Alert(text) => {
                        let _ = writeln!(out, "<p class=\"alert\" role=\"alert\">⚠ {}</p>", inline(text));
                    }
                    Block::Pre(text) => {
                        let _ = writeln!(out, "<pre>{}</pre>", escape(text));
                    }
                    Block::Table { head, rows } => {
                        out.push_str("<table>\n<tr>");
                        for h in head {
                            let _ = write!(out, "<th>{}</th>", inline(h));
                        }
                        out.push_str("</tr>\n");
                        for row in rows {
                            out.push_str("<tr>");
                            for cell in row {
                                let class = if is_number(cell) { " class=\"n\"" } else { "" };
                                let _ = write!(out, "<td{class}>{}</td>", inline(cell));
                            }
                            out.push_str("</tr>\n");
                        }
                        out.push_str("</table>\n");
                    }
                    Block::Figure { svg, caption, .. } => {
                        let _ =
                            writeln!(out, "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>", inline(caption));
                    }
                    Block::Bars(bars) => {
                        out.push_str("<table class=\"bars\">\n");
                        let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-12);
                        for (label, p) in bars {
                            let _ = writeln!(
                                out,
                                "<tr><td><code>{}</code></td><td class=\"n\">{:.1}%</td><td><span class=\"bar\" style=\"width:{:.1}px\"></span></td></tr>",
                                escape(label),
                                100.0 * p,
                                (300.0 * p / top).max(1.0)
                            );
                        }
                        out.push_str("</table>\n");
                    }
                }
            }
            out.push_str("</section>\n");
        }
        out.push_str("</body>\n</html>\n");
        out
    }

    /// Markdown, figures referenced as files beside it.
    pub fn markdown(&self) -> String {
        let mut out = format!("# {}\n\n", self.title);
        for line in &self.subtitle {
            let _ = writeln!(out, "{line}  ");
        }
        for s in &self.sections {
            let _ = write!(out, "\n## {}\n\n", s.title);
            for why in &s.missing {
                let _ = writeln!(out, "> **{why}**\n");
            }
            for block in &s.blocks {
                match block {
                    Block::Para(text) => {
                        let _ = writeln!(out, "{text}\n");
                    }
                    Block::Note(text) => {
                        let _ = writeln!(out, "> {text}\n");
                    }
                    Block::Alert(text) => {
                        let _ = writeln!(out, "> **⚠ {text}**\n");
                    }
                    Block::Pre(text) => {
                        let _ = writeln!(out, "```text\n{text}\n```\n");
                    }
                    Block::Table { head, rows } => {
                        let cell = |c: &String| c.replace('|', "\\|").replace('\n', " ");
                        let _ = writeln!(out, "| {} |", head.iter().map(cell).collect::<Vec<_>>().join(" | "));
                        let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
                        for row in rows {
                            let _ = writeln!(out, "| {} |", row.iter().map(cell).collect::<Vec<_>>().join(" | "));
                        }
                        out.push('\n');
                    }
                    Block::Figure { file, caption, .. } => {
                        let _ = writeln!(out, "![{caption}]({file})\n\n*{caption}*\n");
                    }
                    Block::Bars(bars) => {
                        out.push_str("```text\n");
                        for (label, p) in bars {
                            let _ = writeln!(
                                out,
                                "{:<18} {:>5.1}% {}",
                                format!("{label:?}"),
                                100.0 * p,
                                "█".repeat((40.0 * p).round() as usize)
                            );
                        }
                        out.push_str("```\n\n");
                    }
                }
            }
        }
        out
    }

    /// The figures to write beside the Markdown file.
    pub fn figures(&self) -> Vec<(&str, &str)> {
        self.sections
            .iter()
            .flat_map(|s| &s.blocks)
            .filter_map(|b| match b {
                Block::Figure { file, svg, .. } => Some((file.as_str(), svg.as_str())),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_text_and_marks_code_spans() {
        assert_eq!(inline("a <b> & `x<y`"), "a &lt;b&gt; &amp; <code>x&lt;y</code>");
    }

    #[test]
    fn numbers_align_right_and_words_do_not() {
        assert!(is_number("3 960") && is_number("8.5%") && is_number("-1.25") && is_number("1.5×"));
        assert!(!is_number("block 3") && !is_number("") && !is_number("%"));
    }
}
