//! Data-parallel training over MPI, from the library: every rank trains its share of each global
//! batch, and after every step the ranks hold the same bits (checked here through MPI).
//!
//! ```text
//! cargo build --release --features distributed --example data_parallel
//! mpirun -np 2 target/release/examples/data_parallel
//! ```
//! With one step per epoch (the batch is the whole data set), it checks after each step that
//! every rank's weights hash the same, and that the frozen trunk of a head-only fine-tune never
//! changes; rank 0 prints one line per check.

#[cfg(feature = "distributed")]
fn main() -> headswap::Result<()> {
    use headswap::distributed::Mpi;
    use headswap::nn::{Head, Network};
    use headswap::train::{Freeze, Optimizer, TrainConfig, Trainer};
    use std::hash::{DefaultHasher, Hash, Hasher};

    let Some(mpi) = Mpi::init()? else {
        eprintln!("run me under mpirun: mpirun -np 2 {}", std::env::args().next().unwrap_or_default());
        std::process::exit(2);
    };
    let gpu = headswap::Gpu::for_local_rank(mpi.local_rank())?;
    let data = headswap::data::synthetic::shapes_task_a(96, 16, 5);
    let hash = |net: &Network| -> headswap::Result<u64> {
        let mut h = DefaultHasher::new();
        for (w, b) in net.values()? {
            w.iter().chain(&b).for_each(|v| v.to_bits().hash(&mut h));
        }
        Ok(h.finish())
    };
    // the hashes of every rank, gathered through the collective's sum (each rank fills its slot)
    let all_same = |mpi: &Mpi, mine: u64| -> headswap::Result<bool> {
        use headswap::train::Collective;
        let mut slots = vec![0f64; mpi.size() * 4];
        for k in 0..4 {
            slots[mpi.rank() * 4 + k] = ((mine >> (16 * k)) & 0xffff) as f64;
        }
        mpi.sum_f64(&mut slots)?;
        Ok(slots.chunks(4).all(|c| c == &slots[..4]))
    };
    // different seeds per rank: the broadcast of rank 0's weights must make them equal
    let mut net = Network::new(&gpu, &[256, 64, 32], Head::classes(8), 1 + mpi.rank() as u64)?;
    let cfg = TrainConfig { batch_size: data.n, optimizer: Optimizer::adam(1e-3), seed: 3, ..Default::default() };
    let mut trainer = Trainer::new(&gpu, cfg).with_replicas(mpi.clone());
    for step in 1..=4 {
        trainer.fit(&mut net, &data, 1)?;
        let same = all_same(&mpi, hash(&net)?)?;
        if mpi.rank() == 0 {
            println!("pretrain step {step}: ranks identical: {same}");
        }
        if !same {
            mpi.abort(3);
        }
    }
    let trunk_before = net.values()?[..2].to_vec();
    net.swap_head(Head::labels(4), 7)?;
    let task_b = headswap::data::synthetic::scenes_task_b(64, 16, 6);
    let cfg = TrainConfig { batch_size: task_b.n, optimizer: Optimizer::sgd(0.1), seed: 4, ..Default::default() };
    let mut trainer = Trainer::new(&gpu, cfg).with_replicas(mpi.clone());
    for step in 1..=3 {
        trainer.fine_tune(&mut net, &task_b, Freeze::Trunk, 1)?;
        let same = all_same(&mpi, hash(&net)?)?;
        let frozen = net.values()?[..2] == trunk_before[..];
        if mpi.rank() == 0 {
            println!("head-only step {step}: ranks identical: {same}; trunk unchanged: {frozen}");
        }
        if !same || !frozen {
            mpi.abort(3);
        }
    }
    Ok(())
}

#[cfg(not(feature = "distributed"))]
fn main() {
    eprintln!("build with --features distributed (needs Open MPI and libclang)");
    std::process::exit(2);
}
