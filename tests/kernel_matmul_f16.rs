//! matmul with operands stored in f16 ([`Operand::F16`]: two halves per u32, the first in the
//! low 16 bits, rows of ⌈cols/2⌉ words) against the float64 reference computed on the
//! f16-rounded operands: every variant, the three forms a dense layer uses (NN, NT, TN), f16 A,
//! f16 B and both, plain and gathered (the gathered operand in f16 or the other one), at odd
//! sizes from {1, 7, 33, 127} (odd row widths, so rows end in half a word) and one
//! vec4-aligned shape, into outputs poisoned with NaN first. Where the device has `shader-f16`
//! (lavapipe), the native reading must give the packed reading's results bit for bit.
mod common;
use common::*;
use half::f16;
use headswap::kernels::matmul::{
    F16Read, Gathered, Operand, Options, Variant, matmul_dispatch_gathered_ops, matmul_dispatch_ops, pack_f16,
};
use headswap::kernels::{Activation, Epilogue, Transpose};
use headswap::{Gpu, Rng, Tensor, reference};
use std::sync::{Mutex, MutexGuard};

const FORMS: [Transpose; 3] = [Transpose::NN, Transpose::NT, Transpose::TN];

/// Which operands are stored in f16.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Store {
    A,
    B,
    AB,
}
const STORES: [Store; 3] = [Store::A, Store::B, Store::AB];

impl Store {
    fn a(self) -> bool {
        self != Store::B
    }
    fn b(self) -> bool {
        self != Store::A
    }
}

/// The test's own packing (independent of `pack_f16`): rows of `cols` halves, two per word.
fn pack_ref(rows: usize, cols: usize, data: &[f32]) -> Vec<u32> {
    let h = |v: f32| f16::from_f32(v).to_bits() as u32;
    (0..rows)
        .flat_map(|r| {
            let row = &data[r * cols..(r + 1) * cols];
            row.chunks(2).map(move |p| h(p[0]) | (p.get(1).map_or(0, |&v| h(v)) << 16)).collect::<Vec<_>>()
        })
        .collect()
}

fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// One stored operand on the device: f32, or f16 words.
struct Stored {
    t: Tensor,
    cols: usize,
    f16: bool,
}

impl Stored {
    fn new(gpu: &Gpu, shape: [usize; 2], data: &[f32], f16: bool) -> Stored {
        let t = if f16 {
            Tensor::from_u32(gpu, &[shape[0], shape[1].div_ceil(2)], &pack_ref(shape[0], shape[1], data)).unwrap()
        } else {
            upload(gpu, &shape, data)
        };
        Stored { t, cols: shape[1], f16 }
    }
    fn op(&self) -> Operand<'_> {
        if self.f16 { Operand::F16 { words: &self.t, cols: self.cols } } else { Operand::F32(&self.t) }
    }
}

/// One product: stored operands, the gathered side (with its indices and offset), bias and
/// activation, and the float64 result on the values the kernel sees (f16-rounded where stored so).
struct Case {
    what: String,
    m: usize,
    n: usize,
    k: usize,
    t: Transpose,
    a: Stored,
    b: Stored,
    bias: Tensor,
    act: Activation,
    gather: Option<(Gathered, Tensor, u32)>,
    expected: Vec<f64>,
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(gpu: &Gpu, m: usize, n: usize, k: usize, t: Transpose, store: Store, gather: Option<Gathered>, seed: u64) -> Case {
        let (ta, tb) = (t == Transpose::TN, t == Transpose::NT);
        let batch = match gather {
            Some(Gathered::A) => m,
            Some(Gathered::B) => k,
            None => 0,
        };
        let src_rows = batch + 5;
        let offset = 2usize;
        let mut r = Rng::new(seed);
        let indices: Vec<u32> = (0..offset + batch + 1).map(|_| r.below(src_rows as u64) as u32).collect();
        let ashape = match gather {
            Some(Gathered::A) => [src_rows, k],
            _ if ta => [k, m],
            _ => [m, k],
        };
        let bshape = match gather {
            Some(Gathered::B) => [src_rows, n],
            _ if tb => [n, k],
            _ => [k, n],
        };
        let a = rand_vec(seed + 1, ashape[0] * ashape[1]);
        let b = rand_vec(seed + 2, bshape[0] * bshape[1]);
        let bias = rand_vec(seed + 3, n);
        let (sa, sb) = (if store.a() { rounded(&a) } else { a.clone() }, if store.b() { rounded(&b) } else { b.clone() });
        let picked = |src: &[f32], width: usize| -> Vec<f32> {
            indices[offset..offset + batch].iter().flat_map(|&i| src[i as usize * width..(i as usize + 1) * width].to_vec()).collect()
        };
        let (la, lb) = match gather {
            Some(Gathered::A) => (picked(&sa, k), sb),
            Some(Gathered::B) => (sa, picked(&sb, n)),
            None => (sa, sb),
        };
        let act = if (seed / 10).is_multiple_of(2) { Activation::Identity } else { Activation::LeakyRelu(0.1) };
        let mut z = reference::matmul(&to_f64(&la), &to_f64(&lb), m, n, k, t);
        reference::bias_add(&mut z, &to_f64(&bias));
        let expected = z.iter().map(|&v| reference::activate(act, v)).collect();
        let gather = gather.map(|g| (g, Tensor::from_u32(gpu, &[indices.len()], &indices).unwrap(), offset as u32));
        Case {
            what: format!("{t:?} m={m} n={n} k={k} f16 {store:?} gathered {:?}", gather.as_ref().map(|g| g.0)),
            m,
            n,
            k,
            t,
            a: Stored::new(gpu, ashape, &a, store.a()),
            b: Stored::new(gpu, bshape, &b, store.b()),
            bias: upload(gpu, &[n], &bias),
            act,
            gather,
            expected,
        }
    }

    /// Runs it with `variant` and `read`, checks it against the reference, returns the output.
    fn run(&self, gpu: &Gpu, variant: Option<Variant>, read: F16Read) -> Vec<f32> {
        let c = poisoned(gpu, &[self.m, self.n]);
        let epi = Epilogue { bias: Some(&self.bias), activation: self.act };
        let opts = Options { variant, f16_read: Some(read) };
        let name = match &self.gather {
            None => {
                let d = matmul_dispatch_ops(gpu, self.a.op(), self.b.op(), &c, self.t, epi, opts).unwrap();
                gpu.run("matmul f16 test", &[&d]).unwrap();
                d.name()
            }
            Some((side, indices, offset)) => {
                let d = matmul_dispatch_gathered_ops(gpu, self.a.op(), self.b.op(), &c, self.t, epi, *side, indices, opts).unwrap();
                d.set_offset(gpu, *offset).unwrap();
                d.run(gpu).unwrap();
                d.dispatch().name()
            }
        };
        if let Some(v) = variant {
            assert_eq!(name, v.entry(), "ran another kernel than the one asked for");
        }
        let out = c.download(gpu).unwrap();
        let tol = Tolerance { rel: 1e-4, abs: 1e-5 * (self.k as f64).sqrt() };
        assert_close(&format!("{name} {:?} {}", read, self.what), &out, &self.expected, tol);
        out
    }
}

/// On GL, this binary's tests run one at a time: wgpu's GL backend holds one context lock while
/// it compiles a shader and panics when a thread waits for it over 6 s, which the long f16
/// variants' compiles reach on a loaded CPU (other threads then fail, not the kernels).
fn serial(gpu: &Gpu) -> Option<MutexGuard<'static, ()>> {
    static GL: Mutex<()> = Mutex::new(());
    (gpu.adapter_info().backend == wgpu::Backend::Gl).then(|| GL.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The reads to run: packed always; native too where the device has shader-f16, checked equal to
/// packed bit for bit.
fn reads(gpu: &Gpu) -> Vec<F16Read> {
    if gpu.has(wgpu::Features::SHADER_F16) { vec![F16Read::Packed, F16Read::Native] } else { vec![F16Read::Packed] }
}

fn every_variant(shapes: &[(usize, usize, usize)], gathers: &[Option<Gathered>], seed: u64) {
    let gpu = gpu();
    let _serial = serial(&gpu);
    let mut seed = seed;
    for &(m, n, k) in shapes {
        for t in FORMS {
            for &g in gathers {
                // a gathered operand is read row by row: not transposed
                if (g == Some(Gathered::A) && t == Transpose::TN) || (g == Some(Gathered::B) && t == Transpose::NT) {
                    continue;
                }
                for store in STORES {
                    seed += 10;
                    let case = Case::new(&gpu, m, n, k, t, store, g, seed);
                    for v in Variant::ALL.into_iter().filter(|v| v.fits(&gpu, m, n)).map(Some).chain([None]) {
                        let mut outs = reads(&gpu).into_iter().map(|r| case.run(&gpu, v, r));
                        let packed = outs.next().unwrap();
                        for native in outs {
                            let same = packed.iter().zip(&native).all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(same, "{:?} {}: native f16 differs from packed", v, case.what);
                        }
                    }
                }
            }
        }
    }
}

const ODD: [(usize, usize, usize); 4] = [(7, 33, 127), (127, 7, 33), (1, 1, 1), (33, 127, 7)];
/// Every row width a multiple of 4: the block variants read f16 operands as vec4s (two words).
const ALIGNED: [(usize, usize, usize); 1] = [(36, 40, 64)];

#[test]
fn every_variant_odd_sizes() {
    every_variant(&ODD, &[None], 100);
}

#[test]
fn every_variant_vec4_aligned() {
    every_variant(&ALIGNED, &[None, Some(Gathered::A), Some(Gathered::B)], 200);
}

#[test]
fn every_variant_gathered_odd_sizes() {
    every_variant(&ODD, &[Some(Gathered::A), Some(Gathered::B)], 300);
}

/// f16 subnormals, ±0, the largest half and a row ending in half a word come through exactly:
/// C = A·I (K = 5, odd) is A's halves widened, exactly, on every reading.
#[test]
fn halves_widen_exactly() {
    let gpu = gpu();
    let _serial = serial(&gpu);
    let (m, k) = (9, 5);
    let a: Vec<f32> = (0..m * k)
        .map(|i| match i % 6 {
            0 => f16::from_bits(1 + i as u16).to_f32(),      // subnormal
            1 => -f16::from_bits(0x3ff - i as u16).to_f32(), // subnormal
            2 => 65504.0,
            3 => -0.0,
            4 => f16::from_bits(0x0400).to_f32(), // the smallest normal
            _ => (i as f32 - 20.0) / 7.0,
        })
        .collect();
    let eye: Vec<f32> = (0..k * k).map(|i| if i / k == i % k { 1.0 } else { 0.0 }).collect();
    let wa = Tensor::from_u32(&gpu, &[m, k.div_ceil(2)], &pack_ref(m, k, &a)).unwrap();
    let wb = Tensor::from_u32(&gpu, &[k, k.div_ceil(2)], &pack_ref(k, k, &eye)).unwrap();
    let expected = rounded(&a);
    for read in reads(&gpu) {
        for v in Variant::ALL.into_iter().filter(|v| v.fits(&gpu, m, k)) {
            let c = poisoned(&gpu, &[m, k]);
            let opts = Options { variant: Some(v), f16_read: Some(read) };
            let d = matmul_dispatch_ops(
                &gpu,
                Operand::F16 { words: &wa, cols: k },
                Operand::F16 { words: &wb, cols: k },
                &c,
                Transpose::NN,
                Epilogue::default(),
                opts,
            )
            .unwrap();
            gpu.run("widen", &[&d]).unwrap();
            let out = c.download(&gpu).unwrap();
            // (by value: −0 · 1 added to the +0 an accumulator starts from is +0)
            let bad: Vec<usize> = (0..out.len()).filter(|&i| out[i] != expected[i]).collect();
            assert!(
                bad.is_empty(),
                "{} {read:?}: {} wrong, first [{}] {:e} for {:e}",
                v.name(),
                bad.len(),
                bad[0],
                out[bad[0]],
                expected[bad[0]]
            );
        }
    }
}

#[test]
fn pack_f16_matches_the_reference_packing() {
    for (rows, cols) in [(1, 1), (3, 7), (33, 2), (7, 127)] {
        let x = rand_range(rows as u64 * 31 + cols as u64, rows * cols, -70000.0, 70000.0);
        assert_eq!(pack_f16(rows, cols, &x).unwrap(), pack_ref(rows, cols, &x), "{rows}x{cols}");
    }
    assert!(pack_f16(2, 3, &[0.0; 5]).is_err(), "5 values for 2x3");
}

/// Wrong word counts, a non-u32 f16 operand and native reading on a device without shader-f16 are
/// errors, not panics.
#[test]
fn bad_f16_operands_are_errors() {
    let gpu = gpu();
    let _serial = serial(&gpu);
    let (x, c) = (upload(&gpu, &[4, 6], &[0.0; 24]), poisoned(&gpu, &[4, 5]));
    let words = Tensor::from_u32(&gpu, &[5, 3], &[0; 15]).unwrap();
    let run = |b: Operand<'_>, read: Option<F16Read>| {
        matmul_dispatch_ops(&gpu, (&x).into(), b, &c, Transpose::NT, Epilogue::default(), Options { variant: None, f16_read: read })
    };
    assert!(run(Operand::F16 { words: &words, cols: 6 }, None).is_ok());
    assert!(run(Operand::F16 { words: &words, cols: 7 }, None).is_err(), "7 halves need 4 words");
    let f = upload(&gpu, &[5, 3], &[0.0; 15]);
    assert!(run(Operand::F16 { words: &f, cols: 6 }, None).is_err(), "f16 words must be u32");
    let native = run(Operand::F16 { words: &words, cols: 6 }, Some(F16Read::Native));
    assert_eq!(native.is_ok(), gpu.has(wgpu::Features::SHADER_F16), "native reading needs shader-f16");
}
