//! PNG charts of a run.
//!
//! Text is drawn with plotters' `ab_glyph` backend, which has no access to
//! system font libraries: a TrueType font is read from disk at runtime
//! (`IDLEGRID_FONT`, else a few common system paths) and registered once per
//! process under the family name `sans-serif`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context as _, anyhow, bail};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use idlegrid_market::Trust;

use crate::Sample;
use crate::sweep::SweepPoint;

/// A point of a line: (time in seconds, value).
type Point = (f64, f64);

/// Environment variable naming a TrueType font file to draw text with.
const FONT_ENV: &str = "IDLEGRID_FONT";

/// Font files tried, in order, when `IDLEGRID_FONT` is not set.
const FONT_CANDIDATES: &[&str] = &[
    // Debian / Ubuntu: package fonts-dejavu-core.
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    // Arch Linux.
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    // Fedora / openSUSE.
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    // macOS.
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// The family name the font is registered under and drawn with.
const FAMILY: &str = "sans-serif";

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 800;

/// Outcome of the one font registration this process does: the path of the
/// registered font, or why none could be registered.
static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Registers a font for plotters' text once per process.
///
/// The outcome, failure included, is remembered: a process that found no
/// font does not search again.
fn ensure_font() -> anyhow::Result<()> {
    match FONT.get_or_init(register_system_font) {
        Ok(_) => Ok(()),
        Err(msg) => Err(anyhow!("{msg}")),
    }
}

fn register_system_font() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(FONT_ENV) {
        let path = PathBuf::from(path);
        return register_file(&path)
            .map(|()| path.clone())
            .map_err(|why| format!("cannot use the font {FONT_ENV}={}: {why}", path.display()));
    }
    let mut tried = Vec::with_capacity(FONT_CANDIDATES.len());
    for candidate in FONT_CANDIDATES {
        let path = PathBuf::from(candidate);
        match register_file(&path) {
            Ok(()) => return Ok(path),
            Err(why) => tried.push(format!("  {candidate}: {why}")),
        }
    }
    Err(format!(
        "no TrueType font found to draw chart text; tried:\n{}\n\
         set {FONT_ENV} to the path of a .ttf file, or install a font \
         (on Debian/Ubuntu: apt-get install fonts-dejavu-core)",
        tried.join("\n")
    ))
}

fn register_file(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    // plotters keeps fonts for the life of the process and wants 'static
    // bytes; this runs at most once per process, so the leak is bounded.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| "not a valid TrueType/OpenType font".to_owned())
}

/// Maps a plotters drawing error into anyhow with some context.
fn draw_err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> anyhow::Error {
    move |e| anyhow!("drawing the chart ({what}): {e}")
}

/// Draws a chart's legend, boxed, at `position`.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    position: SeriesLabelPosition,
    what: &'static str,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FAMILY, 15).into_font())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err(what))
}

/// Milliseconds to seconds.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// `part` as a percentage of `whole`, 0 when `whole` is 0.
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Point marker size for a line of `points` points: a lone point draws no
/// line, so it gets a dot.
fn marker(points: usize) -> u32 {
    if points == 1 { 4 } else { 0 }
}

/// A non-empty, finite range that contains `lo..=hi`.
fn widen(lo: f64, hi: f64, min_span: f64) -> (f64, f64) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() && lo <= hi {
        (lo, hi)
    } else {
        (0.0, 0.0)
    };
    if hi - lo < min_span {
        (lo, lo + min_span)
    } else {
        (lo, hi)
    }
}

/// Writes a PNG chart of a run: progress and verification overhead over time.
///
/// The top chart shows the percentage of `total_tasks` decided (accepted or
/// failed), accepted and failed, and the devices online as a percentage of
/// the most online at once during the run. The bottom chart shows the
/// verification overhead, fuel executed ÷ useful fuel, with a reference line
/// at 1.0 (no replication); samples with no useful fuel yet are skipped.
pub fn write_png(
    path: &Path,
    samples: &[Sample],
    total_tasks: u64,
    title: &str,
) -> anyhow::Result<()> {
    if samples.is_empty() {
        bail!("no samples to plot");
    }
    ensure_font()?;

    let font = |size: u32| (FAMILY, size).into_font();

    // Time axis shared by both charts.
    let t_min = samples
        .iter()
        .map(|s| seconds(s.time_ms))
        .fold(f64::INFINITY, f64::min);
    let t_max = samples
        .iter()
        .map(|s| seconds(s.time_ms))
        .fold(f64::NEG_INFINITY, f64::max);
    let (t_min, t_max) = widen(t_min, t_max, 1.0);

    // Progress series.
    let peak_devices = samples.iter().map(|s| s.devices_online).max().unwrap_or(0);
    let decided: Vec<Point> = samples
        .iter()
        .map(|s| {
            let n = s.tasks_accepted.saturating_add(s.tasks_failed);
            (seconds(s.time_ms), percent(n, total_tasks))
        })
        .collect();
    let accepted: Vec<Point> = samples
        .iter()
        .map(|s| (seconds(s.time_ms), percent(s.tasks_accepted, total_tasks)))
        .collect();
    let failed: Vec<Point> = samples
        .iter()
        .map(|s| (seconds(s.time_ms), percent(s.tasks_failed, total_tasks)))
        .collect();
    let devices: Vec<Point> = samples
        .iter()
        .map(|s| (seconds(s.time_ms), percent(s.devices_online, peak_devices)))
        .collect();
    let progress_max = decided
        .iter()
        .chain(&accepted)
        .chain(&failed)
        .chain(&devices)
        .map(|&(_, y)| y)
        .filter(|y| y.is_finite())
        .fold(100.0, f64::max)
        * 1.05;

    // Overhead series. Early on, results of undecided tasks dwarf the
    // little accepted work, so the ratio starts once 1% of the run's useful
    // fuel is in.
    let useful_final = samples.iter().map(|s| s.fuel_useful).max().unwrap_or(0);
    let overhead: Vec<Point> = samples
        .iter()
        .filter(|s| s.fuel_useful > 0 && s.fuel_useful >= useful_final / 100)
        .map(|s| (seconds(s.time_ms), s.overhead()))
        .filter(|&(_, y)| y.is_finite())
        .collect();
    let ov_min = overhead.iter().map(|&(_, y)| y).fold(0.9, f64::min);
    let ov_max = overhead.iter().map(|&(_, y)| y).fold(1.0, f64::max);
    let ov_lo = if ov_min < 0.9 {
        ov_min - 0.05 * (ov_max - ov_min)
    } else {
        0.9
    };
    let (ov_lo, ov_hi) = widen(ov_lo, (ov_max * 1.05).max(1.1), 0.2);

    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err("background"))?;
    let root = root.titled(title, font(28)).map_err(draw_err("title"))?;
    let (top, bottom) = root.split_vertically(HEIGHT.saturating_sub(40) / 2);

    // 1. Progress.
    let mut chart = ChartBuilder::on(&top)
        .caption("Progress", font(22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(t_min..t_max, 0.0..progress_max)
        .map_err(draw_err("progress axes"))?;
    chart
        .configure_mesh()
        .x_desc("simulated time (s)")
        .y_desc("% of total")
        .label_style(font(15))
        .axis_desc_style(font(17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_err("progress mesh"))?;
    let total_label = format!("decided (accepted + failed) of {total_tasks} tasks");
    let devices_label = format!("devices online (% of peak {peak_devices})");
    let progress_series: [(&[Point], &str, RGBColor); 4] = [
        (&decided, &total_label, BLUE),
        (&accepted, "accepted", RGBColor(0, 150, 0)),
        (&failed, "failed", RED),
        (&devices, &devices_label, RGBColor(160, 160, 160)),
    ];
    for (points, label, color) in progress_series {
        chart
            .draw_series(
                LineSeries::new(points.iter().copied(), color.stroke_width(2))
                    .point_size(marker(points.len())),
            )
            .map_err(draw_err("progress line"))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
    }
    legend(
        &mut chart,
        SeriesLabelPosition::LowerRight,
        "progress legend",
    )?;

    // 2. Verification overhead.
    let mut chart = ChartBuilder::on(&bottom)
        .caption("Verification overhead", font(22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(t_min..t_max, ov_lo..ov_hi)
        .map_err(draw_err("overhead axes"))?;
    chart
        .configure_mesh()
        .x_desc("simulated time (s)")
        .y_desc("fuel executed / useful")
        .label_style(font(15))
        .axis_desc_style(font(17))
        .light_line_style(RGBColor(235, 235, 235))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(draw_err("overhead mesh"))?;
    let reference = RGBColor(60, 60, 60);
    chart
        .draw_series(DashedLineSeries::new(
            [(t_min, 1.0), (t_max, 1.0)],
            8,
            6,
            reference.stroke_width(2),
        ))
        .map_err(draw_err("overhead reference line"))?
        .label("1.0 (no redundancy)")
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 24, y)], reference.stroke_width(2))
        });
    let overhead_color = RGBColor(200, 100, 0);
    chart
        .draw_series(
            LineSeries::new(overhead.iter().copied(), overhead_color.stroke_width(2))
                .point_size(marker(overhead.len())),
        )
        .map_err(draw_err("overhead line"))?
        .label("overhead")
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 24, y)], overhead_color.stroke_width(2))
        });
    legend(
        &mut chart,
        SeriesLabelPosition::UpperRight,
        "overhead legend",
    )?;

    root.present()
        .map_err(draw_err("writing the file"))
        .with_context(|| format!("writing chart {}", path.display()))?;
    Ok(())
}

/// Writes a PNG chart of a sweep: each setting of the adaptive policy as a
/// point, verification overhead across, wrong results accepted up, labelled
/// `after/halving/floor`; the frontier (settings nothing beats on both)
/// joined by a line, and `current` ringed.
pub fn write_frontier_png(
    path: &Path,
    points: &[SweepPoint],
    current: Trust,
    title: &str,
) -> anyhow::Result<()> {
    if points.is_empty() {
        bail!("no settings to plot");
    }
    ensure_font()?;
    let font = |size: u32| (FAMILY, size).into_font();
    let overheads = points.iter().map(|point| point.overhead);
    let x_lo = overheads.clone().fold(f64::INFINITY, f64::min);
    let x_hi = overheads.fold(f64::NEG_INFINITY, f64::max);
    let span = (x_hi - x_lo).max(0.05);
    let (x_lo, x_hi) = widen(x_lo - span * 0.05, x_hi + span * 0.15, 0.05);
    let y_hi = points
        .iter()
        .map(|point| point.wrong_accepted)
        .fold(1.0, f64::max)
        * 1.1;

    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err("background"))?;
    let root = root.titled(title, font(24)).map_err(draw_err("title"))?;
    let mut chart = ChartBuilder::on(&root)
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_lo..x_hi, 0.0..y_hi)
        .map_err(draw_err("axes"))?;
    chart
        .configure_mesh()
        .x_desc("verification overhead (fuel executed / useful)")
        .y_desc("wrong results accepted at the end (mean over seeds)")
        .label_style(font(15))
        .axis_desc_style(font(17))
        .light_line_style(RGBColor(235, 235, 235))
        .x_label_formatter(&|x| format!("{x:.2}"))
        .draw()
        .map_err(draw_err("mesh"))?;

    let mut frontier: Vec<(f64, f64)> = points
        .iter()
        .filter(|point| point.frontier)
        .map(|point| (point.overhead, point.wrong_accepted))
        .collect();
    frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
    let frontier_color = RGBColor(0, 110, 200);
    chart
        .draw_series(LineSeries::new(frontier, frontier_color.stroke_width(2)))
        .map_err(draw_err("frontier"))?
        .label("frontier: nothing has both less overhead and fewer wrong results")
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 24, y)], frontier_color.stroke_width(2))
        });
    let other = RGBColor(150, 150, 150);
    for point in points {
        let color = if point.frontier {
            frontier_color
        } else {
            other
        };
        let at = (point.overhead, point.wrong_accepted);
        // The label sits up and right of its point.
        chart
            .draw_series([EmptyElement::at(at)
                + Circle::new((0, 0), 5, color.filled())
                + Text::new(point.label(), (7, -18), font(14).color(&BLACK))])
            .map_err(draw_err("point"))?;
        if point.trust() == current {
            chart
                .draw_series([Circle::new(at, 11, RED.stroke_width(2))])
                .map_err(draw_err("current"))?
                .label("the setting in use (after/halving/floor)")
                .legend(|(x, y)| Circle::new((x + 12, y), 6, RED.stroke_width(2)));
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight, "legend")?;
    root.present()
        .map_err(draw_err("writing the file"))
        .with_context(|| format!("writing chart {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(n: u64) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let accepted = i * 20;
                let failed = i / 5;
                let useful = accepted * 1_000;
                Sample {
                    time_ms: i * 2_000,
                    tasks_accepted: accepted,
                    tasks_failed: failed,
                    fuel_executed: useful * 2 + useful / (i + 1),
                    fuel_useful: useful,
                    devices_online: 80 + (i * 7) % 20,
                    tasks_in_flight: 30,
                    ..Sample::default()
                }
            })
            .collect()
    }

    fn assert_png(path: &Path) {
        let bytes = std::fs::read(path).unwrap_or_default();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "not a PNG: {}",
            path.display()
        );
        assert!(bytes.len() > 4_000, "PNG too small: {} bytes", bytes.len());
    }

    #[test]
    fn plot_writes_png() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("run.png");
        write_png(&path, &synthetic(50), 1_000, "idlegrid test run")?;
        assert!(path.exists());
        assert_png(&path);
        // A second chart in the same process reuses the registered font.
        let path2 = dir.path().join("again.png");
        write_png(&path2, &synthetic(10), 1_000, "again")?;
        assert_png(&path2);
        Ok(())
    }

    #[test]
    fn plot_edge_cases() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let one = dir.path().join("one.png");
        write_png(&one, &[Sample::default()], 0, "one sample")?;
        assert_png(&one);

        let same_time: Vec<Sample> = synthetic(5)
            .into_iter()
            .map(|s| Sample { time_ms: 7, ..s })
            .collect();
        let flat = dir.path().join("flat.png");
        write_png(&flat, &same_time, 0, "all at one time")?;
        assert_png(&flat);
        Ok(())
    }

    #[test]
    fn a_sweep_charts_as_a_png() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut points: Vec<SweepPoint> = [(1.1, 40.0, 2), (1.3, 12.0, 10), (1.4, 20.0, 20)]
            .into_iter()
            .map(|(overhead, wrong, halving)| crate::sweep::point_at(overhead, wrong, halving))
            .collect();
        crate::sweep::mark_frontier(&mut points);
        let path = dir.path().join("frontier.png");
        let current = points[1].trust();
        write_frontier_png(&path, &points, current, "a sweep")?;
        assert_png(&path);
        assert!(
            write_frontier_png(&path, &[], current, "none").is_err(),
            "no settings, no chart"
        );
        Ok(())
    }

    #[test]
    fn plot_rejects_empty() {
        let dir = tempfile::tempdir().ok();
        let path = dir.as_ref().map_or_else(
            || PathBuf::from("empty.png"),
            |d| d.path().join("empty.png"),
        );
        let err = write_png(&path, &[], 10, "empty").err();
        assert!(
            err.is_some_and(|e| e.to_string().contains("no samples to plot")),
            "empty samples must be an error"
        );
        assert!(!path.exists());
    }
}
