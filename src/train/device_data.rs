//! Data sets resident on the GPU: uploaded once per run, every batch gathered from them on the
//! GPU by index (no host copy per step).

use crate::error::{Error, Result};
use crate::gpu::tensor::DType;
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::kernels::gather::{GatherRows, PackRows, gather_rows_chunk, gather_rows_f16_chunk, pack_rows_f16};
use crate::nn::HeadKind;

/// A row-major `[n, ...]` array resident on the GPU in one or more buffers of whole rows, each
/// within one storage binding (128 MiB on lavapipe): a data set larger than one binding is split
/// into chunks, and batches are gathered from every chunk (see `gather.wgsl`).
#[derive(Clone)]
pub struct Rows {
    /// (first global row, tensor `[rows, ...]`)
    pub(crate) chunks: Vec<(usize, Tensor)>,
    /// `Some(d)`: rows of `d` f32 values stored in f16, two per u32 (chunks u32 `[rows, ⌈d/2⌉]`,
    /// `kernels::gather::pack_rows_f16`). A dense first layer's products read them in place
    /// (`kernels::matmul::Operand::F16`); other readers get the batch gathered widened to f32.
    pub(crate) f16_width: Option<usize>,
}

/// The most bytes one chunk may hold: the adapter's binding limit, or `HEADSWAP_MAX_BINDING_BYTES`
/// when set lower (a debugging knob that lets tests exercise chunking with small data).
fn chunk_limit(gpu: &Gpu) -> u64 {
    let l = gpu.limits();
    let adapter = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
    let knob = std::env::var("HEADSWAP_MAX_BINDING_BYTES").ok().and_then(|v| v.parse::<u64>().ok()).filter(|&v| v >= 4);
    knob.map_or(adapter, |k| k.min(adapter))
}

impl Rows {
    /// Zeroed storage for `n` rows of `row_shape`, chunked to fit the adapter.
    pub(crate) fn alloc(gpu: &Gpu, n: usize, row_shape: &[usize], dtype: DType, label: &str) -> Result<Rows> {
        let d: usize = row_shape.iter().product::<usize>().max(1);
        let row_bytes = 4 * d as u64;
        let limit = chunk_limit(gpu);
        if row_bytes > limit {
            return Err(Error::TooLarge {
                what: format!("one row of {label} ({row_shape:?})"),
                bytes: row_bytes,
                limit,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        let per = ((limit / row_bytes) as usize).max(1);
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < n.max(1) {
            let rows = per.min(n.max(1) - start);
            let mut shape = vec![rows];
            shape.extend_from_slice(row_shape);
            chunks.push((start, Tensor::alloc(gpu, &shape, dtype, label)?));
            start += rows;
        }
        if chunks.len() > 1 {
            tracing::info!(label, n, chunks = chunks.len(), "data split into chunks that each fit one storage binding");
        }
        Ok(Rows { chunks, f16_width: None })
    }

    /// Zeroed storage for `n` rows of `d` values kept in f16, two per u32 word.
    pub(crate) fn alloc_f16(gpu: &Gpu, n: usize, d: usize, label: &str) -> Result<Rows> {
        let mut rows = Rows::alloc(gpu, n, &[crate::kernels::gather::f16_words(d)], DType::U32, label)?;
        rows.f16_width = Some(d);
        Ok(rows)
    }

    /// Whether the rows are stored in f16.
    pub(crate) fn is_f16(&self) -> bool {
        self.f16_width.is_some()
    }

    /// One f16 row-store launch per chunk, each taking the rows of `src` `[rows, d]` that fall in
    /// its chunk once pointed at their global row (`PackRows::set_start`).
    pub(crate) fn packs(&self, gpu: &Gpu, src: &Tensor) -> Result<Vec<PackRows>> {
        if !self.is_f16() {
            return Err(Error::invalid("packing into rows that are not stored in f16"));
        }
        self.chunks.iter().map(|(base, t)| pack_rows_f16(gpu, src, t, *base)).collect()
    }

    fn row_len(&self) -> usize {
        self.chunks.first().map_or(0, |(_, t)| t.shape()[1..].iter().product())
    }

    fn write_bits(&self, gpu: &Gpu, f: &dyn Fn(&Tensor, std::ops::Range<usize>) -> Result<()>) -> Result<()> {
        let d = self.row_len();
        for (base, t) in &self.chunks {
            let rows = t.shape()[0];
            f(t, base * d..(base + rows) * d)?;
        }
        let _ = gpu;
        Ok(())
    }

    pub(crate) fn write_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        self.write_bits(gpu, &|t, r| t.write(gpu, &data[r]))
    }

    pub(crate) fn write_u32(&self, gpu: &Gpu, data: &[u32]) -> Result<()> {
        self.write_bits(gpu, &|t, r| t.write_u32(gpu, &data[r]))
    }

    pub(crate) fn tensors(&self) -> Vec<&Tensor> {
        self.chunks.iter().map(|(_, t)| t).collect()
    }

    /// Reads every row back, in order (f32; rows stored in f16 widened, exactly).
    pub(crate) fn download(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for (_, t) in &self.chunks {
            match self.f16_width {
                None => out.extend(t.download(gpu)?),
                Some(d) => {
                    let words = t.download_u32(gpu)?;
                    for row in words.chunks(crate::kernels::gather::f16_words(d)) {
                        let halves = row.iter().flat_map(|w| [*w as u16, (*w >> 16) as u16]);
                        out.extend(halves.take(d).map(|h| half::f16::from_bits(h).to_f32()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Records copies of `rows` rows from `src` (row 0 onwards) into global rows `start..`,
    /// splitting at chunk boundaries.
    pub(crate) fn copy_rows_from(&self, rec: &mut Recorder<'_>, src: &Tensor, start: usize, rows: usize) -> Result<()> {
        if self.is_f16() {
            return Err(Error::invalid("rows stored in f16 are written by packing, not copied"));
        }
        let d = self.row_len();
        for (base, t) in &self.chunks {
            let (lo, hi) = (start.max(*base), (start + rows).min(base + t.shape()[0]));
            if lo < hi {
                rec.copy(src, d * (lo - start), t, d * (lo - base), d * (hi - lo))?;
            }
        }
        Ok(())
    }

    /// One gather per chunk into `dst` (f32 rows; rows stored in f16 are widened on the way).
    pub(crate) fn gathers(&self, gpu: &Gpu, indices: &Tensor, dst: &Tensor) -> Result<Vec<GatherRows>> {
        let last = self.chunks.len().checked_sub(1).ok_or_else(|| Error::invalid("gathering from rows no longer held on the device"))?;
        let one = |i: usize, base: usize, t: &Tensor| match self.f16_width {
            None => gather_rows_chunk(gpu, t, base, i == last, indices, dst),
            Some(_) => gather_rows_f16_chunk(gpu, t, base, i == last, indices, dst),
        };
        self.chunks.iter().enumerate().map(|(i, (base, t))| one(i, *base, t)).collect()
    }

    /// Lets the rows go (their buffers are freed once nothing else holds them).
    pub(crate) fn release(&mut self) {
        self.chunks.clear();
    }
}

/// A data set resident on the GPU: inputs `[n, d]` and targets (`u32 [n, 1]` classes or
/// `f32 [n, k]` labels with NaN for unknown), each chunked to fit the adapter's bindings.
pub struct DeviceData {
    pub(crate) x: Rows,
    pub(crate) y: Rows,
    pub(crate) n: usize,
    pub(crate) kind: HeadKind,
    pub(crate) outputs: usize,
    /// [`crate::data::Targets::Heads`]: each head's targets by name, `u32 [n, 1]` classes (−1
    /// unknown) or `f32 [n, k]` labels or regression values (NaN unknown); `y` is then unused.
    pub(crate) heads: Vec<(String, Rows)>,
}

impl DeviceData {
    /// Uploads a data set once.
    pub fn upload(gpu: &Gpu, data: &crate::data::Dataset) -> Result<DeviceData> {
        data.validate()?;
        let x = Rows::alloc(gpu, data.n, &[data.d], DType::F32, "dataset_x")?;
        x.write_f32(gpu, &data.x)?;
        let mut heads = Vec::new();
        let (y, kind, outputs) = match &data.targets {
            crate::data::Targets::Classes { y, num_classes } => {
                let rows = Rows::alloc(gpu, data.n, &[1], DType::U32, "dataset_y")?;
                rows.write_u32(gpu, y)?;
                (rows, HeadKind::Classes, *num_classes)
            }
            crate::data::Targets::Labels { y, k } => {
                let rows = Rows::alloc(gpu, data.n, &[*k], DType::F32, "dataset_y")?;
                rows.write_f32(gpu, y)?;
                (rows, HeadKind::Labels, *k)
            }
            crate::data::Targets::Regression { .. } => {
                return Err(Error::invalid("regression targets belong to a named head: put them in Targets::Heads"));
            }
            crate::data::Targets::Heads(hs) => {
                for h in hs {
                    let label = format!("dataset_y.{}", h.name);
                    let rows = match &h.targets {
                        crate::data::Targets::Classes { y, .. } => {
                            let rows = Rows::alloc(gpu, data.n, &[1], DType::U32, &label)?;
                            rows.write_u32(gpu, y)?;
                            rows
                        }
                        crate::data::Targets::Labels { y, k } | crate::data::Targets::Regression { y, k } => {
                            let rows = Rows::alloc(gpu, data.n, &[*k], DType::F32, &label)?;
                            rows.write_f32(gpu, y)?;
                            rows
                        }
                        crate::data::Targets::Heads(_) => return Err(Error::invalid("targets of several heads inside one head's")),
                    };
                    heads.push((h.name.clone(), rows));
                }
                // unused: every head reads its own
                (Rows::alloc(gpu, 1, &[1], DType::U32, "dataset_y_unused")?, HeadKind::Classes, 0)
            }
        };
        Ok(DeviceData { x, y, n: data.n, kind, outputs, heads })
    }
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub(crate) fn tensors(&self) -> Vec<&Tensor> {
        let mut v = self.x.tensors();
        v.extend(self.y.tensors());
        for (_, h) in &self.heads {
            v.extend(h.tensors());
        }
        v
    }
}
