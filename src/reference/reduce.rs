//! Reductions in float64: the specification of `kernels::reduce`. `x` is row-major `[rows, cols]`.

/// `out[c] = Σ_r x[r, c]`.
pub fn col_sum(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    assert_eq!(x.len(), rows * cols, "col_sum: x has {} elements, not {rows}x{cols}", x.len());
    (0..cols).map(|c| (0..rows).map(|r| x[r * cols + c]).sum()).collect()
}

/// `out[r] = Σ_c x[r, c]`.
pub fn row_sum(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    assert_eq!(x.len(), rows * cols, "row_sum: x has {} elements, not {rows}x{cols}", x.len());
    x.chunks(cols.max(1)).take(rows).map(|row| row.iter().sum()).collect()
}

/// `out[r] = max_c x[r, c]`; NaN when the row holds a NaN (like `torch.max`), −∞ for no columns.
pub fn row_max(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    assert_eq!(x.len(), rows * cols, "row_max: x has {} elements, not {rows}x{cols}", x.len());
    (0..rows)
        .map(|r| {
            let row = &x[r * cols..(r + 1) * cols];
            if row.iter().any(|v| v.is_nan()) { f64::NAN } else { row.iter().copied().fold(f64::NEG_INFINITY, f64::max) }
        })
        .collect()
}

/// The total of all elements.
pub fn sum(x: &[f64]) -> f64 {
    x.iter().sum()
}
