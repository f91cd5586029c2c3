//! Multi-label image data from a CSV manifest:
//!
//! ```text
//! path,pedestrian,car,stop_sign
//! img/0001.png,1,0,
//! "img/with, comma.jpg",0,1,1
//! ```
//!
//! The first line is always the header (a file without one is refused, not read as data): its
//! first column names the image path (any name; `path` by convention) and each further column
//! names a label; label names must be distinct. Each row gives an image path, relative to the CSV's folder
//! (absolute paths are used as they are), and per label `1` (present), `0` (absent) or an empty
//! field (unknown → NaN, masked out of the loss). Fields may be wrapped in double quotes (a `""`
//! inside stands for one `"`), which lets a path contain commas; fields are trimmed of
//! surrounding spaces; blank lines are skipped; a UTF-8 byte-order mark and `\r\n` line ends
//! are accepted. Images are decoded as in [`super::image_folder`].
//!
//! **Grouped by head.** A header with a `head:label` column groups the columns by head, for a
//! network of named heads ([`crate::nn::Network::from_trunk_heads`]); the data's targets are then
//! [`Targets::Heads`], in the order the heads first appear:
//!
//! ```text
//! path,objects:pedestrian,objects:car,scene,distance
//! img/0001.png,1,0,urban,12.5
//! img/0002.png,,1,,
//! ```
//!
//! The columns `head:label` of one head form a labels head (1, 0, empty = unknown), or a
//! regression head of several columns where the head is known to be one. A bare column is a
//! one-column head whose kind is, in this order: the kind of the known head of that name
//! ([`ManifestHead`], e.g. the heads of the model being trained); else inferred from its values —
//! every non-empty value a number → regression (MSE), else classes by name (the distinct names
//! sorted, so the same set of names always gives the same indices). A column of class numbers is
//! therefore read as regression unless a known head says classes (then the numbers are class
//! indices, or names where the head names its classes). Empty cells are unknown: class −1, NaN.
//! Errors name the file, the line, the column and the head: a value that does not fit the
//! head's kind, a class the known head does not have, a classes head given as `head:label`
//! columns. A manifest without a `head:label` column is read as before (one labels target), so a
//! single-target manifest's label names cannot contain `:`.

use std::path::Path;

use super::image_folder::{ImageOptions, load_image};
use super::{Dataset, HeadTargets, LoadReport, Targets};
use crate::kernels::loss::{IGNORE_CLASS, RegressionLoss};
use crate::nn::HeadKind;
use crate::{Error, Result};

/// Splits one CSV line into fields; `Err(message)` for a stray or unterminated quote.
fn split_fields(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        // Start of a field: skip leading spaces.
        while chars.peek() == Some(&' ') || chars.peek() == Some(&'\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(format!("field {} has an unterminated quote", fields.len() + 1)),
                }
            }
            while chars.peek() == Some(&' ') || chars.peek() == Some(&'\t') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(format!("field {}: unexpected {c:?} after a closing quote", fields.len() + 1));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(format!(
                            "field {}: a quote inside an unquoted field (wrap the whole field in quotes)",
                            fields.len() + 1
                        ));
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim().to_string());
        }
    }
}

/// Loads a CSV manifest (see the module docs) into a multi-label data set, and says what it read:
/// the rows, and per label the known positives and the unknowns. A manifest skips nothing (a
/// row it cannot use is an error), so the report's `skipped` is empty. Errors as [`load`].
pub fn load_with_report(csv_path: &Path, opts: &ImageOptions) -> Result<(Dataset, LoadReport)> {
    load_heads_with_report(csv_path, opts, &[])
}

/// [`load_with_report`] where a grouped manifest's heads may be known ahead ([`load_heads`]).
pub fn load_heads_with_report(csv_path: &Path, opts: &ImageOptions, known: &[ManifestHead]) -> Result<(Dataset, LoadReport)> {
    let ds = load_heads(csv_path, opts, known)?;
    let report = LoadReport::of(&ds, csv_path);
    Ok((ds, report))
}

/// Loads a CSV manifest (see the module docs) into a multi-label data set: `k` = the number of
/// label columns, label names from the header, input shape `[C, H, W]` from `opts`. Errors name
/// the CSV file and the line (counted from 1, the header being line 1) and column (counted from
/// 1, with its header name) of a wrong column count, a label value other than 0/1/empty, or an
/// image that is missing or cannot be decoded (the image path is named too).
pub fn load(csv_path: &Path, opts: &ImageOptions) -> Result<Dataset> {
    load_heads(csv_path, opts, &[])
}

/// A head a grouped manifest's loader knows before reading (the heads of the model it is for):
/// its kind, and a classes head's class names in the model's order (`None`: class indices).
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestHead {
    pub name: String,
    pub kind: HeadKind,
    pub names: Option<Vec<String>>,
}

impl ManifestHead {
    /// The heads of a network of named heads, as a manifest's loader needs them.
    pub fn of(heads: &[crate::nn::HeadInfo]) -> Vec<ManifestHead> {
        heads.iter().map(|h| ManifestHead { name: h.name.clone(), kind: h.kind, names: h.label_names.clone() }).collect()
    }
}

/// Whether a manifest's header (its column names, the path's first) groups its columns by head:
/// some column is `head:label`.
pub fn is_grouped(names: &[String]) -> bool {
    names.iter().skip(1).any(|n| n.contains(':'))
}

/// Loads a CSV manifest (see the module docs): a single-target one as [`load`] does, a grouped
/// one into [`Targets::Heads`], the kinds of its heads from `known` where it names them (else
/// inferred from the values). Errors as [`load`], and for a grouped manifest naming the head.
pub fn load_heads(csv_path: &Path, opts: &ImageOptions, known: &[ManifestHead]) -> Result<Dataset> {
    opts.check()?;
    let bytes = std::fs::read(csv_path).map_err(|e| Error::io(csv_path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| Error::format(csv_path, format!("not UTF-8 text: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());

    let Some((hi, header)) = lines.next() else {
        return Err(Error::format(csv_path, "empty manifest: expected a header `path,label_1,...`"));
    };
    let names = split_fields(header).map_err(|m| Error::format(csv_path, format!("line {}: {m}", hi + 1)))?;
    if is_grouped(&names) {
        let rows = read_rows(csv_path, lines, names.len())?;
        let (targets, label_names) = parse_grouped(&names, hi + 1, &rows, known).map_err(|m| Error::format(csv_path, m))?;
        return finish(csv_path, opts, &rows, targets, label_names);
    }
    let base = csv_path.parent().unwrap_or(Path::new(""));
    if names.len() < 2 {
        return Err(Error::format(
            csv_path,
            format!("line {}: header has {} column(s); expected `path,label_1,...,label_k`", hi + 1, names.len()),
        ));
    }
    if let Some(j) = names.iter().position(|n| n.is_empty()) {
        return Err(Error::format(csv_path, format!("line {}, column {}: empty column name", hi + 1, j + 1)));
    }
    let label_names: Vec<String> = names[1..].to_vec();
    check_label_names(csv_path, hi + 1, &label_names)?;
    let k = label_names.len();

    let shape = opts.input_shape();
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut n = 0usize;
    for (li, line) in lines {
        let line_no = li + 1;
        let fields = split_fields(line).map_err(|m| Error::format(csv_path, format!("line {line_no}: {m}")))?;
        if fields.len() != k + 1 {
            return Err(Error::format(csv_path, format!("line {line_no}: {} columns, the header has {}", fields.len(), k + 1)));
        }
        for (j, v) in fields[1..].iter().enumerate() {
            y.push(match v.as_str() {
                "1" => 1.0,
                "0" => 0.0,
                "" => f32::NAN,
                other => {
                    return Err(Error::format(
                        csv_path,
                        format!("line {line_no}, column {} ({:?}): {other:?} is not 0, 1 or empty (unknown)", j + 2, label_names[j]),
                    ));
                }
            });
        }
        x.extend_from_slice(&row_image(csv_path, base, opts, line_no, &fields[0])?);
        n += 1;
    }
    if n == 0 {
        return Err(Error::format(csv_path, "manifest has a header but no rows"));
    }
    let ds = Dataset { x, n, d: shape.iter().product(), input_shape: shape, targets: Targets::Labels { y, k }, label_names };
    ds.validate().map_err(|e| Error::format(csv_path, e.to_string()))?;
    Ok(ds)
}

/// The image a row names in its first field (`path`, relative to the CSV's folder `base`),
/// decoded and preprocessed by `opts`; errors name the line and column 1.
fn row_image(csv_path: &Path, base: &Path, opts: &ImageOptions, line_no: usize, path: &str) -> Result<Vec<f32>> {
    if path.is_empty() {
        return Err(Error::format(csv_path, format!("line {line_no}, column 1: empty image path")));
    }
    let img_path = base.join(path);
    if !img_path.is_file() {
        return Err(Error::format(
            csv_path,
            format!("line {line_no}, column 1: image {} does not exist or is not a file", img_path.display()),
        ));
    }
    load_image(&img_path, opts).map_err(|e| Error::format(csv_path, format!("line {line_no}, column 1: {e}")))
}

/// The rows after the header as `(line number from 1, fields)`, each with the header's `width`.
fn read_rows<'a>(csv_path: &Path, lines: impl Iterator<Item = (usize, &'a str)>, width: usize) -> Result<Vec<(usize, Vec<String>)>> {
    let mut rows = Vec::new();
    for (li, line) in lines {
        let line_no = li + 1;
        let fields = split_fields(line).map_err(|m| Error::format(csv_path, format!("line {line_no}: {m}")))?;
        if fields.len() != width {
            return Err(Error::format(csv_path, format!("line {line_no}: {} columns, the header has {width}", fields.len())));
        }
        rows.push((line_no, fields));
    }
    if rows.is_empty() {
        return Err(Error::format(csv_path, "manifest has a header but no rows"));
    }
    Ok(rows)
}

/// The images of `rows` (their first field, relative to the CSV's folder) and the data set.
fn finish(
    csv_path: &Path,
    opts: &ImageOptions,
    rows: &[(usize, Vec<String>)],
    targets: Targets,
    label_names: Vec<String>,
) -> Result<Dataset> {
    let base = csv_path.parent().unwrap_or(Path::new(""));
    let shape = opts.input_shape();
    let mut x = Vec::new();
    for (line_no, fields) in rows {
        x.extend_from_slice(&row_image(csv_path, base, opts, *line_no, &fields[0])?);
    }
    let ds = Dataset { x, n: rows.len(), d: shape.iter().product(), input_shape: shape, targets, label_names };
    ds.validate().map_err(|e| Error::format(csv_path, e.to_string()))?;
    Ok(ds)
}

/// One head of a grouped header: its name and its columns (index into the fields, label name;
/// `None` for a bare column).
struct Group {
    name: String,
    columns: Vec<(usize, Option<String>)>,
}

/// The heads of a grouped header (line `line_no`), in the order they first appear.
fn groups(names: &[String], line_no: usize) -> std::result::Result<Vec<Group>, String> {
    let mut groups: Vec<Group> = Vec::new();
    for (c, col) in names.iter().enumerate().skip(1) {
        let (head, label) = match col.split_once(':') {
            Some((h, l)) => (h.trim(), Some(l.trim().to_string())),
            None => (col.as_str(), None),
        };
        let at = format!("line {line_no}, column {} ({col:?})", c + 1);
        if head.is_empty() || label.as_ref().is_some_and(|l| l.is_empty() || l.contains(':')) {
            return Err(format!("{at}: a grouped column is `head:label` or a bare `head`"));
        }
        match groups.iter_mut().find(|g| g.name == head) {
            None => groups.push(Group { name: head.to_string(), columns: vec![(c, label)] }),
            Some(g) => {
                if label.is_none() || g.columns.iter().any(|(_, l)| l.is_none()) {
                    return Err(format!("{at}: head {head:?} has a bare column and other columns; a bare column is a head of its own"));
                }
                if g.columns.iter().any(|(_, l)| *l == label) {
                    return Err(format!("{at}: head {head:?} has the label {:?} twice", label.unwrap_or_default()));
                }
                g.columns.push((c, label));
            }
        }
    }
    Ok(groups)
}

/// The targets of a grouped manifest's `rows` (see the module docs).
fn parse_grouped(
    names: &[String],
    header_line: usize,
    rows: &[(usize, Vec<String>)],
    known: &[ManifestHead],
) -> std::result::Result<(Targets, Vec<String>), String> {
    let mut heads = Vec::new();
    for g in groups(names, header_line)? {
        let known = known.iter().find(|k| k.name == g.name);
        let at = |line_no: usize, c: usize| format!("line {line_no}, column {} ({:?}), head {:?}", c + 1, names[c], g.name);
        let bare = g.columns[0].1.is_none();
        let kind = match (known.map(|k| k.kind), bare) {
            (Some(HeadKind::Classes), false) => {
                return Err(format!(
                    "line {header_line}: head {:?} is a classes head (one class per example): give it one bare column {:?}, not `{0}:label` columns",
                    g.name, g.name
                ));
            }
            (Some(k), _) => k,
            (None, false) => HeadKind::Labels,
            (None, true) => {
                let c = g.columns[0].0;
                let numbers = rows.iter().all(|(_, f)| f[c].is_empty() || f[c].parse::<f32>().is_ok_and(f32::is_finite));
                if numbers { HeadKind::Regression(RegressionLoss::Mse) } else { HeadKind::Classes }
            }
        };
        let labels: Vec<String> = g.columns.iter().map(|(c, l)| l.clone().unwrap_or_else(|| names[*c].clone())).collect();
        let k = g.columns.len();
        let (targets, label_names) =
            match kind {
                HeadKind::Classes => {
                    let c = g.columns[0].0;
                    let class_names: Option<Vec<String>> = match known.and_then(|k| k.names.clone()) {
                        Some(n) => Some(n),
                        // a known classes head without names takes class indices
                        None if known.is_some() => None,
                        None => {
                            let mut v: Vec<String> = rows.iter().map(|(_, f)| f[c].clone()).filter(|v| !v.is_empty()).collect();
                            v.sort();
                            v.dedup();
                            Some(v)
                        }
                    };
                    let mut y = Vec::with_capacity(rows.len());
                    for (line_no, f) in rows {
                        let v = &f[c];
                        y.push(if v.is_empty() {
                            IGNORE_CLASS
                        } else {
                            match &class_names {
                                Some(n) => n.iter().position(|m| m == v).ok_or_else(|| {
                                    let shown: Vec<&str> = n.iter().take(10).map(String::as_str).collect();
                                    format!("{}: unknown class {v:?} (the head's classes: {})", at(*line_no, c), shown.join(", "))
                                })? as u32,
                                None => v.parse::<u32>().ok().filter(|&i| i != IGNORE_CLASS).ok_or_else(|| {
                                    format!("{}: {v:?} is not a class index (the head names no classes)", at(*line_no, c))
                                })?,
                            }
                        });
                    }
                    let num_classes = match &class_names {
                        Some(n) => n.len(),
                        None => y.iter().filter(|&&i| i != IGNORE_CLASS).max().map_or(0, |&m| m as usize + 1),
                    };
                    if num_classes == 0 {
                        return Err(format!("head {:?}: no row has a class", g.name));
                    }
                    (Targets::Classes { y, num_classes }, class_names.unwrap_or_default())
                }
                HeadKind::Labels => {
                    let mut y = Vec::with_capacity(rows.len() * k);
                    for (line_no, f) in rows {
                        for (c, _) in &g.columns {
                            y.push(match f[*c].as_str() {
                                "1" => 1.0,
                                "0" => 0.0,
                                "" => f32::NAN,
                                other => return Err(format!("{}: {other:?} is not 0, 1 or empty (a labels head)", at(*line_no, *c))),
                            });
                        }
                    }
                    (Targets::Labels { y, k }, labels)
                }
                HeadKind::Regression(_) => {
                    let mut y = Vec::with_capacity(rows.len() * k);
                    for (line_no, f) in rows {
                        for (c, _) in &g.columns {
                            let v = &f[*c];
                            y.push(if v.is_empty() {
                                f32::NAN
                            } else {
                                v.parse::<f32>()
                                    .ok()
                                    .filter(|x| x.is_finite())
                                    .ok_or_else(|| format!("{}: {v:?} is not a finite number (a regression head)", at(*line_no, *c)))?
                            });
                        }
                    }
                    (Targets::Regression { y, k }, labels)
                }
            };
        heads.push(HeadTargets::new(&g.name, targets).with_names(label_names));
    }
    Ok((Targets::Heads(heads), Vec::new()))
}

/// The header's label names must be a header's: a first line whose label fields are all `0` or
/// `1` is a data row (the file has no header), and the names must be distinct, since predictions
/// are reported per label name.
fn check_label_names(csv_path: &Path, line_no: usize, names: &[String]) -> Result<()> {
    if names.iter().all(|n| n == "0" || n == "1") {
        return Err(Error::format(
            csv_path,
            format!("line {line_no} looks like a data row (its labels are all 0/1): the first line must be a header: path,name_1,..."),
        ));
    }
    for (j, name) in names.iter().enumerate() {
        if let Some(first) = names[..j].iter().position(|m| m == name) {
            return Err(Error::format(
                csv_path,
                format!("line {line_no}: label name {name:?} appears twice (columns {} and {}); label names must differ", first + 2, j + 2),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{ManifestHead, parse_grouped, split_fields};
    use crate::data::Targets;
    use crate::kernels::loss::{IGNORE_CLASS, RegressionLoss};
    use crate::nn::HeadKind;

    fn header(h: &str) -> Vec<String> {
        split_fields(h).unwrap()
    }
    fn rows(lines: &[&str]) -> Vec<(usize, Vec<String>)> {
        lines.iter().enumerate().map(|(i, l)| (i + 2, split_fields(l).unwrap())).collect()
    }

    #[test]
    fn grouped_header_infers_kinds_and_reads_unknowns() {
        let names = header("path,objects:pedestrian,objects:car,scene,distance");
        let r = rows(&["a.png,1,0,urban,12.5", "b.png,,1,,", "c.png,0,,rural,-3"]);
        let (Targets::Heads(h), _) = parse_grouped(&names, 1, &r, &[]).unwrap() else { panic!("heads") };
        let got: Vec<&str> = h.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(got, ["objects", "scene", "distance"]);
        let Targets::Labels { y, k: 2 } = &h[0].targets else { panic!("objects: {:?}", h[0].targets) };
        assert_eq!((y[0], y[1], y[3], y[4]), (1.0, 0.0, 1.0, 0.0));
        assert!(y[2].is_nan() && y[5].is_nan());
        assert_eq!(h[0].label_names, ["pedestrian", "car"]);
        // classes by name, sorted: rural 0, urban 1
        assert_eq!(h[1].targets, Targets::Classes { y: vec![1, IGNORE_CLASS, 0], num_classes: 2 });
        assert_eq!(h[1].label_names, ["rural", "urban"]);
        let Targets::Regression { y, k: 1 } = &h[2].targets else { panic!("distance") };
        assert_eq!((y[0], y[2]), (12.5, -3.0));
        assert!(y[1].is_nan());
    }

    #[test]
    fn known_heads_decide_kinds_and_class_order() {
        let names = header("path,scene,size:w,size:h,flag");
        let r = rows(&["a.png,2,1.5,2,1", "b.png,0,,3,0"]);
        let known = [
            ManifestHead { name: "scene".into(), kind: HeadKind::Classes, names: None },
            ManifestHead { name: "size".into(), kind: HeadKind::Regression(RegressionLoss::L1), names: None },
            ManifestHead { name: "flag".into(), kind: HeadKind::Labels, names: None },
        ];
        let (Targets::Heads(h), _) = parse_grouped(&names, 1, &r, &known).unwrap() else { panic!("heads") };
        assert_eq!(h[0].targets, Targets::Classes { y: vec![2, 0], num_classes: 3 });
        let Targets::Regression { y, k: 2 } = &h[1].targets else { panic!("size") };
        assert_eq!((y[0], y[1], y[3]), (1.5, 2.0, 3.0));
        assert!(y[2].is_nan());
        assert_eq!(h[2].targets, Targets::Labels { y: vec![1.0, 0.0], k: 1 });
        // a model's class names give the model's order; a name it lacks is an error naming head and line
        let named = [ManifestHead { name: "scene".into(), kind: HeadKind::Classes, names: Some(vec!["urban".into(), "rural".into()]) }];
        let names = header("path,scene");
        let (Targets::Heads(h), _) = parse_grouped(&names, 1, &rows(&["a,rural", "b,urban"]), &named).unwrap() else { panic!() };
        assert_eq!(h[0].targets, Targets::Classes { y: vec![1, 0], num_classes: 2 });
        let e = parse_grouped(&names, 1, &rows(&["a,rural", "b,forest"]), &named).unwrap_err();
        assert!(e.contains("line 3") && e.contains("head \"scene\"") && e.contains("unknown class \"forest\""), "{e}");
    }

    #[test]
    fn grouped_errors_name_the_head_and_the_row() {
        let err = |h: &str, r: &[&str], known: &[ManifestHead]| parse_grouped(&header(h), 1, &rows(r), known).unwrap_err();
        let e = err("path,objects:a,objects:b", &["x,1,0", "y,1,yes"], &[]);
        assert!(e.contains("line 3, column 3") && e.contains("head \"objects\"") && e.contains("not 0, 1 or empty"), "{e}");
        let reg = [ManifestHead { name: "d".into(), kind: HeadKind::Regression(RegressionLoss::Mse), names: None }];
        let e = err("path,d,o:a", &["x,1.5,1", "y,far,0"], &reg);
        assert!(e.contains("line 3") && e.contains("head \"d\"") && e.contains("not a finite number"), "{e}");
        let cls = [ManifestHead { name: "s".into(), kind: HeadKind::Classes, names: None }];
        let e = err("path,s:a,s:b", &["x,1,0"], &cls);
        assert!(e.contains("\"s\" is a classes head"), "{e}");
        let e = err("path,s,o:a", &["x,-2,1"], &cls);
        assert!(e.contains("head \"s\"") && e.contains("not a class index"), "{e}");
        assert!(err("path,o:a,o", &["x,1,0"], &[]).contains("a bare column and other columns"));
        assert!(err("path,o:a,o:a", &["x,1,0"], &[]).contains("the label \"a\" twice"));
        assert!(err("path,:a,o:b", &["x,1,0"], &[]).contains("`head:label`"));
        assert!(err("path,s,o:a", &["x,,1"], &cls).contains("no row has a class"));
    }

    /// Random headers and rows over a small alphabet (colons, digits, names, empty fields, odd
    /// widths): the parser never panics, and what it accepts has one target per row and head.
    #[test]
    fn grouped_parser_never_panics_on_random_input() {
        let mut rng = crate::Rng::new(14);
        let atoms = ["", "0", "1", "2", "-1", "1.5", "nan", "inf", "a", "b", "o:a", "o:b", "s", "d", ":", "o:", "x:y:z", "1e3"];
        let known = [
            ManifestHead { name: "s".into(), kind: HeadKind::Classes, names: Some(vec!["a".into(), "b".into()]) },
            ManifestHead { name: "d".into(), kind: HeadKind::Regression(RegressionLoss::Huber(1.0)), names: None },
        ];
        let mut accepted = 0;
        for case in 0..30000 {
            let width = 2 + rng.below(4) as usize;
            let pick = |rng: &mut crate::Rng| atoms[rng.below(atoms.len() as u64) as usize].to_string();
            let mut names: Vec<String> = vec!["path".into()];
            names.extend((1..width).map(|_| pick(&mut rng)));
            if !super::is_grouped(&names) {
                continue;
            }
            let n = 1 + rng.below(4) as usize;
            let r: Vec<(usize, Vec<String>)> = (0..n).map(|i| (i + 2, (0..width).map(|_| pick(&mut rng)).collect())).collect();
            let k = if case % 2 == 0 { &known[..] } else { &[] };
            if let Ok((Targets::Heads(heads), _)) = parse_grouped(&names, 1, &r, k) {
                accepted += 1;
                for h in &heads {
                    let per_row = match &h.targets {
                        Targets::Classes { y, num_classes } => {
                            assert!(y.iter().all(|&c| c == IGNORE_CLASS || (c as usize) < *num_classes), "{names:?} {r:?}");
                            y.len()
                        }
                        Targets::Labels { y, k } | Targets::Regression { y, k } => y.len() / k,
                        other => panic!("unexpected {other:?}"),
                    };
                    assert_eq!(per_row, n, "{names:?} {r:?}");
                }
            }
        }
        assert!(accepted > 100, "only {accepted} random manifests parsed");
    }

    #[test]
    fn csv_fields() {
        assert_eq!(split_fields("a,1,,0").unwrap(), vec!["a", "1", "", "0"]);
        assert_eq!(split_fields("\"x, y.png\", 1 ,0").unwrap(), vec!["x, y.png", "1", "0"]);
        assert_eq!(split_fields("\"a\"\"b\",").unwrap(), vec!["a\"b", ""]);
        assert!(split_fields("\"open,1").is_err());
        assert!(split_fields("a\"b,1").is_err());
        assert!(split_fields("\"a\"b,1").is_err());
    }
}
