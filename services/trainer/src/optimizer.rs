//! The optimizer: Adam (L2 weight decay added to the gradient, as `torch.optim.Adam`), with
//! gradient clipping by norm when asked.
//!
//! On libtorch's CPU device each parameter's step is libtorch's fused Adam kernel
//! (`native/fused_adam.cpp`): one pass that updates the parameter and both moments in place.
//! burn's `Adam` writes the same step as about a dozen tensor operations, each a pass over the
//! parameter's size with three temporaries; for the bag model, whose step is dominated by the
//! optimizer over its embedding table, that was most of a batch's time. The state is burn's
//! [`AdamState`] (the step count and both moments), so checkpoints are the same either way, and
//! every tensor this step cannot update in place (another holder shares its storage, as a
//! checkpoint being written does; another backend; another dtype) takes burn's `Adam` instead.
//! Both compute `m / (1 - β₁ᵗ) / (√(v / (1 - β₂ᵗ)) + ε)`; they differ only in float rounding.

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, AdamState, LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor};

use crate::config::TrainingConfig;

const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.999;

/// The training optimizer for these settings.
pub fn build(t: &TrainingConfig) -> ModuleOptimizer {
    let mut optimizer = ModuleOptimizer::from(LexAdam::new(t.adam_epsilon, t.weight_decay));
    if t.gradient_clip > 0.0 {
        optimizer =
            optimizer.with_grad_clipping(GradientClippingConfig::Norm(t.gradient_clip).init());
    }
    optimizer
}

/// Adam that takes libtorch's fused step where it can (see the module doc).
#[derive(Clone)]
pub struct LexAdam {
    // Read by the fused step only (without libtorch every step is the fallback's).
    #[cfg_attr(not(feature = "tch"), allow(dead_code))]
    epsilon: f32,
    #[cfg_attr(not(feature = "tch"), allow(dead_code))]
    weight_decay: f32,
    /// burn's Adam with the same settings, for what the fused step cannot take.
    fallback: Adam,
}

impl LexAdam {
    /// Adam with β = (0.9, 0.999), this ε and L2 weight decay (0: none).
    pub fn new(epsilon: f32, weight_decay: f32) -> Self {
        let mut config = AdamConfig::new()
            .with_beta_1(BETA_1)
            .with_beta_2(BETA_2)
            .with_epsilon(epsilon);
        if weight_decay > 0.0 {
            config = config.with_weight_decay(Some(WeightDecayConfig::new(weight_decay)));
        }
        Self {
            epsilon,
            weight_decay: weight_decay.max(0.0),
            fallback: config.build(),
        }
    }

    /// burn's Adam only, whatever the device: the reference the fused step is tested against.
    #[cfg(all(test, feature = "tch"))]
    fn unfused(&self) -> Adam {
        self.fallback.clone()
    }
}

impl Optimizer for LexAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        #[cfg(feature = "tch")]
        let (tensor, grad, state) = match fused::step(self, lr, tensor, grad, state) {
            Ok(done) => return done,
            Err(untouched) => *untouched,
        };
        self.fallback.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <Adam as Optimizer>::to_device(state, device)
    }
}

// burn marks its libtorch backend deprecated (it points GPU users to CubeCL); the libtorch
// tensor inside a burn tensor is still how this step reaches libtorch's kernel.
#[cfg(feature = "tch")]
#[allow(deprecated)]
mod fused {
    use std::ffi::{CStr, c_char, c_int, c_void};

    use burn::backend::libtorch::TchTensor;
    use burn::backend::{
        BackendTensor, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind,
    };
    use burn::optim::{AdamState, AdaptiveMomentumState, LearningRate};
    use burn::tensor::Tensor;

    use super::{BETA_1, BETA_2, LexAdam};

    #[allow(unsafe_code)]
    unsafe extern "C" {
        /// `native/fused_adam.cpp`: 0 on success, else 1 with a message in `error`.
        fn lexmesh_fused_adam(
            param: *mut c_void,
            grad: *mut c_void,
            exp_avg: *mut c_void,
            exp_avg_sq: *mut c_void,
            step: *mut c_void,
            lr: f64,
            beta1: f64,
            beta2: f64,
            weight_decay: f64,
            eps: f64,
            error: *mut c_char,
            error_len: usize,
        ) -> c_int;
    }

    type Inputs<const D: usize> = (Tensor<D>, Tensor<D>, Option<AdamState<D>>);
    type Outputs<const D: usize> = (Tensor<D>, Option<AdamState<D>>);

    /// The libtorch CPU float32 tensor behind `tensor`, or `tensor` back unchanged.
    fn libtorch<const D: usize>(tensor: Tensor<D>) -> Result<TchTensor, Tensor<D>> {
        match tensor.into_dispatch() {
            DispatchTensor {
                kind: DispatchTensorKind::LibTorch(BackendTensor::Float(t)),
                autodiff: DispatchAutodiffContext::Disabled,
            } if t.tensor.device() == tch::Device::Cpu
                && t.tensor.kind() == tch::Kind::Float
                && t.tensor.is_contiguous() =>
            {
                Ok(t)
            }
            other => Err(Tensor::from_dispatch(other)),
        }
    }

    fn wrap<const D: usize>(t: TchTensor) -> Tensor<D> {
        Tensor::from_dispatch(DispatchTensor {
            kind: DispatchTensorKind::LibTorch(BackendTensor::Float(t)),
            autodiff: DispatchAutodiffContext::Disabled,
        })
    }

    /// The tensor itself when nothing else holds its storage, else a copy to update in place.
    fn owned(t: TchTensor) -> TchTensor {
        if t.can_mut() {
            t
        } else {
            TchTensor::new(t.tensor.copy())
        }
    }

    /// The fused step, or the inputs back untouched when a tensor is not one it takes.
    pub(super) fn step<const D: usize>(
        adam: &LexAdam,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamState<D>>,
    ) -> Result<Outputs<D>, Box<Inputs<D>>> {
        let shape = tensor.shape();
        let (time, moments) = match state {
            Some(state) => {
                let m = state.momentum;
                if m.max_moment_2.is_some() || m.moment_1.shape() != shape {
                    return Err(Box::new((tensor, grad, Some(AdamState::new(m)))));
                }
                (m.time, Some((m.moment_1, m.moment_2)))
            }
            None => (0, None),
        };
        let param = match libtorch(tensor) {
            Ok(p) => p,
            Err(tensor) => return Err(Box::new((tensor, grad, restore(time, moments)))),
        };
        let grad = match libtorch(grad) {
            Ok(g) if g.tensor.size() == param.tensor.size() => g,
            Ok(g) => return Err(Box::new((wrap(param), wrap(g), restore(time, moments)))),
            Err(grad) => return Err(Box::new((wrap(param), grad, restore(time, moments)))),
        };
        let (mut m, mut v) = match moments {
            None => (
                TchTensor::new(param.tensor.zeros_like()),
                TchTensor::new(param.tensor.zeros_like()),
            ),
            Some((m, v)) => match (libtorch(m), libtorch(v)) {
                (Ok(m), Ok(v)) => (owned(m), owned(v)),
                (m, v) => {
                    let m = m.map_or_else(|m| m, wrap);
                    let v = v.map_or_else(|v| v, wrap);
                    return Err(Box::new((
                        wrap(param),
                        wrap(grad),
                        restore(time, Some((m, v))),
                    )));
                }
            },
        };
        let mut param = owned(param);
        let mut grad = owned(grad);
        let time = time + 1;
        // The kernel reads the step count from a float tensor (what `torch.optim.Adam` keeps).
        let mut count = tch::Tensor::from(time as f32);
        let mut error = [0 as c_char; 256];
        // SAFETY: every pointer is a live `torch::Tensor*` that tch owns for the whole call
        // (param, grad and both moments uniquely owned here, so updating them in place changes
        // no other holder's data); the kernel checks shapes, dtypes and devices and reports a
        // mismatch as an exception, which the shim turns into the returned message.
        #[allow(unsafe_code)]
        let failed = unsafe {
            lexmesh_fused_adam(
                param.tensor.as_mut_ptr().cast(),
                grad.tensor.as_mut_ptr().cast(),
                m.tensor.as_mut_ptr().cast(),
                v.tensor.as_mut_ptr().cast(),
                count.as_mut_ptr().cast(),
                lr,
                f64::from(BETA_1),
                f64::from(BETA_2),
                f64::from(adam.weight_decay),
                f64::from(adam.epsilon),
                error.as_mut_ptr(),
                error.len(),
            )
        };
        if failed != 0 {
            // SAFETY: the shim wrote a NUL-terminated message within the buffer.
            #[allow(unsafe_code)]
            let message = unsafe { CStr::from_ptr(error.as_ptr()) };
            // The checks above admit only tensors the kernel takes: this is a bug, not an input.
            panic!(
                "libtorch's fused Adam step failed: {}",
                message.to_string_lossy()
            );
        }
        drop(grad);
        let state = AdamState::new(AdaptiveMomentumState::new(time, wrap(m), wrap(v)));
        Ok((wrap(param), Some(state)))
    }

    fn restore<const D: usize>(
        time: usize,
        moments: Option<(Tensor<D>, Tensor<D>)>,
    ) -> Option<AdamState<D>> {
        moments.map(|(m, v)| AdamState::new(AdaptiveMomentumState::new(time, m, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Tensor, TensorData};

    fn device() -> Device {
        crate::device::select_device(crate::config::DeviceChoice::Cpu)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// Five steps of the fused Adam and of burn's Adam from the same parameter and gradients,
    /// with weight decay: the same parameters and moments (to float rounding), and the step
    /// count carried. Without the fused path both sides would be burn's and the test would only
    /// check that this optimizer is Adam; `fused_step_updates_in_place` checks the path is taken.
    #[cfg(feature = "tch")]
    #[test]
    fn fused_step_matches_burns_adam() {
        let device = device();
        let fused = LexAdam::new(1e-8, 0.01);
        let reference = fused.unfused();
        let start = || Tensor::<2>::from_data(TensorData::new(values(64, 7), [8, 8]), &device);
        let (mut a, mut b) = (start(), start());
        let (mut sa, mut sb) = (None, None);
        for k in 0..5 {
            let g = || Tensor::<2>::from_data(TensorData::new(values(64, k), [8, 8]), &device);
            (a, sa) = fused.step(1e-2, a, g(), sa);
            (b, sb) = reference.step(1e-2, b, g(), sb);
        }
        let (sa, sb) = (sa.expect("state"), sb.expect("state"));
        assert_eq!(sa.momentum.time, 5);
        assert_eq!(sb.momentum.time, 5);
        let tol = burn::tensor::Tolerance::<f32>::absolute(1e-5);
        a.into_data().assert_approx_eq(&b.clone().into_data(), tol);
        sa.momentum
            .moment_1
            .into_data()
            .assert_approx_eq(&sb.momentum.moment_1.into_data(), tol);
        sa.momentum
            .moment_2
            .into_data()
            .assert_approx_eq(&sb.momentum.moment_2.into_data(), tol);
        // Not a step that left the parameter where it was.
        let moved: f32 = (start() - b).abs().max().into_scalar();
        assert!(moved > 1e-3, "the parameters moved by {moved}");
    }

    /// A parameter whose storage another holder shares (a checkpoint being written, the best
    /// epoch's weights) keeps its values: the step writes into a copy.
    #[test]
    fn a_shared_parameter_is_not_changed_under_its_other_holder() {
        let device = device();
        let adam = LexAdam::new(1e-8, 0.0);
        let param = Tensor::<1>::from_data(TensorData::new(values(16, 3), [16]), &device);
        let kept = param.clone();
        let before = kept.clone().into_data();
        let grad = Tensor::<1>::from_data(TensorData::new(values(16, 9), [16]), &device);
        let (updated, _) = adam.step(1e-1, param, grad, None);
        assert_eq!(kept.into_data(), before);
        assert_ne!(updated.into_data(), before);
    }

    /// The fused path really runs on libtorch: the updated parameter is the same storage as the
    /// one given (updated in place), which burn's Adam never returns.
    #[cfg(feature = "tch")]
    #[allow(deprecated)]
    #[test]
    fn fused_step_updates_in_place() {
        use burn::backend::{BackendTensor, DispatchTensorKind};
        let device = device();
        let adam = LexAdam::new(1e-8, 0.0);
        let data_ptr = |t: &Tensor<1>| match t.clone().into_dispatch().kind {
            DispatchTensorKind::LibTorch(BackendTensor::Float(t)) => t.tensor.data_ptr() as usize,
            _ => panic!("not a libtorch tensor"),
        };
        let param = Tensor::<1>::from_data(TensorData::new(values(16, 3), [16]), &device);
        let before = data_ptr(&param);
        let grad = Tensor::<1>::from_data(TensorData::new(values(16, 9), [16]), &device);
        let (updated, state) = adam.step(1e-1, param, grad, None);
        assert_eq!(data_ptr(&updated), before);
        assert_eq!(state.expect("state").momentum.time, 1);
    }
}
