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

use std::path::Path;

use super::image_folder::{ImageOptions, load_image};
use super::{Dataset, LoadReport, Targets};
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
    let ds = load(csv_path, opts)?;
    let report = LoadReport::of(&ds, csv_path);
    Ok((ds, report))
}

/// Loads a CSV manifest (see the module docs) into a multi-label data set: `k` = the number of
/// label columns, label names from the header, input shape `[C, H, W]` from `opts`. Errors name
/// the CSV file and the line (counted from 1, the header being line 1) and column (counted from
/// 1, with its header name) of a wrong column count, a label value other than 0/1/empty, or an
/// image that is missing or cannot be decoded (the image path is named too).
pub fn load(csv_path: &Path, opts: &ImageOptions) -> Result<Dataset> {
    opts.check()?;
    let bytes = std::fs::read(csv_path).map_err(|e| Error::io(csv_path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| Error::format(csv_path, format!("not UTF-8 text: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let base = csv_path.parent().unwrap_or(Path::new(""));
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());

    let Some((hi, header)) = lines.next() else {
        return Err(Error::format(csv_path, "empty manifest: expected a header `path,label_1,...`"));
    };
    let names = split_fields(header).map_err(|m| Error::format(csv_path, format!("line {}: {m}", hi + 1)))?;
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
        if fields[0].is_empty() {
            return Err(Error::format(csv_path, format!("line {line_no}, column 1: empty image path")));
        }
        let img_path = base.join(&fields[0]);
        if !img_path.is_file() {
            return Err(Error::format(
                csv_path,
                format!("line {line_no}, column 1: image {} does not exist or is not a file", img_path.display()),
            ));
        }
        let v = load_image(&img_path, opts).map_err(|e| Error::format(csv_path, format!("line {line_no}, column 1: {e}")))?;
        x.extend_from_slice(&v);
        n += 1;
    }
    if n == 0 {
        return Err(Error::format(csv_path, "manifest has a header but no rows"));
    }
    let ds = Dataset { x, n, d: shape.iter().product(), input_shape: shape, targets: Targets::Labels { y, k }, label_names };
    ds.validate().map_err(|e| Error::format(csv_path, e.to_string()))?;
    Ok(ds)
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
    use super::split_fields;

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
