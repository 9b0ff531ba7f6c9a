//! Training the scenes model: the loss falls, a resumed run continues exactly, and the exported
//! diffusers folder loads into the pipeline with the trained weights.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion::core::Error;
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::core::weights::TensorSource;
use prompt_diffusion::train::{
    Autodiff, Checkpoint, Ema, ScenesModelConfig, TRAINING_STATE, TextToImageModel,
    TextToImageTrainer, TrainConfig, TrainState, TrainingStage, VaeTrainer, checkpoints,
    export_pipeline, fit_scaling_factor, latest_checkpoint, read_training_state,
    save_training_state, step_seed,
};
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};

use crate::common::{B as Inner, DEVICE};

type B = Autodiff<Inner>;
/// The seed of the fixed validation batch.
const VALIDATION: u64 = 0xfeed;

/// The scenes model's layout (4× VAE, two-level UNet, CLIP vocabulary), narrower and on 32²
/// pictures.
fn tiny() -> ScenesModelConfig {
    let mut config = ScenesModelConfig::scenes();
    let text = &mut config.text_encoder;
    (
        text.hidden_size,
        text.intermediate_size,
        text.projection_dim,
    ) = (16, 32, 16);
    (text.num_hidden_layers, text.num_attention_heads) = (1, 2);
    let unet = &mut config.unet.trunk;
    unet.block_out_channels = vec![16, 32];
    unet.norm_num_groups = Some(8);
    unet.cross_attention_dim = prompt_diffusion::core::config::OneOrMany::One(16);
    unet.attention_head_dim = prompt_diffusion::core::config::OneOrMany::One(2);
    config.unet.sample_size = Some(prompt_diffusion::core::config::OneOrMany::One(8));
    config.vae.block_out_channels = vec![8, 8, 8];
    config.vae.norm_num_groups = 4;
    config.vae.sample_size = 32;
    config
}

fn train_settings() -> TrainConfig {
    TrainConfig::default()
        .with_batch_size(4)
        .with_learning_rate(3e-3)
        .with_warmup_steps(1)
        .with_crop(16)
        .with_seed(7)
}

fn value(loss: Tensor<B, 1>) -> f32 {
    loss.into_scalar().elem::<f32>()
}

fn trained_vae(steps: usize) -> VaeTrainer<B> {
    let mut trainer = VaeTrainer::<B>::new(&tiny().vae, train_settings(), &DEVICE);
    for _ in 0..steps {
        trainer.step().unwrap();
    }
    trainer
}

#[test]
fn vae_training_lowers_the_validation_loss() {
    let mut trainer = trained_vae(0);
    let before = value(trainer.validation_loss(VALIDATION).unwrap());
    for _ in 0..30 {
        let loss = trainer.step().unwrap();
        assert!(loss.is_finite());
    }
    let after = value(trainer.validation_loss(VALIDATION).unwrap());
    eprintln!("VAE validation loss {before} → {after}");
    assert!(after < 0.8 * before, "VAE loss {before} → {after}");
}

#[test]
fn text_to_image_training_lowers_the_validation_loss() {
    let vae = trained_vae(2).into_vae();
    let train = train_settings().with_learning_rate(2e-3);
    let mut trainer = TextToImageTrainer::<B>::new(tiny(), vae, train, &DEVICE).unwrap();
    let before = value(trainer.validation_loss(VALIDATION).unwrap());
    for _ in 0..30 {
        trainer.step().unwrap();
    }
    let after = value(trainer.validation_loss(VALIDATION).unwrap());
    eprintln!("diffusion validation loss {before} → {after}");
    assert!(after < 0.8 * before, "diffusion loss {before} → {after}");
    assert_eq!(trainer.ema().updates, 30);
}

#[test]
fn a_resumed_run_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let vae = trained_vae(1).into_vae();
    let mut trainer = TextToImageTrainer::<B>::new(tiny(), vae, train_settings(), &DEVICE).unwrap();
    trainer.step().unwrap();
    trainer.step().unwrap();
    trainer.save(dir.path()).unwrap();
    let straight: Vec<f32> = (0..2).map(|_| trainer.step().unwrap()).collect();
    trainer.save(dir.path()).unwrap();

    let all = checkpoints(dir.path()).unwrap();
    let steps: Vec<usize> = all.iter().map(|(step, _)| *step).collect();
    assert_eq!(steps, [2, 4]);
    let checkpoint = &all[0].1;
    assert_eq!(checkpoint.state().unwrap().step, 2);
    let mut resumed = TextToImageTrainer::<B>::resume(checkpoint, &DEVICE).unwrap();
    let again: Vec<f32> = (0..2).map(|_| resumed.step().unwrap()).collect();
    assert_eq!(straight, again);
    let a = value(trainer.validation_loss(VALIDATION).unwrap());
    let b = value(resumed.validation_loss(VALIDATION).unwrap());
    assert_eq!(a, b);

    // The VAE stage resumes exactly too.
    let mut vae = trained_vae(1);
    vae.save(dir.path().join("vae").as_path()).unwrap();
    let straight = vae.step().unwrap();
    let checkpoint = latest_checkpoint(&dir.path().join("vae")).unwrap().unwrap();
    let mut resumed = VaeTrainer::<B>::resume(&checkpoint, &DEVICE).unwrap();
    assert_eq!(resumed.steps(), 1);
    assert_eq!(straight, resumed.step().unwrap());
}

/// `checkpoint` with its state's `workers` set to `n`.
fn with_workers(checkpoint: &Checkpoint, n: usize) -> &Checkpoint {
    let mut state = checkpoint.state().unwrap();
    state.train.workers = n;
    checkpoint.save_state(&state).unwrap();
    checkpoint
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(1e-3)
}

#[test]
fn a_batch_split_over_threads_trains_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let vae = trained_vae(1).into_vae();
    let mut one = TextToImageTrainer::<B>::new(tiny(), vae, train_settings(), &DEVICE).unwrap();
    let saved = one.save(dir.path()).unwrap();
    let mut two = TextToImageTrainer::<B>::resume(with_workers(&saved, 2), &DEVICE).unwrap();
    for _ in 0..3 {
        let (a, b) = (one.step().unwrap(), two.step().unwrap());
        assert!(close(a, b), "{a} vs {b}");
    }
    let a = value(one.validation_loss(VALIDATION).unwrap());
    let b = value(two.validation_loss(VALIDATION).unwrap());
    assert!(close(a, b), "{a} vs {b}");

    let mut one = trained_vae(0);
    let saved = one.save(&dir.path().join("vae")).unwrap();
    let mut three = VaeTrainer::<B>::resume(with_workers(&saved, 3), &DEVICE).unwrap();
    for _ in 0..3 {
        let (a, b) = (one.step().unwrap(), three.step().unwrap());
        assert!(close(a, b), "{a} vs {b}");
    }
}

#[test]
fn checkpoints_of_the_wrong_stage_or_incomplete_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let saved = trained_vae(1).save(dir.path()).unwrap();
    match TextToImageTrainer::<B>::resume(&saved, &DEVICE) {
        Err(Error::InvalidInput { reason, .. }) => assert!(reason.contains("`vae`"), "{reason}"),
        other => panic!("expected a stage error, got {:?}", other.err()),
    }
    let state = saved.dir().join("state.json");
    let text = std::fs::read(&state).unwrap();
    std::fs::remove_file(&state).unwrap();
    assert!(matches!(
        Checkpoint::open(saved.dir()),
        Err(Error::Io { .. })
    ));
    // A checkpoint without `state.json` is not the latest complete one.
    assert!(latest_checkpoint(dir.path()).unwrap().is_none());
    std::fs::write(&state, b"{}").unwrap();
    assert!(matches!(saved.state(), Err(Error::Format { .. })));
    std::fs::write(&state, text).unwrap();
    std::fs::remove_file(saved.dir().join("optimizer.mpk")).unwrap();
    assert!(matches!(
        VaeTrainer::<B>::resume(&Checkpoint::open(saved.dir()).unwrap(), &DEVICE),
        Err(Error::Format { .. })
    ));
}

#[test]
fn the_exported_folder_loads_with_the_trained_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut vae = trained_vae(1).into_vae();
    let scaling = fit_scaling_factor(&vae, 1, 4, &DEVICE).unwrap();
    assert!(scaling.is_finite() && scaling > 0.0);
    vae.set_scaling_factor(scaling);
    let mut trainer = TextToImageTrainer::<B>::new(tiny(), vae, train_settings(), &DEVICE).unwrap();
    trainer.step().unwrap();
    let model: TextToImageModel<Inner> = trainer.model().valid();
    let tokenizer = std::path::Path::new("fixtures/tiny-sd/tokenizer");
    let f32_dir = dir.path().join("f32");
    export_pipeline(
        &model,
        trainer.vae(),
        trainer.config(),
        tokenizer,
        &f32_dir,
        DType::F32,
    )
    .unwrap();

    let sd = StableDiffusion::<Inner>::from_pretrained(&f32_dir, &ModelOptions::default(), &DEVICE)
        .unwrap();
    assert_eq!(sd.components.vae.scaling_factor(), scaling);
    assert_eq!(scaling, (scaling * 1e5).round() / 1e5);
    assert_eq!(sd.native_size(), 32);
    // The same weights: the UNet's output on one input is identical.
    let sample = Tensor::<Inner, 4>::ones([1, 4, 16, 16], &DEVICE) * 0.3;
    let t = Tensor::<Inner, 1>::from_floats([500.0], &DEVICE);
    let ids = sd.components.tokenizer.encode("a red circle").unwrap();
    let ids = prompt_diffusion::clip::ClipTokenizer::ids_tensor::<Inner>(&[ids], &DEVICE).unwrap();
    let expected = model
        .forward(sample.clone(), t.clone(), ids.clone())
        .unwrap();
    let context = sd.components.text_encoder.forward(ids).last_hidden_state;
    let loaded = sd.components.unet.forward(sample, t, context).unwrap();
    let diff = (expected - loaded).abs().max().into_scalar();
    assert!(diff == 0.0, "UNet outputs differ by {diff}");

    // The f16 folder holds half-precision tensors and draws a picture of the native size.
    let f16_dir = dir.path().join("f16");
    export_pipeline(
        &model,
        trainer.vae(),
        trainer.config(),
        tokenizer,
        &f16_dir,
        DType::F16,
    )
    .unwrap();
    for file in [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ] {
        let source = TensorSource::from_safetensors(f16_dir.join(file)).unwrap();
        assert!(!source.is_empty());
        let keys: Vec<String> = source.keys().map(str::to_string).collect();
        assert!(
            keys.iter().all(|k| source.dtype(k) == Some(DType::F16)),
            "{file}"
        );
    }
    let sd = StableDiffusion::<Inner>::from_pretrained(&f16_dir, &ModelOptions::default(), &DEVICE)
        .unwrap();
    let generation = Generation::new("a red circle on a blue background").with_steps(2);
    let images = sd.text_to_image(&generation, &mut NoProgress).unwrap();
    assert_eq!(images[0].dimensions(), (32, 32));
}

#[test]
fn ema_warms_up_like_diffusers() {
    let model = TextToImageModel::<Inner>::new(&tiny(), &DEVICE).unwrap();
    let mut ema = Ema::new(model, 0.999);
    assert!((ema.current_decay() - 0.1).abs() < 1e-12);
    ema.updates = 90;
    assert!((ema.current_decay() - 0.91).abs() < 1e-12);
    ema.updates = 1_000_000;
    assert_eq!(ema.current_decay(), 0.999);
}

#[test]
fn steps_draw_distinct_reproducible_seeds_and_the_rate_warms_up() {
    assert_eq!(step_seed(3, 10), step_seed(3, 10));
    assert_ne!(step_seed(3, 10), step_seed(3, 11));
    assert_ne!(step_seed(3, 10), step_seed(4, 10));
    let train = TrainConfig::default()
        .with_learning_rate(1e-3)
        .with_warmup_steps(4);
    let rates: Vec<f64> = (0..6).map(|s| train.learning_rate_at(s)).collect();
    assert_eq!(rates, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3]);
    // A run continued at step 10 with fresh optimiser moments warms up again from there.
    let continued = train.with_warmup_from(10);
    let rates: Vec<f64> = (9..15).map(|s| continued.learning_rate_at(s)).collect();
    assert_eq!(rates, [2.5e-4, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3]);
}

#[test]
fn the_vae_with_latent_noise_learns_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let train = train_settings().with_latent_noise(0.3);
    let mut trainer = VaeTrainer::<B>::new(&tiny().vae, train, &DEVICE);
    let before = value(trainer.validation_loss(VALIDATION).unwrap());
    for _ in 0..30 {
        assert!(trainer.step().unwrap().is_finite());
    }
    let after = value(trainer.validation_loss(VALIDATION).unwrap());
    eprintln!("VAE (latent noise 0.3) validation loss {before} → {after}");
    assert!(after < 0.8 * before, "VAE loss {before} → {after}");

    trainer.save(dir.path()).unwrap();
    let straight = trainer.step().unwrap();
    let checkpoint = latest_checkpoint(dir.path()).unwrap().unwrap();
    assert_eq!(checkpoint.state().unwrap().train.latent_noise, 0.3);
    let mut resumed = VaeTrainer::<B>::resume(&checkpoint, &DEVICE).unwrap();
    assert_eq!(straight, resumed.step().unwrap());
}

#[test]
fn min_snr_weighting_down_weights_only_the_low_noise_timesteps() {
    let dir = tempfile::tempdir().unwrap();
    let vae = trained_vae(1).into_vae();
    // A batch large enough to hold timesteps on both sides of SNR = γ (t ≈ 150 for γ = 5).
    let settings = train_settings().with_batch_size(16);
    let plain = TextToImageTrainer::<B>::new(tiny(), vae, settings, &DEVICE).unwrap();
    let saved = plain.save(dir.path()).unwrap();
    // The same weights with another γ.
    let with_gamma = |gamma: f64| {
        let mut state = saved.state().unwrap();
        state.train.snr_gamma = gamma;
        saved.save_state(&state).unwrap();
        let trainer = TextToImageTrainer::<B>::resume(&saved, &DEVICE).unwrap();
        value(trainer.validation_loss(VALIDATION).unwrap())
    };
    let a = value(plain.validation_loss(VALIDATION).unwrap());
    let b = with_gamma(5.0);
    eprintln!("validation loss {a} plain, {b} with Min-SNR-5");
    assert!(b.is_finite() && b > 0.0 && b < a, "{a} → {b}");
    // A γ above every timestep's SNR leaves the loss as it is.
    let c = with_gamma(1e9);
    assert!((a - c).abs() <= 1e-6 * a, "{a} vs {c}");
    // A floor under the clean-latent error's weight raises every weight, the noisiest most.
    let mut state = saved.state().unwrap();
    (state.train.snr_gamma, state.train.x0_weight_floor) = (5.0, 0.25);
    saved.save_state(&state).unwrap();
    let floored = TextToImageTrainer::<B>::resume(&saved, &DEVICE).unwrap();
    let d = value(floored.validation_loss(VALIDATION).unwrap());
    eprintln!("validation loss {d} with Min-SNR-5 and an x0 weight floor of 0.25");
    assert!(d.is_finite() && d > b, "{b} → {d}");
}

#[test]
fn offset_noise_trains_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let vae = trained_vae(1).into_vae();
    let train = train_settings().with_offset_noise(0.1);
    let mut trainer = TextToImageTrainer::<B>::new(tiny(), vae, train, &DEVICE).unwrap();
    trainer.step().unwrap();
    trainer.save(dir.path()).unwrap();
    let straight: Vec<f32> = (0..2).map(|_| trainer.step().unwrap()).collect();
    assert!(straight.iter().all(|l| l.is_finite()));
    let checkpoint = latest_checkpoint(dir.path()).unwrap().unwrap();
    let mut state = checkpoint.state().unwrap();
    assert_eq!(state.train.offset_noise, 0.1);
    let mut resumed = TextToImageTrainer::<B>::resume(&checkpoint, &DEVICE).unwrap();
    let again: Vec<f32> = (0..2).map(|_| resumed.step().unwrap()).collect();
    assert_eq!(straight, again);
    // The offset changes the noise, so the loss.
    state.train.offset_noise = 0.0;
    checkpoint.save_state(&state).unwrap();
    let mut plain = TextToImageTrainer::<B>::resume(&checkpoint, &DEVICE).unwrap();
    assert_ne!(plain.step().unwrap(), straight[0]);
}

#[test]
fn a_run_continues_from_its_exported_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mut vae = trained_vae(1).into_vae();
    vae.set_scaling_factor(fit_scaling_factor(&vae, 1, 4, &DEVICE).unwrap());
    let train = train_settings().with_snr_gamma(5.0);
    let mut trainer = TextToImageTrainer::<B>::new(tiny(), vae, train.clone(), &DEVICE).unwrap();
    for _ in 0..3 {
        trainer.step().unwrap();
    }
    let folder = dir.path().join("model");
    let tokenizer = std::path::Path::new("fixtures/tiny-sd/tokenizer");
    let ema = &trainer.ema().module;
    export_pipeline(
        ema,
        trainer.vae(),
        trainer.config(),
        tokenizer,
        &folder,
        DType::F32,
    )
    .unwrap();

    // Without the training state the folder is only a model.
    let missing = TextToImageTrainer::<B>::from_pipeline(&folder, train.clone(), &DEVICE);
    assert!(
        matches!(missing, Err(Error::Io { .. })),
        "{:?}",
        missing.err()
    );
    let vae_state = TrainState {
        stage: "vae".into(),
        step: 3,
        train: train.clone(),
    };
    save_training_state(&folder, &vae_state).unwrap();
    let wrong = TextToImageTrainer::<B>::from_pipeline(&folder, train.clone(), &DEVICE);
    assert!(
        matches!(wrong, Err(Error::InvalidInput { .. })),
        "{:?}",
        wrong.err()
    );

    save_training_state(&folder, &trainer.state()).unwrap();
    assert!(folder.join(TRAINING_STATE).is_file());
    let state = read_training_state(&folder).unwrap();
    assert_eq!(state, trainer.state());
    let mut continued =
        TextToImageTrainer::<B>::from_pipeline(&folder, state.train, &DEVICE).unwrap();
    assert_eq!(continued.steps(), 3);
    assert_eq!(continued.ema().updates, 3);
    assert_eq!(continued.state().train.warmup_from, 3);
    assert_eq!(
        continued.vae().scaling_factor(),
        trainer.vae().scaling_factor()
    );

    // The continued weights are the exported average, and training moves them.
    let sample = Tensor::<Inner, 4>::ones([1, 4, 8, 8], &DEVICE) * 0.3;
    let t = Tensor::<Inner, 1>::from_floats([500.0], &DEVICE);
    let tokenizer = prompt_diffusion::clip::ClipTokenizer::openai_clip().unwrap();
    let ids = tokenizer.encode("a red circle").unwrap();
    let ids = prompt_diffusion::clip::ClipTokenizer::ids_tensor::<Inner>(&[ids], &DEVICE).unwrap();
    let output = |model: &TextToImageModel<Inner>| {
        model
            .forward(sample.clone(), t.clone(), ids.clone())
            .unwrap()
    };
    let exported = output(&trainer.ema().module);
    let start = output(&continued.model().valid());
    assert_eq!(
        (exported.clone() - start.clone()).abs().max().into_scalar(),
        0.0
    );
    assert!(continued.step().unwrap().is_finite());
    assert_eq!(continued.steps(), 4);
    let moved = (output(&continued.model().valid()) - start)
        .abs()
        .max()
        .into_scalar();
    assert!(moved > 0.0, "the continued model did not train");
    let averaged = (output(&continued.ema().module) - exported)
        .abs()
        .max()
        .into_scalar();
    assert!(averaged > 0.0, "the average did not move");
}
