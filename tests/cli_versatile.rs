//! The `versatile` subcommands on the tiny Versatile Diffusion (`fixtures/versatile`): every flow
//! writes its output, the same seed gives the same bytes, the images equal the library
//! pipeline's and the reference's (`tools/fixtures/gen_versatile.py`), the official checkpoints
//! give the diffusers folder's bytes, and bad input is one readable line with a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::Output;

use image::RgbImage;
use prompt_diffusion::Generation;
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::pipelines::{
    ImagePrompt, VersatileDiffusion, VersatileModelOptions, VersatileOptions,
};
use prompt_diffusion::versatile::{OptimusConfig, OptimusFiles};
use safetensors::SafeTensors;

use crate::common::{
    B, DEVICE, assert_cli_succeeds, assert_one_line_error, fixture, run_cli, write_f32_safetensors,
};

/// The tiny model: the diffusers folder with tiny-sd's VAE and tokenizer, and Optimus.
fn model_args() -> Vec<String> {
    [
        "--model",
        &fixture("versatile/vd"),
        "--vae",
        &fixture("tiny-sd/vae"),
        "--tokenizer",
        &fixture("tiny-sd/tokenizer"),
    ]
    .map(String::from)
    .to_vec()
}

fn optimus_args() -> Vec<String> {
    [
        "--optimus-weights",
        &fixture("versatile/optimus/optimus-vae.pth"),
        "--optimus-vocab",
        &fixture("versatile/optimus/vocab"),
        "--optimus-config",
        &fixture("versatile/optimus/config.json"),
    ]
    .map(String::from)
    .to_vec()
}

/// The words of `versatile <flow>` with the tiny model, `args` and then `extra`.
fn words(flow: &str, args: &[String], extra: &[&str]) -> Vec<String> {
    let head = ["versatile", flow].into_iter().map(String::from);
    head.chain(args.iter().cloned())
        .chain(extra.iter().map(|s| s.to_string()))
        .collect()
}

fn run(flow: &str, args: &[String], extra: &[&str]) -> Output {
    run_cli(words(flow, args, extra))
}

fn succeed(flow: &str, args: &[String], extra: &[&str]) -> String {
    assert_cli_succeeds(words(flow, args, extra))
}

/// Asserts a failure with a one-line error containing every `needle`.
fn assert_fails(flow: &str, args: &[String], extra: &[&str], needles: &[&str]) {
    let out = run(flow, args, extra);
    assert_one_line_error(&format!("{flow} {extra:?}"), &out, needles);
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn rgb(path: &str) -> RgbImage {
    image::open(path).unwrap().to_rgb8()
}

/// Writes `key` of the reference file as a latents file for `--latents`.
fn reference_latents(key: &str, to: &Path) -> String {
    let bytes = std::fs::read(fixture("versatile/pipelines.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let view = reference.tensor(key).unwrap();
    safetensors::serialize_to_file([("latents", view)], None, to).unwrap();
    to.display().to_string()
}

/// The reference images `key` (`[n, h, w, 3]` bytes).
fn reference_images(key: &str) -> Vec<RgbImage> {
    let bytes = std::fs::read(fixture("versatile/pipelines.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let view = reference.tensor(key).unwrap();
    let [n, h, w, _] = view.shape()[..] else {
        panic!("{key}: not [n, h, w, 3]")
    };
    let data = view.data().to_vec();
    (0..n)
        .map(|i| {
            let chunk = data[i * h * w * 3..(i + 1) * h * w * 3].to_vec();
            RgbImage::from_raw(w as u32, h as u32, chunk).unwrap()
        })
        .collect()
}

fn max_difference(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    let pairs = a.as_raw().iter().zip(b.as_raw());
    pairs.map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

const SMALL: [&str; 8] = [
    "--steps", "2", "--seed", "3", "--width", "64", "--height", "40",
];

#[test]
fn every_flow_writes_its_output_and_a_seed_repeats_it() {
    let dir = tempfile::tempdir().unwrap();
    let (model, input) = (model_args(), fixture("versatile/input.png"));
    let mut with_optimus = model.clone();
    with_optimus.extend(optimus_args());
    let image = ["--image", input.as_str()];
    let prompt = ["--prompt", "a red car"];

    let dual = [&prompt[..], &image[..], &["--mix", "0.3"]].concat();
    for (flow, inputs) in [
        ("text-to-image", &prompt[..]),
        ("image-variation", &image[..]),
        ("dual-guided", &dual[..]),
    ] {
        let (a, b) = (path(dir.path(), "a.png"), path(dir.path(), "b.png"));
        let stdout = succeed(
            flow,
            &model,
            &[&SMALL[..], inputs, &["--output", a.as_str()]].concat(),
        );
        assert!(stdout.contains(&format!("wrote {a}")), "{flow}: {stdout}");
        assert_eq!(rgb(&a).dimensions(), (64, 40), "{flow}");
        succeed(
            flow,
            &model,
            &[&SMALL[..], inputs, &["--output", b.as_str()]].concat(),
        );
        let (a_bytes, b_bytes) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(a_bytes, b_bytes, "{flow}: same seed, other bytes");
        // Another seed draws other noise.
        let mut other = SMALL;
        other[3] = "4";
        let extra = [&other[..], inputs, &["--output", b.as_str()]].concat();
        succeed(flow, &model, &extra);
        assert_ne!(rgb(&a).as_raw(), rgb(&b).as_raw(), "{flow}: seed unused");
    }

    for (flow, inputs) in [
        ("image-to-text", &image[..]),
        ("text-variation", &prompt[..]),
    ] {
        let (a, b) = (path(dir.path(), "a.txt"), path(dir.path(), "b.txt"));
        let extra = ["--steps", "2", "--seed", "3", "--num-texts", "2"];
        succeed(
            flow,
            &with_optimus,
            &[&extra[..], inputs, &["--output", a.as_str()]].concat(),
        );
        let stdout = succeed(
            flow,
            &with_optimus,
            &[&extra[..], inputs, &["--output", b.as_str()]].concat(),
        );
        for i in 0..2 {
            let (a_i, b_i) = (
                path(dir.path(), &format!("a_{i}.txt")),
                format!("b_{i}.txt"),
            );
            let text = std::fs::read_to_string(&a_i).unwrap();
            assert!(
                text.ends_with('\n') && !text.trim().is_empty(),
                "{flow}: {text:?}"
            );
            let again = std::fs::read_to_string(dir.path().join(&b_i)).unwrap();
            assert_eq!(text, again, "{flow}: same seed, other text");
            assert!(
                stdout.contains(text.trim_end()),
                "{flow}: {stdout} lacks {text}"
            );
        }
    }
}

/// The library pipeline with the tiny model.
fn library_model() -> VersatileDiffusion<B> {
    let vd = PathBuf::from(fixture("versatile"));
    let optimus = OptimusFiles::new(vd.join("optimus/optimus-vae.pth"), vd.join("optimus/vocab"))
        .with_config(OptimusConfig::from_file(vd.join("optimus/config.json")).unwrap());
    let options = VersatileModelOptions::default()
        .with_optimus(optimus)
        .with_vae(fixture("tiny-sd/vae"))
        .with_tokenizer(fixture("tiny-sd/tokenizer"));
    VersatileDiffusion::from_pretrained(vd.join("vd"), &options, &DEVICE).unwrap()
}

#[test]
fn images_and_texts_equal_the_library_and_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (model, input) = (model_args(), fixture("versatile/input.png"));
    let vd = library_model();

    // Seeded dual guidance: the CLI's PNG holds the library's pixels exactly, on the library's
    // backend (another CPU backend rounds differently in the last bits).
    let out = path(dir.path(), "dual.png");
    let extra = [
        &SMALL[..],
        &["--prompt", "a red car", "--image", input.as_str()],
        &["--backend", "ndarray"],
    ]
    .concat();
    succeed(
        "dual-guided",
        &model,
        &[&extra[..], &["--mix", "0.3", "--output", out.as_str()]].concat(),
    );
    let g = Generation::new("a red car")
        .with_steps(2)
        .with_seed(3)
        .with_size(64, 40);
    let options = VersatileOptions::default().with_mix(0.3);
    let image = ImagePrompt::Image(rgb(&input));
    let expected = vd
        .dual_guided(&image, &g, &options, &mut NoProgress)
        .unwrap();
    assert_eq!(rgb(&out).as_raw(), expected[0].as_raw(), "CLI ≠ library");

    // Precomputed image context: the encoder's own tokens in a file give the --image bytes
    // (the tokens come from the library's backend, so both runs use it).
    let from_image = path(dir.path(), "variation.png");
    let ndarray = ["--backend", "ndarray"];
    let image_args = [&SMALL[..], &["--image", input.as_str()], &ndarray].concat();
    let extra = [&image_args[..], &["--output", from_image.as_str()]].concat();
    succeed("image-variation", &model, &extra);
    let encoder = vd.components.image_encoder.as_ref().unwrap();
    let tokens = encoder.encode_images(&[rgb(&input)]).unwrap().into_data();
    let embeds = dir.path().join("embeds.safetensors");
    let values = tokens.to_vec::<f32>().unwrap();
    write_f32_safetensors(&embeds, "image_embeds", &values, tokens.shape.to_vec());
    let (embeds, from_embeds) = (
        embeds.display().to_string(),
        path(dir.path(), "variation-embeds.png"),
    );
    let embeds_args = [&SMALL[..], &["--image-embeds", embeds.as_str()], &ndarray].concat();
    let extra = [&embeds_args[..], &["--output", from_embeds.as_str()]].concat();
    succeed("image-variation", &model, &extra);
    assert_eq!(rgb(&from_image).as_raw(), rgb(&from_embeds).as_raw());

    // diffusers' text→image from the reference's two initial latents: `_0`, `_1`, within 2/255.
    let latents = reference_latents("text_to_image.latents", &dir.path().join("t2i.safetensors"));
    let out = path(dir.path(), "t2i.png");
    let args = [
        "--prompt",
        "a red car in the sun",
        "--steps",
        "4",
        "--latents",
        latents.as_str(),
    ];
    succeed(
        "text-to-image",
        &model,
        &[&args[..], &["--output", out.as_str()]].concat(),
    );
    for (i, reference) in reference_images("text_to_image.image").iter().enumerate() {
        let image = rgb(&path(dir.path(), &format!("t2i_{i}.png")));
        let worst = max_difference(&image, reference);
        assert!(worst <= 2, "text→image {i}: {worst}/255 from diffusers");
    }
    let latents = reference_latents("dual_guided.latents", &dir.path().join("dual.safetensors"));
    let args = [
        "--prompt",
        "a red car in the sun",
        "--image",
        input.as_str(),
        "--mix",
        "0.75",
    ];
    let extra = [
        "--steps",
        "4",
        "--latents",
        latents.as_str(),
        "--output",
        out.as_str(),
    ];
    succeed("dual-guided", &model, &[&args[..], &extra[..]].concat());
    let worst = max_difference(&rgb(&out), &reference_images("dual_guided.image")[0]);
    assert!(worst <= 2, "dual-guided: {worst}/255 from diffusers");

    // The reference's image→text loop, decoded greedily: the reference's tokens.
    let mut with_optimus = model.clone();
    with_optimus.extend(optimus_args());
    let latents = reference_latents("image_to_text.latents", &dir.path().join("i2t.safetensors"));
    let out = path(dir.path(), "caption.txt");
    let args = [
        "--image",
        input.as_str(),
        "--steps",
        "4",
        "--greedy",
        "--latents",
        latents.as_str(),
    ];
    succeed(
        "image-to-text",
        &with_optimus,
        &[&args[..], &["--output", out.as_str()]].concat(),
    );
    let bytes = std::fs::read(fixture("versatile/pipelines.safetensors")).unwrap();
    let ids = SafeTensors::deserialize(&bytes).unwrap();
    let ids: Vec<u32> = ids
        .tensor("image_to_text.ids")
        .unwrap()
        .data()
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let optimus = vd.components.optimus.as_ref().unwrap();
    let expected = optimus.tokenizers.detokenize(&ids).unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("{expected}\n")
    );
}

#[test]
fn official_checkpoints_give_the_folder_images() {
    let dir = tempfile::tempdir().unwrap();
    let official = [
        "--checkpoint",
        &fixture("versatile/official/vd-four-flow-v1-0.pth"),
        "--checkpoint-vae",
        &fixture("versatile/official/kl-f8.pth"),
        "--clip",
        &fixture("versatile/vd/text_encoder"),
        "--clip-vision",
        &fixture("versatile/vd/image_encoder"),
        "--tokenizer",
        &fixture("tiny-sd/tokenizer"),
        "--config",
        &fixture("versatile/vd"),
        "--vae",
        &fixture("tiny-sd/vae"),
    ]
    .map(String::from);
    let (a, b) = (
        path(dir.path(), "official.png"),
        path(dir.path(), "folder.png"),
    );
    let input = fixture("versatile/input.png");
    let extra = [&SMALL[..], &["--image", input.as_str()]].concat();
    succeed(
        "image-variation",
        &official,
        &[&extra[..], &["--output", a.as_str()]].concat(),
    );
    succeed(
        "image-variation",
        &model_args(),
        &[&extra[..], &["--output", b.as_str()]].concat(),
    );
    // The same pixels (the recorded model differs).
    assert_eq!(rgb(&a), rgb(&b));
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_args();
    let input = fixture("versatile/input.png");
    let out = path(dir.path(), "out.png");
    let base = ["--steps", "1", "--output", out.as_str()];
    fn join<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }

    // The text flows need Optimus, given whole.
    let needles = ["image-to-text", "--optimus-weights", "--optimus-vocab"];
    assert_fails(
        "image-to-text",
        &model,
        &["--image", input.as_str()],
        &needles,
    );
    let needles = ["text-variation", "Optimus"];
    assert_fails("text-variation", &model, &["--prompt", "a car"], &needles);
    let weights = fixture("versatile/optimus/optimus-vae.pth");
    let extra = ["--prompt", "a car", "--optimus-weights", weights.as_str()];
    assert_fails("text-variation", &model, &extra, &["--optimus-vocab"]);
    // Missing or unreadable inputs.
    assert_fails("image-variation", &model, &join(&base, &[]), &["--image"]);
    let missing = path(dir.path(), "nope.png");
    let extra = join(&base, &["--prompt", "a car", "--image", missing.as_str()]);
    assert_fails("dual-guided", &model, &extra, &["nope.png"]);
    assert_fails("text-to-image", &model, &join(&base, &[]), &["--prompt"]);
    let other = fixture("versatile/pipelines.safetensors");
    let extra = join(&base, &["--image-embeds", other.as_str()]);
    assert_fails(
        "image-variation",
        &model,
        &extra,
        &["pipelines.safetensors", "image_embeds"],
    );
    // Bad values.
    let extra = join(&base, &["--prompt", "a car", "--width", "100"]);
    assert_fails(
        "text-to-image",
        &model,
        &extra,
        &["width", "100", "multiple of 8"],
    );
    let extra = join(
        &base,
        &[
            "--prompt",
            "a car",
            "--image",
            input.as_str(),
            "--mix",
            "1.5",
        ],
    );
    assert_fails("dual-guided", &model, &extra, &["--mix", "1.5"]);
    let jpg = path(dir.path(), "out.jpg");
    let extra = ["--prompt", "a car", "--output", jpg.as_str()];
    assert_fails("text-to-image", &model, &extra, &[".png"]);
    // Neither a model nor a complete set of official files.
    assert_fails(
        "text-to-image",
        &[],
        &["--prompt", "a car"],
        &["--model", "--checkpoint"],
    );
    let checkpoint = [
        "--checkpoint".to_string(),
        fixture("versatile/official/kl-f8.pth"),
    ];
    let needles = ["--checkpoint-vae", "--clip"];
    assert_fails(
        "text-to-image",
        &checkpoint,
        &["--prompt", "a car"],
        &needles,
    );
    let missing_model = ["--model".to_string(), path(dir.path(), "no-model")];
    assert_fails(
        "text-to-image",
        &missing_model,
        &join(&base, &["--prompt", "a car"]),
        &["no-model"],
    );
}

#[test]
fn vae_tiling_and_slicing_reach_the_vae_and_match_the_library() {
    use prompt_diffusion::vae::{VaeOptions, VaeTiling};
    use prompt_diffusion::versatile::Flow;

    // 32-px tiles make the 64 × 40 decode run in overlapping tiles.
    let dir = tempfile::tempdir().unwrap();
    let out = path(dir.path(), "tiled.png");
    let switches = ["--vae-tiling", "--vae-tile-size", "32", "--vae-slicing"];
    let extra = [
        &SMALL[..],
        &["--prompt", "a red car"],
        &switches[..],
        &["--output", out.as_str()],
    ]
    .concat();
    succeed("text-to-image", &model_args(), &extra);

    let vae = VaeOptions::default()
        .with_tiling(VaeTiling::default().with_tile_sample_size(32))
        .with_slicing(true);
    let options = VersatileModelOptions::default()
        .with_flows([Flow::TextToImage])
        .with_vae(fixture("tiny-sd/vae"))
        .with_tokenizer(fixture("tiny-sd/tokenizer"))
        .with_vae_options(vae);
    let vd = VersatileDiffusion::<B>::from_pretrained(fixture("versatile/vd"), &options, &DEVICE)
        .unwrap();
    assert_eq!(vd.components.vae.as_ref().unwrap().options(), vae);
    let g = Generation::new("a red car")
        .with_steps(2)
        .with_seed(3)
        .with_size(64, 40);
    let expected = vd.text_to_image(&g, &mut NoProgress).unwrap();
    assert_eq!(rgb(&out).as_raw(), expected[0].as_raw(), "CLI ≠ library");

    // A tile smaller than the VAE's downsampling is refused before the model runs.
    let extra = [
        &SMALL[..],
        &["--prompt", "x", "--vae-tiling", "--vae-tile-size", "2"],
    ]
    .concat();
    assert_fails(
        "text-to-image",
        &model_args(),
        &extra,
        &["2", "downsampling factor"],
    );
}
