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
use crate::gpu::Gpu;
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
    Ok(())
}

/// The "gradients ready" point of a data-parallel step: reads this replica's gradients of the
/// trainable ranges (the mean over its `rows` of the batch's `batch_rows`; nothing where it has
/// no rows), weights them by its share of the batch, sums over the replicas and writes the
/// result, the batch's mean gradient, back for the update. Frozen parameters have no gradient
/// buffer and send nothing.
pub(crate) fn mean_gradients(gpu: &Gpu, grads: &Grads, replicas: &dyn Collective, rows: usize, batch_rows: usize) -> Result<()> {
    let total: usize = grads.bufs.iter().map(|b| b.len()).sum();
    let mut host = Vec::with_capacity(total);
    for buf in &grads.bufs {
        if rows > 0 {
            host.extend(buf.download(gpu)?);
        } else {
            host.resize(host.len() + buf.len(), 0.0);
        }
    }
    let weight = rows as f32 / batch_rows as f32;
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
    /// (computed once, by replica 0, and read by all).
    fn exchange(&self, data: Vec<f64>, f: impl FnOnce(&[Vec<f64>]) -> Result<Vec<f64>>) -> Result<Vec<f64>> {
        let mut ex = self.lock()?;
        ex.slots[self.rank] = data;
        let mut ex = self.wait(ex)?;
        if self.rank == 0 {
            let combined = f(&ex.slots);
            ex.result = combined.unwrap_or_default();
        }
        let ex = self.wait(ex)?;
        let out = ex.result.clone();
        // nobody may deposit the next buffer before everyone has read this result
        drop(self.wait(ex)?);
        Ok(out)
    }

    fn sum_slots(slots: &[Vec<f64>]) -> Result<Vec<f64>> {
        let n = slots[0].len();
        if slots.iter().any(|s| s.len() != n) {
            return Err(Error::invalid("replicas exchanged buffers of different lengths"));
        }
        Ok((0..n).map(|i| slots.iter().map(|s| s[i]).sum()).collect())
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
            let n = slots[0].len();
            if slots.iter().any(|s| s.len() != n) {
                return Err(Error::invalid("replicas exchanged buffers of different lengths"));
            }
            Ok((0..n).map(|i| slots.iter().fold(0f32, |acc, s| acc + s[i] as f32) as f64).collect())
        })?;
        check_len(&out, data.len())?;
        data.iter_mut().zip(out).for_each(|(d, v)| *d = v as f32);
        Ok(())
    }
    fn sum_f64(&self, data: &mut [f64]) -> Result<()> {
        let out = self.exchange(data.to_vec(), Self::sum_slots)?;
        check_len(&out, data.len())?;
        data.copy_from_slice(&out);
        Ok(())
    }
    fn broadcast(&self, data: &mut [f32]) -> Result<()> {
        let out = self.exchange(data.iter().map(|&v| v as f64).collect(), |slots| Ok(slots[0].clone()))?;
        check_len(&out, data.len())?;
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

fn check_len(out: &[f64], want: usize) -> Result<()> {
    if out.len() != want {
        return Err(Error::invalid("replicas exchanged buffers of different lengths"));
    }
    Ok(())
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
