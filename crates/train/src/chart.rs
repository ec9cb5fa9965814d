//! Line charts as SVG strings (plotters): the training stage's `loss.svg` and
//! the report's curves draw with the same code.

use plotters::prelude::*;

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
pub const PALETTE: [RGBColor; 4] =
    [RGBColor(9, 105, 218), RGBColor(207, 34, 46), RGBColor(26, 127, 55), RGBColor(191, 135, 0)];

/// Why a chart could not be drawn.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChartError {
    /// No series has a point.
    #[error("no points to draw")]
    NoPoints,
    /// The plotting library failed.
    #[error("{0}")]
    Draw(String),
}

/// A line chart of `series`, with an optional labelled point.
pub fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    mark: Option<((f64, f64), String)>,
) -> Result<String, ChartError> {
    let points: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).collect();
    if points.is_empty() {
        return Err(ChartError::NoPoints);
    }
    let (x_lo, x_hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (y_lo, y_hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let x_hi = if x_hi > x_lo { x_hi } else { x_lo + 1.0 };
    let pad = ((y_hi - y_lo) * 0.06).max(y_hi.abs() * 1e-3).max(1e-12);
    let y_lo = if y_lo >= 0.0 && y_lo - pad < 0.0 { 0.0 } else { y_lo - pad };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 360)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| ChartError::Draw(e.to_string());
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
            .y_label_formatter(&|v| {
                if v.abs() < 1e-2 && *v != 0.0 {
                    format!("{v:.0e}")
                } else {
                    format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string()
                }
            })
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
