//! Merging and removing updates on a small module.

use std::path::Path;

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::TensorData;

use super::*;
use crate::testing::TestBackend as B;

#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    proj: Linear<B>,
    convs: Vec<Conv2d<B>>,
}

/// A model with fixed weights (lazily initialised random ones would differ between clones).
fn tiny() -> Tiny<B> {
    let device = Default::default();
    let mut model = Tiny {
        proj: LinearConfig::new(3, 5).with_bias(false).init(&device),
        convs: vec![
            Conv2dConfig::new([3, 4], [3, 3])
                .with_bias(false)
                .init(&device),
        ],
    };
    let fixed = |n: usize, seed: f32, shape: Vec<usize>| TensorData::new(values(n, seed), shape);
    model.proj.weight = model
        .proj
        .weight
        .map(|_| Tensor::from_data(fixed(15, 7.0, vec![3, 5]), &device));
    model.convs[0].weight = model.convs[0]
        .weight
        .clone()
        .map(|_| Tensor::from_data(fixed(108, 9.0, vec![4, 3, 3, 3]), &device));
    model
}

fn values(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
}

fn layer(key: &str, down: &[usize], up: &[usize], factor: f32) -> LoraLayer {
    let numel = |s: &[usize]| s.iter().product();
    LoraLayer {
        key: key.into(),
        down: TensorData::new(values(numel(down), 1.0), down.to_vec()),
        up: TensorData::new(values(numel(up), 2.0), up.to_vec()),
        factor,
    }
}

/// The updates of `linear` to `proj` and `conv` to `convs.0` (read from `test.safetensors`) of
/// the model with `targets`, on `device`.
fn updates<D: Backend>(
    targets: &LoraTargets,
    linear: &LoraLayer,
    conv: &LoraLayer,
    device: &D::Device,
) -> Vec<LoraUpdate<D>> {
    let file = Path::new("test.safetensors");
    [(linear, "proj"), (conv, "convs.0")]
        .into_iter()
        .map(|(layer, module)| {
            LoraUpdate::new(layer, module, targets.get(module).unwrap(), file, device).unwrap()
        })
        .collect()
}

fn data<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

/// `up · down` as `[out, rest]`, on the host.
fn product(l: &LoraLayer) -> Vec<Vec<f32>> {
    let (up, down) = (
        l.up.to_vec::<f32>().unwrap(),
        l.down.to_vec::<f32>().unwrap(),
    );
    let (out, rank) = (l.up.shape[0], l.rank());
    let rest = down.len() / rank;
    (0..out)
        .map(|o| {
            (0..rest)
                .map(|i| {
                    (0..rank)
                        .map(|r| up[o * rank + r] * down[r * rest + i])
                        .sum()
                })
                .collect()
        })
        .collect()
}

#[test]
fn targets_list_linear_and_conv_weights_with_kohya_names() {
    let mut targets = LoraTargets::of::<B, _>(&tiny());
    let paths: Vec<&str> = targets.paths().collect();
    assert_eq!(paths, ["convs.0", "proj"]);
    assert_eq!(targets.get("proj").unwrap().shape, [3, 5]);
    assert_eq!(targets.get("convs.0").unwrap().kind, LoraLayerKind::Conv2d);
    targets.add_kohya_aliases("lora_x_");
    assert_eq!(targets.resolve("lora_x_convs_0"), Some("convs.0"));
    assert_eq!(targets.resolve("proj"), Some("proj"));
    assert_eq!(targets.resolve("lora_x_conv"), None);
}

#[test]
fn merged_weights_follow_the_formula_and_come_back_exactly() {
    let model = tiny();
    let device = Default::default();
    let targets = LoraTargets::of::<B, _>(&model);
    let linear = layer("proj", &[2, 3], &[5, 2], 0.5);
    let conv = layer("conv", &[2, 3, 3, 3], &[4, 2, 1, 1], 1.5);
    let updates = updates::<B>(&targets, &linear, &conv, &device);
    let (w, c) = (
        data(model.proj.weight.val()),
        data(model.convs[0].weight.val()),
    );
    let mut merged = MergedWeights::default();
    let model = merged.apply(model, &[(0.7, &updates)]);
    assert_eq!(merged.len(), 2);

    // Linear: burn's weight is [in, out], the transpose of up · down.
    let delta = product(&linear);
    let got = data(model.proj.weight.val());
    for i in 0..3 {
        for o in 0..5 {
            let expected = w[i * 5 + o] + 0.7 * 0.5 * delta[o][i];
            assert!((got[i * 5 + o] - expected).abs() < 1e-6);
        }
    }
    let delta = product(&conv);
    let got = data(model.convs[0].weight.val());
    for o in 0..4 {
        for i in 0..27 {
            let expected = c[o * 27 + i] + 0.7 * 1.5 * delta[o][i];
            assert!((got[o * 27 + i] - expected).abs() < 1e-6);
        }
    }

    // Another scale is merged from the originals; no update gives them back bit for bit.
    let model = merged.apply(model, &[(0.0, &updates)]);
    assert_eq!(data(model.proj.weight.val()), w);
    assert_eq!(data(model.convs[0].weight.val()), c);
    assert!(merged.is_empty());
    let model = merged.apply(model, &[(1.0, &updates[..1])]);
    assert_ne!(data(model.proj.weight.val()), w);
    let model = merged.apply(model, &[]);
    assert_eq!(data(model.proj.weight.val()), w);
}

#[test]
fn factors_that_do_not_fit_the_weight_are_shape_errors() {
    let model = tiny();
    let device = Default::default();
    let targets = LoraTargets::of::<B, _>(&model);
    let file = Path::new("test.safetensors");
    for (layer, module) in [
        (layer("a", &[2, 4], &[5, 2], 1.0), "proj"),
        (layer("b", &[2, 3], &[6, 2], 1.0), "proj"),
        (layer("c", &[2, 3, 1, 1], &[4, 2, 1, 1], 1.0), "convs.0"),
    ] {
        let err = LoraUpdate::<B>::new(&layer, module, targets.get(module).unwrap(), file, &device)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("test.safetensors") && text.contains(&layer.key),
            "{text}"
        );
    }
    // A 1×1 convolution's LoRA fits a linear layer.
    let one_by_one = layer("d", &[2, 3, 1, 1], &[5, 2, 1, 1], 1.0);
    assert!(
        LoraUpdate::<B>::new(
            &one_by_one,
            "proj",
            targets.get("proj").unwrap(),
            file,
            &device
        )
        .is_ok()
    );
}

/// On burn-wgpu (lavapipe on a CPU) the loaded convolution weights are channels-last and the
/// parameters may be half precision: merging gives the f32 reference's values (rounded to the
/// parameter's dtype), the layers compute with them, and unloading gives the originals back.
#[cfg(feature = "wgpu")]
mod wgpu {
    use burn::module::Module;
    use burn::tensor::{DType, TensorData};
    use burn_wgpu::{Wgpu, WgpuDevice};

    use super::*;

    fn read<D: Backend, const N: usize>(t: Tensor<D, N>) -> Vec<f32> {
        t.into_data().convert_dtype(DType::F32).to_vec().unwrap()
    }

    /// A copy of `model` on `device`, parameters cast to `dtype`, convolutions channels-last.
    fn on<D: Backend>(model: &Tiny<B>, device: &D::Device, dtype: DType) -> Tiny<D> {
        let to = |t: TensorData| Tensor::<D, 2>::from_data(t.convert_dtype(dtype), (device, dtype));
        let conv =
            |t: TensorData| Tensor::<D, 4>::from_data(t.convert_dtype(dtype), (device, dtype));
        let mut moved = Tiny {
            proj: LinearConfig::new(3, 5).with_bias(false).init(device),
            convs: vec![
                Conv2dConfig::new([3, 4], [3, 3])
                    .with_bias(false)
                    .init(device),
            ],
        };
        moved.proj.weight = moved
            .proj
            .weight
            .map(|_| to(model.proj.weight.val().into_data()));
        moved.convs[0].weight = moved.convs[0]
            .weight
            .clone()
            .map(|_| conv(model.convs[0].weight.val().into_data()));
        crate::nn::channels_last_conv_weights(moved.no_grad())
    }

    #[test]
    fn merging_on_wgpu_matches_ndarray_in_every_dtype() {
        let device = WgpuDevice::default();
        let model = tiny();
        let linear = layer("proj", &[2, 3], &[5, 2], 0.5);
        let conv = layer("conv", &[2, 3, 3, 3], &[4, 2, 1, 1], 1.5);
        let targets = LoraTargets::of::<B, _>(&model);
        let reference_updates = updates::<B>(&targets, &linear, &conv, &Default::default());
        let reference = MergedWeights::default().apply(model.clone(), &[(0.7, &reference_updates)]);
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(values(3 * 36, 3.0), [1, 3, 6, 6]),
            &Default::default(),
        );
        let expected = read(reference.convs[0].forward(x.clone()));

        for dtype in [DType::F32, DType::F16] {
            if !<Wgpu as Backend>::supports_dtype(&device, dtype) {
                eprintln!("wgpu: {dtype:?} unsupported here, skipped");
                continue;
            }
            let original = on::<Wgpu>(&model, &device, dtype);
            let before = (
                read(original.proj.weight.val()),
                read(original.convs[0].weight.val()),
            );
            let updates = updates::<Wgpu>(&targets, &linear, &conv, &device);
            let mut merged = MergedWeights::default();
            let lora = merged.apply(original, &[(0.7, &updates)]);
            assert_eq!(lora.convs[0].weight.val().dtype(), dtype);
            let tolerance = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
            let close = |a: &[f32], b: &[f32], what: &str| {
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(worst < tolerance, "{dtype:?} {what}: {worst}");
            };
            close(
                &read(lora.proj.weight.val()),
                &read(reference.proj.weight.val()),
                "linear",
            );
            close(
                &read(lora.convs[0].weight.val()),
                &read(reference.convs[0].weight.val()),
                "conv",
            );
            let xd = Tensor::<Wgpu, 4>::from_data(
                x.clone().into_data().convert_dtype(dtype),
                (&device, dtype),
            );
            let out = lora.convs[0].forward(xd).cast(DType::F32);
            close(&read(out), &expected, "conv output");
            let lora = merged.apply(lora, &[]);
            assert_eq!(
                (
                    read(lora.proj.weight.val()),
                    read(lora.convs[0].weight.val())
                ),
                before,
                "{dtype:?}: unloading"
            );
        }
    }
}
