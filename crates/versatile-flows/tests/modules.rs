//! Module parity with diffusers/transformers (`fixtures/versatile/io.safetensors`): the flat
//! layers, every flow's UNet forward, dual attention, and the normalised CLIP contexts.

use crate::common::{B, Io, load, versatile};
use burn::prelude::*;
use image::RgbImage;
use prompt_diffusion_core::testing::{assert_close, max_abs_diff};
use prompt_diffusion_unet::{DataDownsample, DataResnet};
use prompt_diffusion_versatile_flows::{Condition, Flow, Modality, UncondImage};

#[test]
fn flat_layers_match_diffusers() {
    let io = Io::open(versatile("io.safetensors"));
    let vd = load(&[Flow::TextVariation]);
    let text_unet = vd.diffuser.text_unet.as_ref().unwrap();
    let DataResnet::Flat(resnet) = &text_unet.down_blocks[2].resnets[0] else {
        panic!("the text UNet has flat resnets")
    };
    assert!(resnet.conv_shortcut.is_some());
    let temb: Tensor<B, 2> = io.t("flat.temb");
    let out = resnet.forward(io.t("flat.resnet.in"), Some(&temb));
    assert_close("ResnetBlockFlat", out, io.t("flat.resnet.out"), 1e-4);
    let out = text_unet.conv_in.forward(io.t("sample_text"));
    assert_close(
        "conv_in LinearMultiDim",
        out,
        io.t("flat.conv_in.out"),
        1e-4,
    );
    let DataDownsample::Flat(down) = &text_unet.down_blocks[0].downsamplers[0] else {
        panic!("the text UNet has flat downsamplers")
    };
    assert_close(
        "downsampler LinearMultiDim",
        down.forward(io.t("flat.resnet.in")),
        io.t("flat.downsample.out"),
        1e-4,
    );
}

#[test]
fn every_flow_matches_diffusers_unets() {
    let io = Io::open(versatile("io.safetensors"));
    let vd = load(&[
        Flow::TextToImage,
        Flow::ImageVariation,
        Flow::ImageToText,
        Flow::TextVariation,
    ]);
    let text = || Condition::new(Modality::Text, io.t("context_text"));
    let image = || Condition::new(Modality::Image, io.t("context_image"));
    let cases = [
        ("text_to_image", Modality::Image, text()),
        ("image_variation", Modality::Image, image()),
        ("image_to_text", Modality::Text, image()),
        ("text_variation", Modality::Text, text()),
    ];
    for (name, output, condition) in cases {
        let sample = match output {
            Modality::Image => io.t("sample_image"),
            Modality::Text => io.t("sample_text"),
        };
        let out = vd
            .diffuser
            .forward(sample, io.t("timestep"), output, &[condition])
            .unwrap();
        assert_close(name, out, io.t(&format!("flow.{name}")), 1e-4);
    }
}

#[test]
fn dual_attention_matches_diffusers_and_reduces_to_single_contexts() {
    let io = Io::open(versatile("io.safetensors"));
    let vd = load(&[Flow::DualGuided, Flow::ImageToText]);
    let forward = |output, text_ratio: f64| {
        let sample = match output {
            Modality::Image => io.t("sample_image"),
            Modality::Text => io.t("sample_text"),
        };
        vd.diffuser
            .forward(
                sample,
                io.t("timestep"),
                output,
                &[
                    Condition::new(Modality::Text, io.t("context_text")).with_ratio(text_ratio),
                    Condition::new(Modality::Image, io.t("context_image"))
                        .with_ratio(1.0 - text_ratio),
                ],
            )
            .unwrap()
    };
    assert_close(
        "dual 0.3",
        forward(Modality::Image, 0.3),
        io.t("flow.dual_0.3"),
        1e-4,
    );
    // Ratio 1 on one context is that context's flow; the mixing also runs on text data.
    assert_close(
        "dual 1.0",
        forward(Modality::Image, 1.0),
        io.t("flow.text_to_image"),
        1e-5,
    );
    assert_close(
        "dual 0.0 text data",
        forward(Modality::Text, 0.0),
        io.t("flow.image_to_text"),
        1e-5,
    );
    assert!(max_abs_diff(forward(Modality::Image, 0.5), io.t("flow.text_to_image")) > 1e-3);
}

#[test]
fn clip_contexts_are_normalised_as_diffusers() {
    let io = Io::open(versatile("io.safetensors"));
    let vd = load(&[Flow::DualGuided]);
    let text = vd.text_encoder().unwrap();
    let ids = io.ids("encode.text.ids");
    assert_eq!(
        text.tokenizer
            .encode_batch(&["a red car in the sun", ""])
            .unwrap(),
        ids
    );
    let out = text.encode(&["a red car in the sun", ""]).unwrap();
    assert_close("text context", out, io.t("encode.text"), 1e-4);

    let image = vd.image_encoder().unwrap();
    assert_eq!(
        (image.image_size(), image.num_tokens(), image.width()),
        (32, 257, 16)
    );
    let out = image.encode_pixels(io.t("encode.image.pixels")).unwrap();
    assert_close("image context (pixels)", out, io.t("encode.image"), 1e-4);
    let input: RgbImage = image::open(crate::common::versatile("input.png"))
        .unwrap()
        .to_rgb8();
    let out = image.encode_images(&[input]).unwrap();
    assert_close(
        "image context (image)",
        out.clone(),
        io.t("encode.image"),
        1e-4,
    );
    // The class token has unit norm.
    let cls: Tensor<B, 1> = out.slice([0..1, 0..1, 0..16]).reshape([16]);
    let norm = cls.powi_scalar(2).sum().sqrt().into_scalar();
    assert!((norm - 1.0).abs() < 1e-5, "class token norm {norm}");

    let gray = image.unconditional(UncondImage::Gray, 2).unwrap();
    assert_eq!(gray.dims(), [2, 257, 16]);
    assert_close(
        "gray unconditional",
        gray.narrow(0, 1, 1),
        io.t("encode.image_gray"),
        1e-4,
    );
    let zeros = image.unconditional(UncondImage::Zeros, 1).unwrap();
    assert_eq!(zeros.abs().max().into_scalar(), 0.0);
}
