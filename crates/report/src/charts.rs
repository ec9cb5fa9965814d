//! The report's drawings, as SVG strings: line charts (the training stage's,
//! [`tp06_train::chart`]), bar charts and the model diagram (written directly).

use crate::doc::escape;
use std::fmt::Write;

pub use tp06_train::chart::{PALETTE, Series, line_chart};

/// A vertical bar chart: one bar per `(label, value)`.
pub fn bar_chart(title: &str, x_desc: &str, y_desc: &str, bars: &[(String, f64)]) -> String {
    let (w, h, left, bottom, top) = (760.0, 320.0, 60.0, 50.0, 40.0);
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-12);
    let plot_w = w - left - 20.0;
    let plot_h = h - bottom - top;
    let slot = plot_w / bars.len().max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" style=\"max-width:100%;height:auto\" font-family=\"sans-serif\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" font-size=\"18\" text-anchor=\"middle\">{}</text>\n",
        w / 2.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        top + plot_h,
        w - 20.0,
        top + plot_h
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let bh = plot_h * value / max;
        let x = left + slot * i as f64 + slot * 0.15;
        let _ = writeln!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#0969da\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\n<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
            top + plot_h - bh,
            slot * 0.7,
            x + slot * 0.35,
            top + plot_h - bh - 4.0,
            fmt_value(*value),
            x + slot * 0.35,
            top + plot_h + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"13\" text-anchor=\"middle\">{}</text>\n<text x=\"16\" y=\"{}\" font-size=\"13\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n</svg>",
        left + plot_w / 2.0,
        h - 10.0,
        escape(x_desc),
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        escape(y_desc)
    );
    svg
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// One box of the model diagram.
pub struct Part {
    /// What it is (`wte`, `block 3` …).
    pub label: String,
    /// Parameters.
    pub params: usize,
    /// Parameters that train.
    pub trainable: usize,
    /// Text beside the box.
    pub detail: String,
}

/// The model from input to output, one box per part, coloured by what trains:
/// grey frozen, orange trained, striped when only some of it trains.
pub fn model_diagram(parts: &[Part], legend: [&str; 3]) -> String {
    let (w, row, gap) = (760.0, 26.0, 4.0);
    let h = 40.0 + parts.len() as f64 * (row + gap) + 40.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" style=\"max-width:100%;height:auto\" font-family=\"sans-serif\" font-size=\"13\">\n<defs><pattern id=\"part\" width=\"8\" height=\"8\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"8\" height=\"8\" fill=\"#d0d7de\"/><rect width=\"4\" height=\"8\" fill=\"#fb8f44\"/></pattern></defs>\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    );
    let colour = |p: &Part| {
        if p.trainable == 0 {
            "#d0d7de"
        } else if p.trainable == p.params {
            "#fb8f44"
        } else {
            "url(#part)"
        }
    };
    // Output at the top, input at the bottom, as the data flows upward.
    for (i, part) in parts.iter().rev().enumerate() {
        let y = 30.0 + i as f64 * (row + gap);
        let _ = writeln!(
            svg,
            "<rect x=\"200\" y=\"{y}\" width=\"360\" height=\"{row}\" rx=\"4\" fill=\"{}\" stroke=\"#57606a\"/>\n<text x=\"380\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n<text x=\"575\" y=\"{:.1}\">{}</text>",
            colour(part),
            y + row * 0.68,
            escape(&part.label),
            y + row * 0.68,
            escape(&part.detail)
        );
    }
    let y = h - 24.0;
    for (i, (fill, label)) in
        [("#fb8f44", legend[0]), ("url(#part)", legend[1]), ("#d0d7de", legend[2])].iter().enumerate()
    {
        let x = 120.0 + i as f64 * 200.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"18\" height=\"14\" fill=\"{fill}\" stroke=\"#57606a\"/><text x=\"{}\" y=\"{y}\">{}</text>",
            y - 11.0,
            x + 24.0,
            escape(label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// `1234567` → `1 234 567` (narrow no-break spaces, readable in both languages).
pub fn group_digits(n: usize) -> String {
    tp06_artifact::group_digits(n, '\u{202f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_group_by_three() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_016_841_728), "1\u{202f}016\u{202f}841\u{202f}728");
    }

    #[test]
    fn charts_are_svg_and_refuse_nothing_to_draw() {
        let s = Series { label: "a", points: vec![(0.0, 1.0), (1.0, 2.0)], color: PALETTE[0], markers: true };
        let svg = line_chart("t", "x", "y", &[s], Some(((1.0, 2.0), "best".into()))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("max-width:100%") && svg.contains("best"));
        assert!(line_chart("t", "x", "y", &[], None).is_err());
        let bars = bar_chart("b", "x", "y", &[("1".into(), 3.0), ("2".into(), 0.0)]);
        assert_eq!(bars.matches("<rect").count(), 3);
        let parts = [
            Part { label: "embeddings".into(), params: 10, trainable: 0, detail: String::new() },
            Part { label: "block 0".into(), params: 5, trainable: 5, detail: String::new() },
        ];
        let d = model_diagram(&parts, ["a", "b", "c"]);
        assert!(d.find("block 0").unwrap() < d.find("embeddings").unwrap(), "output drawn above input");
    }
}
