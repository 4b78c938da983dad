//! Calibration charts with plotters: a reliability diagram (accuracy against confidence, before and
//! after calibration) and accuracy against completion rate for every confidence method. SVG or
//! PNG by the file's extension; text needs a TrueType font, found among the system's fonts or
//! named by AUTOLABEL_LOCAL_FONT.

use crate::calibration::{Bin, CurvePoint};
use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a font once per process for plotters' text.
fn ensure_font() -> Result<()> {
    static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FONT.get_or_init(|| {
        let wanted = std::env::var_os("AUTOLABEL_LOCAL_FONT").map(PathBuf::from);
        let path = match &wanted {
            Some(p) => p.clone(),
            None => match FONT_CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()) {
                Some(p) => p,
                None => return Err(format!(
                    "no TrueType font found for the chart text (looked in {}); set AUTOLABEL_LOCAL_FONT to a .ttf file or pass --no-plots",
                    FONT_CANDIDATES.join(", ")
                )),
            },
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read font {} (AUTOLABEL_LOCAL_FONT): {e}", path.display()))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a TrueType font", path.display()))?;
        Ok(path)
    });
    found.as_ref().map(|_| ()).map_err(|e| anyhow!("{e}"))
}

const SIZE: (u32, u32) = (640, 480);

/// Draws with the backend the extension asks for.
macro_rules! with_backend {
    ($path:expr, $root:ident => $body:block) => {{
        ensure_font()?;
        let path: &Path = $path;
        match path.extension().and_then(|e| e.to_str()) {
            Some("svg") => {
                let $root = SVGBackend::new(path, SIZE).into_drawing_area();
                $body
                $root.present().map_err(|e| anyhow!("{e}"))
            }
            Some("png") => {
                let $root = BitMapBackend::new(path, SIZE).into_drawing_area();
                $body
                $root.present().map_err(|e| anyhow!("{e}"))
            }
            _ => bail!("{}: charts are written as .svg or .png", path.display()),
        }
        .with_context(|| format!("cannot write chart {}", path.display()))
    }};
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A white chart with a caption, x from 0 to 1, the given y range, described axes and no minor
/// grid lines.
fn axes<'a, DB: DrawingBackend + 'a>(
    root: &'a DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y: std::ops::Range<f64>,
    x_desc: &str,
    y_desc: &str,
) -> Result<Chart<'a, DB>> {
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, y)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(chart)
}

/// Accuracy against mean confidence per bin, before and after calibration, with the diagonal.
pub fn reliability_diagram(path: &Path, before: &[Bin], after: &[Bin], title: &str) -> Result<()> {
    with_backend!(path, root => {
        let mut chart = axes(&root, title, 0.0..1.0, "confidence (mean per bin)", "accuracy")?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.4)))
            .map_err(|e| anyhow!("{e}"))?
            .label("perfectly calibrated")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
        for (bins, name, color) in [(before, "uncalibrated", COLORS[1]), (after, "calibrated", COLORS[0])] {
            let points: Vec<(f64, f64)> = bins.iter().map(|b| (b.confidence, b.accuracy)).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(
                    bins.iter()
                        .map(|b| Circle::new((b.confidence, b.accuracy), 2 + (b.count as f64).sqrt().min(8.0) as i32, color.filled())),
                )
                .map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    })
}

/// Accuracy of the kept rows against the share of rows kept, one line per confidence method,
/// with the target accuracy as a horizontal line.
pub fn coverage_chart(
    path: &Path,
    curves: &[(&str, &[CurvePoint])],
    target: f64,
    title: &str,
) -> Result<()> {
    let lowest = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.accuracy))
        .fold(target, f64::min);
    let y0 = ((lowest - 0.05).max(0.0) * 20.0).floor() / 20.0;
    with_backend!(path, root => {
        let mut chart = axes(
            &root,
            title,
            y0..1.0,
            "completion rate (share of rows kept)",
            "accuracy of kept rows",
        )?;
        for (i, (name, curve)) in curves.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<(f64, f64)> = curve.iter().map(|p| (p.completion_rate, p.accuracy)).collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .draw_series(LineSeries::new([(0.0, target), (1.0, target)], BLACK.mix(0.5)))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("target accuracy {target}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    })
}
