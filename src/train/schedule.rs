//! Learning-rate schedules, evaluated on the host per step and written into the optimizer's
//! uniform with the step's other parameters: no readback, no rebuild.

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs (PyTorch `StepLR`).
    Step { every_epochs: usize, gamma: f32 },
    /// Linear warm-up from 0 over `warmup_steps`, then cosine decay to `min_lr` at the last step
    /// (the total is the run's step count).
    Cosine { warmup_steps: usize, min_lr: f32 },
}

impl Schedule {
    /// The rate at `step` (0-based, counted over the whole run) in `epoch`, of `total_steps`.
    pub fn lr(&self, base: f32, step: usize, epoch: usize, total_steps: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every_epochs, gamma } => base * gamma.powi((epoch / every_epochs.max(1)) as i32),
            Schedule::Cosine { warmup_steps, min_lr } => {
                if step < warmup_steps {
                    return base * (step + 1) as f32 / warmup_steps as f32;
                }
                let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
                let t = ((step - warmup_steps) as f64 / span).min(1.0);
                (min_lr as f64 + 0.5 * (base - min_lr) as f64 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn schedules() {
        assert_eq!(Schedule::Constant.lr(0.1, 50, 3, 100), 0.1);
        let s = Schedule::Step { every_epochs: 2, gamma: 0.5 };
        assert_eq!(s.lr(1.0, 0, 0, 10), 1.0);
        assert_eq!(s.lr(1.0, 0, 2, 10), 0.5);
        assert_eq!(s.lr(1.0, 0, 5, 10), 0.25);
        let c = Schedule::Cosine { warmup_steps: 10, min_lr: 0.0 };
        assert!((c.lr(1.0, 0, 0, 110) - 0.1).abs() < 1e-6);
        assert!((c.lr(1.0, 9, 0, 110) - 1.0).abs() < 1e-6);
        assert!((c.lr(1.0, 60, 0, 110) - 0.5).abs() < 1e-6);
        assert!(c.lr(1.0, 110, 0, 110).abs() < 1e-6);
    }
}
