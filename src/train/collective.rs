//! Data-parallel training: what replicas of one training run exchange.
//!
//! Each replica (an MPI rank, or a thread with its own adapter) holds the whole network and the
//! whole data set and takes its share of every global batch; at the step's "gradients ready"
//! point the trainable ranges' gradients are averaged over the replicas (weighted by each one's
//! share of the batch), and every replica runs the same optimizer update on the same bits. A
//! [`Collective`] is the exchange; [`ThreadGroup`] is one within a process, and
//! `headswap::distributed::Mpi` (feature `distributed`) one over MPI.

use super::optimizer::Grads;
use crate::error::{Error, Result};
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

/// The gradients of the trainable ranges on their way between the GPU and the other replicas: one
/// host-readable buffer for all ranges, made once per run. Frozen parameters have no gradient
/// buffer and send nothing.
pub(crate) struct GradExchange {
    staging: ReadBack,
}

impl GradExchange {
    pub fn new(gpu: &Gpu, grads: &Grads) -> Result<GradExchange> {
        let total = grads.bufs.iter().map(|b| b.len()).sum();
        Ok(GradExchange { staging: ReadBack::new(gpu, total, "gradients_exchange")? })
    }

    /// The number of f32 values a step sends (and receives).
    pub fn len(&self) -> usize {
        self.staging.len()
    }

    /// Records, at the end of the step's gradient submission, the copy of every range's
    /// gradients into the host-readable buffer.
    pub fn record_copy(&self, rec: &mut Recorder<'_>, grads: &Grads) -> Result<()> {
        let mut at = 0;
        for buf in &grads.bufs {
            rec.copy_to_readback(buf, &self.staging, at)?;
            at += buf.len();
        }
        Ok(())
    }

    /// The "gradients ready" point: reads this replica's gradients (the mean over its share of
    /// the batch; zeros where it computed nothing, `computed` false, and recorded no copy),
    /// weights them by `weight`, its share of the batch's loss normaliser ([`share_weight`]),
    /// sums over the replicas and writes the result, the batch's gradient, back for the update.
    pub fn mean(&self, gpu: &Gpu, grads: &Grads, replicas: &dyn Collective, computed: bool, weight: f32) -> Result<()> {
        let mut host = if computed { self.staging.read(gpu)? } else { vec![0.0; self.staging.len()] };
        if weight != 1.0 {
            host.iter_mut().for_each(|g| *g *= weight);
        }
        replicas.sum(&mut host)?;
        let mut at = 0;
        for buf in &grads.bufs {
            buf.write(gpu, &host[at..at + buf.len()])?;
            at += buf.len();
        }
        Ok(())
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
