//! Data-parallel runs under `mpirun` (feature `distributed`): this process's place in the job.
//! Every rank loads the data and the model itself and trains its share of each batch; only rank 0
//! prints epoch lines and writes files. A failure on any rank ends the whole job with its message.
//! Without the feature, or without a launcher, the process is alone and everything is as before.

#[cfg(feature = "distributed")]
mod mpi_job {
    use headswap::distributed::Mpi;
    use std::cell::RefCell;

    thread_local! {
        static JOB: RefCell<Option<Mpi>> = const { RefCell::new(None) };
    }

    /// Joins the MPI job when a launcher started this process.
    pub fn init() -> headswap::Result<()> {
        let mpi = Mpi::init()?;
        JOB.with(|j| *j.borrow_mut() = mpi);
        Ok(())
    }

    /// The job, when this process is one of several.
    pub fn job() -> Option<Mpi> {
        JOB.with(|j| j.borrow().clone()).filter(|m| m.size() > 1)
    }

    /// Ends MPI (at the end of main, before exit skips destructors).
    pub fn finish() {
        JOB.with(|j| j.borrow_mut().take());
    }
}

/// Joins the MPI job when a launcher started this process; alone otherwise. A binary built
/// without the feature refuses to run as one of several processes: each would train alone on
/// all the data and write the same files.
pub fn init() -> headswap::Result<()> {
    #[cfg(feature = "distributed")]
    mpi_job::init()?;
    #[cfg(not(feature = "distributed"))]
    if let Some(n) = launcher_size().filter(|&n| n > 1) {
        return Err(headswap::Error::InvalidInput(format!(
            "started as one of {n} MPI processes, but this headswap was built without data-parallel training: rebuild it with `cargo build --release --features distributed`"
        )));
    }
    Ok(())
}

/// The number of processes an MPI launcher says it started, when one started this process.
#[cfg(not(feature = "distributed"))]
fn launcher_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"].iter().find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// Ends the MPI job's part in this process (a no-op alone).
pub fn finish() {
    #[cfg(feature = "distributed")]
    mpi_job::finish();
}

/// `(rank, size)` of this process: `(0, 1)` alone.
pub fn place() -> (usize, usize) {
    #[cfg(feature = "distributed")]
    if let Some(m) = mpi_job::job() {
        return (m.rank(), m.size());
    }
    (0, 1)
}

/// Whether this process prints results and writes files: rank 0, or a process alone.
pub fn is_primary() -> bool {
    place().0 == 0
}

/// The adapter for this process: its local rank's among identical adapters.
pub fn gpu() -> headswap::Result<headswap::Gpu> {
    #[cfg(feature = "distributed")]
    if let Some(m) = mpi_job::job() {
        return headswap::Gpu::for_local_rank(m.local_rank());
    }
    headswap::Gpu::new()
}

/// `trainer` as this process's replica of the job (unchanged alone).
pub fn attach(trainer: headswap::train::Trainer) -> headswap::train::Trainer {
    #[cfg(feature = "distributed")]
    if let Some(m) = mpi_job::job() {
        return trainer.with_replicas(m);
    }
    trainer
}

/// Ends the whole job after a failure on this rank, which the others cannot know of; returns
/// alone (the caller then exits as usual).
pub fn abort_job(code: u8) {
    #[cfg(feature = "distributed")]
    if let Some(m) = mpi_job::job() {
        m.abort(i32::from(code));
    }
    let _ = code;
}
