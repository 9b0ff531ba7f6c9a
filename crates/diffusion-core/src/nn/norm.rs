//! GroupNorm and LayerNorm whose statistics are computed in f32 whatever the input dtype.
//!
//! burn 0.21's own norms compute mean and variance in the input dtype; with f16 activations
//! the sums overflow (a 64×64×10 group sums 40,960 values). These keep PyTorch's parameter names
//! (`weight`, `bias`) so reference checkpoints load without renaming.
//!
//! On burn-wgpu and burn-cuda (crate features `wgpu` / `cuda`) both run as one fused CubeCL
//! kernel — statistics, affine transform and, for [`GroupNorm::forward_activated`] with SiLU,
//! the activation — instead of four or more launches. On the CPU backends in f32 a host kernel
//! does the same in one parallel pass per segment (`host/norm.rs`). Other backends and dtypes
//! compute the same function with burn's tensor operations. `tests/fused_kernels_wgpu.rs`
//! compares the fused kernel with them, the tests below the host kernel.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::DType;

use super::Activation;
use super::{fused, host};
use fused::NormLayout;

/// The fused GPU kernel or the host kernel, when either takes `x` (see the module docs).
fn try_kernels<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    (weight, bias): (&Param<Tensor<B, 1>>, &Param<Tensor<B, 1>>),
    layout: NormLayout,
    eps: f64,
    silu: bool,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let (weight, bias) = (weight.val(), bias.val());
    match fused::try_norm(x, weight.clone(), bias.clone(), layout, eps, silu) {
        Ok(out) => Ok(out),
        Err(x) => host::try_norm(x, [weight, bias], layout, (eps, silu)),
    }
}

/// Configuration of a [`GroupNorm`] (`torch.nn.GroupNorm`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupNormConfig {
    /// Number of groups the channels are split into.
    pub num_groups: usize,
    /// Number of channels (dimension 1 of the input).
    pub num_channels: usize,
    /// Added to the variance (PyTorch default 1e-5).
    pub eps: f64,
}

impl GroupNormConfig {
    /// A config with PyTorch's default epsilon.
    pub fn new(num_groups: usize, num_channels: usize) -> Self {
        Self {
            num_groups,
            num_channels,
            eps: 1e-5,
        }
    }

    crate::setters! {
        /// Sets the epsilon.
        with_eps(eps: f64);
    }

    /// Creates the layer with unit weight and zero bias.
    pub fn init<B: Backend>(&self, device: &B::Device) -> GroupNorm<B> {
        GroupNorm {
            weight: Param::from_tensor(Tensor::ones([self.num_channels], device)),
            bias: Param::from_tensor(Tensor::zeros([self.num_channels], device)),
            num_groups: self.num_groups,
            eps: self.eps,
        }
    }
}

/// Group normalisation over `[batch, channels, ...]` with an affine transform.
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// Per-channel scale, `[channels]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Per-channel shift, `[channels]`.
    pub bias: Param<Tensor<B, 1>>,
    num_groups: usize,
    eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    /// Normalises each group of channels to zero mean and unit variance, then applies the affine
    /// transform. The result has the input's dtype.
    ///
    /// # Shapes
    /// `[batch, channels, *spatial]` → same.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.try_fused(x, false) {
            Ok(out) => out,
            Err(x) => self.reference(x),
        }
    }

    /// `activation(self.forward(x))`, as ResNet blocks and output heads use it; with SiLU this
    /// is a single fused kernel on the backends that have one.
    ///
    /// # Shapes
    /// `[batch, channels, *spatial]` → same.
    pub fn forward_activated<const D: usize>(
        &self,
        x: Tensor<B, D>,
        activation: Activation,
    ) -> Tensor<B, D> {
        let x = match activation {
            Activation::Silu => match self.try_fused(x, true) {
                Ok(out) => return out,
                Err(x) => x,
            },
            _ => x,
        };
        activation.forward(self.forward(x))
    }

    /// The fused kernel, when the backend has it and the channels divide into the groups.
    fn try_fused<const D: usize>(
        &self,
        x: Tensor<B, D>,
        silu: bool,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let shape = x.dims();
        let (batch, channels) = (shape[0], shape[1]);
        if D < 2 || self.num_groups == 0 || channels % self.num_groups != 0 || batch == 0 {
            return Err(x);
        }
        let layout = NormLayout {
            segments: batch * self.num_groups,
            inner: shape[2..].iter().product(),
            channels,
        };
        try_kernels(x, (&self.weight, &self.bias), layout, self.eps, silu)
    }

    /// The normalisation with burn's tensor operations, statistics in f32.
    fn reference<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let shape = x.dims();
        let (batch, channels) = (shape[0], shape[1]);
        let x = to_f32(x).reshape([batch as i64, self.num_groups as i64, -1]);
        let mean = x.clone().mean_dim(2);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(2);
        let normed = centered / (var + self.eps).sqrt();
        let mut affine_shape = [1usize; D];
        affine_shape[1] = channels;
        let weight = to_f32(self.weight.val()).reshape(affine_shape);
        let bias = to_f32(self.bias.val()).reshape(affine_shape);
        let out = normed.reshape(shape) * weight + bias;
        out.cast(dtype)
    }
}

/// Configuration of a [`LayerNorm`] (`torch.nn.LayerNorm` over the last dimension).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormConfig {
    /// Size of the normalised (last) dimension.
    pub dim: usize,
    /// Added to the variance (PyTorch default 1e-5).
    pub eps: f64,
}

impl LayerNormConfig {
    /// A config with PyTorch's default epsilon.
    pub fn new(dim: usize) -> Self {
        Self { dim, eps: 1e-5 }
    }

    crate::setters! {
        /// Sets the epsilon.
        with_eps(eps: f64);
    }

    /// Creates the layer with unit weight and zero bias.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNorm {
            weight: Param::from_tensor(Tensor::ones([self.dim], device)),
            bias: Param::from_tensor(Tensor::zeros([self.dim], device)),
            eps: self.eps,
        }
    }
}

/// Layer normalisation over the last dimension with an affine transform.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale, `[dim]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift, `[dim]`.
    pub bias: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Normalises the last dimension. The result has the input's dtype.
    ///
    /// # Shapes
    /// `[..., dim]` → same.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dim = self.weight.dims()[0];
        let len = x.shape().num_elements();
        if dim > 0 && x.dims()[D - 1] == dim {
            let layout = NormLayout {
                segments: len / dim,
                inner: 1,
                channels: dim,
            };
            match try_kernels(x, (&self.weight, &self.bias), layout, self.eps, false) {
                Ok(out) => out,
                Err(x) => self.reference(x),
            }
        } else {
            self.reference(x)
        }
    }

    /// The normalisation with burn's tensor operations, statistics in f32.
    fn reference<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x = to_f32(x);
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(D - 1);
        let normed = centered / (var + self.eps).sqrt();
        let mut affine_shape = [1usize; D];
        affine_shape[D - 1] = self.weight.dims()[0];
        let out = normed * to_f32(self.weight.val()).reshape(affine_shape)
            + to_f32(self.bias.val()).reshape(affine_shape);
        out.cast(dtype)
    }
}

fn to_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestBackend as B;

    #[test]
    fn group_norm_matches_definition() {
        let device = Default::default();
        // 1 batch, 4 channels, 2 groups, 3 values each.
        let x = Tensor::<B, 3>::from_floats(
            [[
                [1.0, 2.0, 3.0],
                [4.0, 5.0, 6.0],
                [0.0, 0.0, 3.0],
                [3.0, 6.0, 6.0],
            ]],
            &device,
        );
        let gn = GroupNormConfig::new(2, 4).with_eps(0.0).init::<B>(&device);
        let y: Vec<f32> = gn.forward(x).into_data().to_vec().unwrap();
        // Group 0 = 1..6: mean 3.5, var 35/12.
        let sd = (35.0f32 / 12.0).sqrt();
        assert!((y[0] - (1.0 - 3.5) / sd).abs() < 1e-6);
        // Group 1 = 0,0,3,3,6,6: mean 3, var 6.
        assert!((y[11] - 3.0 / 6.0f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn layer_norm_matches_definition() {
        let device = Default::default();
        let x = Tensor::<B, 2>::from_floats([[1.0, 2.0, 3.0, 6.0]], &device);
        let ln = LayerNormConfig::new(4).with_eps(0.0).init::<B>(&device);
        let y: Vec<f32> = ln.forward(x).into_data().to_vec().unwrap();
        let sd = 3.5f32.sqrt();
        assert!((y[3] - 3.0 / sd).abs() < 1e-6);
    }

    /// A deterministic pattern of `n` values around `offset`.
    fn pattern(n: usize, offset: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.61).sin() * 2.0 + offset)
            .collect()
    }

    fn tensor<const D: usize>(shape: [usize; D], offset: f32) -> Tensor<B, D> {
        let data = TensorData::new(pattern(shape.iter().product(), offset), shape);
        Tensor::from_data(data, &Default::default())
    }

    fn max_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// GroupNorm of `[batch, channels, spatial]` values by its definition, in f64.
    fn group_norm_f64(
        x: &[f32],
        [b, c, n]: [usize; 3],
        groups: usize,
        w: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let segment = c / groups * n;
        let mut out = Vec::with_capacity(x.len());
        for (s, values) in x.chunks(segment).enumerate() {
            let values: Vec<f64> = values.iter().map(|v| f64::from(*v)).collect();
            let mean = values.iter().sum::<f64>() / segment as f64;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / segment as f64;
            for (i, v) in values.iter().enumerate() {
                let ch = (s % groups) * (c / groups) + i / n;
                let y = (v - mean) / (var + 1e-5).sqrt() * f64::from(w[ch]) + f64::from(bias[ch]);
                out.push(y as f32);
            }
        }
        assert_eq!(out.len(), b * c * n);
        out
    }

    #[test]
    fn host_kernels_match_the_definition_and_the_tensor_operations() {
        let device = Default::default();
        let mut gn = GroupNormConfig::new(4, 12).init::<B>(&device);
        let (w, bias) = (pattern(12, 1.0), pattern(12, 0.0));
        gn.weight = Param::from_tensor(Tensor::from_floats(w.as_slice(), &device));
        gn.bias = Param::from_tensor(Tensor::from_floats(bias.as_slice(), &device));
        // A permuted (channels-last) input, and a large mean over a small spread.
        for x in [
            tensor([2, 5, 7, 12], 0.0).permute([0, 3, 1, 2]),
            tensor([1, 12, 3, 3], 100.0),
        ] {
            let [b, c, h, wd] = x.dims();
            let values: Vec<f32> = x.clone().into_data().to_vec().unwrap();
            let definition = group_norm_f64(&values, [b, c, h * wd], 4, &w, &bias);
            let definition = Tensor::<B, 1>::from_floats(definition.as_slice(), &device);
            let ours = gn.forward(x.clone());
            let diff = max_diff(ours.clone().flatten(0, 3), definition);
            assert!(diff < 2e-6, "definition: {diff}");
            // The tensor operations' f32 statistics are less exact at a large mean.
            let reference = gn.reference(x.clone());
            assert!(max_diff(ours, reference.clone()) < 1e-4);
            let activated = gn.forward_activated(x, Activation::Silu);
            assert!(max_diff(activated, Activation::Silu.forward(reference)) < 1e-4);
        }
        let mut ln = LayerNormConfig::new(24).init::<B>(&device);
        ln.weight = Param::from_tensor(tensor([24], 1.0));
        ln.bias = Param::from_tensor(tensor([24], -1.0));
        let x = tensor([2, 3, 24], 5.0);
        assert!(max_diff(ln.forward(x.clone()), ln.reference(x)) < 1e-5);
    }
}
