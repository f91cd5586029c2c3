//! Data-parallel training: what replicas of one training run exchange.
//!
//! Each replica (an MPI rank, or a thread with its own adapter) holds the whole network and the
//! whole data set and takes its share of every global batch; at the step's "gradients ready"
//! point the trainable ranges' gradients are averaged over the replicas (weighted by each one's
//! share of the batch), and every replica runs the same optimizer update on the same bits. A
//! [`Collective`] is the exchange; [`ThreadGroup`] is one within a process, and
//! `headswap::distributed::Mpi` (feature `distributed`) one over MPI.

use super::optimizer::Grads;
use super::plan::Plan;
use crate::error::{Error, Result};
use crate::gpu::pipelines::StepUniforms;
use crate::gpu::{Gpu, ReadBack, Recorder};
use crate::nn::Network;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The collective operations data-parallel training needs. Every replica calls the same
/// operations in the same order, each with a buffer of the same length.
pub trait Collective {
    /// This replica's index, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of replicas.
    fn size(&self) -> usize;
    /// Replaces `data` on every replica with the element-wise sum over the replicas, the same bits
    /// on every one of them.
    fn sum(&self, data: &mut [f32]) -> Result<()>;
    /// [`Collective::sum`] for f64 (losses and counts, once per epoch).
    fn sum_f64(&self, data: &mut [f64]) -> Result<()>;
    /// Replaces `data` on every replica with replica 0's.
    fn broadcast(&self, data: &mut [f32]) -> Result<()>;
    /// Called by a replica whose run failed (`message` says why) before it returns the error:
    /// the other replicas must not wait for it forever. Over MPI this ends the whole job.
    fn fail(&self, message: &str);
}

/// The rows of a global batch of `rows` that replica `rank` of `size` takes: the batch is cut into
/// `size` contiguous slices whose lengths differ by at most one, the longer ones first. Returns
/// `(offset within the batch, length)`; the length is 0 where the batch has fewer rows than
/// replicas.
pub fn share(rows: usize, rank: usize, size: usize) -> (usize, usize) {
    let (base, extra) = (rows / size, rows % size);
    let len = base + usize::from(rank < extra);
    (rank * base + rank.min(extra), len)
}

/// This replica's passes over a step of `rows` examples accumulated over `k` micro-batches
/// ([`TrainConfig::accumulate_steps`](super::TrainConfig::accumulate_steps); `k = 1`: the batch
/// is one): micro-batch `j` is [`share`]`(rows, j, k)` of the step's batch and this replica
/// computes its share of it. Returns (offset in the step's batch, rows) of the non-empty ones,
/// in order.
pub fn passes(rows: usize, k: usize, rank: usize, size: usize) -> Vec<(usize, usize)> {
    (0..k)
        .filter_map(|j| {
            let (micro_at, micro_rows) = share(rows, j, k);
            let (at, len) = share(micro_rows, rank, size);
            (len > 0).then_some((micro_at + at, len))
        })
        .collect()
}

/// Makes every replica's parameters replica 0's (once, before training: a loaded or differently
/// seeded network on another replica would otherwise train from other weights).
pub(crate) fn broadcast_parameters(gpu: &Gpu, net: &Network, replicas: &dyn Collective) -> Result<()> {
    for arena in [&net.trunk_params, &net.head_params] {
        if arena.len == 0 {
            continue;
        }
        let mut values = arena.buf.download(gpu)?;
        replicas.broadcast(&mut values)?;
        arena.buf.write(gpu, &values)?;
    }
    broadcast_running_stats(gpu, net, replicas)
}

/// Gives every replica rank 0's BatchNorm running statistics (read back and broadcast once,
/// at the end of a run).
pub(crate) fn broadcast_running_stats(gpu: &Gpu, net: &Network, replicas: &dyn Collective) -> Result<()> {
    if net.running.len == 0 {
        return Ok(());
    }
    let mut values = net.running.buf.download(gpu)?;
    replicas.broadcast(&mut values)?;
    net.running.buf.write(gpu, &values)
}

/// The gradients of the trainable ranges on their way between the GPU and the other replicas, in
/// host-readable buffers made once per run. Frozen parameters have no gradient buffer and send
/// nothing.
///
/// Without overlap, one bucket holds every range: the step's forward and backward run in one
/// submission, then the bucket is read, summed over the replicas and written back. With
/// [`TrainConfig::overlap_exchange`](super::TrainConfig::overlap_exchange), two buckets: the
/// gradients of the layers from `split` up (all but the lowest trainable layer) and the rest. The
/// step is then two submissions — up to the backward below `split`, then that backward — and the
/// upper bucket is summed over the replicas while the device computes the lower layers'
/// gradients (the second submission is made from a helper thread, so the host's exchange runs
/// even where the driver executes a submission inside the submit call). The sums are the same
/// element-wise sums in the same replica order, so both ways give the same bits. (Over MPI, with 3
/// ranks or more, Open MPI may pick another reduction tree for a shorter message, so the two ways
/// can differ in rounding there; every rank still gets the same bits, from rank 0's broadcast.)
pub(crate) struct GradExchange {
    buckets: Vec<Bucket>,
    /// With two buckets: the lowest layer of the upper one.
    split: Option<usize>,
}

/// Gradient pieces read back, exchanged and written back together.
struct Bucket {
    staging: ReadBack,
    /// (gradient buffer, element offset in it, elements), in staging order.
    parts: Vec<(usize, usize, usize)>,
}

impl Bucket {
    fn new(gpu: &Gpu, parts: Vec<(usize, usize, usize)>, label: &str) -> Result<Bucket> {
        let total = parts.iter().map(|p| p.2).sum();
        Ok(Bucket { staging: ReadBack::new(gpu, total, label)?, parts })
    }

    fn record_copy(&self, rec: &mut Recorder<'_>, grads: &Grads) -> Result<()> {
        let mut at = 0;
        for &(buf, from, len) in &self.parts {
            rec.copy_to_readback(&grads.bufs[buf].view(from, &[len])?, &self.staging, at)?;
            at += len;
        }
        Ok(())
    }

    /// This replica's gradients (`host`: read back, or zeros where it computed nothing) weighted
    /// by `weight` and summed over the replicas.
    fn sum(&self, mut host: Vec<f32>, replicas: &dyn Collective, weight: f32) -> Result<Vec<f32>> {
        if weight != 1.0 {
            host.iter_mut().for_each(|g| *g *= weight);
        }
        replicas.sum(&mut host)?;
        Ok(host)
    }

    fn write_back(&self, gpu: &Gpu, grads: &Grads, host: &[f32]) -> Result<()> {
        let mut at = 0;
        for &(buf, from, len) in &self.parts {
            grads.bufs[buf].view(from, &[len])?.write(gpu, &host[at..at + len])?;
            at += len;
        }
        Ok(())
    }
}

impl GradExchange {
    /// One bucket, or two with `overlap` where at least two layers with parameters train.
    pub fn new(gpu: &Gpu, net: &Network, grads: &Grads, overlap: bool) -> Result<GradExchange> {
        let whole: Vec<(usize, usize, usize)> = grads.bufs.iter().enumerate().map(|(k, b)| (k, 0, b.len())).collect();
        // the lowest layer with a gradient, and the next one up: the upper bucket starts there
        let layers = net.layers();
        let mut trained = (0..layers.len()).filter(|&i| grads.has(i) && layers[i].weight_shape().is_some());
        let split = match (overlap, trained.next(), trained.next()) {
            (true, Some(_), Some(split)) => split,
            _ => return Ok(GradExchange { buckets: vec![Bucket::new(gpu, whole, "gradients_exchange")?], split: None }),
        };
        let (mut upper, mut lower) = (Vec::new(), Vec::new());
        for (k, r) in grads.ranges.iter().enumerate() {
            let len = r.end - r.start;
            // the range's layers sit in order in its arena: those from `split` up start at `cut`
            let cut =
                r.layers.clone().filter(|&i| i >= split && layers[i].weight_shape().is_some()).map(|i| net.slot(i).1.w - r.start).min();
            let cut = cut.unwrap_or(len);
            if r.layers.clone().any(|i| i < split && layers[i].weight_shape().is_some() && net.slot(i).1.end > r.start + cut) {
                return Err(Error::invalid("a gradient range is not laid out in layer order"));
            }
            if cut > 0 {
                lower.push((k, 0, cut));
            }
            if cut < len {
                upper.push((k, cut, len - cut));
            }
        }
        let buckets = vec![Bucket::new(gpu, upper, "gradients_exchange_upper")?, Bucket::new(gpu, lower, "gradients_exchange_lower")?];
        Ok(GradExchange { buckets, split: Some(split) })
    }

    /// The number of f32 values a step sends (and receives).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.staging.len()).sum()
    }

    /// The exchange of a step whose passes `rec` holds (gradient accumulation: the step's
    /// gradient is summed on the device, and each pass's loss scaled by its share of the step's,
    /// so the replicas' gradients only add up): copies the gradients out, submits, sums them over
    /// the replicas and writes the sum back for the update. A replica that `computed` nothing
    /// sends zeros. One bucket only (not with `overlap_exchange`). Returns the submissions made.
    pub fn exchange_recorded(
        &self,
        gpu: &Gpu,
        mut rec: Recorder<'_>,
        grads: &Grads,
        replicas: &dyn Collective,
        computed: bool,
    ) -> Result<u64> {
        let [b] = &self.buckets[..] else {
            return Err(Error::invalid("gradient accumulation exchanges the gradients in one bucket: not with overlap_exchange"));
        };
        let host = if computed {
            b.record_copy(&mut rec, grads)?;
            let index = rec.submit_indexed();
            b.staging.read_after(gpu, index)?
        } else {
            rec.submit();
            vec![0.0; b.staging.len()]
        };
        let host = b.sum(host, replicas, 1.0)?;
        b.write_back(gpu, grads, &host)?;
        Ok(1)
    }

    /// One data-parallel step up to the update: records `plan`'s launches up to the gradients
    /// (after `uniforms`' copies for its step 0) where this replica computes rows (`computed`),
    /// reads its gradients back, weights them by `weight` (its share of the batch's loss
    /// normaliser, [`share_weight`]), sums them over the replicas and writes the batch's gradient
    /// back for the update. Returns the dispatches recorded and the submissions made.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        gpu: &Gpu,
        plan: &Plan,
        uniforms: &StepUniforms,
        grads: &Grads,
        replicas: &dyn Collective,
        computed: bool,
        weight: f32,
    ) -> Result<(usize, u64)> {
        let mut rec = Recorder::new(gpu, "train_gradients");
        uniforms.record(&mut rec, 0);
        if !computed {
            // a replica without rows sends zeros, bucket by bucket as the others do
            rec.submit();
            for b in &self.buckets {
                let host = b.sum(vec![0.0; b.staging.len()], replicas, weight)?;
                b.write_back(gpu, grads, &host)?;
            }
            return Ok((0, 1));
        }
        let Some(split) = self.split else {
            let b = &self.buckets[0];
            let recorded = rec.pass("train_gradients", plan.gradient_dispatches());
            b.record_copy(&mut rec, grads)?;
            let index = rec.submit_indexed();
            let host = b.sum(b.staging.read_after(gpu, index)?, replicas, weight)?;
            b.write_back(gpu, grads, &host)?;
            return Ok((recorded, 1));
        };
        let (upper, lower) = (&self.buckets[0], &self.buckets[1]);
        let cut = plan.launches_before_backward_below(split);
        let mut recorded = rec.pass("train_gradients_upper", plan.gradient_dispatches().take(cut));
        upper.record_copy(&mut rec, grads)?;
        let first = rec.submit_indexed();
        let mut rec = Recorder::new(gpu, "train_gradients_lower");
        recorded += rec.pass("train_gradients_lower", plan.gradient_dispatches().skip(cut));
        lower.record_copy(&mut rec, grads)?;
        let host = upper.staging.read_after(gpu, first)?;
        // the device computes the lower layers' gradients while this thread exchanges the upper
        // ones (MPI stays on this thread)
        let (summed, second) = std::thread::scope(|s| {
            let submit = s.spawn(move || rec.submit_indexed());
            let summed = upper.sum(host, replicas, weight);
            (summed, submit.join())
        });
        let second = second.map_err(|_| Error::invalid("the thread submitting the lower layers' backward panicked"))?;
        upper.write_back(gpu, grads, &summed?)?;
        let host = lower.sum(lower.staging.read_after(gpu, second)?, replicas, weight)?;
        lower.write_back(gpu, grads, &host)?;
        Ok((recorded, 2))
    }
}

/// The weight of a replica's gradient in the batch's: the replica's loss is a mean over its share
/// (`rows` rows from `offset` of the batch's `batch` example indices), the batch's a mean over the
/// whole batch, so the weight is the share of the mean's denominator: rows over the batch's rows,
/// or, under [`BceReduction::MeanLabelled`](crate::kernels::loss::BceReduction::MeanLabelled),
/// the known (not NaN) labels of the share over the batch's, counted on the host from the data
/// and the epoch's order that every replica holds (no exchange needed). 0 where the batch has no
/// known label (its loss and gradient are 0).
pub(crate) fn share_weight(bce: &super::BceSettings, data: &crate::data::Dataset, batch: &[u32], offset: usize, rows: usize) -> f32 {
    use crate::kernels::loss::BceReduction;
    match (&data.targets, bce.reduction) {
        (crate::data::Targets::Labels { y, k }, BceReduction::MeanLabelled) => {
            let known = |idx: &[u32]| -> usize {
                idx.iter().map(|&i| y[i as usize * k..(i as usize + 1) * k].iter().filter(|v| !v.is_nan()).count()).sum()
            };
            let total = known(batch);
            if total == 0 { 0.0 } else { known(&batch[offset..offset + rows]) as f32 / total as f32 }
        }
        _ => rows as f32 / batch.len() as f32,
    }
}

/// Per named head of `net`, the share of the batch's loss normaliser that rows `offset..offset +
/// rows` of the batch's example indices `batch` hold: each head's loss is a mean over its own
/// known targets (classes other than −1, regression values and, under
/// [`BceReduction::MeanLabelled`](crate::kernels::loss::BceReduction::MeanLabelled), labels
/// that are not NaN; under BCE's other reductions over rows), so one weight per replica cannot
/// make the replicas' gradients the batch's: the trunk's gradient sums every head's. Instead each
/// replica's head loss is scaled by its share ([`Plan::stage_head_shares`](super::plan::Plan::stage_head_shares)),
/// and the replicas' plain sum is the batch's loss and gradient. Counted on the host from the
/// data and the epoch's order that every replica holds; 0 for a head without a known target in
/// the batch (its loss and gradient are 0).
pub(crate) fn head_shares(
    net: &Network,
    bce: &super::BceSettings,
    data: &crate::data::Dataset,
    batch: &[u32],
    offset: usize,
    rows: usize,
) -> Result<Vec<f32>> {
    use crate::data::Targets;
    use crate::kernels::loss::{BceReduction, IGNORE_CLASS};
    use crate::nn::HeadKind;
    let mine = &batch[offset..offset + rows];
    net.heads()
        .iter()
        .map(|h| {
            let t = data.targets.head(&h.name).ok_or_else(|| Error::invalid(format!("the data has no targets for head {:?}", h.name)))?;
            // what the head's loss counts in its mean
            enum Counts<'a> {
                Classes(&'a [u32]),
                Rows,
                Values(&'a [f32], usize),
            }
            let counts = match (t, h.kind) {
                (Targets::Classes { y, .. }, HeadKind::Classes) => Counts::Classes(y),
                (Targets::Labels { .. }, HeadKind::Labels) if h.bce_reduction.unwrap_or(bce.reduction) != BceReduction::MeanLabelled => {
                    Counts::Rows
                }
                (Targets::Labels { y, k } | Targets::Regression { y, k }, _) => Counts::Values(y, *k),
                _ => {
                    return Err(Error::invalid(format!(
                        "head {:?} is a {} head but its targets are {}",
                        h.name,
                        h.kind.name(),
                        t.kind_name()
                    )));
                }
            };
            let known = |idx: &[u32]| -> usize {
                match counts {
                    Counts::Classes(y) => idx.iter().filter(|&&i| y[i as usize] != IGNORE_CLASS).count(),
                    Counts::Rows => idx.len(),
                    Counts::Values(y, k) => {
                        idx.iter().map(|&i| y[i as usize * k..(i as usize + 1) * k].iter().filter(|v| !v.is_nan()).count()).sum()
                    }
                }
            };
            let total = known(batch);
            Ok(if total == 0 { 0.0 } else { known(mine) as f32 / total as f32 })
        })
        .collect()
}

struct Exchange {
    /// One slot per replica for the buffer being summed.
    slots: Vec<Vec<f64>>,
    result: Vec<f64>,
    /// Replicas waiting at the barrier, and how many times it has opened.
    arrived: usize,
    generation: u64,
    /// Why the group stopped: a replica failed.
    failed: Option<String>,
}

/// Replicas that are threads of one process (one adapter each, or several on one): their
/// [`Collective`]s, made together by [`ThreadGroup::new`]. Sums run in replica order, so the result
/// is deterministic and the same on every replica.
pub struct ThreadGroup {
    rank: usize,
    size: usize,
    shared: Arc<(Mutex<Exchange>, Condvar)>,
}

impl ThreadGroup {
    /// `size` connected collectives, one for each replica's thread (index = rank).
    pub fn new(size: usize) -> Result<Vec<ThreadGroup>> {
        if size == 0 {
            return Err(Error::invalid("a group of replicas needs at least one"));
        }
        let exchange = Exchange { slots: vec![Vec::new(); size], result: Vec::new(), arrived: 0, generation: 0, failed: None };
        let shared = Arc::new((Mutex::new(exchange), Condvar::new()));
        Ok((0..size).map(|rank| ThreadGroup { rank, size, shared: shared.clone() }).collect())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Exchange>> {
        self.shared.0.lock().map_err(|_| Error::invalid("a replica thread panicked during an exchange"))
    }

    /// Waits until every replica has arrived, or fails with the reason a replica gave up.
    fn wait<'a>(&'a self, mut ex: MutexGuard<'a, Exchange>) -> Result<MutexGuard<'a, Exchange>> {
        let stopped = |ex: &Exchange| ex.failed.clone().map(|why| Error::invalid(format!("the data-parallel run stopped: {why}")));
        if let Some(e) = stopped(&ex) {
            return Err(e);
        }
        ex.arrived += 1;
        if ex.arrived == self.size {
            ex.arrived = 0;
            ex.generation += 1;
            self.shared.1.notify_all();
            return Ok(ex);
        }
        let generation = ex.generation;
        while ex.generation == generation {
            if let Some(e) = stopped(&ex) {
                return Err(e);
            }
            ex = self.shared.1.wait(ex).map_err(|_| Error::invalid("a replica thread panicked during an exchange"))?;
        }
        Ok(ex)
    }

    /// Deposits `data`, waits for every replica, and returns the combination `f` of the slots
    /// (computed once, by replica 0, and read by all). Slots of different lengths (replicas
    /// training different networks) are an error on every replica.
    fn exchange(&self, data: Vec<f64>, f: impl FnOnce(&[Vec<f64>]) -> Vec<f64>) -> Result<Vec<f64>> {
        let len = data.len();
        let mut ex = self.lock()?;
        ex.slots[self.rank] = data;
        let mut ex = self.wait(ex)?;
        if self.rank == 0 {
            let same = ex.slots.iter().all(|s| s.len() == len);
            ex.result = if same { f(&ex.slots) } else { Vec::new() };
        }
        let ex = self.wait(ex)?;
        let same = ex.slots.iter().all(|s| s.len() == len);
        let out = ex.result.clone();
        // nobody may deposit the next buffer before everyone has read this result
        drop(self.wait(ex)?);
        if !same || out.len() != len {
            return Err(Error::invalid("replicas exchanged buffers of different lengths"));
        }
        Ok(out)
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn sum(&self, data: &mut [f32]) -> Result<()> {
        // summed in f32, in replica order, as an MPI reduction of f32 would
        let out = self.exchange(data.iter().map(|&v| v as f64).collect(), |slots| {
            (0..slots[0].len()).map(|i| slots.iter().fold(0f32, |acc, s| acc + s[i] as f32) as f64).collect()
        })?;
        data.iter_mut().zip(out).for_each(|(d, v)| *d = v as f32);
        Ok(())
    }
    fn sum_f64(&self, data: &mut [f64]) -> Result<()> {
        let out = self.exchange(data.to_vec(), |slots| (0..slots[0].len()).map(|i| slots.iter().map(|s| s[i]).sum()).collect())?;
        data.copy_from_slice(&out);
        Ok(())
    }
    fn broadcast(&self, data: &mut [f32]) -> Result<()> {
        let out = self.exchange(data.iter().map(|&v| v as f64).collect(), |slots| slots[0].clone())?;
        data.iter_mut().zip(out).for_each(|(d, v)| *d = v as f32);
        Ok(())
    }
    fn fail(&self, message: &str) {
        // a poisoned lock means another replica panicked: the group is stopping anyway
        if let Ok(mut ex) = self.shared.0.lock() {
            ex.failed.get_or_insert_with(|| format!("replica {} failed: {message}", self.rank));
            self.shared.1.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_order() {
        for rows in [1, 2, 7, 33, 128] {
            for size in 1..=5 {
                let mut next = 0;
                for rank in 0..size {
                    let (off, len) = share(rows, rank, size);
                    assert_eq!(off, next);
                    next += len;
                }
                assert_eq!(next, rows);
            }
        }
        assert_eq!(share(1, 1, 2), (1, 0));
    }

    #[test]
    fn passes_cover_the_step_once_micro_batch_by_micro_batch() {
        for rows in [1, 2, 7, 33, 128] {
            for k in 1..=4 {
                for size in 1..=3 {
                    // every replica's passes, in micro-batch order: together the step's rows
                    let mut all: Vec<(usize, usize)> = (0..size).flat_map(|r| passes(rows, k, r, size)).collect();
                    all.sort_unstable();
                    let mut next = 0;
                    for (at, len) in all {
                        assert!(len > 0);
                        assert_eq!(at, next, "rows {rows}, k {k}, size {size}");
                        next += len;
                    }
                    assert_eq!(next, rows);
                }
            }
        }
        assert_eq!(passes(64, 1, 1, 2), [(32, 32)]);
        assert_eq!(passes(256, 4, 1, 2), [(32, 32), (96, 32), (160, 32), (224, 32)]);
        assert_eq!(passes(2, 3, 0, 1), [(0, 1), (1, 1)]);
    }

    #[test]
    fn a_failed_replica_releases_the_others_with_its_reason() {
        let group = ThreadGroup::new(3).unwrap();
        let errs: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|g| {
                    s.spawn(move || {
                        if g.rank() == 2 {
                            g.fail("bad data");
                            return String::new();
                        }
                        let mut a = vec![1.0];
                        g.sum(&mut a).unwrap_err().to_string()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(errs[..2].iter().all(|e| e.contains("replica 2 failed: bad data")), "{errs:?}");
    }

    #[test]
    fn a_thread_group_sums_and_broadcasts_the_same_bits_everywhere() {
        let group = ThreadGroup::new(3).unwrap();
        let results: Vec<(Vec<f32>, Vec<f32>, Vec<f64>)> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|g| {
                    s.spawn(move || {
                        let r = g.rank() as f32;
                        let mut a = vec![0.1 * (r + 1.0), 1e8, -r];
                        g.sum(&mut a).unwrap();
                        let mut b = vec![r; 2];
                        g.broadcast(&mut b).unwrap();
                        let mut c = vec![r as f64 + 0.5];
                        g.sum_f64(&mut c).unwrap();
                        (a, b, c)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let want = ((0.1f32 + 0.2) + 0.3, 3e8f32, -3.0f32);
        for (a, b, c) in &results {
            assert_eq!(a, &vec![want.0, want.1, want.2]);
            assert_eq!(b, &vec![0.0, 0.0]);
            assert_eq!(c, &vec![4.5]);
        }
    }
}
