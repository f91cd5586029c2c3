//! Seeded parameter initialisation, matching PyTorch's `nn.Linear` defaults.

use crate::rng::Rng;

/// How a fresh layer's weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// PyTorch's `nn.Linear` default: `kaiming_uniform_(a=√5)`, i.e. W and b ~ U(−1/√in, 1/√in).
    #[default]
    KaimingUniform,
    /// Glorot/Xavier uniform: W ~ U(−√(6/(in+out)), +√(6/(in+out))), b = 0.
    XavierUniform,
}

impl Init {
    pub fn name(self) -> &'static str {
        match self {
            Init::KaimingUniform => "kaiming_uniform",
            Init::XavierUniform => "xavier_uniform",
        }
    }

    /// Weights `[out, in]` and bias `[out]` for a dense layer.
    pub fn dense(self, inputs: usize, outputs: usize, rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
        match self {
            Init::KaimingUniform => {
                let bound = 1.0 / (inputs.max(1) as f64).sqrt();
                let w = (0..inputs * outputs).map(|_| rng.uniform(-bound, bound) as f32).collect();
                let b = (0..outputs).map(|_| rng.uniform(-bound, bound) as f32).collect();
                (w, b)
            }
            Init::XavierUniform => {
                let bound = (6.0 / (inputs + outputs).max(1) as f64).sqrt();
                let w = (0..inputs * outputs).map(|_| rng.uniform(-bound, bound) as f32).collect();
                (w, vec![0.0; outputs])
            }
        }
    }
}
