//! f16 storage kernels against the `half` crate (the reference: `f16::from_f32` rounds to
//! nearest, ties to even; `to_f32` is exact): `pack_rows_f16` (f32 rows → two halves per u32)
//! and `gather_rows_f16` (a batch of packed rows through an index buffer → f32), on fresh random
//! inputs at odd sizes, with every f16 bit pattern, rounding ties, subnormals, overflow and NaN,
//! into outputs poisoned first. Both results are compared as bits: the kernels convert in
//! integer arithmetic and must agree with the reference exactly, on every adapter.
mod common;
use common::*;
use half::f16;
use headswap::gpu::tensor::DType;
use headswap::kernels::gather::{f16_words, gather_rows_f16, gather_rows_f16_chunk, pack_f16, pack_rows_f16, widen_f16};
use headswap::{Gpu, Rng, Tensor};

/// The reference packing of one row: halves `2j` (low) and `2j + 1` (high, 0 past the end).
fn pack_ref(row: &[f32]) -> Vec<u32> {
    row.chunks(2)
        .map(|p| {
            let lo = f16::from_f32(p[0]).to_bits() as u32;
            let hi = p.get(1).map_or(0, |&v| f16::from_f32(v).to_bits() as u32);
            lo | (hi << 16)
        })
        .collect()
}

/// f32 inputs that exercise the rounding: random values over the whole f16 range (normal and
/// subnormal), exact ties between neighbouring halves, one past a tie either side, values that
/// overflow, underflow, ±0, ±inf and NaNs.
fn awkward_f32(seed: u64, len: usize) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..len)
        .map(|i| {
            let h = f16::from_bits(r.below(0x7c00) as u16 | if r.below(2) == 1 { 0x8000 } else { 0 });
            let x = h.to_f32();
            let next = f16::from_bits(h.to_bits() + 1).to_f32();
            let tie = ((x as f64 + next as f64) / 2.0) as f32; // exact in f32
            match i % 9 {
                0 => x,
                1 => tie,
                2 => f32::from_bits(tie.to_bits() + 1),
                3 => f32::from_bits(tie.to_bits().wrapping_sub(1)),
                4 => r.uniform(-70000.0, 70000.0) as f32,
                5 => (r.uniform(-1.0, 1.0) * 1e-6) as f32,
                6 => [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, 65520.0, -65519.0, 1e-9][r.below(9) as usize],
                _ => r.uniform(-4.0, 4.0) as f32,
            }
        })
        .collect()
}

fn u32_poisoned(gpu: &Gpu, shape: &[usize]) -> Tensor {
    Tensor::from_u32(gpu, shape, &vec![u32::MAX; shape.iter().product()]).unwrap()
}

/// Compares NaN-aware: a NaN half must come out a NaN half (the reference keeps its payload's top
/// bits, so the bits are compared too).
fn assert_bits(what: &str, actual: &[u32], expected: &[u32]) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    let bad: Vec<usize> = (0..actual.len()).filter(|&i| actual[i] != expected[i]).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} words differ, first at {}: {:#010x} vs expected {:#010x}",
        bad.len(),
        actual.len(),
        bad[0],
        actual[bad[0]],
        expected[bad[0]]
    );
}

#[test]
fn pack_matches_half_at_odd_sizes() {
    let gpu = gpu();
    for (k, &rows) in ODD_SIZES.iter().enumerate() {
        for (m, &d) in ODD_SIZES.iter().enumerate() {
            let x = awkward_f32(100 + (k * 7 + m) as u64, rows * d);
            let src = upload(&gpu, &[rows, d], &x);
            let dst = u32_poisoned(&gpu, &[rows, f16_words(d)]);
            pack_rows_f16(&gpu, &src, &dst, 0).unwrap().run(&gpu).unwrap();
            let expected: Vec<u32> = x.chunks(d).flat_map(pack_ref).collect();
            assert_bits(&format!("pack rows={rows} d={d}"), &dst.download_u32(&gpu).unwrap(), &expected);
        }
    }
}

#[test]
fn pack_into_chunks_writes_only_its_rows() {
    // a batch of 33 rows whose global rows 40..73 straddle a chunk holding global rows 50..77
    let gpu = gpu();
    let (rows, d, start, base, n) = (33, 7, 40, 50, 27);
    let x = rand_vec(7, rows * d);
    let src = upload(&gpu, &[rows, d], &x);
    let dst = u32_poisoned(&gpu, &[n, f16_words(d)]);
    let p = pack_rows_f16(&gpu, &src, &dst, base).unwrap();
    p.set_start(&gpu, start).unwrap();
    p.run(&gpu).unwrap();
    let got = dst.download_u32(&gpu).unwrap();
    let w = f16_words(d);
    for local in 0..n {
        let g = base + local;
        let expected = if g < start + rows { pack_ref(&x[(g - start) * d..(g - start + 1) * d]) } else { vec![u32::MAX; w] };
        assert_bits(&format!("chunk row {local}"), &got[local * w..(local + 1) * w], &expected);
    }
}

#[test]
fn every_half_is_widened_exactly_by_the_gather() {
    // all 65,536 f16 bit patterns, in rows of an odd width, gathered in a shuffled order
    let gpu = gpu();
    let d = 127;
    let halves: Vec<u16> = (0..=u16::MAX).collect();
    let n = halves.len().div_ceil(d);
    let mut flat = halves.clone();
    flat.resize(n * d, 0x3c00);
    let packed: Vec<u32> =
        flat.chunks(d).flat_map(|row| row.chunks(2).map(|p| p[0] as u32 | (p.get(1).copied().unwrap_or(0) as u32) << 16)).collect();
    let src = Tensor::from_u32(&gpu, &[n, f16_words(d)], &packed).unwrap();
    let mut order: Vec<u32> = (0..n as u32).rev().collect();
    order.push(n as u32 + 5); // past the end: a NaN row
    let indices = Tensor::from_u32(&gpu, &[order.len()], &order).unwrap();
    let dst = poisoned(&gpu, &[order.len(), d]);
    gather_rows_f16(&gpu, &src, &indices, &dst).unwrap().run(&gpu).unwrap();
    let got: Vec<u32> = dst.download(&gpu).unwrap().iter().map(|v| v.to_bits()).collect();
    let mut expected = Vec::new();
    for &row in &order {
        match flat.get(row as usize * d..(row as usize + 1) * d) {
            Some(r) => expected.extend(r.iter().map(|&h| f16::from_bits(h).to_f32().to_bits())),
            None => expected.extend(std::iter::repeat_n(u32::MAX, d)),
        }
    }
    assert_bits("gather of every half", &got, &expected);
}

#[test]
fn pack_then_gather_at_odd_sizes_with_offsets_and_chunks() {
    let gpu = gpu();
    for (k, &n) in ODD_SIZES.iter().enumerate() {
        for &d in &[1usize, 7, 33, 127] {
            let x = rand_vec(300 + k as u64 * 11 + d as u64, n * d);
            // two chunks (one when n = 1): rows 0..split and split..n
            let split = n.div_ceil(2);
            let src = upload(&gpu, &[n, d], &x);
            let chunks: Vec<(usize, Tensor)> = [(0, split), (split, n - split)]
                .into_iter()
                .filter(|&(_, r)| r > 0)
                .map(|(b, r)| (b, u32_poisoned(&gpu, &[r, f16_words(d)])))
                .collect();
            for (base, t) in &chunks {
                pack_rows_f16(&gpu, &src, t, *base).unwrap().run(&gpu).unwrap();
            }
            let mut r = Rng::new(9 + n as u64);
            let mut order: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                order.swap(i, r.below(i as u64 + 1) as usize);
            }
            let b = n.div_ceil(3);
            let indices = Tensor::from_u32(&gpu, &[n], &order).unwrap();
            let dst = poisoned(&gpu, &[b, d]);
            let last = chunks.len() - 1;
            let gathers: Vec<_> = chunks
                .iter()
                .enumerate()
                .map(|(i, (base, t))| gather_rows_f16_chunk(&gpu, t, *base, i == last, &indices, &dst).unwrap())
                .collect();
            for offset in (0..=n - b).step_by(b) {
                for g in &gathers {
                    g.set_offset(&gpu, offset as u32).unwrap();
                    g.run(&gpu).unwrap();
                }
                let expected: Vec<f64> = order[offset..offset + b]
                    .iter()
                    .flat_map(|&row| x[row as usize * d..(row as usize + 1) * d].iter().map(|&v| f16::from_f32(v).to_f64()))
                    .collect();
                let got = dst.download(&gpu).unwrap();
                assert_close(&format!("pack+gather n={n} d={d} offset={offset}"), &got, &expected, Tolerance { rel: 0.0, abs: 0.0 });
                // and within f16's rounding of the f32 values
                let exact: Vec<f64> =
                    order[offset..offset + b].iter().flat_map(|&row| to_f64(&x[row as usize * d..(row as usize + 1) * d])).collect();
                assert_close("f16 rounding", &got, &exact, Tolerance { rel: 1.0 / 2048.0, abs: 6.2e-5 });
            }
        }
    }
}

#[test]
fn bad_shapes_are_refused() {
    let gpu = gpu();
    let f = Tensor::zeros(&gpu, &[4, 7]).unwrap();
    let wrong = Tensor::alloc(&gpu, &[4, 3], DType::U32, "wrong").unwrap(); // 7 values need 4 words
    assert!(pack_rows_f16(&gpu, &f, &wrong, 0).is_err());
    let idx = Tensor::from_u32(&gpu, &[4], &[0, 1, 2, 3]).unwrap();
    assert!(gather_rows_f16(&gpu, &wrong, &idx, &f).is_err());
    assert!(gather_rows_f16(&gpu, &f, &idx, &f).is_err()); // f32 source
}

#[test]
fn flat_pack_matches_half_at_odd_sizes() {
    // pack_f16, the arena conversion: any length, odd ones leave the last high half 0
    let gpu = gpu();
    for (k, &n) in ODD_SIZES.iter().chain(&[4099usize]).enumerate() {
        let x = awkward_f32(500 + k as u64, n);
        let src = upload(&gpu, &[n], &x);
        let dst = u32_poisoned(&gpu, &[f16_words(n)]);
        gpu.run("pack_f16", &[&pack_f16(&gpu, &src, &dst).unwrap()]).unwrap();
        assert_bits(&format!("pack_f16 n={n}"), &dst.download_u32(&gpu).unwrap(), &pack_ref(&x));
    }
}

#[test]
fn flat_widen_is_exact_from_any_word() {
    // widen_f16 from word `start` on: every f16 bit pattern, at odd starts and lengths
    let gpu = gpu();
    let packed: Vec<u32> = (0..=u16::MAX).collect::<Vec<u16>>().chunks(2).map(|p| p[0] as u32 | (p[1] as u32) << 16).collect();
    let src = Tensor::from_u32(&gpu, &[packed.len()], &packed).unwrap();
    for &(start, words) in &[(0usize, 1usize), (7, 33), (1, 127), (33, 7), (0, packed.len()), (127, packed.len() - 127)] {
        let dst = poisoned(&gpu, &[2 * words]);
        gpu.run("widen_f16", &[&widen_f16(&gpu, &src, start, &dst).unwrap()]).unwrap();
        let got: Vec<u32> = dst.download(&gpu).unwrap().iter().map(|v| v.to_bits()).collect();
        let expected: Vec<u32> = packed[start..start + words]
            .iter()
            .flat_map(|&w| [w as u16, (w >> 16) as u16])
            .map(|h| f16::from_bits(h).to_f32().to_bits())
            .collect();
        assert_bits(&format!("widen_f16 start={start} words={words}"), &got, &expected);
    }
}

#[test]
fn flat_kernels_refuse_bad_shapes() {
    let gpu = gpu();
    let x = upload(&gpu, &[7], &rand_vec(9, 7));
    let words = u32_poisoned(&gpu, &[3]);
    assert!(pack_f16(&gpu, &x, &words).is_err(), "7 values need 4 words");
    let odd = poisoned(&gpu, &[5]);
    assert!(widen_f16(&gpu, &words, 0, &odd).is_err(), "an odd destination");
    let six = poisoned(&gpu, &[6]);
    assert!(widen_f16(&gpu, &words, 1, &six).is_err(), "words 1..4 are past 3");
    assert!(widen_f16(&gpu, &words, 0, &six).is_ok());
}
