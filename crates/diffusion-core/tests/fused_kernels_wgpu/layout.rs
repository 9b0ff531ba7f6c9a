//! Channels-last convolution weights: same values and results, weight memory reordered.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn_wgpu::Wgpu;
use prompt_diffusion_core::nn::channels_last_conv_weights;

use crate::{PlainWgpu, device, max_abs_diff, values};

/// A convolution next to a linear layer (whose 2-D weight the conversion leaves alone).
#[derive(Module, Debug)]
struct Net<B: Backend> {
    conv: Conv2d<B>,
    linear: Linear<B>,
}

impl<B: Backend> Net<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            conv: Conv2dConfig::new([6, 5], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            linear: LinearConfig::new(5, 4).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.conv.forward(x);
        self.linear.forward(y.swap_dims(1, 3)).swap_dims(1, 3)
    }
}

fn read<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

/// The same outputs and weight values before and after the conversion, on backend `B`.
fn check_same_results<B: Backend>(device: &B::Device) -> Net<B> {
    let net = Net::<B>::new(device);
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(
            values(2 * 6 * 7 * 9, 5, 1.0, burn::tensor::DType::F32),
            [2, 6, 7, 9],
        ),
        device,
    );
    let before = read(net.forward(x.clone()));
    let weight = read(net.conv.weight.val());
    let linear = read(net.linear.weight.val());
    let net = channels_last_conv_weights(net);
    assert_eq!(net.conv.weight.dims(), [5, 6, 3, 3]);
    assert_eq!(read(net.conv.weight.val()), weight);
    assert_eq!(read(net.linear.weight.val()), linear);
    let after = read(net.forward(x));
    let err = max_abs_diff(&after, &before);
    assert!(err <= 1e-5, "{}: max |Δ| {err}", B::name(device));
    net
}

#[test]
fn channels_last_weights_give_the_same_results() {
    let device = device();
    check_same_results::<Wgpu>(&device);
    let net = check_same_results::<PlainWgpu>(&device);
    // The weight's memory is `[out, kh, kw, in]`: the input channel is the contiguous one.
    let weight = net.conv.weight.val().into_primitive().tensor();
    assert_eq!(&weight.meta.strides()[..], &[54, 1, 18, 6]);
}
