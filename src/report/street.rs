//! The charts and `index.html` of the multi-task street demo ([`crate::demo::street`]).

use super::{Line, Mark, color, epoch_chart, esc, font, grouped_bars, href, legend_strip, loss_range, render_png, write_atomic};
use crate::data::street::{HEAD_COUNT, HEAD_OBJECTS, HEAD_SCENE, layouts, street_scenes};
use crate::demo::street::{COUNT_ONLY, MULTI_TASK, OBJECTS_ONLY, Quality, SCENE_ONLY, SEPARATE, SETUPS, StreetReport, StreetRow};
use crate::error::{Error, Result};
use crate::kernels::metrics::OrNa;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const BASELINE: &str = "no image: training-set priors";

/// The bars' series: the baseline (where `baseline` gives values), then per trunk the multi-task
/// network and `other` (the single-task networks).
fn series(
    report: &StreetReport,
    other: &str,
    baseline: Option<Vec<Option<f64>>>,
    values: impl Fn(&StreetRow) -> Vec<Option<f64>>,
) -> Vec<(String, RGBColor, Vec<Option<f64>>)> {
    let mut out = Vec::new();
    if let Some(b) = baseline {
        out.push((BASELINE.to_string(), color(6), b));
    }
    for (t, (trunk, _)) in report.trunks.iter().enumerate() {
        for (s, setup) in [MULTI_TASK, other].into_iter().enumerate() {
            if let Some(r) = report.row(trunk, setup) {
                let name = match setup {
                    MULTI_TASK => "1 multi-task network",
                    OBJECTS_ONLY => "single-task objects network",
                    COUNT_ONLY => "single-task count network",
                    _ => "3 single-task networks",
                };
                out.push((format!("{trunk} trunk, {name}"), color(2 * t + s), values(r)));
            }
        }
    }
    out
}

fn loss_curves(path: &Path, report: &StreetReport) -> Result<()> {
    let heads =
        [(HEAD_OBJECTS, "objects: binary cross-entropy"), (HEAD_SCENE, "scene: cross-entropy"), (HEAD_COUNT, "count: squared error")];
    let single = |h: &str| match h {
        HEAD_OBJECTS => OBJECTS_ONLY,
        HEAD_SCENE => SCENE_ONLY,
        _ => COUNT_ONLY,
    };
    let curve = |r: &StreetRow, head: &str| -> Vec<(f64, f64)> {
        r.head_loss
            .iter()
            .find(|(n, _)| n == head)
            .map(|(_, l)| l.iter().enumerate().map(|(i, &v)| (i as f64 + 1.0, v)).collect())
            .unwrap_or_default()
    };
    let mut panels = Vec::new();
    let mut legend = Vec::new();
    for (t, (trunk, _)) in report.trunks.iter().enumerate() {
        legend.push(super::LegendItem::new(format!("{trunk} trunk, multi-task network"), color(2 * t), Mark::Line));
        legend.push(super::LegendItem::new(format!("{trunk} trunk, single-task network"), color(2 * t + 1), Mark::Dashed));
        for (head, what) in heads {
            let mut lines = Vec::new();
            if let Some(r) = report.row(trunk, MULTI_TASK) {
                lines.push(Line::new("multi-task", color(2 * t), false, curve(r, head)));
            }
            if let Some(r) = report.row(trunk, single(head)) {
                lines.push(Line::new("single-task", color(2 * t + 1), true, curve(r, head)));
            }
            panels.push((format!("{trunk} trunk — {what}"), lines));
        }
    }
    let rows = report.trunks.len().max(1);
    let size = (3 * 520, (400 * rows as u32 + 130).min(8000));
    render_png(path, size, |root| {
        let area = root.margin(10, 0, 0, 0).titled("Training loss of each task per epoch", font(26))?;
        let area = legend_strip(&area, &legend)?;
        for (cell, (caption, lines)) in area.split_evenly((rows, 3)).iter().zip(&panels) {
            epoch_chart(cell, caption, "training loss", lines, loss_range(lines))?;
        }
        Ok(())
    })
}

fn cell(v: Option<f64>, has: bool, percent: bool) -> String {
    match (has, v) {
        (false, _) => "-".to_string(),
        (true, Some(v)) if percent => format!("{:.1}%", 100.0 * v),
        (true, v) => format!("{:.3}", OrNa(v)),
    }
}

fn quality_cells(q: &Quality, setup: &str) -> String {
    let (o, s, c) = match setup {
        OBJECTS_ONLY => (true, false, false),
        SCENE_ONLY => (false, true, false),
        COUNT_ONLY => (false, false, true),
        _ => (true, true, true),
    };
    format!(
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
        cell(q.objects_f1, o, false),
        cell(q.scene_accuracy, s, true),
        cell(q.count_mae, c, false),
        cell(q.count_rmse, c, false)
    )
}

fn index_html(report: &StreetReport, figures: &[(String, String)]) -> String {
    let mut h = String::new();
    h.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<title>headswap multi-task demo: street scenes</title>\n<style>\n",
        "body { font-family: 'DejaVu Sans', Verdana, sans-serif; max-width: 1280px; margin: 2em auto; padding: 0 1em; color: #1e1e1e; }\n",
        "table { border-collapse: collapse; margin: 1em 0; }\n",
        "th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }\n",
        "th { background: #f2f2f2; } td.text, th.text { text-align: left; }\n",
        "tr.first td { border-top: 2px solid #888; }\n",
        "figure { margin: 2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }\n",
        "figcaption { margin-top: .5em; color: #444; }\n",
        "</style>\n</head>\n<body>\n<h1>headswap multi-task demo: street scenes</h1>\n<ul>\n"
    ));
    h.push_str(&format!("<li>adapter: {}</li>\n", esc(&report.adapter)));
    h.push_str(&format!("<li>data: {}</li>\n", esc(&report.data_description())));
    h.push_str(&format!("<li>training: {}</li>\n", esc(&report.training_description())));
    for (name, layers) in &report.trunks {
        h.push_str(&format!("<li>{} trunk: {}</li>\n", esc(name), esc(layers)));
    }
    h.push_str(&format!(
        "<li>tasks: objects ({}: labels, mean F1), scene ({}: accuracy), count (number of objects: MAE, RMSE)</li>\n</ul>\n",
        esc(&report.label_names.join(", ")),
        esc(&report.scene_names.join(", "))
    ));
    h.push_str(concat!(
        "<h2>Results</h2>\n<p>Quality on the held-out scenes; cost of training every network of the setup ",
        "(MMAC/example: forward multiply-adds per example, millions). “-”: the setup has no head for the task.</p>\n",
        "<table>\n<tr><th class=\"text\">trunk</th><th class=\"text\">setup</th><th>objects mean F1</th><th>scene accuracy</th>",
        "<th>count MAE</th><th>count RMSE</th><th>networks</th><th>parameters</th><th>MMAC/example</th><th>steps</th><th>time (s)</th></tr>\n"
    ));
    h.push_str(&format!(
        "<tr><td class=\"text\">-</td><td class=\"text\">{BASELINE}</td>{}<td></td><td></td><td></td><td></td><td></td></tr>\n",
        quality_cells(&report.baseline, MULTI_TASK)
    ));
    for r in &report.rows {
        h.push_str(&format!(
            "<tr{}><td class=\"text\">{}</td><td class=\"text\">{}</td>{}<td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{:.1}</td></tr>\n",
            if r.setup == MULTI_TASK { " class=\"first\"" } else { "" },
            esc(&r.trunk),
            esc(r.setup),
            quality_cells(&r.quality, r.setup),
            r.networks,
            r.params,
            r.multiply_adds as f64 / 1e6,
            r.steps,
            r.seconds
        ));
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

/// Writes the street demo's report into `dir` (created if need be): `samples.png` (the first 16
/// held-out scenes, redrawn from the report's seed, their targets in the caption), `quality.png` (objects mean
/// F1 and scene accuracy per setup, beside the training-set priors), `count_error.png` (the
/// count's MAE and RMSE), `label_f1.png` (F1 per object label), `cost.png` (parameters,
/// multiply-adds per example, steps and wall time of each setup, relative to the multi-task
/// network on the first trunk), `loss_curves.png` (each task's training loss per epoch, the
/// multi-task network's against the single-task one's, one row per trunk) and `index.html` with
/// the table. Returns the paths written, `index.html` last.
///
/// Errors: [`Error::InvalidInput`] for a report without its rows (every trunk needs every one of
/// [`SETUPS`]); [`Error::Io`] (with the path) when a folder or file cannot be written.
pub fn street_report(dir: &Path, report: &StreetReport) -> Result<Vec<PathBuf>> {
    for (trunk, _) in &report.trunks {
        if let Some(missing) = SETUPS.iter().find(|s| report.row(trunk, s).is_none()) {
            return Err(Error::invalid(format!("street_report: the {trunk} trunk has no row for {missing:?}")));
        }
    }
    if report.trunks.is_empty() {
        return Err(Error::invalid("street_report: the report has no trunks"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut figures = Vec::new();

    // the first held-out scenes, as the networks saw them, with their targets in the caption
    let name = "samples.png".to_string();
    let (n, cols) = (16, 8);
    let c = &report.config;
    let scenes = street_scenes(n, c.size, c.held_out_seed(), 0.0)?;
    crate::data::preview::save_grid_png(&dir.join(&name), &scenes, &(0..n).collect::<Vec<_>>(), cols, 6)?;
    let described: Vec<String> = layouts(n, c.held_out_seed())
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let things: Vec<&str> = l.places.iter().flatten().map(|t| t.name()).collect();
            let things = if things.is_empty() { "nothing".to_string() } else { things.join(", ") };
            format!("{}: {} — {things} (count {})", i + 1, l.scene.name(), l.count())
        })
        .collect();
    figures.push((
        name,
        format!(
            "The first {n} held-out scenes, {cols} per row (pedestrian: vertical bar, car: horizontal bar, stop sign: diamond, traffic light: ring, tree: triangle, not counted). {}.",
            described.join("; ")
        ),
    ));

    let name = "quality.png".to_string();
    let b = &report.baseline;
    grouped_bars(
        &dir.join(&name),
        "Quality per task on held-out scenes (higher is better)",
        "task",
        "score",
        &["objects: mean F1".to_string(), "scene: accuracy".to_string()],
        &series(report, SEPARATE, Some(vec![b.objects_f1, b.scene_accuracy]), |r| vec![r.quality.objects_f1, r.quality.scene_accuracy]),
    )?;
    figures.push((name, "Mean F1 of the object labels and scene-type accuracy on the held-out scenes: one multi-task network against three single-task networks (each task's score from its own network), per trunk, beside guessing from the training set's priors.".to_string()));

    let name = "count_error.png".to_string();
    grouped_bars(
        &dir.join(&name),
        "Error of the object count on held-out scenes (lower is better)",
        "error",
        "objects",
        &["MAE".to_string(), "RMSE".to_string()],
        &series(report, COUNT_ONLY, Some(vec![b.count_mae, b.count_rmse]), |r| vec![r.quality.count_mae, r.quality.count_rmse]),
    )?;
    figures.push((name, "Mean absolute and root mean squared error of the predicted number of objects (0–4), against the single-task count network and the training set's mean count.".to_string()));

    let name = "label_f1.png".to_string();
    grouped_bars(
        &dir.join(&name),
        "F1 per object label on held-out scenes",
        "label",
        "F1",
        &report.label_names,
        &series(report, OBJECTS_ONLY, Some(b.label_f1.clone()), |r| r.quality.label_f1.clone()),
    )?;
    figures.push((name, "F1 of each object label: the multi-task network's objects head against the single-task objects network, and always answering “present”.".to_string()));

    let name = "cost.png".to_string();
    let unit = report.row(&report.trunks[0].0, MULTI_TASK).cloned();
    let costs = |r: &StreetRow| -> Vec<Option<f64>> {
        let Some(u) = &unit else { return vec![None; 4] };
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        vec![
            ratio(r.params as f64, u.params as f64),
            ratio(r.multiply_adds as f64, u.multiply_adds as f64),
            ratio(r.steps as f64, u.steps as f64),
            ratio(r.seconds, u.seconds),
        ]
    };
    let first = report.trunks[0].0.clone();
    grouped_bars(
        &dir.join(&name),
        &format!("Training cost relative to the multi-task network on the {first} trunk"),
        "cost",
        "× the multi-task network's",
        &["parameters".to_string(), "multiply-adds per example".to_string(), "training steps".to_string(), "wall time".to_string()],
        &series(report, SEPARATE, None, costs),
    )?;
    figures.push((name, format!("What training each setup cost, as a multiple of the multi-task network on the {first} trunk: parameters, forward multiply-adds per example, optimizer steps and wall time (the table has the absolute numbers).")));

    let name = "loss_curves.png".to_string();
    loss_curves(&dir.join(&name), report)?;
    figures.push((name, "Each task's training loss per epoch (unweighted, on the training scenes): the multi-task network's head (solid) against the single-task network (dashed), one row per trunk.".to_string()));

    let mut written: Vec<PathBuf> = figures.iter().map(|(n, _)| dir.join(n)).collect();
    let index = dir.join("index.html");
    write_atomic(&index, index_html(report, &figures).as_bytes())?;
    written.push(index);
    Ok(written)
}
