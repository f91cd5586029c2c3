//! Data-parallel training over MPI, from the library: every rank trains its share of each global
//! batch, and after every step the ranks hold the same bits (checked here through MPI).
//!
//! ```text
//! cargo build --release --features distributed --example data_parallel
//! mpirun -np 2 target/release/examples/data_parallel
//! ```
//! With one step per epoch (the batch is the whole data set), it checks after each step that
//! every rank's weights hash the same, that the frozen trunk of a head-only fine-tune never
//! changes, and that a network of named heads with unknown targets stays the same on every rank;
//! rank 0 prints one line per check.

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
    // a network of named heads, a third of each head's targets unknown: each rank weighs each
    // head by its share of that head's known targets
    use headswap::data::{Dataset, HeadTargets, Targets};
    use headswap::kernels::loss::IGNORE_CLASS;
    let task_c = headswap::data::synthetic::scenes_task_b(60, 16, 8);
    let labels = match &task_c.targets {
        Targets::Labels { y, .. } => y.iter().enumerate().map(|(i, &v)| if i % 3 == 1 { f32::NAN } else { v }).collect(),
        _ => unreachable!("scenes_task_b has labels"),
    };
    let scene = (0..task_c.n as u32).map(|i| if i % 3 == 0 { IGNORE_CLASS } else { i % 5 }).collect();
    let heads = Dataset {
        targets: Targets::Heads(vec![
            HeadTargets::new("labels", Targets::Labels { y: labels, k: 4 }),
            HeadTargets::new("scene", Targets::Classes { y: scene, num_classes: 5 }),
        ]),
        label_names: Vec::new(),
        ..task_c
    };
    let mut net = Network::from_trunk_heads(
        &gpu,
        256,
        headswap::nn::Trunk::chain(vec![headswap::nn::LayerSpec::Dense(headswap::nn::DenseSpec {
            inputs: 256,
            outputs: 32,
            activation: headswap::kernels::Activation::Relu,
        })]),
        headswap::nn::Init::KaimingUniform,
        &[Head::labels(4).named("labels"), Head::classes(5).named("scene").weight(0.5)],
        1 + mpi.rank() as u64,
    )?;
    let cfg = TrainConfig { batch_size: heads.n, optimizer: Optimizer::adam(1e-2), seed: 5, ..Default::default() };
    let mut trainer = Trainer::new(&gpu, cfg).with_replicas(mpi.clone());
    for step in 1..=2 {
        trainer.fit(&mut net, &heads, 1)?;
        let same = all_same(&mpi, hash(&net)?)?;
        if mpi.rank() == 0 {
            println!("named heads step {step}: ranks identical: {same}");
        }
        if !same {
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
