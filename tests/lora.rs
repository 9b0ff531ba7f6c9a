//! LoRA against diffusers (`tools/fixtures/gen_lora.py`, `fixtures/lora/`): a PEFT file and a
//! kohya-ss file loaded together at 0.7 and 0.5 (diffusers' `load_lora_weights` +
//! `set_adapters`) give diffusers' UNet output and text embeddings within 1e-4 and its images
//! within 2/255, in txt2img and in the ControlNet pipeline; unloading gives the original
//! weights back bit for bit; the program's `--lora` gives the library's image.

use std::path::PathBuf;

use burn::prelude::*;
use image::RgbImage;
use prompt_diffusion::core::Error;
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::core::testing::max_abs_diff;
use prompt_diffusion::core::weights::TensorSource;
use prompt_diffusion::pipelines::{ControlNetOptions, LoraSpec};
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};

use crate::common::{
    B, DEVICE, assert_cli_fails, assert_cli_succeeds, assert_images_close, expected, fixtures,
    standard_controlnet, tiny_sd_with, words,
};

const PROMPT: &str = "a watercolor painting of a fox in the snow";
const NEGATIVE: &str = "blurry, low quality";

fn lora(name: &str) -> PathBuf {
    fixtures().join(format!("lora/{name}.safetensors"))
}

fn reference() -> TensorSource {
    TensorSource::open(fixtures().join("lora/reference.safetensors")).unwrap()
}

/// Both LoRAs at diffusers' `set_adapters` weights.
fn with_both(mut sd: StableDiffusion<B>) -> StableDiffusion<B> {
    assert_eq!(sd.load_lora(lora("peft"), 0.7).unwrap(), "peft");
    assert_eq!(sd.load_lora(lora("kohya"), 0.5).unwrap(), "kohya");
    sd
}

fn unet_out(sd: &StableDiffusion<B>, io: &TensorSource) -> Tensor<B, 4> {
    let unet = &sd.components.unet;
    let t = |key: &str| io.data(key).unwrap();
    unet.forward(
        Tensor::from_data(t("unet.sample"), &DEVICE),
        Tensor::from_data(t("unet.timestep"), &DEVICE),
        Tensor::from_data(t("unet.context"), &DEVICE),
    )
    .unwrap()
}

fn text_embeds(sd: &StableDiffusion<B>) -> Tensor<B, 3> {
    sd.encode_text(PROMPT).unwrap()
}

fn generation(io: &TensorSource) -> Generation {
    Generation::new(PROMPT)
        .with_negative_prompt(NEGATIVE)
        .with_steps(8)
        .with_guidance_scale(7.5)
        .with_scheduler(SchedulerKind::Ddim)
        .with_latents(io.data("latents").unwrap())
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

#[test]
fn two_loras_match_diffusers_set_adapters() {
    let io = reference();
    let sd = with_both(tiny_sd_with(&ModelOptions::default()));
    let unet = max_abs_diff(
        unet_out(&sd, &io),
        io.tensor("unet.out", &DEVICE, None).unwrap(),
    );
    assert!(unet < 1e-4, "UNet output differs by {unet}");
    let text = max_abs_diff(
        text_embeds(&sd),
        io.tensor("text_embeds", &DEVICE, None).unwrap(),
    );
    assert!(text < 1e-4, "text embeddings differ by {text}");
    let images = sd.text_to_image(&generation(&io), &mut NoProgress).unwrap();
    assert_images_close(
        "txt2img with two LoRAs",
        &images,
        &expected(&io, "txt2img.image"),
    );

    let loras = sd.loras();
    let layers: Vec<(&str, f32, usize, usize)> = loras
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.scale,
                l.unet_layers,
                l.text_encoder_layers,
            )
        })
        .collect();
    let (peft_unet, peft_text) = layer_counts("peft", ".lora_A.weight", "unet.");
    let (kohya_unet, kohya_text) = layer_counts("kohya", ".lora_down.weight", "lora_unet_");
    assert_eq!(
        layers,
        [
            ("peft", 0.7, peft_unet, peft_text),
            ("kohya", 0.5, kohya_unet, kohya_text)
        ]
    );
}

/// The UNet and text-encoder layers of a fixture file: its `down` tensors, by prefix.
fn layer_counts(name: &str, down: &str, unet: &str) -> (usize, usize) {
    let file = TensorSource::open(lora(name)).unwrap();
    let downs: Vec<&str> = file.keys().filter(|k| k.ends_with(down)).collect();
    let unet = downs.iter().filter(|k| k.starts_with(unet)).count();
    (unet, downs.len() - unet)
}

#[test]
fn scales_unloading_and_fusing_keep_to_the_original_weights() {
    let io = reference();
    let mut sd = tiny_sd_with(&ModelOptions::default());
    let (unet0, text0) = (values(unet_out(&sd, &io)), values(text_embeds(&sd)));
    let generation = generation(&io).with_steps(2);
    let image0 = sd.text_to_image(&generation, &mut NoProgress).unwrap();

    sd.load_lora(lora("peft"), 1.0).unwrap();
    sd.load_lora_named("k", lora("kohya"), 1.0).unwrap();
    assert_ne!(values(unet_out(&sd, &io)), unet0);
    // Scales are merged from the originals: setting them equals loading at them.
    sd.set_lora_scales(&[("peft", 0.7), ("k", 0.5)]).unwrap();
    let both = with_both(tiny_sd_with(&ModelOptions::default()));
    assert_eq!(values(unet_out(&sd, &io)), values(unet_out(&both, &io)));
    assert_eq!(values(text_embeds(&sd)), values(text_embeds(&both)));
    // The options' LoRAs are fused at load: the same weights.
    let options = ModelOptions::default()
        .with_lora(lora("peft"), 0.7)
        .with_lora(lora("kohya"), 0.5);
    let fused = tiny_sd_with(&options);
    assert!(fused.loras().is_empty());
    assert_eq!(values(unet_out(&fused, &io)), values(unet_out(&both, &io)));

    // Scale 0 and unloading give back the originals bit for bit.
    sd.set_lora_scales(&[("k", 0.0)]).unwrap();
    assert_eq!(values(unet_out(&sd, &io)), unet0);
    assert_eq!(values(text_embeds(&sd)), text0);
    sd.set_lora_scale("peft", 0.3).unwrap();
    sd.unload_lora("peft").unwrap();
    assert_eq!(sd.loras().len(), 1);
    sd.set_lora_scale("k", 2.0).unwrap();
    assert_ne!(values(text_embeds(&sd)), text0);
    sd.unload_loras();
    assert!(sd.loras().is_empty());
    assert_eq!(values(unet_out(&sd, &io)), unet0);
    assert_eq!(values(text_embeds(&sd)), text0);
    assert_eq!(
        sd.text_to_image(&generation, &mut NoProgress).unwrap(),
        image0
    );

    // Fused LoRAs stay when the (now empty) list is unloaded.
    sd.load_lora(lora("peft"), 0.7).unwrap();
    sd.fuse_loras();
    assert!(sd.loras().is_empty());
    sd.unload_loras();
    assert_ne!(values(unet_out(&sd, &io)), unet0);
}

#[test]
fn the_older_diffusers_layout_equals_peft() {
    let io = reference();
    let mut old = tiny_sd_with(&ModelOptions::default());
    old.load_lora(lora("old"), 1.0).unwrap();
    let mut peft = tiny_sd_with(&ModelOptions::default());
    peft.load_lora(lora("peft"), 1.0).unwrap();
    let counts = |sd: &StableDiffusion<B>| {
        let info = &sd.loras()[0];
        (info.unet_layers, info.text_encoder_layers)
    };
    assert_eq!(counts(&old), counts(&peft));
    let unet = max_abs_diff(unet_out(&old, &io), unet_out(&peft, &io));
    let text = max_abs_diff(text_embeds(&old), text_embeds(&peft));
    assert!(unet < 1e-5 && text < 1e-5, "UNet {unet}, text {text}");
}

#[test]
fn controlnet_pipeline_with_loras_matches_diffusers() {
    let io = reference();
    let hints =
        TensorSource::open(fixtures().join("prompt_diffusion/reference.safetensors")).unwrap();
    let sd = with_both(tiny_sd_with(&ModelOptions::default()));
    let pipe = standard_controlnet(sd);
    let generation = Generation::new("a watercolor painting of a house")
        .with_negative_prompt(NEGATIVE)
        .with_steps(8)
        .with_guidance_scale(7.5)
        .with_scheduler(SchedulerKind::Ddim)
        .with_latents(hints.data("latents").unwrap());
    let hint =
        prompt_diffusion::core::image::load_rgb(fixtures().join("prompt_diffusion/query.png"))
            .unwrap();
    let options = ControlNetOptions::default().with_conditioning_scale(0.8);
    let images = pipe
        .generate(&hint, &generation, &options, &mut NoProgress)
        .unwrap();
    assert_images_close(
        "controlnet with two LoRAs",
        &images,
        &expected(&io, "controlnet.image"),
    );
}

#[test]
fn prompt_diffusion_with_loras_matches_the_reference() {
    use prompt_diffusion::controlnet::PromptDiffusionControlNet;
    use prompt_diffusion::core::weights::Pretrained;
    use prompt_diffusion::{InContextOptions, PromptDiffusion};

    let io = reference();
    let pd_io =
        TensorSource::open(fixtures().join("prompt_diffusion/reference.safetensors")).unwrap();
    let controlnet = PromptDiffusionControlNet::<B>::from_pretrained(
        fixtures().join("controlnet/prompt-diffusion"),
        &Default::default(),
        &DEVICE,
    )
    .unwrap();
    let pd = PromptDiffusion::new(
        with_both(tiny_sd_with(&ModelOptions::default())),
        controlnet,
    );
    let options = InContextOptions::notebook()
        .with_steps(8)
        .with_scheduler(SchedulerKind::Ddim)
        .with_resolution(64)
        .with_latents(pd_io.data("latents").unwrap());
    let [source, target, query] = ["source", "target", "query"].map(|name| {
        let path = fixtures().join(format!("prompt_diffusion/{name}.png"));
        prompt_diffusion::core::image::load_rgb(path).unwrap()
    });
    let prompt = "a turtle stands on the beach";
    let images = pd
        .generate(&source, &target, &query, prompt, &options, &mut NoProgress)
        .unwrap();
    assert_images_close(
        "Prompt Diffusion with two LoRAs",
        &images,
        &expected(&io, "in_context.image"),
    );
}

/// Writes the f32 tensors `(name, shape)` (values 0.1) to a safetensors file in `dir`.
fn lora_file(dir: &std::path::Path, name: &str, tensors: &[(&str, Vec<usize>)]) -> PathBuf {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(key, shape)| {
            let n: usize = shape.iter().product();
            (
                key.to_string(),
                shape.clone(),
                0.1f32.to_le_bytes().repeat(n),
            )
        })
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(k, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (k.as_str(), view)
        })
        .collect();
    let path = dir.join(name);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

#[test]
fn bad_lora_files_and_requests_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = tiny_sd_with(&ModelOptions::default());
    let q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
    let a = |m: &str| format!("{m}.lora_A.weight");
    let b = |m: &str| format!("{m}.lora_B.weight");
    let unknown = lora_file(
        dir.path(),
        "unknown.safetensors",
        &[
            (&a("unet.down_blocks.7.x"), vec![2, 16]),
            (&b("unet.down_blocks.7.x"), vec![16, 2]),
        ],
    );
    let shape = lora_file(
        dir.path(),
        "shape.safetensors",
        &[
            (&a("unet.conv_in"), vec![2, 5, 3, 3]),
            (&b("unet.conv_in"), vec![16, 2, 1, 1]),
        ],
    );
    let rank = lora_file(
        dir.path(),
        "rank.safetensors",
        &[(&a(q), vec![2, 16]), (&b(q), vec![16, 3])],
    );
    let half = lora_file(dir.path(), "half.safetensors", &[(&a(q), vec![2, 16])]);
    let dora = lora_file(
        dir.path(),
        "dora.safetensors",
        &[
            (&a(q), vec![2, 16]),
            (&b(q), vec![16, 2]),
            (&format!("{q}.lora_magnitude_vector"), vec![16]),
        ],
    );
    let not_lora = fixtures().join("tiny-sd/unet/diffusion_pytorch_model.safetensors");
    let cases: [(PathBuf, &[&str]); 6] = [
        (
            unknown.clone(),
            &[
                "unknown.safetensors",
                "unet.down_blocks.7.x",
                "match no layer",
            ],
        ),
        (shape, &["shape.safetensors", "unet.conv_in", "down"]),
        (rank, &["rank.safetensors", "lora_B"]),
        (half, &["half.safetensors", "no up"]),
        (dora, &["dora.safetensors", "DoRA"]),
        (not_lora, &["not a LoRA tensor"]),
    ];
    for (path, needles) in cases {
        let err = sd.load_lora(&path, 1.0).unwrap_err();
        let text = err.to_string();
        for needle in needles {
            assert!(
                text.contains(needle),
                "{}: `{needle}` not in {text}",
                path.display()
            );
        }
    }
    assert!(matches!(
        sd.load_lora(dir.path().join("missing.safetensors"), 1.0),
        Err(Error::Io { .. })
    ));
    assert!(sd.loras().is_empty(), "a failed load leaves nothing loaded");

    sd.load_lora(lora("peft"), 1.0).unwrap();
    for err in [
        sd.load_lora(lora("peft"), 1.0).unwrap_err(),
        sd.load_lora_named("x", lora("kohya"), f32::NAN)
            .unwrap_err(),
        sd.set_lora_scale("nope", 1.0).unwrap_err(),
        sd.set_lora_scales(&[("peft", 1.0), ("nope", 1.0)])
            .unwrap_err(),
        sd.unload_lora("nope").unwrap_err(),
    ] {
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }
    assert_eq!(sd.loras().len(), 1);
    let options = ModelOptions::default().with_lora(&unknown, 1.0);
    let err = StableDiffusion::<B>::from_pretrained(fixtures().join("tiny-sd"), &options, &DEVICE)
        .unwrap_err();
    assert!(err.to_string().contains("unknown.safetensors"), "{err}");
    assert_eq!(
        LoraSpec::parse("a.safetensors:0.5").unwrap(),
        LoraSpec::new("a.safetensors", 0.5)
    );
}

#[test]
fn the_program_merges_lora_options() {
    let io = reference();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fox.png").display().to_string();
    let (tiny, latents) = (
        fixtures().join("tiny-sd"),
        fixtures().join("lora/reference.safetensors"),
    );
    let (tiny, latents) = (tiny.display().to_string(), latents.display().to_string());
    let (peft, kohya) = (
        format!("{}:0.7", lora("peft").display()),
        format!("{}:0.5", lora("kohya").display()),
    );
    let args = [
        "--model",
        &tiny,
        "--prompt",
        PROMPT,
        "--negative-prompt",
        NEGATIVE,
        "--steps",
        "8",
        "--guidance",
        "7.5",
        "--scheduler",
        "ddim",
    ];
    let shared = [
        "--latents",
        &latents,
        "--lora",
        &peft,
        "--lora",
        &kohya,
        "--backend",
        "ndarray",
    ];
    assert_cli_succeeds(words("txt2img", &[&args, &shared, &["--output", &out]]));
    let image: RgbImage = image::open(&out).unwrap().to_rgb8();
    assert_images_close("--lora", &[image], &expected(&io, "txt2img.image"));
    // The PNG names the LoRAs as A1111 does: `<lora:stem:scale>` and the "addnet" hash, the
    // SHA-256 of a safetensors file's bytes after its header.
    let recorded = prompt_diffusion::metadata::read_parameters(&out)
        .unwrap()
        .expect("the PNG records its parameters");
    let addnet_hash = |name: &str| {
        use sha2::{Digest, Sha256};
        let bytes = std::fs::read(lora(name)).unwrap();
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let digest = Sha256::digest(&bytes[8 + header..]);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(hex[..12].to_string())
    };
    let names: Vec<_> = recorded
        .loras
        .iter()
        .map(|l| (l.name.as_str(), l.scale, l.hash.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("peft", 0.7, addnet_hash("peft")),
            ("kohya", 0.5, addnet_hash("kohya"))
        ]
    );
    assert_eq!(recorded.prompt_without_loras().trim_end(), PROMPT);
    // `--from` gives the text encoder the prompt without the tags: the same image again.
    let again = dir.path().join("again.png").display().to_string();
    let from = ["--model", &tiny, "--from", &out];
    assert_cli_succeeds(words("txt2img", &[&from, &shared, &["--output", &again]]));
    let first: RgbImage = image::open(&out).unwrap().to_rgb8();
    let second: RgbImage = image::open(&again).unwrap().to_rgb8();
    assert!(first == second, "--from with the LoRAs made another image");

    let base = [
        "--model",
        tiny.as_str(),
        "--prompt",
        "x",
        "--steps",
        "1",
        "--output",
        out.as_str(),
    ];
    assert_cli_fails(
        &words("txt2img", &[&base, &["--lora", "a.safetensors:abc"]]),
        &["--lora", "abc"],
    );
    let missing = dir.path().join("missing.safetensors").display().to_string();
    assert_cli_fails(
        &words("txt2img", &[&base, &["--lora", &missing]]),
        &["missing.safetensors"],
    );
}
