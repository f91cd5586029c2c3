//! Data-parallel training over MPI (feature `distributed`): one process per adapter, on one
//! machine or many, through the MPI installation clusters already run (Open MPI's `mpirun`).
//!
//! [`Mpi`] is a [`Collective`]: give it to [`Trainer::with_replicas`](crate::train::Trainer::with_replicas)
//! in every process of an `mpirun -np N` job and the processes train as one, each on its share
//! of every global batch (see [`crate::train::collective`]). The gradients of the trainable
//! ranges are summed with a reduction to rank 0 followed by a broadcast, so every rank applies
//! the update to the same bits; frozen parameters are never sent.
//!
//! ```no_run
//! # fn main() -> headswap::Result<()> {
//! use headswap::{Gpu, distributed::Mpi, nn::{Head, Network}, train::{TrainConfig, Trainer}};
//! # let data = headswap::data::synthetic::scenes_task_b(64, 16, 2);
//! let mpi = Mpi::init()?.expect("run under mpirun");
//! let gpu = Gpu::for_local_rank(mpi.local_rank())?;
//! let mut net = Network::new(&gpu, &[256, 64], Head::labels(4), 1)?;
//! Trainer::new(&gpu, TrainConfig::default()).with_replicas(mpi.clone()).fit(&mut net, &data, 2)?;
//! if mpi.rank() == 0 {
//!     net.save("model.safetensors".as_ref(), headswap::checkpoint::StorageDtype::F32)?;
//! }
//! # Ok(()) }
//! ```

use crate::error::{Error, Result};
use crate::train::Collective;
use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use std::rc::Rc;

/// The environment variables an MPI launcher sets in every process it starts (Open MPI, and the
/// PMI/PMIx process managers of MPICH and Slurm).
const LAUNCHER_VARS: &[&str] = &["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"];

/// Whether this process was started by an MPI launcher (`mpirun`, `srun`).
pub fn launched() -> bool {
    LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some())
}

struct Inner {
    world: SimpleCommunicator,
    local_rank: usize,
    // dropped last: finalises MPI
    _universe: mpi::environment::Universe,
}

/// This process's place in an MPI job, and the exchange of its replicas. Clones share one MPI
/// initialisation, finalised when the last is dropped.
#[derive(Clone)]
pub struct Mpi {
    inner: Rc<Inner>,
}

impl Mpi {
    /// Initialises MPI when this process was started by an MPI launcher ([`launched`]); `None`
    /// otherwise (a plain run, which trains alone). MPI can be initialised once per process.
    pub fn init() -> Result<Option<Mpi>> {
        if !launched() {
            return Ok(None);
        }
        let universe = mpi::initialize().ok_or_else(|| Error::invalid("MPI was already initialised in this process"))?;
        let world = universe.world();
        // the processes on this machine, in rank order: the local rank picks the adapter
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        Ok(Some(Mpi { inner: Rc::new(Inner { world, local_rank, _universe: universe }) }))
    }

    /// This process's rank in the job.
    pub fn rank(&self) -> usize {
        self.inner.world.rank() as usize
    }
    /// The number of processes in the job.
    pub fn size(&self) -> usize {
        self.inner.world.size() as usize
    }
    /// This process's index among the job's processes on the same machine.
    pub fn local_rank(&self) -> usize {
        self.inner.local_rank
    }

    /// Ends every process of the job with exit code `code` (after a failure on this rank that
    /// the others cannot know of: they would otherwise wait for it forever).
    pub fn abort(&self, code: i32) -> ! {
        self.inner.world.abort(code)
    }

    /// Waits until every process has reached this point.
    pub fn barrier(&self) {
        self.inner.world.barrier();
    }

    /// Sums `data` over the ranks into every rank's `data`: a reduction to rank 0, then a
    /// broadcast of its result, so every rank gets the same bits (an all-reduce does not
    /// promise that).
    fn sum_everywhere<T: Equivalence + Copy + Default>(&self, data: &mut [T]) {
        let root = self.inner.world.process_at_rank(0);
        if self.rank() == 0 {
            let mut out = vec![T::default(); data.len()];
            root.reduce_into_root(&*data, &mut out[..], SystemOperation::sum());
            data.copy_from_slice(&out);
        } else {
            root.reduce_into(&*data, SystemOperation::sum());
        }
        root.broadcast_into(data);
    }

    fn check_same_length(&self, len: usize) -> Result<()> {
        let mine = len as u64;
        let (mut lo, mut hi) = (0u64, 0u64);
        self.inner.world.all_reduce_into(&mine, &mut lo, SystemOperation::min());
        self.inner.world.all_reduce_into(&mine, &mut hi, SystemOperation::max());
        if lo != hi {
            return Err(Error::invalid(format!(
                "the ranks exchange buffers of different lengths ({lo} to {hi}): they train different networks"
            )));
        }
        Ok(())
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        Mpi::rank(self)
    }
    fn size(&self) -> usize {
        Mpi::size(self)
    }
    fn sum(&self, data: &mut [f32]) -> Result<()> {
        // every step: the lengths were checked once, when the parameters were broadcast
        self.sum_everywhere(data);
        Ok(())
    }
    fn sum_f64(&self, data: &mut [f64]) -> Result<()> {
        self.check_same_length(data.len())?;
        self.sum_everywhere(data);
        Ok(())
    }
    fn broadcast(&self, data: &mut [f32]) -> Result<()> {
        self.check_same_length(data.len())?;
        self.inner.world.process_at_rank(0).broadcast_into(data);
        Ok(())
    }
    fn fail(&self, message: &str) {
        eprintln!("error: rank {} of {}: {message}", self.rank(), self.size());
        self.abort(1)
    }
}
