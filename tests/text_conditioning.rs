//! Text conditioning of the Stable Diffusion pipelines on the tiny model
//! (`tools/fixtures/gen_text_conditioning.py`, `fixtures/text/`): prompt weighting against the
//! contexts computed there by hand with transformers (long prompt against a shorter negative,
//! and with textual-inversion tokens), textual inversion against diffusers'
//! `load_textual_inversion` + `encode_prompt` and one txt2img image (2/255), and the program's
//! `--embedding` and `--no-prompt-weighting` against the library.

use std::path::PathBuf;

use burn::prelude::*;
use prompt_diffusion::core::Error;
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::core::testing::max_abs_diff;
use prompt_diffusion::core::weights::TensorSource;
use prompt_diffusion::pipelines::EmbeddingSpec;
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};
use serde_json::Value;

use crate::common::{
    B, DEVICE, assert_cli_fails, assert_cli_succeeds, assert_images_close, expected, fixtures,
};

const TOL: f32 = 1e-4;

fn tiny() -> PathBuf {
    fixtures().join("tiny-sd")
}

fn embedding(name: &str) -> PathBuf {
    fixtures().join("text/embeddings").join(name)
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("text").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference(name: &str) -> TensorSource {
    TensorSource::open(fixtures().join("text").join(name)).unwrap()
}

fn tensor(io: &TensorSource, key: &str) -> Tensor<B, 3> {
    io.tensor::<B, 3>(key, &DEVICE, None).unwrap()
}

fn close(what: &str, actual: Tensor<B, 3>, expected: Tensor<B, 3>) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    let diff = max_abs_diff(actual, expected);
    eprintln!("{what}: max abs diff {diff:e}");
    assert!(
        diff <= TOL,
        "{what}: max abs difference {diff:e} exceeds {TOL:e}"
    );
}

/// The model with the four embeddings of the fixture, loaded in the fixture's order: two at
/// load time, two afterwards.
fn model_with_embeddings() -> StableDiffusion<B> {
    let options = ModelOptions::default()
        .with_textual_inversion(embedding("learned_embeds.safetensors"), None)
        .with_textual_inversion(embedding("cat_toy.bin"), None);
    let mut sd = StableDiffusion::from_pretrained(tiny(), &options, &DEVICE).unwrap();
    let token = sd
        .load_textual_inversion(embedding("charcoal.pt"), None)
        .unwrap();
    assert_eq!(token, "charcoal-v2");
    let path = embedding("a1111_style.safetensors");
    let token = sd
        .load_textual_inversion(path, Some("a1111_style"))
        .unwrap();
    assert_eq!(token, "a1111_style");
    sd
}

fn plain_model() -> StableDiffusion<B> {
    StableDiffusion::from_pretrained(tiny(), &ModelOptions::default(), &DEVICE).unwrap()
}

#[test]
fn weighted_prompts_match_the_hand_computed_contexts() {
    let io = reference("prompt_weighting.safetensors");
    let (plain, with_embeddings) = (plain_model(), model_with_embeddings());
    for case in json("prompt_weighting.json")["facade"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let sd = match case["embeddings"].as_bool().unwrap() {
            true => &with_embeddings,
            false => &plain,
        };
        let generation = Generation::new(case["prompt"].as_str().unwrap())
            .with_negative_prompt(case["negative_prompt"].as_str().unwrap())
            .with_prompt_weighting(true);
        let context = sd.encode_prompt(&generation).unwrap();
        close(name, context, tensor(&io, &format!("facade.{name}")));
    }
}

#[test]
fn without_weighting_prompts_are_plain_and_truncated() {
    let sd = plain_model();
    let prompt = format!("{}(fox:1.2) in the snow", "masterpiece, ".repeat(40));
    let generation = Generation::new(prompt.as_str()).with_num_images(2);
    let context = sd.encode_prompt(&generation).unwrap();
    assert_eq!(context.dims(), [4, 77, 16]);
    let plain = sd.encode_text(&prompt).unwrap();
    let uncond = sd.encode_text("").unwrap();
    let expected = Tensor::cat(vec![uncond.clone(), uncond, plain.clone(), plain], 0);
    assert_eq!(max_abs_diff(context, expected), 0.0);

    // On: two chunks for the prompt, the negative padded to two; without guidance, no negative.
    let weighted = sd
        .encode_prompt(&generation.clone().with_prompt_weighting(true))
        .unwrap();
    assert_eq!(weighted.dims(), [4, 154, 16]);
    let unguided = generation
        .with_prompt_weighting(true)
        .with_guidance_scale(1.0);
    assert_eq!(sd.encode_prompt(&unguided).unwrap().dims(), [2, 154, 16]);
    // A short prompt without the syntax is the plain context.
    let short = Generation::new("a fox").with_negative_prompt("blurry");
    let on = sd
        .encode_prompt(&short.clone().with_prompt_weighting(true))
        .unwrap();
    assert_eq!(max_abs_diff(on, sd.encode_prompt(&short).unwrap()), 0.0);
}

#[test]
fn textual_inversion_contexts_match_diffusers() {
    let sd = model_with_embeddings();
    let io = reference("textual_inversion.safetensors");
    let json = json("textual_inversion.json");
    let negative = json["negative_prompt"].as_str().unwrap();
    for (i, case) in json["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt = case["prompt"].as_str().unwrap();
        let generation = Generation::new(prompt).with_negative_prompt(negative);
        let context = sd.encode_prompt(&generation).unwrap();
        let expected = Tensor::cat(
            vec![
                tensor(&io, &format!("{i}.negative_prompt_embeds")),
                tensor(&io, &format!("{i}.prompt_embeds")),
            ],
            0,
        );
        close(prompt, context, expected);
    }
}

#[test]
fn textual_inversion_image_matches_diffusers() {
    let sd = model_with_embeddings();
    let io = reference("textual_inversion.safetensors");
    let json = json("textual_inversion.json");
    let generation = Generation::new(json["image_prompt"].as_str().unwrap())
        .with_negative_prompt(json["negative_prompt"].as_str().unwrap())
        .with_steps(4)
        .with_guidance_scale(7.5)
        .with_scheduler(SchedulerKind::Ddim)
        .with_latents(io.data("latents").unwrap());
    let images = sd.text_to_image(&generation, &mut NoProgress).unwrap();
    assert_images_close("textual inversion", &images, &expected(&io, "image"));
}

#[test]
fn embedding_errors_name_the_file_and_leave_the_model_usable() {
    let mut sd = plain_model();
    let err = sd
        .load_textual_inversion(embedding("wrong_width.safetensors"), None)
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let options =
        ModelOptions::default().with_textual_inversion(embedding("empty.safetensors"), None);
    let err = StableDiffusion::<B>::from_pretrained(tiny(), &options, &DEVICE).unwrap_err();
    assert!(err.to_string().contains("empty.safetensors"), "{err}");
    let token = sd
        .load_textual_inversion(embedding("cat_toy.bin"), None)
        .unwrap();
    assert_eq!(token, "<cat-toy>");
    let err = sd
        .load_textual_inversion(embedding("cat_toy.bin"), None)
        .unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");
    assert_eq!(sd.components.tokenizer.vocab_size(), 49411);
}

#[test]
fn embedding_specs_parse_file_and_token() {
    let file = embedding("cat_toy.bin").display().to_string();
    assert_eq!(
        EmbeddingSpec::parse(&file).unwrap(),
        EmbeddingSpec::new(&file, None)
    );
    assert_eq!(
        EmbeddingSpec::parse(&format!("{file}:<toy>")).unwrap(),
        EmbeddingSpec::new(&file, Some("<toy>".into()))
    );
    assert_eq!(
        EmbeddingSpec::parse("dir:x/emb.pt").unwrap(),
        EmbeddingSpec::new("dir:x/emb.pt", None)
    );
    assert!(EmbeddingSpec::parse("").is_err());
}

#[test]
fn cli_embeddings_and_weighting_match_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny().display().to_string();
    let cat_toy = format!("{}:<toy>", embedding("cat_toy.bin").display());
    let prompt = "a (<toy> backpack:1.3), [blurry]";
    let sd = {
        let options = ModelOptions::default()
            .with_textual_inversion(embedding("cat_toy.bin"), Some("<toy>".into()));
        StableDiffusion::<B>::from_pretrained(&tiny, &options, &DEVICE).unwrap()
    };
    for (name, weighting) in [("weighted.png", true), ("plain.png", false)] {
        let out = dir.path().join(name).display().to_string();
        let mut args = vec![
            "txt2img",
            "--model",
            &tiny,
            "--prompt",
            prompt,
            "--embedding",
            &cat_toy,
            "--steps",
            "2",
            "--seed",
            "3",
            "--backend",
            "ndarray",
            "--output",
            &out,
        ];
        if !weighting {
            args.push("--no-prompt-weighting");
        }
        assert_cli_succeeds(&args);
        let generation = Generation::new(prompt)
            .with_steps(2)
            .with_seed(3)
            .with_prompt_weighting(weighting);
        let images = sd.text_to_image(&generation, &mut NoProgress).unwrap();
        let written = image::open(&out).unwrap().to_rgb8();
        assert_eq!(
            written.as_raw(),
            images[0].as_raw(),
            "{name}: CLI ≠ library"
        );
    }
    let bad = embedding("wrong_width.safetensors").display().to_string();
    assert_cli_fails(
        &[
            "txt2img",
            "--model",
            &tiny,
            "--prompt",
            "x",
            "--embedding",
            &bad,
        ],
        &["wrong_width.safetensors", "<bad>", "[2, 8]"],
    );
}
