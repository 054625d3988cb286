//! Optimizer state for one run of an `ascend`/`descend` block, with PyTorch's update rules.
//!
//! The block owns the state: it is created fresh when the block starts and dropped when it
//! ends. Updates are computed without gradient tracking (the new iterate is detached).

use candle_core::Tensor;

use super::value::OptimizerSpec;
use crate::syntax::ast::Direction;

/// The running state of an optimizer.
pub struct OptimizerState {
    spec: OptimizerSpec,
    /// Steps taken so far.
    t: i32,
    /// Momentum's velocity or Adam's first moment.
    m: Option<Tensor>,
    /// Adam's second moment.
    v: Option<Tensor>,
}

impl OptimizerState {
    /// Fresh state for `spec`.
    pub fn new(spec: OptimizerSpec) -> Self {
        OptimizerState {
            spec,
            t: 0,
            m: None,
            v: None,
        }
    }

    /// One step from `z` along the gradient `g` of the objective: uphill for `Ascend`,
    /// downhill for `Descend`. Returns the new iterate.
    ///
    /// * sgd: z -/+ lr g;
    /// * momentum (PyTorch `SGD(momentum=beta)`): b = beta b + g (b = g at the first step),
    ///   z -/+ lr b;
    /// * adam: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
    ///   z -/+ lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
    pub fn step(
        &mut self,
        z: &Tensor,
        g: &Tensor,
        direction: Direction,
    ) -> candle_core::Result<Tensor> {
        let sign = match direction {
            Direction::Ascend => 1.0,
            Direction::Descend => -1.0,
        };
        self.t += 1;
        let z = z.detach();
        let g = g.detach();
        let update = match self.spec {
            OptimizerSpec::Sgd { lr } => (g * lr)?,
            OptimizerSpec::Momentum { lr, beta } => {
                let b = match &self.m {
                    Some(b) => ((b * beta)? + &g)?,
                    None => g,
                };
                self.m = Some(b.clone());
                (b * lr)?
            }
            OptimizerSpec::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let m = match &self.m {
                    Some(m) => ((m * beta1)? + (&g * (1.0 - beta1))?)?,
                    None => (&g * (1.0 - beta1))?,
                };
                let g2 = g.sqr()?;
                let v = match &self.v {
                    Some(v) => ((v * beta2)? + (g2 * (1.0 - beta2))?)?,
                    None => (g2 * (1.0 - beta2))?,
                };
                let bc1 = 1.0 - beta1.powi(self.t);
                let bc2 = 1.0 - beta2.powi(self.t);
                let denom = ((&v / bc2)?.sqrt()? + eps)?;
                let step = ((&m / bc1)? / denom)?;
                self.m = Some(m);
                self.v = Some(v);
                (step * lr)?
            }
        };
        z + (update * sign)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn scalar(x: f64) -> Tensor {
        Tensor::new(&[x], &Device::Cpu).unwrap()
    }

    fn get(t: &Tensor) -> f64 {
        t.to_vec1::<f64>().unwrap()[0]
    }

    #[test]
    fn sgd_and_momentum_follow_pytorch() {
        let mut s = OptimizerState::new(OptimizerSpec::Sgd { lr: 0.1 });
        let z = s
            .step(&scalar(1.0), &scalar(2.0), Direction::Descend)
            .unwrap();
        assert!((get(&z) - 0.8).abs() < 1e-15);
        let mut m = OptimizerState::new(OptimizerSpec::Momentum { lr: 0.1, beta: 0.9 });
        let z1 = m
            .step(&scalar(0.0), &scalar(1.0), Direction::Ascend)
            .unwrap();
        let z2 = m.step(&z1, &scalar(1.0), Direction::Ascend).unwrap();
        // b1 = 1, b2 = 0.9 + 1 = 1.9: z = 0.1 + 0.19.
        assert!((get(&z2) - 0.29).abs() < 1e-15);
    }

    #[test]
    fn adam_first_steps_have_size_lr() {
        // With bias correction the first step is lr * g / (|g| + eps) = lr sign(g).
        let mut a = OptimizerState::new(OptimizerSpec::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        });
        let z = a
            .step(&scalar(1.0), &scalar(-3.0), Direction::Descend)
            .unwrap();
        assert!((get(&z) - 1.01).abs() < 1e-9);
        // Second step with the same gradient: again m_hat / sqrt(v_hat) = sign(g).
        let z = a.step(&z, &scalar(-3.0), Direction::Descend).unwrap();
        assert!((get(&z) - 1.02).abs() < 1e-9);
    }
}
