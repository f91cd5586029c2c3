//! PNG charts of training runs and of the transfer-learning demo, plus an `index.html` that shows
//! the charts with captions and the table of numbers, so a person opens one file.
//!
//! Charts are drawn with `plotters` into an in-memory RGB bitmap and encoded as PNG with `image`.
//! Text is set in DejaVu Sans, embedded in the library (`assets/fonts/`, licence alongside), so
//! nothing is read from the system at run time: a machine with no fonts installed draws the same
//! charts. Every file is written under a temporary name in its folder and renamed into place, so
//! a reader never sees half a file.
//!
//! ```no_run
//! # fn main() -> headswap::Result<()> {
//! # let (report, demo): (headswap::train::FitReport, headswap::demo::DemoReport) = todo!();
//! use std::path::Path;
//! headswap::report::training_curves(Path::new("run.png"), "pretraining on task A", &report)?;
//! let files = headswap::report::demo_report(Path::new("demo-report"), &demo)?;
//! println!("open {}", files.last().unwrap().display()); // index.html
//! # Ok(()) }
//! ```

use crate::demo::DemoReport;
use crate::error::{Error, Result};
use crate::kernels::metrics::OrNa;
use crate::train::FitReport;

mod street;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
pub use street::street_report;

/// DejaVu Sans (Bitstream Vera licence, see `assets/fonts/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawError = DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;
type Drawn<T = ()> = std::result::Result<T, DrawError>;

/// Colours that stay apart for the common forms of colour blindness (Okabe–Ito, then greys).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(213, 94, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(240, 228, 66),
];
const INK: RGBColor = RGBColor(30, 30, 30);

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&INK)
}

/// Registers the embedded font with plotters (once per process; the families plotters falls back
/// on all map to it).
fn register_fonts() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        ["sans-serif", "serif", "monospace"].iter().all(|family| plotters::style::register_font(family, FontStyle::Normal, FONT).is_ok())
    });
    if ok { Ok(()) } else { Err(Error::format("embedded font DejaVuSans.ttf", "not a readable TrueType font")) }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| Error::invalid(format!("{} does not name a file", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}-{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Draws a `w`×`h` picture with `draw` on a white canvas and writes it to `path` as PNG.
fn render_png(path: &Path, (w, h): (u32, u32), draw: impl FnOnce(&Area<'_>) -> Drawn) -> Result<()> {
    register_fonts()?;
    let drawing = |e: DrawError| Error::io(path, std::io::Error::other(format!("drawing the chart: {e}")));
    let mut pixels = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        draw(&root).map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(image::codecs::png::PngEncoder::new(&mut png), &pixels, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    write_atomic(path, &png)
}

// ---------------------------------------------------------------------------------------------
// Building blocks

/// How a legend entry is marked.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    Line,
    Dashed,
    Bar,
}

struct LegendItem {
    name: String,
    color: RGBColor,
    mark: Mark,
}

impl LegendItem {
    fn new(name: impl Into<String>, color: RGBColor, mark: Mark) -> Self {
        LegendItem { name: name.into(), color, mark }
    }
}

/// Draws `items` centred in a strip at the bottom of `area` (wrapping into rows as needed) and
/// returns the rest of `area`. A legend outside the plot never hides data.
fn legend_strip<'a>(area: &Area<'a>, items: &[LegendItem]) -> Drawn<Area<'a>> {
    if items.is_empty() {
        return Ok(area.clone());
    }
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let style = font(15);
    let (swatch, gap, pad, row_h) = (26, 28, 12, 24);
    let mut rows: Vec<Vec<(usize, i32, i32)>> = vec![Vec::new()]; // (item, x, width)
    let mut x = 0;
    for (i, item) in items.iter().enumerate() {
        let (tw, _) = area.estimate_text_size(&item.name, &style)?;
        let width = swatch + 6 + tw as i32;
        if x > 0 && x + width > w - 2 * pad {
            rows.push(Vec::new());
            x = 0;
        }
        if let Some(row) = rows.last_mut() {
            row.push((i, x, width));
        }
        x += width + gap;
    }
    let strip_h = (rows.len() as i32 * row_h + 8).min(h / 2);
    let (rest, strip) = area.split_vertically(h - strip_h);
    for (r, row) in rows.iter().enumerate() {
        let row_w = row.last().map(|&(_, x, width)| x + width).unwrap_or(0);
        let x0 = ((w - row_w) / 2).max(pad);
        let y = 4 + r as i32 * row_h + row_h / 2;
        for &(i, x, _) in row {
            let item = &items[i];
            let (a, b) = (x0 + x, x0 + x + swatch);
            match item.mark {
                Mark::Line => {
                    strip.draw(&PathElement::new(vec![(a, y), (b, y)], item.color.stroke_width(3)))?;
                }
                Mark::Dashed => {
                    for s in [a, a + 10, a + 20] {
                        strip.draw(&PathElement::new(vec![(s, y), ((s + 6).min(b), y)], item.color.stroke_width(3)))?;
                    }
                    strip.draw(&Circle::new(((a + b) / 2, y), 4, item.color.filled()))?;
                }
                Mark::Bar => {
                    strip.draw(&Rectangle::new([(a + 4, y - 8), (b - 4, y + 8)], item.color.filled()))?;
                }
            }
            strip.draw(&Text::new(item.name.clone(), (b + 6, y), style.pos(Pos::new(HPos::Left, VPos::Center))))?;
        }
    }
    Ok(rest)
}

/// Writes `note` in the middle of `area` (a panel with nothing to plot).
fn note(area: &Area<'_>, caption: &str, note: &str) -> Drawn {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(caption.to_string(), (w as i32 / 2, 14), font(20).pos(Pos::new(HPos::Center, VPos::Top))))?;
    area.draw(&Text::new(
        note.to_string(),
        (w as i32 / 2, h as i32 / 2),
        font(16).color(&RGBColor(120, 120, 120)).pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    Ok(())
}

/// One line of a line chart.
struct Line {
    name: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

impl Line {
    /// A line through the finite points of `points` (a diverged run's NaN losses are left out).
    fn new(name: impl Into<String>, color: RGBColor, dashed: bool, points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        let points = points.into_iter().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        Line { name: name.into(), color, dashed, points }
    }

    fn legend(&self) -> LegendItem {
        LegendItem::new(self.name.clone(), self.color, if self.dashed { Mark::Dashed } else { Mark::Line })
    }
}

/// A linear axis over `lo..hi` with the ticks given (plotters' own `f64` axes choose their ticks
/// and formatting themselves).
struct Ticked {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ticked {
    fn new(lo: f64, hi: f64, ticks: Vec<f64>) -> Self {
        let (lo, hi) = nonempty(lo, hi);
        Ticked { lo, hi, ticks: ticks.into_iter().filter(|t| (lo..=hi).contains(t)).collect() }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.lo) / (self.hi - self.lo);
        let t = if t.is_finite() { t.clamp(-10.0, 10.0) } else { 0.0 };
        limit.0 + ((limit.1 - limit.0) as f64 * t).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// `lo..hi` widened so that it is never empty.
fn nonempty(lo: f64, hi: f64) -> (f64, f64) {
    if hi - lo > 1e-12 {
        (lo, hi)
    } else {
        let pad = (lo.abs() * 0.1).max(0.5);
        (lo - pad, hi + pad)
    }
}

/// A y range for losses: from 0 (or below, for negative values) to a little above the largest.
fn loss_range(lines: &[Line]) -> (f64, f64) {
    let ys = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let lo = lo.min(0.0);
    nonempty(lo, hi + 0.06 * (hi - lo))
}

/// About `target` round tick positions (1, 2 or 5 × 10^k apart) covering `lo..=hi`.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Integer epoch ticks over `lo..=hi` (at most about 10).
fn epoch_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks: Vec<f64> = nice_ticks(lo, hi, 8).into_iter().filter(|t| t.fract() == 0.0).collect();
    if ticks.is_empty() {
        ticks.push(lo.round());
    }
    if lo.fract() == 0.0 && ticks.first().is_some_and(|&t| t - lo >= 2.0) {
        ticks.insert(0, lo);
    }
    ticks
}

/// A line chart of `lines` against the epoch on `area`, with a caption, axis names and grid.
/// `y` is the value range. Epochs are ticked at round integers.
fn epoch_chart(area: &Area<'_>, caption: &str, y_desc: &str, lines: &[Line], y: (f64, f64)) -> Drawn {
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if !lo.is_finite() {
        return note(area, caption, "nothing recorded");
    }
    let ticks = epoch_ticks(lo, hi);
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 1.0, hi + 1.0) };
    let pad = 0.02 * (hi - lo);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font(20))
        .margin(14)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(Ticked::new(lo - pad, hi + pad, ticks), y.0..y.1)?;
    let y_format = axis_format(y.1 - y.0);
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .axis_desc_style(font(16))
        .label_style(font(14))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&y_format)
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .draw()?;
    for line in lines {
        draw_line(&mut chart, line)?;
    }
    Ok(())
}

/// A formatter for y-axis values spanning about `span`.
fn axis_format(span: f64) -> impl Fn(&f64) -> String {
    let decimals = if span >= 20.0 {
        0
    } else if span >= 2.0 {
        1
    } else if span >= 0.2 {
        2
    } else {
        3
    };
    move |v: &f64| format!("{v:.decimals$}")
}

fn draw_line<Y>(chart: &mut ChartContext<'_, BitMapBackend<'_>, Cartesian2d<Ticked, Y>>, line: &Line) -> Drawn
where
    Y: Ranged<ValueType = f64>,
{
    let style = line.color.stroke_width(if line.dashed { 2 } else { 3 });
    let few = line.points.len() <= 25;
    if line.dashed {
        chart.draw_series(DashedLineSeries::new(line.points.iter().copied(), 8, 5, style))?;
    } else {
        chart.draw_series(LineSeries::new(line.points.iter().copied(), style))?;
    }
    if few || line.points.len() == 1 {
        chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 4, line.color.filled())))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Training curves

/// Draws the training curves of one run into the PNG at `path`: training loss and, where the run
/// held data out, validation loss per epoch; below them the score per epoch (mean F1 for label
/// heads, accuracy for class heads), when the run recorded one. Epochs are numbered from 1.
///
/// Errors: [`Error::InvalidInput`] for a report without epochs; [`Error::Io`] (with the path)
/// when the file cannot be written.
pub fn training_curves(path: &Path, title: &str, report: &FitReport) -> Result<()> {
    if report.epochs.is_empty() {
        return Err(Error::invalid("training_curves: the report has no epochs"));
    }
    let x = |e: &crate::train::EpochReport| e.epoch as f64 + 1.0;
    let has_validation = report.epochs.iter().any(|e| e.validation.is_some());
    let score_name = if report.epochs.iter().any(|e| e.train.labels.is_some()) {
        Some("mean F1")
    } else if report.epochs.iter().any(|e| e.train.accuracy.is_some()) {
        Some("accuracy")
    } else {
        None
    };
    // An epoch whose mean F1 is n/a (no label could be scored) has no point.
    let score = |m: &crate::train::Metrics| m.score();

    let mut losses = vec![Line::new("training", color(0), false, report.epochs.iter().map(|e| (x(e), e.train.loss)))];
    let mut scores = vec![Line::new("training", color(0), false, report.epochs.iter().filter_map(|e| score(&e.train).map(|s| (x(e), s))))];
    if has_validation {
        let val = || report.epochs.iter().filter_map(|e| e.validation.as_ref().map(|v| (e, v)));
        losses.push(Line::new("validation", color(1), true, val().map(|(e, v)| (x(e), v.loss))));
        scores.push(Line::new("validation", color(1), true, val().filter_map(|(e, v)| score(v).map(|s| (x(e), s)))));
    }
    let legend: Vec<LegendItem> = losses.iter().map(Line::legend).collect();
    let score_hi = scores.iter().flat_map(|l| l.points.iter().map(|p| p.1)).fold(1.0f64, f64::max);
    let height = if score_name.is_some() { 900 } else { 560 };
    let title = if title.is_empty() { "training curves" } else { title };
    render_png(path, (1000, height), |root| {
        let area = root.margin(10, 0, 0, 0).titled(title, font(26))?;
        let area = legend_strip(&area, &legend)?;
        match score_name {
            Some(name) => {
                let (_, h) = area.dim_in_pixel();
                let (top, bottom) = area.split_vertically(h / 2);
                epoch_chart(&top, "loss per epoch", "loss", &losses, loss_range(&losses))?;
                epoch_chart(&bottom, &format!("{name} per epoch"), name, &scores, (0.0, score_hi * 1.02))
            }
            None => epoch_chart(&area, "loss per epoch", "loss", &losses, loss_range(&losses)),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Per-label F1 bars

/// Bars of `series` (name, colour, one value per label) grouped by label; an undefined value
/// (`None`, or not finite) is written "n/a" where its bar would stand, never drawn as a zero bar.
/// `x_desc` names the groups, `y_desc` the values.
fn grouped_bars(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    label_names: &[String],
    series: &[(String, RGBColor, Vec<Option<f64>>)],
) -> Result<()> {
    let n = label_names.len();
    let m = series.len().max(1);
    let width = (260 + n * m * 56).clamp(760, 2400) as u32;
    let plot_px = width as f64 - 120.0;
    let bar_px = plot_px / (n * m) as f64 * 0.8;
    let show_values = bar_px >= 30.0;
    let legend: Vec<LegendItem> = if series.len() > 1 {
        series.iter().map(|(name, c, _)| LegendItem::new(name.clone(), *c, Mark::Bar)).collect()
    } else {
        Vec::new()
    };
    let hi = series.iter().flat_map(|s| s.2.iter().flatten().copied()).filter(|v| v.is_finite()).fold(1.0f64, f64::max);
    let names = label_names.to_vec();
    let title = if title.is_empty() { "per-label F1" } else { title };
    render_png(path, (width, 620), |root| {
        let area = root.margin(10, 0, 0, 0).titled(title, font(26))?;
        let area = legend_strip(&area, &legend)?;
        let ticks: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let mut chart = ChartBuilder::on(&area)
            .margin(14)
            .x_label_area_size(52)
            .y_label_area_size(72)
            .build_cartesian_2d(Ticked::new(-0.5, n as f64 - 0.5, ticks), 0.0..hi * 1.1)?;
        let label_of = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 { names.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .axis_desc_style(font(16))
            .label_style(font(14))
            .x_label_formatter(&label_of)
            .y_label_formatter(&|v| format!("{v:.1}"))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(TRANSPARENT)
            .draw()?;
        let group = 0.8;
        let bar = group / m as f64;
        for (j, (_, c, values)) in series.iter().enumerate() {
            let left = |i: usize| i as f64 - group / 2.0 + j as f64 * bar;
            let finite = || values.iter().enumerate().filter_map(|(i, v)| v.filter(|v| v.is_finite()).map(|v| (i, v)));
            chart.draw_series(
                finite().map(|(i, v)| Rectangle::new([(left(i) + 0.01, 0.0), (left(i) + bar - 0.01, v.max(0.0))], c.filled())),
            )?;
            if show_values {
                chart.draw_series(finite().map(|(i, v)| {
                    Text::new(format!("{v:.2}"), (left(i) + bar / 2.0, v.max(0.0)), font(14).pos(Pos::new(HPos::Center, VPos::Bottom)))
                }))?;
            }
            // An undefined value is marked rather than silently drawn as zero.
            chart.draw_series(values.iter().enumerate().filter(|(_, v)| !v.is_some_and(f64::is_finite)).map(|(i, _)| {
                Text::new("n/a".to_string(), (left(i) + bar / 2.0, 0.0), font(14).pos(Pos::new(HPos::Center, VPos::Bottom)))
            }))?;
        }
        Ok(())
    })
}

/// Draws one bar per label (its F1) into the PNG at `path`; a label whose F1 is `None` (n/a: no
/// known positive and none predicted) gets "n/a" instead of a bar. The axis says only "F1": the
/// data it was measured on (held out or not) is the caller's to say, in `title`.
///
/// Errors: [`Error::InvalidInput`] when there are no labels or `f1` does not have one value per
/// label; [`Error::Io`] (with the path) when the file cannot be written.
pub fn label_f1_bars(path: &Path, title: &str, label_names: &[String], f1: &[Option<f64>]) -> Result<()> {
    if label_names.is_empty() {
        return Err(Error::invalid("label_f1_bars: no labels"));
    }
    if f1.len() != label_names.len() {
        return Err(Error::invalid(format!("label_f1_bars: {} F1 values for {} labels", f1.len(), label_names.len())));
    }
    grouped_bars(path, title, "label", "F1", label_names, &[("F1".to_string(), color(0), f1.to_vec())])
}

// ---------------------------------------------------------------------------------------------
// The demo report

/// The demo's task-B sizes (ascending, distinct) and methods (in the order the rows name them).
fn sizes_and_methods(report: &DemoReport) -> (Vec<usize>, Vec<&'static str>) {
    let mut sizes: Vec<usize> = report.rows.iter().map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut methods: Vec<&'static str> = Vec::new();
    for r in &report.rows {
        if !methods.contains(&r.method) {
            methods.push(r.method);
        }
    }
    (sizes, methods)
}

fn mean_f1_chart(path: &Path, report: &DemoReport, sizes: &[usize], methods: &[&'static str]) -> Result<()> {
    let (smallest, largest) = (sizes[0] as f64, sizes[sizes.len() - 1] as f64);
    // A log axis once the sizes span a factor of 5 or more (the demo's 40, 150, 600 do).
    let log = smallest > 0.0 && largest / smallest >= 5.0;
    let to_x = move |s: usize| if log { (s as f64).ln() } else { s as f64 };
    let lines: Vec<Line> = methods
        .iter()
        .enumerate()
        .map(|(i, &method)| {
            let points = sizes.iter().filter_map(|&s| report.f1(s, method).map(|f| (to_x(s), f)));
            Line::new(method, color(i), false, points)
        })
        .collect();
    let legend: Vec<LegendItem> = lines.iter().map(Line::legend).collect();
    let ticks: Vec<f64> = sizes.iter().map(|&s| to_x(s)).collect();
    let (lo, hi) = nonempty(to_x(sizes[0]), to_x(sizes[sizes.len() - 1]));
    let pad = 0.06 * (hi - lo);
    let y_hi = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).fold(1.0f64, f64::max) * 1.04;
    let x_desc = if log { "task-B training examples (log scale)" } else { "task-B training examples" };
    render_png(path, (1000, 680), |root| {
        let area = root.margin(10, 0, 0, 0).titled("Mean F1 on held-out task-B data vs. task-B training size", font(24))?;
        let area = legend_strip(&area, &legend)?;
        let mut chart = ChartBuilder::on(&area)
            .margin(16)
            .x_label_area_size(52)
            .y_label_area_size(72)
            .build_cartesian_2d(Ticked::new(lo - pad, hi + pad, ticks), 0.0..y_hi)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("mean F1 over labels")
            .axis_desc_style(font(16))
            .label_style(font(14))
            .x_label_formatter(&|v| format!("{:.0}", if log { v.exp() } else { *v }))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(TRANSPARENT)
            .draw()?;
        for line in &lines {
            chart.draw_series(LineSeries::new(line.points.iter().copied(), line.color.stroke_width(3)))?;
            chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 5, line.color.filled())))?;
        }
        Ok(())
    })
}

fn loss_chart(path: &Path, report: &DemoReport, sizes: &[usize], methods: &[&'static str]) -> Result<()> {
    let epochs = |losses: &[f64]| losses.iter().enumerate().map(|(i, &l)| (i as f64 + 1.0, l)).collect::<Vec<_>>();
    let task_a = vec![Line::new("task A pretraining", INK, false, epochs(&report.task_a_loss))];
    let panels: Vec<(String, Vec<Line>)> = sizes
        .iter()
        .map(|&size| {
            let lines = methods
                .iter()
                .enumerate()
                .filter_map(|(i, &method)| {
                    let row = report.rows.iter().find(|r| r.size == size && r.method == method)?;
                    Some(Line::new(method, color(i), false, epochs(&row.train_loss)))
                })
                .collect();
            (format!("task B, {size} training examples"), lines)
        })
        .collect();
    let mut legend = vec![LegendItem::new("task A pretraining", INK, Mark::Line)];
    legend.extend(methods.iter().enumerate().map(|(i, &m)| LegendItem::new(m, color(i), Mark::Line)));
    let count = 1 + panels.len();
    let cols = if count <= 4 { 2 } else { 3 };
    let rows = count.div_ceil(cols);
    let (panel_w, panel_h) = (620u32, 430u32);
    let size = (panel_w * cols as u32, (panel_h * rows as u32 + 130).min(8000));
    let a_caption = format!("task A pretraining, {} examples", report.task_a_examples);
    render_png(path, size, |root| {
        let area = root.margin(10, 0, 0, 0).titled("Training loss per epoch", font(26))?;
        let area = legend_strip(&area, &legend)?;
        let cells = area.split_evenly((rows, cols));
        if let Some(cell) = cells.first() {
            epoch_chart(cell, &a_caption, "cross-entropy loss", &task_a, loss_range(&task_a))?;
        }
        for (cell, (caption, lines)) in cells.iter().skip(1).zip(&panels) {
            epoch_chart(cell, caption, "binary cross-entropy loss", lines, loss_range(lines))?;
        }
        Ok(())
    })
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a file name for an HTML attribute (a percent-encoded relative URL).
fn href(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn index_html(report: &DemoReport, sizes: &[usize], figures: &[(String, String)]) -> String {
    let mut h = String::new();
    h.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<title>headswap transfer-learning demo</title>\n<style>\n",
        "body { font-family: 'DejaVu Sans', Verdana, sans-serif; max-width: 1280px; margin: 2em auto; padding: 0 1em; color: #1e1e1e; }\n",
        "table { border-collapse: collapse; margin: 1em 0; }\n",
        "th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }\n",
        "th { background: #f2f2f2; } td.text, th.text { text-align: left; }\n",
        "tr.first td { border-top: 2px solid #888; }\n",
        "figure { margin: 2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }\n",
        "figcaption { margin-top: .5em; color: #444; }\n",
        "</style>\n</head>\n<body>\n<h1>headswap transfer-learning demo</h1>\n"
    ));
    h.push_str("<ul>\n");
    h.push_str(&format!("<li>adapter: {}</li>\n", esc(&report.adapter)));
    h.push_str(&format!("<li>data: {}</li>\n", esc(&report.data)));
    h.push_str(&format!(
        "<li>task A: {} examples, test accuracy {:.1}%, {:.1}&nbsp;s ({:.0} samples/s)</li>\n",
        report.task_a_examples,
        100.0 * report.task_a_test_accuracy,
        report.task_a_seconds,
        report.task_a_samples_per_sec
    ));
    let labels: Vec<String> = report.label_names.iter().map(|n| esc(n)).collect();
    h.push_str(&format!(
        "<li>task B: labels {}; F1 measured on {} held-out examples</li>\n</ul>\n",
        labels.join(", "),
        report.test_examples
    ));

    h.push_str("<h2>Results</h2>\n<p>The best mean F1 at each task-B size is in bold.");
    if report.rows.iter().any(|r| r.mean_f1.is_none() || r.per_label_f1.contains(&None)) {
        h.push_str(" n/a: F1 is undefined for a label no held-out example has and none was predicted to have; means leave it out.");
    }
    h.push_str("</p>\n<table>\n<tr><th>task-B examples</th><th class=\"text\">method</th><th>mean F1</th>");
    for l in &labels {
        h.push_str(&format!("<th>F1 {l}</th>"));
    }
    h.push_str("<th>time (s)</th><th>samples/s</th><th>epochs</th></tr>\n");
    for &size in sizes {
        let rows: Vec<_> = report.rows.iter().filter(|r| r.size == size).collect();
        let best = rows.iter().filter_map(|r| r.mean_f1).filter(|v| v.is_finite()).fold(f64::NEG_INFINITY, f64::max);
        for (i, r) in rows.iter().enumerate() {
            let mean = match r.mean_f1 {
                Some(v) if v == best => format!("<b>{v:.3}</b>"),
                v => format!("{:.3}", OrNa(v)),
            };
            h.push_str(&format!(
                "<tr{}><td>{}</td><td class=\"text\">{}</td><td>{mean}</td>",
                if i == 0 { " class=\"first\"" } else { "" },
                r.size,
                esc(r.method)
            ));
            for &v in &r.per_label_f1 {
                h.push_str(&format!("<td>{:.3}</td>", OrNa(v)));
            }
            h.push_str(&format!("<td>{:.1}</td><td>{:.0}</td><td>{}</td></tr>\n", r.seconds, r.samples_per_sec, r.train_loss.len()));
        }
    }
    h.push_str("</table>\n<h2>Charts</h2>\n");
    for (file, caption) in figures {
        h.push_str(&format!(
            "<figure>\n<img src=\"{}\" alt=\"{}\">\n<figcaption>{}</figcaption>\n</figure>\n",
            href(file),
            esc(caption),
            esc(caption)
        ));
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// Writes the demo's report into `dir` (created if need be): `mean_f1_vs_size.png` (mean F1 vs
/// task-B size, one line per method, log-scale x when the sizes span a factor of 5 or more),
/// `label_f1_b<N>.png` (per-label F1 bars grouped by method, for the smallest and the largest
/// task-B size), `loss_curves.png` (task-A pretraining loss and the task-B training losses per
/// epoch, one panel per task-B size) and `index.html`, which shows the charts with captions and
/// the table of numbers. Returns the paths written, `index.html` last.
///
/// Errors: [`Error::InvalidInput`] for a report without rows or labels, or with a row whose
/// per-label F1 does not have one value per label; [`Error::Io`] (with the path) when a folder
/// or file cannot be written.
pub fn demo_report(dir: &Path, report: &DemoReport) -> Result<Vec<PathBuf>> {
    if report.rows.is_empty() {
        return Err(Error::invalid("demo_report: the report has no task-B results"));
    }
    if report.label_names.is_empty() {
        return Err(Error::invalid("demo_report: the report names no task-B labels"));
    }
    let k = report.label_names.len();
    if let Some(r) = report.rows.iter().find(|r| r.per_label_f1.len() != k) {
        return Err(Error::invalid(format!(
            "demo_report: the row for {} examples, {}, has {} per-label F1 values for {k} labels",
            r.size,
            r.method,
            r.per_label_f1.len()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (sizes, methods) = sizes_and_methods(report);
    let mut written = Vec::new();
    let mut figures = Vec::new();

    let name = "mean_f1_vs_size.png".to_string();
    mean_f1_chart(&dir.join(&name), report, &sizes, &methods)?;
    let mut caption =
        "Mean F1 over the task-B labels on held-out data against the number of task-B training examples, one line per method.".to_string();
    if methods.contains(&crate::demo::SCRATCH) {
        caption.push_str(&format!(" Transfer pays where a line lies above “{}”, typically at the small sizes.", crate::demo::SCRATCH));
    }
    figures.push((name, caption));

    let ends = if sizes.len() > 1 { vec![sizes[0], sizes[sizes.len() - 1]] } else { vec![sizes[0]] };
    for (n, &size) in ends.iter().enumerate() {
        let series: Vec<(String, RGBColor, Vec<Option<f64>>)> = methods
            .iter()
            .enumerate()
            .filter_map(|(i, &m)| {
                let row = report.rows.iter().find(|r| r.size == size && r.method == m)?;
                Some((m.to_string(), color(i), row.per_label_f1.clone()))
            })
            .collect();
        let which = match (ends.len(), n) {
            (1, _) => "",
            (_, 0) => "smallest ",
            _ => "largest ",
        };
        let name = format!("label_f1_b{size}.png");
        let title = format!("Per-label F1, {size} task-B training examples");
        grouped_bars(&dir.join(&name), &title, "label", "F1 on held-out data", &report.label_names, &series)?;
        figures.push((
            name,
            format!(
                "F1 of each task-B label on held-out data at the {which}task-B size ({size} training examples), bars grouped by method."
            ),
        ));
    }

    let name = "loss_curves.png".to_string();
    loss_chart(&dir.join(&name), report, &sizes, &methods)?;
    let mut caption = "Training loss per epoch: task-A pretraining (cross-entropy), then the task-B runs (binary cross-entropy), \
                       one panel per task-B size."
        .to_string();
    if methods.contains(&crate::demo::FINE_TUNE_ALL) {
        caption.push_str(&format!(
            " “{}” trains the new head alone for the first half of its epochs, then the whole network.",
            crate::demo::FINE_TUNE_ALL
        ));
    }
    figures.push((name, caption));

    written.extend(figures.iter().map(|(name, _)| dir.join(name)));
    let index = dir.join("index.html");
    write_atomic(&index, index_html(report, &sizes, &figures).as_bytes())?;
    written.push(index);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{DemoRow, HEAD_ONLY, SCRATCH};

    /// An undefined F1 reads n/a in the table, is never the bold best, and is no point of the
    /// mean-F1 chart (it is not drawn as 0).
    #[test]
    fn undefined_f1_is_na_in_the_table_and_missing_from_charts() {
        let row = |method, mean_f1, per_label_f1| DemoRow {
            size: 40,
            method,
            mean_f1,
            per_label_f1,
            seconds: 1.0,
            samples_per_sec: 1.0,
            train_loss: vec![0.5, 0.4],
        };
        let report = DemoReport {
            adapter: "test".into(),
            trunk: "dense".into(),
            trunk_kind: crate::demo::Trunk::Mlp,
            data: "hand-made".into(),
            task_a_examples: 1,
            task_a_test_accuracy: 1.0,
            task_a_seconds: 1.0,
            task_a_samples_per_sec: 1.0,
            task_a_loss: vec![0.7],
            label_names: vec!["a".into(), "b".into()],
            test_examples: 10,
            rows: vec![row(HEAD_ONLY, Some(0.25), vec![Some(0.25), None]), row(SCRATCH, None, vec![None, None])],
        };
        let html = index_html(&report, &[40], &[]);
        assert!(html.contains("<td><b>0.250</b></td><td>0.250</td><td>n/a</td>"), "{html}");
        assert!(html.contains("<td>n/a</td><td>n/a</td><td>n/a</td>"), "{html}");
        assert!(!html.contains("0.000") && html.contains("n/a: F1 is undefined"), "{html}");
        assert_eq!(report.f1(40, SCRATCH), None);

        let dir = std::env::temp_dir().join(format!("headswap-report-na-{}", std::process::id()));
        let written = demo_report(&dir, &report).unwrap();
        assert_eq!(written.len(), 4);
        label_f1_bars(&dir.join("bars.png"), "", &report.label_names, &[None, Some(0.5)]).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
