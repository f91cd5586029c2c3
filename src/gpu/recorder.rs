//! [`Recorder`]: one command encoder, the compute passes and copies recorded into it, and one
//! submission; [`Timestamps`] for passes that time themselves; `read_mapped`, the one
//! map-and-read sequence every read-back goes through.
//!
//! wgpu's rules this follows:
//! * A compute pass borrows its encoder mutably until it ends, so buffer copies (a step's uniform
//!   blocks, rows of cached features) go between passes, never inside one. The recorder ends each
//!   pass before the next call.
//! * Work runs only when its encoder is submitted, and every submission has a fixed CPU cost: a
//!   recorder records as many passes and copies as its caller gives it and submits them once.
//! * Timestamp writes belong to a pass (`ComputePassTimestampWrites`), so timing one dispatch
//!   needs a pass of its own ([`Recorder::timed_pass`]).
//! * A buffer the CPU reads must be `MAP_READ`; it is mapped asynchronously and the map completes
//!   only when the device is polled, so reading is: map, wait, copy out, unmap (`read_mapped`).

use super::{Dispatch, Gpu, Tensor};
use crate::error::{Error, Result};

/// One command encoder being recorded: compute passes of [`Dispatch`]es and buffer copies, in
/// the order they are recorded, submitted once by [`Recorder::submit`].
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: wgpu::CommandEncoder,
}

impl<'g> Recorder<'g> {
    /// A new, empty recording; `label` names the command buffer in wgpu's messages and captures.
    pub fn new(gpu: &'g Gpu, label: &str) -> Recorder<'g> {
        let encoder = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        Recorder { gpu, encoder }
    }

    /// Records `dispatches` in order into one compute pass; returns the number of dispatches
    /// recorded (an empty launch records none). An empty list still records an (empty) pass.
    pub fn pass<'d>(&mut self, label: &str, dispatches: impl IntoIterator<Item = &'d Dispatch>) -> usize {
        let gpu = self.gpu;
        let mut pass = self.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
        dispatches.into_iter().map(|d| d.encode(gpu, &mut pass)).sum()
    }

    /// Records `dispatch` alone in a compute pass that writes timestamp `2 * slot` of `stamps`
    /// at its start and `2 * slot + 1` at its end.
    pub fn timed_pass(&mut self, dispatch: &Dispatch, stamps: &Timestamps, slot: u32) -> usize {
        let writes = wgpu::ComputePassTimestampWrites {
            query_set: &stamps.set,
            beginning_of_pass_write_index: Some(2 * slot),
            end_of_pass_write_index: Some(2 * slot + 1),
        };
        let mut pass =
            self.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(dispatch.name()), timestamp_writes: Some(writes) });
        dispatch.encode(self.gpu, &mut pass)
    }

    /// Records a copy of `elems` elements from `src` (starting `src_at` elements in) to `dst`
    /// (starting `dst_at` elements in). Ranges outside either tensor are an error, checked here
    /// rather than left to wgpu's validation.
    pub fn copy(&mut self, src: &Tensor, src_at: usize, dst: &Tensor, dst_at: usize, elems: usize) -> Result<()> {
        if src_at + elems > src.len() || dst_at + elems > dst.len() {
            return Err(Error::shape(format!(
                "copy of {elems} elements from {src_at} of {:?} to {dst_at} of {:?}",
                src.shape(),
                dst.shape()
            )));
        }
        self.encoder.copy_buffer_to_buffer(
            src.buffer(),
            src.offset() + 4 * src_at as u64,
            dst.buffer(),
            dst.offset() + 4 * dst_at as u64,
            4 * elems as u64,
        );
        Ok(())
    }

    /// Records a copy of the whole of `src` into the start of `dst`.
    pub fn copy_all(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        self.copy(src, 0, dst, 0, src.len())
    }

    /// Records a copy of the whole of `src` into `dst`, starting `dst_at` elements in, for the
    /// host to read after the submission ([`ReadBack::read`]).
    pub fn copy_to_readback(&mut self, src: &Tensor, dst: &ReadBack, dst_at: usize) -> Result<()> {
        if dst_at + src.len() > dst.elems {
            return Err(Error::shape(format!("read-back of {} elements at {dst_at} into {} elements", src.len(), dst.elems)));
        }
        self.encoder.copy_buffer_to_buffer(src.buffer(), src.offset(), &dst.buffer, 4 * dst_at as u64, src.bytes());
        Ok(())
    }

    /// Records a raw buffer copy (gpu/ internals: staging and uniform buffers are not tensors).
    pub(crate) fn copy_buffer(&mut self, src: &wgpu::Buffer, src_at: u64, dst: &wgpu::Buffer, dst_at: u64, bytes: u64) {
        self.encoder.copy_buffer_to_buffer(src, src_at, dst, dst_at, bytes);
    }

    /// Records the resolve of every timestamp of `stamps` and the copy into its read-back buffer.
    pub fn resolve(&mut self, stamps: &Timestamps) {
        self.encoder.resolve_query_set(&stamps.set, 0..stamps.count, &stamps.resolve, 0);
        self.encoder.copy_buffer_to_buffer(&stamps.resolve, 0, &stamps.readback, 0, stamps.count as u64 * 8);
    }

    /// Submits the recording (counted in [`Gpu::counters`]). Does not wait.
    pub fn submit(self) {
        self.gpu.submit(self.encoder);
    }

    /// [`Recorder::submit`], returning the submission's index (to wait for it alone:
    /// [`ReadBack::read_after`]).
    pub fn submit_indexed(self) -> wgpu::SubmissionIndex {
        self.gpu.submit(self.encoder)
    }

    /// Submits the recording without counting it: measuring (the autotuners) is no part of the
    /// engine's own work, which the submission counter describes.
    pub(crate) fn submit_uncounted(self) {
        self.gpu.queue().submit(Some(self.encoder.finish()));
    }
}

/// A host-readable buffer of f32 kept for many reads: kernels cannot bind a `MAP_READ` buffer, so
/// tensors are copied into it at the end of a submission ([`Recorder::copy_to_readback`]) and
/// read after it. Made once and reused, where [`Tensor::download`] makes one per call.
pub struct ReadBack {
    buffer: wgpu::Buffer,
    elems: usize,
}

impl ReadBack {
    /// Room for `elems` f32 values.
    pub fn new(gpu: &Gpu, elems: usize, label: &str) -> Result<ReadBack> {
        let bytes = (4 * elems.max(1)) as u64;
        gpu.check_binding_size(label, bytes)?;
        let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(ReadBack { buffer, elems })
    }

    /// Waits for the device and returns the values copied in (all `elems` of them).
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        if self.elems == 0 {
            return Ok(Vec::new());
        }
        let bytes = read_mapped(gpu, &self.buffer, 4 * self.elems as u64, "read-back")?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// [`ReadBack::read`] after submission `index` (the one that copied the values in) has
    /// finished, without waiting for later submissions.
    pub fn read_after(&self, gpu: &Gpu, index: wgpu::SubmissionIndex) -> Result<Vec<f32>> {
        if self.elems == 0 {
            return Ok(Vec::new());
        }
        let bytes = read_mapped_after(gpu, &self.buffer, 4 * self.elems as u64, "read-back", Some(index))?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The number of f32 values it holds.
    pub fn len(&self) -> usize {
        self.elems
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.elems == 0
    }
}

/// A timestamp query set of `2 × passes` timestamps (start and end of each timed pass) with the
/// buffers it resolves into and is read back from.
pub struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    count: u32,
}

impl Timestamps {
    /// Timestamps for `passes` timed passes. An error where the device has no
    /// `TIMESTAMP_QUERY` or `passes` needs more queries than one set holds.
    pub fn new(gpu: &Gpu, passes: usize) -> Result<Timestamps> {
        if !gpu.has_timestamps() {
            return Err(Error::invalid("timestamp timing asked for, but the device has no TIMESTAMP_QUERY"));
        }
        let count = passes.checked_mul(2).and_then(|c| u32::try_from(c).ok()).filter(|&c| c <= wgpu::QUERY_SET_MAX_QUERIES);
        let Some(count) = count else {
            return Err(Error::invalid(format!("{passes} timed passes need more than {} timestamp queries", wgpu::QUERY_SET_MAX_QUERIES)));
        };
        let bytes = (count.max(1) as u64 * 8).next_multiple_of(wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT);
        let set = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: count.max(1),
        });
        let buffer = |label, usage| {
            gpu.device().create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes, usage, mapped_at_creation: false })
        };
        let resolve = buffer("timestamps_resolve", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let readback = buffer("timestamps_readback", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        Ok(Timestamps { set, resolve, readback, count })
    }

    /// Nanoseconds per timestamp tick on `gpu`.
    pub fn period_ns(gpu: &Gpu) -> f64 {
        gpu.queue().get_timestamp_period() as f64
    }

    /// Waits for the submitted work and returns each timed pass's duration in milliseconds,
    /// by slot (the resolve must have been recorded and submitted, [`Recorder::resolve`]).
    pub fn pass_ms(&self, gpu: &Gpu) -> Result<Vec<f64>> {
        let bytes = read_mapped(gpu, &self.readback, self.count as u64 * 8, "timestamp")?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period = Self::period_ns(gpu);
        Ok(ticks.chunks_exact(2).map(|p| p[1].saturating_sub(p[0]) as f64 * period * 1e-6).collect())
    }
}

/// Maps the first `bytes` bytes of the `MAP_READ` buffer `buffer`, waits for the device (and so
/// for every submitted command, the copies into `buffer` among them), and returns a copy of
/// them; the buffer is unmapped again. `what` names the buffer in errors.
pub(crate) fn read_mapped(gpu: &Gpu, buffer: &wgpu::Buffer, bytes: u64, what: &str) -> Result<Vec<u8>> {
    read_mapped_after(gpu, buffer, bytes, what, None)
}

/// [`read_mapped`], waiting only until submission `index` has finished where one is given.
fn read_mapped_after(gpu: &Gpu, buffer: &wgpu::Buffer, bytes: u64, what: &str, index: Option<wgpu::SubmissionIndex>) -> Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let slice = buffer.slice(0..bytes);
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    match index {
        None => gpu.sync()?,
        Some(index) => {
            let wait = wgpu::PollType::Wait { submission_index: Some(index), timeout: None };
            gpu.device().poll(wait).map_err(|e| Error::Device(e.to_string()))?;
            gpu.check(what)?;
        }
    }
    rx.recv()
        .map_err(|_| Error::Device(format!("{what} map callback never ran")))?
        .map_err(|e| Error::Device(format!("mapping the {what} buffer failed: {e}")))?;
    let out = {
        let view = slice.get_mapped_range().map_err(|e| Error::Device(format!("{e}")))?;
        view.to_vec()
    };
    buffer.unmap();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_run_in_recording_order_in_one_counted_submission() {
        let gpu = Gpu::new().expect("the test suite needs a GPU adapter");
        let a = Tensor::from_slice(&gpu, &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::from_slice(&gpu, &[4], &[f32::NAN; 4]).unwrap();
        let c = Tensor::from_slice(&gpu, &[4], &[f32::NAN; 4]).unwrap();
        let before = gpu.counters();
        let mut rec = Recorder::new(&gpu, "test");
        rec.copy(&a, 1, &b, 0, 2).unwrap();
        assert_eq!(rec.pass("empty", []), 0);
        // reads what the first copy wrote: the copies run in recording order
        rec.copy_all(&b, &c).unwrap();
        // out of range: our error, and nothing recorded that wgpu would reject
        assert!(matches!(rec.copy(&a, 3, &b, 0, 2), Err(Error::Shape { .. })));
        assert!(matches!(rec.copy(&a, 0, &b, 3, 2), Err(Error::Shape { .. })));
        rec.submit();
        let c = c.download(&gpu).unwrap();
        assert_eq!(&c[..2], &[2.0, 3.0]);
        assert!(c[2..].iter().all(|v| v.is_nan()));
        assert_eq!(gpu.counters().submissions - before.submissions, 2, "the recording, then the download's copy");
        let mut rec = Recorder::new(&gpu, "measure");
        rec.copy_all(&a, &b).unwrap();
        rec.submit_uncounted();
        gpu.sync().unwrap();
        assert_eq!(gpu.counters().submissions - before.submissions, 2, "measuring is not counted");
        assert_eq!(b.download(&gpu).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn timestamps_time_each_pass_or_are_refused() {
        let gpu = Gpu::new().expect("the test suite needs a GPU adapter");
        if !gpu.has_timestamps() {
            assert!(Timestamps::new(&gpu, 1).is_err(), "a device without TIMESTAMP_QUERY");
            return;
        }
        assert!(Timestamps::new(&gpu, wgpu::QUERY_SET_MAX_QUERIES as usize).is_err(), "more passes than one query set holds");
        let x = Tensor::from_slice(&gpu, &[3], &[1.0, 2.0, 3.0]).unwrap();
        let y = Tensor::from_slice(&gpu, &[3], &[0.5; 3]).unwrap();
        let d = crate::kernels::elementwise::add_assign_dispatch(&gpu, &x, &y).unwrap();
        let stamps = Timestamps::new(&gpu, 2).unwrap();
        let mut rec = Recorder::new(&gpu, "timed");
        assert_eq!(rec.timed_pass(&d, &stamps, 0), 1);
        assert_eq!(rec.timed_pass(&d, &stamps, 1), 1);
        rec.resolve(&stamps);
        rec.submit();
        let ms = stamps.pass_ms(&gpu).unwrap();
        assert_eq!(ms.len(), 2);
        assert!(ms.iter().all(|t| t.is_finite() && *t >= 0.0), "{ms:?}");
        assert_eq!(y.download(&gpu).unwrap(), vec![2.5, 4.5, 6.5], "both passes ran");
    }
}
