//! The report's drawings, as SVG strings: line charts (plotters), bar charts
//! and the model diagram (written directly).

use plotters::prelude::*;

use crate::doc::escape;
use std::fmt::Write;

/// One line of a chart.
pub struct Series<'a> {
    /// Legend.
    pub label: &'a str,
    /// `(x, y)` points in order.
    pub points: Vec<(f64, f64)>,
    /// Line colour.
    pub color: RGBColor,
    /// Whether to mark every point.
    pub markers: bool,
}

/// Blue, red, green, orange: the report's palette.
pub const PALETTE: [RGBColor; 4] = [RGBColor(9, 105, 218), RGBColor(207, 34, 46), RGBColor(26, 127, 55), RGBColor(191, 135, 0)];

/// A line chart of `series`, with an optional labelled point.
pub fn line_chart(title: &str, x_desc: &str, y_desc: &str, series: &[Series], mark: Option<((f64, f64), String)>) -> Result<String, String> {
    let points: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).collect();
    if points.is_empty() {
        return Err("no points to draw".into());
    }
    let (x_lo, x_hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (y_lo, y_hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let x_hi = if x_hi > x_lo { x_hi } else { x_lo + 1.0 };
    let pad = ((y_hi - y_lo) * 0.06).max(y_hi.abs() * 1e-3).max(1e-12);
    let y_lo = if y_lo >= 0.0 && y_lo - pad < 0.0 { 0.0 } else { y_lo - pad };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 360)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x_lo..x_hi, y_lo..(y_hi + pad))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .y_label_formatter(&|v| if v.abs() < 1e-2 && *v != 0.0 { format!("{v:.0e}") } else { format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string() })
            .draw()
            .map_err(|e| err(&e))?;
        for s in series {
            let color = s.color;
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(s.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            if s.markers {
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| err(&e))?;
            }
        }
        if let Some((p, label)) = mark {
            chart
                .draw_series(std::iter::once(Circle::new(p, 6, PALETTE[2].stroke_width(2))))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(|(x, y)| Circle::new((x + 10, y), 5, PALETTE[2].stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(responsive(svg))
}

/// Lets an SVG of fixed size shrink with the page.
fn responsive(svg: String) -> String {
    match svg.find("<svg") {
        Some(at) if !svg[at..].split('>').next().unwrap_or("").contains("style=") => {
            format!("{}<svg style=\"max-width:100%;height:auto\"{}", &svg[..at], &svg[at + 4..])
        }
        _ => svg,
    }
}

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
    let _ = writeln!(svg, "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>", top + plot_h, w - 20.0, top + plot_h);
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
    for (i, (fill, label)) in [("#fb8f44", legend[0]), ("url(#part)", legend[1]), ("#d0d7de", legend[2])].iter().enumerate() {
        let x = 120.0 + i as f64 * 200.0;
        let _ = writeln!(svg, "<rect x=\"{x}\" y=\"{}\" width=\"18\" height=\"14\" fill=\"{fill}\" stroke=\"#57606a\"/><text x=\"{}\" y=\"{y}\">{}</text>", y - 11.0, x + 24.0, escape(label));
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
            Part { label: "wte".into(), params: 10, trainable: 0, detail: String::new() },
            Part { label: "block 0".into(), params: 5, trainable: 5, detail: String::new() },
        ];
        let d = model_diagram(&parts, ["a", "b", "c"]);
        assert!(d.find("block 0").unwrap() < d.find("wte").unwrap(), "output drawn above input");
    }
}
