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

    /// Values for any layer: empty for layers without parameters; PyTorch's fans for
    /// convolutions (fan_in = in_channels/groups·KH·KW, fan_out = out_channels·KH·KW).
    pub fn layer(self, spec: &crate::nn::LayerSpec, rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
        let Some(shape) = spec.weight_shape() else { return (Vec::new(), Vec::new()) };
        if let crate::nn::LayerSpec::BatchNorm(b) = spec {
            // PyTorch's reset_parameters: γ = 1, β = 0, whatever the convolutions' scheme
            return (vec![1.0; b.channels], vec![0.0; b.channels]);
        }
        let (fan_in, fan_out) = spec.fans();
        let n: usize = shape.iter().product();
        match self {
            Init::KaimingUniform => {
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                let w = (0..n).map(|_| rng.uniform(-bound, bound) as f32).collect();
                let b = (0..spec.bias_len()).map(|_| rng.uniform(-bound, bound) as f32).collect();
                (w, b)
            }
            Init::XavierUniform => {
                let bound = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
                let w = (0..n).map(|_| rng.uniform(-bound, bound) as f32).collect();
                (w, vec![0.0; spec.bias_len()])
            }
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
