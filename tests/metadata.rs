//! Files that remember how they were made (`prompt_diffusion::metadata`): the `parameters`
//! chunk written and read back (also with the `png` decoder directly), model hashes, and the
//! per-image seeds that let image `i` of a batch be made again alone with seed `seed + i`.

use std::io::BufWriter;
use std::path::Path;

use image::RgbImage;
use prompt_diffusion::core::Error;
use prompt_diffusion::core::image::load_rgb;
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::metadata::{
    GenerationParameters, file_sha256, model_hash, model_name, read_parameters,
    read_parameters_text, save_png_with_parameters, short_hash,
};
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::{Generation, InContextOptions, ModelOptions, PromptDiffusion};

use crate::common::{
    B, DEVICE, assert_cli_fails, assert_cli_succeeds, copy_dir, fixture, fixtures,
    standard_controlnet, tiny_sd,
};

fn gradient() -> RgbImage {
    RgbImage::from_fn(24, 16, |x, y| image::Rgb([x as u8 * 10, y as u8 * 15, 7]))
}

fn parameters(prompt: &str) -> GenerationParameters {
    let generation = Generation::new(prompt)
        .with_negative_prompt("blurry, low quality")
        .with_steps(20)
        .with_seed(42);
    GenerationParameters::from_generation(&generation, (24, 16), SchedulerKind::EulerAncestral)
        .with_model("tiny-sd", Some("0123456789".into()))
}

/// The text chunks of a PNG file, read with the `png` crate: `(keyword, text, kind)`.
fn text_chunks(path: &std::path::Path) -> Vec<(String, String, &'static str)> {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let reader = png::Decoder::new(file).read_info().unwrap();
    let info = reader.info();
    let latin1 = info.uncompressed_latin1_text.iter();
    let mut chunks: Vec<_> = latin1
        .map(|c| (c.keyword.clone(), c.text.clone(), "tEXt"))
        .collect();
    for c in &info.utf8_text {
        chunks.push((c.keyword.clone(), c.get_text().unwrap(), "iTXt"));
    }
    chunks
}

#[test]
fn png_files_carry_their_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fox.png");
    let latin = parameters("a watercolor fox, snow: deep");
    save_png_with_parameters(&gradient(), &path, Some(&latin)).unwrap();
    assert_eq!(load_rgb(&path).unwrap(), gradient());
    let chunks = text_chunks(&path);
    assert_eq!(
        chunks,
        [("parameters".to_string(), latin.to_a1111_string(), "tEXt")]
    );
    assert!(
        chunks[0]
            .1
            .contains("Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 24x16")
    );
    assert_eq!(read_parameters(&path).unwrap(), Some(latin));

    // Text beyond Latin-1 goes to an iTXt chunk, as PIL writes it.
    let wide = parameters("狐 in the snow ✓");
    save_png_with_parameters(&gradient(), &path, Some(&wide)).unwrap();
    let chunks = text_chunks(&path);
    assert_eq!(chunks.len(), 1);
    assert_eq!((chunks[0].0.as_str(), chunks[0].2), ("parameters", "iTXt"));
    assert_eq!(read_parameters(&path).unwrap(), Some(wide));

    // Without parameters: no chunk, the same pixels.
    save_png_with_parameters(&gradient(), &path, None).unwrap();
    assert!(text_chunks(&path).is_empty());
    assert_eq!(read_parameters(&path).unwrap(), None);
    assert_eq!(load_rgb(&path).unwrap(), gradient());
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file is left behind");
}

#[test]
fn chunks_after_the_image_data_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    // A writer that puts the chunk after IDAT.
    let path = dir.path().join("late.png");
    let file = BufWriter::new(std::fs::File::create(&path).unwrap());
    let image = gradient();
    let mut encoder = png::Encoder::new(file, image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(image.as_raw()).unwrap();
    let text = "late\nSteps: 3, Seed: 4, Size: 24x16";
    let chunk = png::text_metadata::TEXtChunk::new("parameters", text);
    writer.write_text_chunk(&chunk).unwrap();
    writer.finish().unwrap();
    assert_eq!(read_parameters_text(&path).unwrap().as_deref(), Some(text));
    assert_eq!(read_parameters(&path).unwrap().unwrap().seed, Some(4));

    let not_png = dir.path().join("notes.png");
    std::fs::write(&not_png, "hello").unwrap();
    let err = read_parameters(&not_png).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("notes.png"), "{err}");
    let missing = read_parameters(dir.path().join("missing.png")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }), "{missing}");

    // A chunk that does not parse names the file and the key.
    let bad = dir.path().join("bad.png");
    let mut broken = parameters("x");
    broken.extra.clear();
    let text = broken
        .to_a1111_string()
        .replace("Steps: 20", "Steps: twenty");
    std::fs::write(&bad, encode_with_text(&text)).unwrap();
    let err = read_parameters(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.png") && err.contains("Steps"), "{err}");
}

fn encode_with_text(text: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    prompt_diffusion::metadata::encode_png(&gradient(), Some(text), &mut bytes).unwrap();
    bytes
}

#[test]
fn model_hashes_and_names() {
    let dir = tempfile::tempdir().unwrap();
    // FIPS 180-2's test vector.
    let abc = dir.path().join("abc.safetensors");
    std::fs::write(&abc, "abc").unwrap();
    let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(file_sha256(&abc).unwrap(), sha);
    assert_eq!(short_hash(&abc).unwrap(), &sha[..10]);
    assert_eq!(model_hash(&abc, None).unwrap(), &sha[..10]);
    assert_eq!(model_name(&abc), "abc");

    let folder = fixtures().join("tiny-sd");
    let unet = folder.join("unet/diffusion_pytorch_model.safetensors");
    assert_eq!(
        model_hash(&folder, None).unwrap(),
        short_hash(&unet).unwrap()
    );
    assert_eq!(model_name(&folder), "tiny-sd");
    assert_eq!(model_name("someone/some-model"), "someone/some-model");
    let err = model_hash(dir.path(), None).unwrap_err().to_string();
    assert!(err.contains("unet"), "{err}");
}

/// Image 2 of a batch of 3 seeded 10 is the image of a batch of one seeded 12.
#[test]
fn image_i_of_a_batch_is_seed_plus_i_alone_for_every_scheduler() {
    let sd = tiny_sd();
    for kind in SchedulerKind::ALL {
        let base = Generation::new("a fox in the snow")
            .with_negative_prompt("blurry")
            .with_steps(3)
            .with_size(64, 64)
            .with_scheduler(kind);
        // DDIM's stochastic steps too.
        let base = base.with_eta(if kind == SchedulerKind::Ddim {
            0.7
        } else {
            0.0
        });
        let batch = base.clone().with_num_images(3).with_seed(10);
        let batch = sd.text_to_image(&batch, &mut NoProgress).unwrap();
        let alone = base.with_num_images(1).with_seed(12);
        let alone = sd.text_to_image(&alone, &mut NoProgress).unwrap();
        assert_eq!(batch.len(), 3);
        assert!(
            batch[2] == alone[0],
            "{kind:?}: image 2 differs from seed 12 alone"
        );
        assert!(
            batch[0] != batch[2],
            "{kind:?}: the images of a batch differ"
        );
    }
}

#[test]
fn image_i_of_a_batch_is_seed_plus_i_alone_in_img2img_and_controlled_pipelines() {
    let sd = tiny_sd();
    let init = load_rgb(fixtures().join("pipeline/init.png")).unwrap();
    let base = Generation::new("a snowy landscape")
        .with_steps(4)
        .with_size(64, 64)
        .with_scheduler(SchedulerKind::EulerAncestral);
    let run = |g: Generation| sd.image_to_image(&g, &init, 0.7, &mut NoProgress).unwrap();
    let batch = run(base.clone().with_num_images(2).with_seed(5));
    assert!(batch[1] == run(base.clone().with_seed(6))[0], "img2img");

    let pipe = standard_controlnet(sd);
    let hint = load_rgb(fixtures().join("prompt_diffusion/query.png")).unwrap();
    let options = prompt_diffusion::pipelines::ControlNetOptions::default();
    let run = |g: Generation| pipe.generate(&hint, &g, &options, &mut NoProgress).unwrap();
    let batch = run(base.clone().with_num_images(2).with_seed(5));
    assert!(batch[1] == run(base.with_seed(6))[0], "controlnet");

    // Prompt Diffusion in the diffusers layout: tiny-sd with the tiny ControlNet.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-sd"), dir.path());
    let controlnet = fixtures().join("controlnet/prompt-diffusion");
    copy_dir(&controlnet, &dir.path().join("controlnet"));
    let pd = PromptDiffusion::<B>::from_pretrained(dir.path(), &ModelOptions::default(), &DEVICE)
        .unwrap();
    let image = |name: &str| load_rgb(fixtures().join("prompt_diffusion").join(name)).unwrap();
    let [source, target, query] = ["source.png", "target.png", "query.png"].map(image);
    let run = |num_images, seed| {
        let options = InContextOptions::default()
            .with_steps(3)
            .with_resolution(64)
            .with_num_images(num_images)
            .with_seed(seed);
        pd.generate(
            &source,
            &target,
            &query,
            "a turtle",
            &options,
            &mut NoProgress,
        )
        .unwrap()
    };
    assert!(run(3, 20)[1] == run(1, 21)[0], "in-context");
}

/// `prompt-diffusion` arguments, owned.
fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn recorded(path: &Path) -> GenerationParameters {
    read_parameters(path)
        .unwrap()
        .expect("the PNG records its parameters")
}

#[test]
fn the_program_records_parameters_and_remakes_image_i_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let text = |name: &str| path(name).display().to_string();
    let tiny = fixture("tiny-sd");
    let (prompt, negative) = ("a fox, in snow: \"deep\"", "blurry, dark");
    let base = args(&[
        "txt2img",
        "--model",
        &tiny,
        "--prompt",
        prompt,
        "--negative-prompt",
        negative,
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--scheduler",
        "euler-ancestral",
    ]);
    let run = |extra: &[&str]| assert_cli_succeeds([&base[..], &args(extra)].concat());
    run(&[
        "--num-images",
        "3",
        "--seed",
        "10",
        "--output",
        &text("batch.png"),
    ]);

    let unet = fixtures().join("tiny-sd/unet/diffusion_pytorch_model.safetensors");
    for i in 0..3 {
        let p = recorded(&path(&format!("batch_{i}.png")));
        assert_eq!(
            (p.prompt.as_str(), p.negative_prompt.as_str()),
            (prompt, negative)
        );
        assert_eq!(
            (p.steps, p.cfg_scale, p.seed),
            (Some(2), Some(7.5), Some(10 + i))
        );
        assert_eq!(
            (p.sampler.as_deref(), p.size),
            (Some("Euler a"), Some((64, 64)))
        );
        assert_eq!(p.model.as_deref(), Some("tiny-sd"));
        assert_eq!(p.model_hash, Some(short_hash(&unet).unwrap()));
        assert!(p.extra("Version").unwrap().starts_with("prompt-diffusion "));
    }

    // `info` prints the stored text; `--json` the parsed fields.
    let image = text("batch_2.png");
    let info = assert_cli_succeeds(["info", image.as_str()]);
    assert_eq!(
        info,
        format!("{}\n", recorded(&path("batch_2.png")).to_a1111_string())
    );
    let json = assert_cli_succeeds(["info", "--json", image.as_str()]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (json["seed"].as_u64(), json["prompt"].as_str()),
        (Some(12), Some(prompt))
    );

    // `--from` makes image 2 again by itself: the same pixels and parameters.
    let again = text("again.png");
    assert_cli_succeeds([
        "txt2img", "--model", &tiny, "--from", &image, "--output", &again,
    ]);
    let pixels = |name: &str| load_rgb(path(name)).unwrap();
    assert!(
        pixels("again.png") == pixels("batch_2.png"),
        "--from made another image"
    );
    assert_eq!(recorded(&path("again.png")), recorded(&path("batch_2.png")));
    // Options given with --from win.
    let other = text("other.png");
    let words = [
        "txt2img", "--model", &tiny, "--from", &image, "--steps", "1", "--output", &other,
    ];
    assert_cli_succeeds(words);
    let p = recorded(&path("other.png"));
    assert_eq!(
        (p.steps, p.seed, p.prompt.as_str()),
        (Some(1), Some(12), prompt)
    );

    // --no-metadata: no chunk, the same image (seed 12 alone is image 2 of the batch).
    run(&[
        "--seed",
        "12",
        "--no-metadata",
        "--output",
        &text("bare.png"),
    ]);
    assert_eq!(read_parameters(path("bare.png")).unwrap(), None);
    assert!(pixels("bare.png") == pixels("batch_2.png"));

    // `info` and `--from` on a PNG without parameters, or no PNG at all: one line naming it.
    let bare = text("bare.png");
    assert_cli_fails(
        &["info", bare.as_str()],
        &["bare.png", "no generation parameters"],
    );
    let from_bare = [
        "txt2img", "--model", &tiny, "--from", &bare, "--output", &other,
    ];
    assert_cli_fails(&from_bare, &["bare.png", "no generation parameters"]);
    std::fs::write(path("notes.png"), "hello").unwrap();
    assert_cli_fails(&["info", text("notes.png").as_str()], &["notes.png", "PNG"]);
}

#[test]
fn img2img_records_its_strength_and_remakes_image_i() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (tiny, init) = (fixture("tiny-sd"), fixture("pipeline/init.png"));
    let base = [
        "img2img",
        "--model",
        &tiny,
        "--init-image",
        &init,
        "--prompt",
        "snow",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
    ];
    let batch = [
        &base[..],
        &["--strength", "0.6", "--seed", "3", "--num-images", "2"],
    ]
    .concat();
    let out = path("out.png");
    assert_cli_succeeds([&batch[..], &["--output", &out]].concat());
    let image = path("out_1.png");
    let p = recorded(Path::new(&image));
    assert_eq!((p.seed, p.denoising_strength), (Some(4), Some(0.6)));
    let again = path("again.png");
    let words = [
        "img2img",
        "--model",
        &tiny,
        "--init-image",
        &init,
        "--from",
        &image,
    ];
    assert_cli_succeeds([&words[..], &["--output", &again]].concat());
    assert!(
        load_rgb(&again).unwrap() == load_rgb(&image).unwrap(),
        "--from made another image"
    );
}

#[test]
fn every_generating_subcommand_records_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name).display().to_string();
    let (tiny, query) = (fixture("tiny-sd"), fixture("prompt_diffusion/query.png"));
    let controlnet = fixture("prompt_diffusion/controlnet-standard");
    let small = [
        "--steps", "1", "--seed", "7", "--width", "64", "--height", "64",
    ];
    let words = [
        "controlnet",
        "--model",
        &tiny,
        "--prompt",
        "a house",
        "--controlnet",
        &controlnet,
    ];
    let cn = out("cn.png");
    assert_cli_succeeds([&words[..], &small, &["--hint", &query, "--output", &cn]].concat());
    let p = recorded(Path::new(&cn));
    assert_eq!(p.seed, Some(7));
    let unit = "Module: none, Model: controlnet-standard, Weight: 1, Control Mode: Balanced";
    assert_eq!(p.extra("ControlNet 0"), Some(unit));

    let model = dir.path().join("pd");
    copy_dir(&fixtures().join("tiny-sd"), &model);
    copy_dir(
        &fixtures().join("controlnet/prompt-diffusion"),
        &model.join("controlnet"),
    );
    let (source, target) = (
        fixture("prompt_diffusion/source.png"),
        fixture("prompt_diffusion/target.png"),
    );
    let images = crate::common::in_context_images(&source, &target, &query);
    let model = model.display().to_string();
    let pd = out("pd.png");
    let words = [
        "in-context",
        "--model",
        &model,
        "--prompt",
        "a turtle",
        "--output",
        &pd,
    ];
    assert_cli_succeeds([&words[..], &small, &images, &["--notebook-prompts"]].concat());
    let p = recorded(Path::new(&pd));
    assert!(
        p.prompt.starts_with("a turtle, best quality"),
        "{}",
        p.prompt
    );
    assert_eq!(
        (p.sampler.as_deref(), p.extra("Query")),
        (Some("DDIM"), Some("query.png"))
    );
    assert_eq!(p.extra("Example target"), Some("target.png"));

    let vd = out("vd.png");
    let flow = crate::common::versatile_args("text-to-image");
    let extra = [
        "--prompt",
        "a red car",
        "--steps",
        "1",
        "--seed",
        "5",
        "--output",
        &vd,
    ];
    assert_cli_succeeds([&flow[..], &args(&extra)].concat());
    let p = recorded(Path::new(&vd));
    assert_eq!((p.seed, p.extra("Flow")), (Some(5), Some("text-to-image")));
    assert_eq!(p.model.as_deref(), Some("vd"));

    let plugin = fixtures().join("diff_plugin");
    let [clip, plugins, input] =
        ["clip-vision", "pre-trained", "input.png"].map(|p| plugin.join(p).display().to_string());
    let restored = out("restored.png");
    let extra = [
        "--input", &input, "--task", "derain", "--steps", "1", "--size", "64",
    ];
    let extra = [&extra[..], &["--output", &restored]].concat();
    assert_cli_succeeds(crate::common::restore_args(&tiny, &clip, &plugins, &extra));
    let p = recorded(Path::new(&restored));
    assert_eq!(
        (p.sampler.as_deref(), p.cfg_scale, p.seed),
        (Some("UniPC"), None, Some(42))
    );
    assert_eq!(p.extra("Diff-Plugin tasks"), Some("derain"));
    assert_eq!(p.extra("Input"), Some("input.png"));
}
