//! Plots with plotters, PNG and SVG: the accuracy trade-off (vs file size and vs decode
//! speed, Pareto frontier drawn), latency distributions (TTFT and TPOT CDFs) and energy per
//! token.
//!
//! Text needs a TrueType font: plotters is built with `ab_glyph` (no system font libraries)
//! and [`find_font`] loads one from `SLMPACK_FONT` or the usual system paths
//! (Debian/Ubuntu `fonts-dejavu-core`). Without a font the plots are skipped with an error
//! that says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{BenchError, Result};
use crate::report::{Report, WorkloadResult};

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// The font file plots use: `$SLMPACK_FONT`, else the first usual path that exists.
pub fn find_font() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLMPACK_FONT") {
        return Some(PathBuf::from(p));
    }
    FONT_PATHS.iter().map(PathBuf::from).find(|p| p.is_file())
}

static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();

fn ensure_font() -> std::result::Result<(), String> {
    FONT.get_or_init(|| {
        let path = find_font().ok_or_else(|| {
            "no TrueType font found\n  hint: install `fonts-dejavu-core` or set SLMPACK_FONT to a .ttf file".to_string()
        })?;
        let bytes = std::fs::read(&path).map_err(|e| format!("`{}`: {e}", path.display()))?;
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("`{}` is not a TrueType font", path.display()))
    })
    .clone()
}

/// A tier's point on the trade-off plots.
#[derive(Debug, Clone, PartialEq)]
pub struct TierPoint {
    pub tier: String,
    pub size_mb: f64,
    pub accuracy: Option<f64>,
    pub decode_tps: Option<f64>,
    pub ttft_ms: Vec<f64>,
    pub tpot_ms: Vec<f64>,
    pub j_per_token: Option<f64>,
}

/// The accuracy measure used on the trade-off plots: task accuracy if any task ran, else
/// same-top-token %, else perplexity (lower is better).
pub fn accuracy_label(report: &Report) -> Option<(&'static str, bool)> {
    let m = report.metrics();
    for (name, label, hib) in [
        ("acc", "task accuracy", true),
        ("same_top_pct", "same top token vs reference (%)", true),
        ("ppl", "perplexity (lower is better)", false),
    ] {
        if m.iter().any(|x| x.metric == name) {
            let _ = label;
            return Some((name, hib));
        }
    }
    None
}

pub fn points(report: &Report) -> Vec<TierPoint> {
    let metric = accuracy_label(report).map(|(n, _)| n);
    let metrics = report.metrics();
    report
        .tiers
        .iter()
        .map(|t| {
            let accuracy = metric.and_then(|name| {
                metrics
                    .iter()
                    .find(|x| x.tier == t.name && x.metric == name)
                    .map(|x| x.value)
            });
            let mut decode_tps = None;
            let (mut ttft, mut tpot) = (vec![], vec![]);
            let (mut j, mut n) = (0.0, 0u64);
            for w in &t.workloads {
                match &w.result {
                    WorkloadResult::Speed(s) if w.kind == "tg" && decode_tps.is_none() => {
                        decode_tps = Some(s.tps.mean)
                    }
                    WorkloadResult::Chat(c) => {
                        ttft.extend(c.ttft_s.iter().map(|x| x * 1e3));
                        tpot.extend(c.tpot_s.iter().map(|x| x * 1e3));
                    }
                    _ => {}
                }
                if w.energy.joules.is_finite() {
                    j += w.energy.joules;
                    n += w.energy.tokens;
                }
            }
            if decode_tps.is_none() {
                decode_tps = t.workloads.iter().find_map(|w| match &w.result {
                    WorkloadResult::Chat(c) if c.decode_tps.n > 0 => Some(c.decode_tps.mean),
                    _ => None,
                });
            }
            TierPoint {
                tier: t.name.clone(),
                size_mb: t.file_bytes as f64 / 1e6,
                accuracy,
                decode_tps,
                ttft_ms: ttft,
                tpot_ms: tpot,
                j_per_token: (n > 0).then(|| j / n as f64),
            }
        })
        .collect()
}

/// Indices of the Pareto-optimal points: no other point has better-or-equal `x` (per
/// `x_higher_better`) and better-or-equal accuracy, with one strictly better.
pub fn frontier(pts: &[(f64, f64)], x_higher_better: bool, y_higher_better: bool) -> Vec<usize> {
    let better = |a: f64, b: f64, hib: bool| if hib { a >= b } else { a <= b };
    let strictly = |a: f64, b: f64, hib: bool| if hib { a > b } else { a < b };
    let mut out: Vec<usize> = (0..pts.len())
        .filter(|&i| {
            !(0..pts.len()).any(|j| {
                j != i
                    && better(pts[j].0, pts[i].0, x_higher_better)
                    && better(pts[j].1, pts[i].1, y_higher_better)
                    && (strictly(pts[j].0, pts[i].0, x_higher_better)
                        || strictly(pts[j].1, pts[i].1, y_higher_better))
            })
        })
        .collect();
    out.sort_by(|&a, &b| pts[a].0.total_cmp(&pts[b].0));
    out
}

type DErr = Box<dyn std::error::Error>;

fn range(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = v.clone().fold(f64::INFINITY, f64::min);
    let hi = v.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.15).max(hi.abs() * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

fn scatter<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    pts: &[(String, f64, f64)],
    x_hib: bool,
    y_hib: bool,
) -> std::result::Result<(), DErr>
where
    DB::ErrorType: 'static,
{
    let (x0, x1) = range(pts.iter().map(|p| p.1));
    let (y0, y1) = range(pts.iter().map(|p| p.2));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .draw()?;
    let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.1, p.2)).collect();
    let front: Vec<(f64, f64)> = frontier(&xy, x_hib, y_hib)
        .into_iter()
        .map(|i| xy[i])
        .collect();
    chart.draw_series(LineSeries::new(front, BLUE.stroke_width(2)))?;
    for (i, (name, x, y)) in pts.iter().enumerate() {
        let c = Palette99::pick(i).to_rgba();
        chart.draw_series(std::iter::once(Circle::new((*x, *y), 6, c.filled())))?;
        chart.draw_series(std::iter::once(Text::new(
            name.clone(),
            (*x, *y),
            ("sans-serif", 14).into_font().color(&BLACK),
        )))?;
    }
    Ok(())
}

fn draw_tradeoff<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    report: &Report,
) -> std::result::Result<(), DErr>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (metric, hib) = accuracy_label(report).unwrap_or(("-", true));
    let pts = points(report);
    let (l, r) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    let by_size: Vec<_> = pts
        .iter()
        .filter_map(|p| Some((p.tier.clone(), p.size_mb, p.accuracy?)))
        .collect();
    scatter(
        &l,
        &format!("{metric} vs size"),
        "file size (MB)",
        metric,
        &by_size,
        false,
        hib,
    )?;
    let by_speed: Vec<_> = pts
        .iter()
        .filter_map(|p| Some((p.tier.clone(), p.decode_tps?, p.accuracy?)))
        .collect();
    scatter(
        &r,
        &format!("{metric} vs decode speed"),
        "decode tokens/s",
        metric,
        &by_speed,
        true,
        hib,
    )?;
    root.present()?;
    Ok(())
}

fn cdf<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    pts: &[TierPoint],
    pick: fn(&TierPoint) -> &Vec<f64>,
) -> std::result::Result<(), DErr>
where
    DB::ErrorType: 'static,
{
    let (x0, x1) = range(pts.iter().flat_map(|p| pick(p).iter().copied()));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(x0.max(0.0)..x1, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds")
        .y_desc("fraction of queries")
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, p) in pts.iter().enumerate() {
        let mut v = pick(p).clone();
        if v.is_empty() {
            continue;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len() as f64;
        let c = Palette99::pick(i).to_rgba();
        let line: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .map(|(k, &x)| (x, (k + 1) as f64 / n))
            .collect();
        chart
            .draw_series(LineSeries::new(line, c.stroke_width(2)))?
            .label(p.tier.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

fn draw_latency<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    report: &Report,
) -> std::result::Result<(), DErr>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let pts = points(report);
    let (l, r) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    cdf(&l, "time to first token (CDF)", &pts, |p| &p.ttft_ms)?;
    cdf(&r, "time per output token (CDF)", &pts, |p| &p.tpot_ms)?;
    root.present()?;
    Ok(())
}

fn draw_energy<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    report: &Report,
) -> std::result::Result<(), DErr>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let pts: Vec<(String, f64)> = points(report)
        .into_iter()
        .filter_map(|p| Some((p.tier, p.j_per_token? * 1e3)))
        .collect();
    let hi = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-12) * 1.15;
    let n = pts.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("energy per token, all workloads ({})", report.energy_method),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, 0.0..hi)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("millijoules per token")
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, (name, v)) in pts.iter().enumerate() {
        let c = Palette99::pick(i).to_rgba();
        chart.draw_series(std::iter::once(Rectangle::new(
            [(i as f64 + 0.2, 0.0), (i as f64 + 0.8, *v)],
            c.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{name}: {v:.3} mJ"),
            (i as f64 + 0.2, *v + hi * 0.03),
            ("sans-serif", 14).into_font().color(&BLACK),
        )))?;
    }
    root.present()?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Tradeoff,
    Latency,
    Energy,
}

fn draw<DB: DrawingBackend>(
    kind: Kind,
    root: DrawingArea<DB, Shift>,
    report: &Report,
) -> std::result::Result<(), DErr>
where
    DB::ErrorType: 'static,
{
    match kind {
        Kind::Tradeoff => draw_tradeoff(root, report),
        Kind::Latency => draw_latency(root, report),
        Kind::Energy => draw_energy(root, report),
    }
}

fn both(out: &Path, stem: &str, report: &Report, kind: Kind) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for ext in ["png", "svg"] {
        let path = out.join(format!("{stem}.{ext}"));
        let tmp = out.join(format!(".{stem}.tmp{}.{ext}", std::process::id()));
        let size = (1200, 500);
        let r = if ext == "png" {
            draw(
                kind,
                BitMapBackend::new(&tmp, size).into_drawing_area(),
                report,
            )
        } else {
            draw(
                kind,
                SVGBackend::new(&tmp, size).into_drawing_area(),
                report,
            )
        };
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(BenchError::Plot {
                path,
                msg: e.to_string(),
            });
        }
        std::fs::rename(&tmp, &path).map_err(|e| BenchError::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

/// Write every plot the report has data for into `out`; returns the files written.
pub fn write_plots(report: &Report, out: &Path) -> Result<Vec<PathBuf>> {
    ensure_font().map_err(|msg| BenchError::Plot {
        path: out.into(),
        msg,
    })?;
    let pts = points(report);
    let mut files = Vec::new();
    if pts.iter().any(|p| p.accuracy.is_some()) {
        files.extend(both(out, "tradeoff", report, Kind::Tradeoff)?);
    }
    if pts.iter().any(|p| !p.ttft_ms.is_empty()) {
        files.extend(both(out, "latency", report, Kind::Latency)?);
    }
    if pts.iter().any(|p| p.j_per_token.is_some()) {
        files.extend(both(out, "energy", report, Kind::Energy)?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_frontier() {
        // (size, acc): smaller is better for size, higher for acc
        let pts = [
            (10.0, 0.5),
            (20.0, 0.7),
            (15.0, 0.4),
            (30.0, 0.7),
            (25.0, 0.9),
        ];
        assert_eq!(frontier(&pts, false, true), vec![0, 1, 4]);
        assert_eq!(frontier(&[(1.0, 1.0)], true, true), vec![0]);
    }
}
