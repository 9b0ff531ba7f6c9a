//! VAE parity with diffusers on the fixtures of `tools/fixtures/gen_vae.py`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use prompt_diffusion_core::Error;
use prompt_diffusion_core::testing::{TestBackend, assert_close, load_default, max_abs_diff};
use prompt_diffusion_core::weights::{LoadOptions, Pretrained, TensorSource};
use prompt_diffusion_vae::{AutoencoderKL, AutoencoderKLConfig};

type B = TestBackend;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

fn io(name: &str) -> TensorSource {
    TensorSource::open(fixtures().join("vae").join(name)).unwrap()
}

fn t<const D: usize>(io: &TensorSource, key: &str) -> Tensor<B, D> {
    io.tensor(key, &Default::default(), None).unwrap()
}

fn load(dir: &Path) -> AutoencoderKL<B> {
    AutoencoderKL::from_pretrained(dir, &LoadOptions::default(), &Default::default()).unwrap()
}

fn check(vae: &AutoencoderKL<B>, io: &TensorSource, what: &str) {
    let posterior = vae.encode(t(io, "image"));
    assert_close(
        &format!("{what} mean"),
        posterior.mean.clone(),
        t(io, "mean"),
        1e-4,
    );
    assert_close(
        &format!("{what} logvar"),
        posterior.logvar.clone(),
        t(io, "logvar"),
        1e-4,
    );
    assert_close(
        &format!("{what} sample"),
        posterior.sample(t(io, "noise")),
        t(io, "sample"),
        1e-4,
    );
    assert_close(
        &format!("{what} decode"),
        vae.decode(t(io, "latent")),
        t(io, "decoded"),
        1e-4,
    );
}

#[test]
fn tiny_vae_matches_diffusers() {
    let vae = load(&fixtures().join("tiny-sd/vae"));
    assert_eq!(vae.scaling_factor(), 0.18215);
    check(&vae, &io("tiny.safetensors"), "tiny");
}

#[test]
fn legacy_attention_names_load_to_the_same_model() {
    check(
        &load(&fixtures().join("vae/legacy")),
        &io("tiny.safetensors"),
        "legacy",
    );
}

#[test]
fn vae_without_attention_or_quant_convs_matches_diffusers() {
    let vae = load(&fixtures().join("vae/small"));
    assert!(vae.quant_conv.is_none() && vae.post_quant_conv.is_none());
    check(&vae, &io("small.safetensors"), "small");
}

#[test]
fn single_file_checkpoints_give_identical_outputs() {
    let io = io("tiny.safetensors");
    let reference = load(&fixtures().join("tiny-sd/vae")).decode(t(&io, "latent"));
    let config =
        AutoencoderKLConfig::from_file(fixtures().join("tiny-sd/vae/config.json")).unwrap();
    for file in ["tiny-sd.safetensors", "tiny-sd.ckpt"] {
        let source = TensorSource::open(fixtures().join(file))
            .unwrap()
            .strip_prefix("first_stage_model.");
        let vae = load_default::<AutoencoderKL<B>>(&config, &source).unwrap();
        assert_eq!(
            max_abs_diff(vae.decode(t(&io, "latent")), reference.clone()),
            0.0,
            "{file}"
        );
        check(&vae, &io, file);
    }
}

#[test]
fn mismatched_weights_and_configs_are_named() {
    let dir = fixtures().join("tiny-sd/vae");
    let config = AutoencoderKLConfig::from_file(dir.join("config.json")).unwrap();
    let source = TensorSource::open(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut missing = source.clone();
    missing.remove("decoder.mid_block.attentions.0.to_v.bias");
    let err = load_default::<AutoencoderKL<B>>(&config, &missing).unwrap_err();
    assert!(matches!(err, Error::Weights(_)));
    assert!(
        err.to_string()
            .contains("decoder.mid_block.attentions.0.to_v.bias"),
        "{err}"
    );

    let mut wrong = config.clone();
    wrong.latent_channels = 8;
    let err = load_default::<AutoencoderKL<B>>(&wrong, &source).unwrap_err();
    assert!(err.to_string().contains("encoder.conv_out.weight"), "{err}");

    let mut bad = config;
    bad.up_block_types.pop();
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("up_block_types")
    );
}

/// Tiling and slicing against diffusers' `enable_tiling()` / `enable_slicing()`, on the
/// fixtures of `tools/fixtures/gen_vae_tiling.py`.
mod tiling {
    use super::*;
    use prompt_diffusion_core::testing::folder_source;
    use prompt_diffusion_vae::{VaeOptions, VaeTiling};

    /// The tiny SD VAE with `sample_size` 32: tiles of 32 pixels / 4 latents.
    fn tiny32() -> AutoencoderKL<B> {
        let (mut config, source) =
            folder_source::<AutoencoderKLConfig>(&fixtures().join("tiny-sd/vae"));
        config.sample_size = 32;
        load_default(&config, &source).unwrap()
    }

    fn check_tiled(vae: &AutoencoderKL<B>, io: &TensorSource, prefix: &str) {
        let decoded = vae.decode(t(io, &format!("{prefix}.latent")));
        let expected: Tensor<B, 4> = t(io, &format!("{prefix}.decoded"));
        assert_close(&format!("{prefix} decode"), decoded, expected, 1e-4);
        let posterior = vae.encode(t(io, &format!("{prefix}.image")));
        let (mean, std) = (format!("{prefix}.mean"), format!("{prefix}.std"));
        assert_close(&mean, posterior.mean.clone(), t(io, &mean), 1e-4);
        assert_close(&std, posterior.std(), t(io, &std), 1e-4);
    }

    #[test]
    fn tiled_decode_and_encode_match_diffusers() {
        let mut vae = tiny32();
        vae.enable_tiling().unwrap();
        check_tiled(&vae, &io("tiling.safetensors"), "tiled");
    }

    #[test]
    fn sliced_tiled_batches_match_diffusers() {
        let mut vae = tiny32();
        vae.enable_tiling().unwrap();
        vae.enable_slicing();
        assert_eq!(
            vae.options(),
            VaeOptions::default()
                .with_tiling(VaeTiling::default())
                .with_slicing(true)
        );
        check_tiled(&vae, &io("tiling.safetensors"), "sliced");
    }

    #[test]
    fn uneven_tile_grids_match_diffusers() {
        let mut vae = load(&fixtures().join("vae/small"));
        let tiling = VaeTiling::default()
            .with_tile_sample_size(12)
            .with_overlap_factor(0.4);
        vae.enable_tiling_with(tiling).unwrap();
        let io = io("tiling_small.safetensors");
        // diffusers' grid: 9×7 latents → 22×18 pixels, 21×17 pixels → 11×9 latents.
        assert_eq!(vae.decode(t(&io, "tiled.latent")).dims(), [1, 3, 22, 18]);
        check_tiled(&vae, &io, "tiled");
    }

    #[test]
    fn sliced_decode_and_encode_equal_whole_batches() {
        let io = io("tiling.safetensors");
        let (latent, image): (Tensor<B, 4>, Tensor<B, 4>) =
            (t(&io, "sliced.latent"), t(&io, "sliced.image"));
        for tiling in [false, true] {
            let mut vae = tiny32();
            if tiling {
                vae.enable_tiling().unwrap();
            }
            let whole = (vae.decode(latent.clone()), vae.encode(image.clone()).mean);
            vae.enable_slicing();
            let sliced = (vae.decode(latent.clone()), vae.encode(image.clone()).mean);
            assert_close(&format!("decode, tiling {tiling}"), sliced.0, whole.0, 1e-5);
            assert_close(&format!("encode, tiling {tiling}"), sliced.1, whole.1, 1e-5);
        }
    }

    #[test]
    fn tiling_is_off_at_or_below_the_tile_size() {
        let plain = tiny32();
        let mut tiled = tiny32();
        tiled.enable_tiling().unwrap();
        let io = io("tiling.safetensors");
        let latent: Tensor<B, 4> = t(&io, "tiled.latent");
        let image: Tensor<B, 4> = t(&io, "tiled.image");
        for [h, w] in [[4, 4], [4, 3], [2, 4]] {
            let z = latent.clone().slice([0..1, 0..4, 0..h, 0..w]);
            let diff = max_abs_diff(tiled.decode(z.clone()), plain.decode(z));
            assert_eq!(diff, 0.0, "decode of a {h}×{w} latent");
        }
        for [h, w] in [[32, 32], [32, 16]] {
            let x = image.clone().slice([0..1, 0..3, 0..h, 0..w]);
            let diff = max_abs_diff(tiled.encode(x.clone()).mean, plain.encode(x).mean);
            assert_eq!(diff, 0.0, "encode of a {h}×{w} image");
        }
        // One latent row more than a tile is tiled: the tiles' seams differ from one pass.
        let z = latent.slice([0..1, 0..4, 0..5, 0..4]);
        assert!(max_abs_diff(tiled.decode(z.clone()), plain.decode(z)) > 1e-3);
    }

    #[test]
    fn tiled_images_reach_the_image_boundary() {
        let mut vae = tiny32();
        vae.enable_tiling().unwrap();
        let latents: Tensor<B, 4> = t(&io("tiling.safetensors"), "tiled.latent");
        let images = vae.decode_to_images(latents.clone()).unwrap();
        assert_eq!((images[0].width(), images[0].height()), (48, 56));
        let pixels = vae.decode(vae.unscale_latents(latents));
        let expected = vae.image_processor().postprocess(pixels).unwrap();
        assert_eq!(images, expected);
    }

    #[test]
    fn unusable_tilings_are_refused_and_change_nothing() {
        let mut vae = tiny32();
        let tiling = VaeTiling::default().with_tile_sample_size(4);
        let err = vae.enable_tiling_with(tiling).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        assert!(err.to_string().contains("tile_sample_size 4"), "{err}");
        assert_eq!(vae.options(), VaeOptions::default());
        vae.enable_tiling().unwrap();
        vae.disable_tiling();
        assert_eq!(vae.options(), VaeOptions::default());
    }
}
