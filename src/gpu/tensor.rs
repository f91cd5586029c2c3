//! `Tensor`: a region of a GPU storage buffer with a shape. f32 by default; u32 for labels,
//! indices and counters. Row-major, contiguous.
//!
//! A tensor may be a view into a larger buffer (the parameter arena, a host program's buffer):
//! `offset` is in bytes and must respect the adapter's `min_storage_buffer_offset_alignment`
//! (256 bytes everywhere we know) to be bound.

use super::Gpu;
use super::recorder::{Recorder, read_mapped};
use crate::error::{Error, Result};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Element type of a [`Tensor`]. Both are 4 bytes wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    U32,
}

struct Alloc {
    buffer: wgpu::Buffer,
    /// The engine that allocated it, for byte accounting; `None` for host-provided buffers.
    owner: Option<Gpu>,
}

impl Drop for Alloc {
    fn drop(&mut self) {
        if let Some(g) = &self.owner {
            g.inner.counters.free(self.buffer.size());
        }
    }
}

/// A shaped view of a GPU buffer. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    alloc: Arc<Alloc>,
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?} {:?} @{})", self.dtype, self.shape, self.offset)
    }
}

pub(crate) const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

impl Tensor {
    /// A new zero-filled f32 tensor.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        Self::alloc(gpu, shape, DType::F32, "tensor")
    }

    /// A new zero-filled tensor of `dtype`, labelled for wgpu error messages and captures.
    pub fn alloc(gpu: &Gpu, shape: &[usize], dtype: DType, label: &str) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        // wgpu forbids zero-sized bindings; keep one element so empty shapes stay bindable.
        let bytes = (n.max(1) as u64).checked_mul(4).ok_or_else(|| Error::invalid("tensor size overflows"))?;
        gpu.check_binding_size(&format!("{label} {shape:?}"), bytes)?;
        let buffer = gpu.scoped(label, || {
            gpu.device().create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes, usage: USAGE, mapped_at_creation: false })
        })?;
        gpu.inner.counters.alloc(bytes);
        Ok(Tensor { alloc: Arc::new(Alloc { buffer, owner: Some(gpu.clone()) }), offset: 0, shape: shape.to_vec(), dtype })
    }

    /// Uploads `data` as an f32 tensor of `shape`.
    pub fn from_slice(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let t = Self::alloc(gpu, shape, DType::F32, "tensor")?;
        t.write(gpu, data)?;
        Ok(t)
    }

    /// Uploads `data` as a u32 tensor of `shape` (labels, indices).
    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        let t = Self::alloc(gpu, shape, DType::U32, "tensor_u32")?;
        t.write_u32(gpu, data)?;
        Ok(t)
    }

    /// Wraps a buffer a host program owns. The buffer needs `STORAGE` usage (and `COPY_SRC` /
    /// `COPY_DST` for [`Tensor::download`] / [`Tensor::write`]). `offset` is in bytes.
    pub fn from_buffer(buffer: wgpu::Buffer, offset: u64, shape: &[usize]) -> Result<Tensor> {
        let n: u64 = shape.iter().product::<usize>() as u64;
        if offset + n * 4 > buffer.size() {
            return Err(Error::shape(format!(
                "a {shape:?} f32 tensor at byte offset {offset} needs {} bytes; the buffer has {}",
                offset + n * 4,
                buffer.size()
            )));
        }
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::invalid("a buffer handed to headswap needs BufferUsages::STORAGE"));
        }
        Ok(Tensor { alloc: Arc::new(Alloc { buffer, owner: None }), offset, shape: shape.to_vec(), dtype: DType::F32 })
    }

    /// A view of `shape` starting `elem_offset` elements into this tensor, sharing its buffer.
    pub fn view(&self, elem_offset: usize, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if elem_offset + n > self.len().max(1) {
            return Err(Error::shape(format!("view of {shape:?} at {elem_offset} exceeds {:?}", self.shape)));
        }
        Ok(Tensor { alloc: self.alloc.clone(), offset: self.offset + 4 * elem_offset as u64, shape: shape.to_vec(), dtype: self.dtype })
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(Error::shape(format!("cannot reshape {:?} to {shape:?}", self.shape)));
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of data (4 per element).
    pub fn bytes(&self) -> u64 {
        4 * self.len() as u64
    }
    /// The underlying buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.alloc.buffer
    }
    /// Byte offset of element 0 in [`Tensor::buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Bytes of the whole underlying buffer (what allocating it cost).
    pub fn allocation_bytes(&self) -> u64 {
        self.alloc.buffer.size()
    }

    /// Total allocation of `tensors`, counting each underlying buffer once.
    pub fn total_allocation(tensors: &[&Tensor]) -> u64 {
        let mut seen: Vec<&Tensor> = Vec::new();
        for t in tensors {
            if !seen.iter().any(|s| s.same_buffer(t)) {
                seen.push(t);
            }
        }
        seen.iter().map(|t| t.allocation_bytes()).sum()
    }

    /// Whether two tensors share a buffer.
    pub fn same_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.alloc, &other.alloc) || self.alloc.buffer == other.alloc.buffer
    }

    /// The binding resource for a bind group.
    pub(crate) fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.alloc.buffer,
            offset: self.offset,
            size: NonZeroU64::new(self.bytes().max(4)),
        })
    }

    /// Overwrites the tensor with `data` (f32).
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        self.check_len(data.len())?;
        self.write_bytes(gpu, bytemuck::cast_slice(data))
    }

    /// Overwrites the tensor with `data` (u32).
    pub fn write_u32(&self, gpu: &Gpu, data: &[u32]) -> Result<()> {
        self.check_len(data.len())?;
        self.write_bytes(gpu, bytemuck::cast_slice(data))
    }

    /// Fills every element with `value` (tests poison outputs with NaN this way).
    pub fn fill(&self, gpu: &Gpu, value: f32) -> Result<()> {
        self.write(gpu, &vec![value; self.len()])
    }

    fn check_len(&self, n: usize) -> Result<()> {
        if n != self.len() {
            return Err(Error::shape(format!("{} values for a tensor of shape {:?}", n, self.shape)));
        }
        Ok(())
    }

    fn write_bytes(&self, gpu: &Gpu, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        gpu.inner.counters.uploads.fetch_add(1, Ordering::Relaxed);
        gpu.queue().write_buffer(&self.alloc.buffer, self.offset, bytes);
        Ok(())
    }

    /// Reads the tensor back as f32 (waits for all submitted work).
    pub fn download(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        // copy into a Vec of the element type: a Vec<u8> carries no 4-byte alignment guarantee
        Ok(bytemuck::pod_collect_to_vec(&self.download_bytes(gpu)?))
    }

    /// Reads the tensor back as u32.
    pub fn download_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        Ok(bytemuck::pod_collect_to_vec(&self.download_bytes(gpu)?))
    }

    fn download_bytes(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let size = self.bytes();
        if size == 0 {
            return Ok(Vec::new());
        }
        gpu.inner.counters.downloads.fetch_add(1, Ordering::Relaxed);
        let mut slot = gpu.inner.staging.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|b| b.size() < size) {
            let bytes = size.next_power_of_two().max(1 << 16).min(gpu.limits().max_buffer_size.max(size));
            *slot = Some(gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging_download"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = slot.as_ref().expect("staging buffer was just created");
        let mut rec = Recorder::new(gpu, "download");
        rec.copy_buffer(&self.alloc.buffer, self.offset, staging, 0, size);
        rec.submit();
        let out = read_mapped(gpu, staging, size, "download")?;
        Ok(out)
    }
}
