//! Half-precision convolutions through `nn::conv2d` on burn-wgpu: summed in f32, as diffusers'
//! (cuDNN's) are, against the f32 convolution of the same f16 values on ndarray.

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use burn_wgpu::Wgpu;
use prompt_diffusion_core::nn::conv2d;

use crate::{Reference, device, max_abs_diff, values};

/// A 3×3 convolution with the given f16-exact weights and bias, padding and stride.
fn conv<B: Backend>(
    [c_in, c_out]: [usize; 2],
    (weight, bias): (&[f32], &[f32]),
    (padding, stride): (PaddingConfig2d, usize),
    dtype: DType,
    device: &B::Device,
) -> Conv2d<B> {
    let mut conv = Conv2dConfig::new([c_in, c_out], [3, 3])
        .with_padding(padding)
        .with_stride([stride; 2])
        .init::<B>(device);
    let tensor = |data: &[f32], shape: Vec<usize>| {
        Tensor::<B, 4>::from_data(TensorData::new(data.to_vec(), shape), (device, dtype))
    };
    conv.weight = Param::from_tensor(tensor(weight, vec![c_out, c_in, 3, 3]));
    conv.bias = Some(Param::from_tensor(
        tensor(bias, vec![1, 1, 1, c_out]).reshape([c_out]),
    ));
    conv
}

#[test]
fn f16_convolutions_sum_in_f32() {
    let device = device();
    // 2 880 products per output, as at SD1.5's first level: f16 sums would be off by ~0.1–1.
    // Symmetric padding, and the one-sided padding of the VAE encoder's stride-2 downsampler.
    let ([c_in, c_out], [h, w]) = ([320, 8], [12, 12]);
    let weight = values(c_out * c_in * 9, 11, 0.05, DType::F16);
    let bias = values(c_out, 12, 0.5, DType::F16);
    let x = values(c_in * h * w, 13, 2.0, DType::F16);
    let cases = [
        (PaddingConfig2d::Explicit(1, 1, 1, 1), 1),
        (PaddingConfig2d::Explicit(0, 0, 1, 1), 2),
    ];
    for (padding, stride) in cases {
        let setting = (padding.clone(), stride);
        let reference = {
            let dev = Default::default();
            let conv = conv::<Reference>(
                [c_in, c_out],
                (&weight, &bias),
                setting.clone(),
                DType::F32,
                &dev,
            );
            let x = TensorData::new(x.clone(), [1, c_in, h, w]);
            let x = Tensor::<Reference, 4>::from_data(x, &dev);
            conv.forward(x).into_data().to_vec::<f32>().unwrap()
        };
        let conv = conv::<Wgpu>(
            [c_in, c_out],
            (&weight, &bias),
            setting,
            DType::F16,
            &device,
        );
        let input = TensorData::new(x.clone(), [1, c_in, h, w]);
        let input = Tensor::<Wgpu, 4>::from_data(input, (&device, DType::F16));
        let ours = conv2d(&conv, input.clone()).cast(DType::F32);
        assert_eq!(ours.dims()[2] * ours.dims()[3] * c_out, reference.len());
        let ours: Vec<f32> = ours.into_data().to_vec().unwrap();
        let largest = reference.iter().fold(0f32, |m, y| m.max(y.abs()));
        let diff = max_abs_diff(&ours, &reference);
        // f32 sums rounded once to f16: within half an f16 ulp of the largest output (2⁻¹¹
        // relative), with room for one more.
        let bound = largest * 2f32.powi(-10);
        eprintln!("f16 conv {padding:?} stride {stride}, largest |y| {largest}: {diff}");
        if stride == 1 {
            // burn's op for comparison (with one-sided padding it pads an f16 input with a
            // tensor of the device's default f32 and fails).
            let burns: Vec<f32> = conv
                .forward(input)
                .cast(DType::F32)
                .into_data()
                .to_vec()
                .unwrap();
            eprintln!("burn's op: {}", max_abs_diff(&burns, &reference));
        }
        assert!(
            diff <= bound,
            "{padding:?}: f16 conv off by {diff} (bound {bound})"
        );
    }
}
