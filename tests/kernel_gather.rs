//! Row gathers through an index buffer against a host reference (inline below): odd row counts
//! and widths (d = 1 for labels), u32 labels, f32 rows with NaN payloads (compared as bits),
//! offsets rewritten without a rebuild, and out-of-range indices that must not be read.
mod common;
use common::*;
use headswap::kernels::gather::{self, GatherRows};
use headswap::{Gpu, Rng, Tensor};

/// The reference: `dst[i, :] = src[indices[offset + i], :]`, `u32::MAX` for an index ≥ n.
fn gather_ref(src: &[u32], d: usize, indices: &[u32], offset: usize, b: usize) -> Vec<u32> {
    let n = src.len() / d;
    let mut out = Vec::with_capacity(b * d);
    for &row in &indices[offset..offset + b] {
        let row = row as usize;
        if row < n { out.extend_from_slice(&src[row * d..(row + 1) * d]) } else { out.extend(std::iter::repeat_n(u32::MAX, d)) }
    }
    out
}

/// A seeded permutation of 0..n (an epoch's shuffle).
fn shuffle(seed: u64, n: usize) -> Vec<u32> {
    let mut r = Rng::new(seed);
    let mut v: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        v.swap(i, r.below(i as u64 + 1) as usize);
    }
    v
}

/// f32 rows as bits, with a few NaNs of distinct payloads and signs, infinities and −0.
fn f32_rows_bits(seed: u64, len: usize) -> Vec<u32> {
    let mut bits: Vec<u32> = rand_vec(seed, len).iter().map(|x| x.to_bits()).collect();
    let specials = [0x7fc0_0001, 0xffc0_1234, 0x7f80_0001, 0x7f80_0000, 0x8000_0000, 0x7fff_ffff];
    for (k, i) in (0..len).step_by(11).enumerate() {
        bits[i] = specials[k % specials.len()];
    }
    bits
}

/// A `poisoned` destination of `dtype`.
fn dst_tensor(gpu: &Gpu, shape: &[usize], f32_data: bool) -> Tensor {
    if f32_data { poisoned(gpu, shape) } else { Tensor::from_u32(gpu, shape, &vec![0xdead_beef; shape.iter().product()]).unwrap() }
}

fn upload_bits(gpu: &Gpu, shape: &[usize], bits: &[u32], f32_data: bool) -> Tensor {
    if f32_data {
        let v: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        upload(gpu, shape, &v)
    } else {
        Tensor::from_u32(gpu, shape, bits).unwrap()
    }
}

fn download_bits(gpu: &Gpu, t: &Tensor, f32_data: bool) -> Vec<u32> {
    if f32_data { t.download(gpu).unwrap().iter().map(|x| x.to_bits()).collect() } else { t.download_u32(gpu).unwrap() }
}

/// Gathers every batch of an epoch with one `GatherRows` (offsets 0, b, 2b, ...), checking each.
fn check_epoch(n: usize, d: usize, b: usize, f32_data: bool, seed: u64) {
    let gpu = gpu();
    let data = if f32_data { f32_rows_bits(seed, n * d) } else { (0..(n * d) as u32).map(|x| x.wrapping_mul(2_654_435_761)).collect() };
    // a row shape of [n, d], or [n] for one label per row
    let (sshape, dshape) = if d == 1 && !f32_data { (vec![n], vec![b]) } else { (vec![n, d], vec![b, d]) };
    let src = upload_bits(&gpu, &sshape, &data, f32_data);
    let order = shuffle(seed + 1, n);
    let indices = Tensor::from_u32(&gpu, &[n], &order).unwrap();
    let dst = dst_tensor(&gpu, &dshape, f32_data);
    let g: GatherRows = gather::gather_rows(&gpu, &src, &indices, &dst).unwrap();
    assert_eq!(g.rows(), b);
    for offset in (0..=n - b).step_by(b) {
        g.set_offset(&gpu, offset as u32).unwrap();
        g.run(&gpu).unwrap();
        let expected = gather_ref(&data, d, &order, offset, b);
        assert_eq!(download_bits(&gpu, &dst, f32_data), expected, "gather n={n} d={d} b={b} f32={f32_data} offset={offset}");
    }
}

#[test]
fn f32_rows_odd_sizes() {
    for (i, &n) in ODD_SIZES.iter().enumerate() {
        // widths of a multiple of 4 take the vec4 kernel, the others the scalar one
        for (j, &d) in [1, 3, 4, 7, 8, 33, 256, 257].iter().enumerate() {
            for b in [1, n.div_ceil(3), n] {
                check_epoch(n, d, b, true, 10 * i as u64 + j as u64);
            }
        }
    }
}

#[test]
fn u32_labels_and_rows() {
    for (i, &n) in ODD_SIZES.iter().enumerate() {
        for d in [1, 2, 4, 7] {
            for b in [1, n.div_ceil(4), n] {
                check_epoch(n, d, b, false, 100 + i as u64);
            }
        }
    }
}

#[test]
fn batches_over_a_longer_index_buffer() {
    // indices for three epochs in one buffer, with repeats; b = 7 rows of d = 784 (an MNIST batch)
    let gpu = gpu();
    let (n, d, b) = (33, 784, 7);
    let data = f32_rows_bits(200, n * d);
    let src = upload_bits(&gpu, &[n, d], &data, true);
    let order: Vec<u32> = (0..3).flat_map(|e| shuffle(201 + e, n)).collect();
    let indices = Tensor::from_u32(&gpu, &[order.len()], &order).unwrap();
    let dst = poisoned(&gpu, &[b, d]);
    let g = gather::gather_rows(&gpu, &src, &indices, &dst).unwrap();
    for offset in [0, 5, 26, 33, 50, order.len() - b] {
        g.set_offset(&gpu, offset as u32).unwrap();
        // recorded into a pass with other work, as the trainer does
        gpu.run("step", &[g.dispatch()]).unwrap();
        assert_eq!(download_bits(&gpu, &dst, true), gather_ref(&data, d, &order, offset, b), "offset {offset}");
    }
    assert!(g.set_offset(&gpu, (order.len() - b + 1) as u32).is_err(), "a batch past the end of the indices");
}

#[test]
fn out_of_range_indices_are_not_read() {
    let gpu = gpu();
    let (n, d) = (7, 3);
    // src is a view at the start of a larger buffer whose bytes after it (99s) must not leak
    let backing = upload(&gpu, &[64 + n * d], &vec![99.0; 64 + n * d]);
    let src = backing.view(0, &[n, d]).unwrap();
    let rows = rand_vec(300, n * d);
    src.write(&gpu, &rows).unwrap();
    let order = [6, 7, 0, u32::MAX, 8, 3];
    let indices = Tensor::from_u32(&gpu, &[order.len()], &order).unwrap();
    let dst = poisoned(&gpu, &[order.len(), d]);
    gather::gather_rows(&gpu, &src, &indices, &dst).unwrap().run(&gpu).unwrap();
    let bits: Vec<u32> = rows.iter().map(|x| x.to_bits()).collect();
    let got = download_bits(&gpu, &dst, true);
    assert_eq!(got, gather_ref(&bits, d, &order, 0, order.len()));
    assert!(got[3..6].iter().all(|&x| x == u32::MAX) && f32::from_bits(got[3]).is_nan());
    // u32 labels: an out-of-range row reads as u32::MAX
    let labels = Tensor::from_u32(&gpu, &[n], &[10, 11, 12, 13, 14, 15, 16]).unwrap();
    let out = Tensor::from_u32(&gpu, &[order.len()], &[0; 6]).unwrap();
    gather::gather_rows(&gpu, &labels, &indices, &out).unwrap().run(&gpu).unwrap();
    assert_eq!(out.download_u32(&gpu).unwrap(), vec![16, u32::MAX, 10, u32::MAX, u32::MAX, 13]);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let gpu = gpu();
    let src = upload(&gpu, &[5, 3], &[0.0; 15]);
    let idx = Tensor::from_u32(&gpu, &[4], &[0, 1, 2, 3]).unwrap();
    let idx_f32 = upload(&gpu, &[4], &[0.0; 4]);
    let dst_ok = poisoned(&gpu, &[4, 3]);
    assert!(gather::gather_rows(&gpu, &src, &idx, &poisoned(&gpu, &[4, 2])).is_err(), "row width");
    assert!(gather::gather_rows(&gpu, &src, &idx, &poisoned(&gpu, &[5, 3])).is_err(), "more rows than indices");
    assert!(gather::gather_rows(&gpu, &src, &idx_f32, &dst_ok).is_err(), "f32 indices");
    let dst_u32 = Tensor::from_u32(&gpu, &[4, 3], &[0; 12]).unwrap();
    assert!(gather::gather_rows(&gpu, &src, &idx, &dst_u32).is_err(), "dtype mismatch");
    let g = gather::gather_rows(&gpu, &src, &idx, &dst_ok).unwrap();
    assert!(g.set_offset(&gpu, 1).is_err());
    g.set_offset(&gpu, 0).unwrap();
}

#[test]
fn batches_of_more_rows_than_one_grid_dimension_holds() {
    // 16 rows per workgroup × 65,535 workgroups: past that the rows fold into z
    let gpu = gpu();
    let n = 16 * 65_535 + 13;
    let data: Vec<u32> = (0..n as u32).map(|x| x.wrapping_mul(2_654_435_761)).collect();
    let src = Tensor::from_u32(&gpu, &[n], &data).unwrap();
    let order = shuffle(400, n);
    let indices = Tensor::from_u32(&gpu, &[n], &order).unwrap();
    let dst = Tensor::from_u32(&gpu, &[n], &vec![0xdead_beef; n]).unwrap();
    gather::gather_rows(&gpu, &src, &indices, &dst).unwrap().run(&gpu).unwrap();
    assert_eq!(dst.download_u32(&gpu).unwrap(), gather_ref(&data, 1, &order, 0, n));
}

#[test]
fn pairs_of_inputs_and_targets_in_one_launch() {
    let gpu = gpu();
    for (s, &(n, dx, dy, b)) in
        [(1, 4, 1, 1), (7, 8, 3, 5), (33, 256, 4, 16), (127, 784, 7, 33), (70, 4, 65, 64), (300, 12, 1, 257)].iter().enumerate()
    {
        let seed = 500 + 10 * s as u64;
        let xs = f32_rows_bits(seed, n * dx);
        let ys: Vec<u32> = (0..(n * dy) as u32).map(|v| v.wrapping_mul(2_654_435_761) ^ 7).collect();
        let src_x = upload_bits(&gpu, &[n, dx], &xs, true);
        let src_y = Tensor::from_u32(&gpu, &[n, dy], &ys).unwrap();
        // two epochs of indices, with an out-of-range one in the second
        let mut order: Vec<u32> = shuffle(seed + 1, n).into_iter().chain(shuffle(seed + 2, n)).collect();
        order[n + n / 2] = n as u32 + 3;
        let indices = Tensor::from_u32(&gpu, &[order.len()], &order).unwrap();
        let dst_x = poisoned(&gpu, &[b, dx]);
        let dst_y = Tensor::from_u32(&gpu, &[b, dy], &vec![0xdead_beef; b * dy]).unwrap();
        let g = gather::gather_rows_pair(&gpu, &src_x, &dst_x, &src_y, &dst_y, &indices).unwrap().expect("vec4 inputs pair up");
        for offset in [0, n - b, n / 2 + 1, 2 * n - b] {
            g.set_offset(&gpu, offset as u32).unwrap();
            g.run(&gpu).unwrap();
            let what = format!("pair n={n} dx={dx} dy={dy} b={b} offset={offset}");
            assert_eq!(download_bits(&gpu, &dst_x, true), gather_ref(&xs, dx, &order, offset, b), "{what}: inputs");
            assert_eq!(dst_y.download_u32(&gpu).unwrap(), gather_ref(&ys, dy, &order, offset, b), "{what}: targets");
        }
        assert!(g.set_offset(&gpu, (2 * n - b + 1) as u32).is_err(), "a batch past the end of the indices");
    }
    // inputs that are not whole vec4s take two gathers
    let src_x = poisoned(&gpu, &[5, 3]);
    let src_y = Tensor::from_u32(&gpu, &[5], &[0; 5]).unwrap();
    let idx = Tensor::from_u32(&gpu, &[5], &[0, 1, 2, 3, 4]).unwrap();
    let (dst_x, dst_y) = (poisoned(&gpu, &[2, 3]), Tensor::from_u32(&gpu, &[2], &[0; 2]).unwrap());
    assert!(gather::gather_rows_pair(&gpu, &src_x, &dst_x, &src_y, &dst_y, &idx).unwrap().is_none());
    // mismatched rows are an error
    let short_y = Tensor::from_u32(&gpu, &[4], &[0; 4]).unwrap();
    let src_x4 = poisoned(&gpu, &[5, 4]);
    let dst_x4 = poisoned(&gpu, &[2, 4]);
    assert!(gather::gather_rows_pair(&gpu, &src_x4, &dst_x4, &short_y, &dst_y, &idx).is_err());
}
