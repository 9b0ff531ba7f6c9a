//! The public API: config resolution, error cases and reproducibility.

use crate::common::B;
use burn::prelude::*;
use prompt_diffusion_core::Error;
use prompt_diffusion_core::noise::{ReplayNoise, SeededNoise};
use prompt_diffusion_schedulers::{Scheduler, SchedulerConfig, SchedulerKind};

fn device() -> burn::tensor::Device<B> {
    Default::default()
}

fn build(json: &str, kind: Option<SchedulerKind>) -> Result<Box<dyn Scheduler<B>>, Error> {
    SchedulerConfig::from_json(json)?.build::<B>(kind, &device())
}

fn latents(seed: u64) -> Tensor<B, 4> {
    let mut noise = SeededNoise::new(seed);
    let data =
        prompt_diffusion_core::noise::NoiseSource::sample(&mut noise, &[1, 4, 4, 4]).unwrap();
    Tensor::from_data(data, &device())
}

/// A few steps with a deterministic stand-in for the model.
fn run(s: &mut dyn Scheduler<B>, steps: usize, seed: u64) -> Vec<f32> {
    s.set_timesteps(steps).unwrap();
    let mut noise = SeededNoise::new(seed);
    let mut x = latents(1).mul_scalar(s.init_noise_sigma() as f32);
    for t in s.timesteps().to_vec() {
        let input = s.scale_model_input(x.clone(), t);
        let eps = input.mul_scalar(0.3).sin();
        x = s.step(eps, t, x, &mut noise).unwrap();
    }
    x.into_data().to_vec().unwrap()
}

#[test]
fn sd15_class_defaults_fill_missing_keys() {
    // diffusers: PNDM's own defaults (leading spacing) stay with PNDM …
    let mut pndm = SchedulerConfig::sd_v1_5()
        .build::<B>(None, &device())
        .unwrap();
    assert_eq!(pndm.kind(), SchedulerKind::Pndm);
    pndm.set_timesteps(10).unwrap();
    assert_eq!(&pndm.timesteps()[..3], &[901.0, 801.0, 801.0]);
    // … and a switched class uses its own (Euler: linspace), not PNDM's.
    let mut euler = SchedulerConfig::sd_v1_5()
        .build::<B>(Some(SchedulerKind::Euler), &device())
        .unwrap();
    euler.set_timesteps(10).unwrap();
    assert_eq!(euler.timesteps()[0], 999.0);
    assert_eq!(euler.timesteps()[9], 0.0);
    // DDIM: leading spacing, steps_offset 1 from the file.
    let mut ddim = SchedulerConfig::sd_v1_5()
        .build::<B>(Some(SchedulerKind::Ddim), &device())
        .unwrap();
    ddim.set_timesteps(10).unwrap();
    assert_eq!(ddim.timesteps()[0], 901.0);
    // Class defaults are diffusers' defaults, not SD1.5 values: linear betas, leading.
    let mut plain = build(r#"{"_class_name": "DDIMScheduler"}"#, None).unwrap();
    plain.set_timesteps(4).unwrap();
    assert_eq!(plain.timesteps(), &[750.0, 500.0, 250.0, 0.0]);
}

#[test]
fn karras_kind_forces_karras_sigmas() {
    let cfg = SchedulerConfig::sd_v1_5();
    let mut plain = cfg
        .build::<B>(Some(SchedulerKind::DpmSolverMultistep), &device())
        .unwrap();
    let mut karras = cfg
        .build::<B>(Some(SchedulerKind::DpmSolverMultistepKarras), &device())
        .unwrap();
    assert_eq!(plain.kind(), SchedulerKind::DpmSolverMultistep);
    assert_eq!(karras.kind(), SchedulerKind::DpmSolverMultistepKarras);
    plain.set_timesteps(10).unwrap();
    karras.set_timesteps(10).unwrap();
    assert_ne!(plain.timesteps(), karras.timesteps());
    let file = build(
        r#"{"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true}"#,
        None,
    )
    .unwrap();
    assert_eq!(file.kind(), SchedulerKind::DpmSolverMultistepKarras);
}

#[test]
fn step_counts_are_validated() {
    for kind in SchedulerKind::ALL {
        let mut s = SchedulerConfig::sd_v1_5()
            .build::<B>(Some(kind), &device())
            .unwrap();
        for bad in [0, 1001] {
            match s.set_timesteps(bad) {
                Err(Error::InvalidInput { .. }) => {}
                other => panic!("{kind} with {bad} steps: {:?}", other.map(|_| ())),
            }
        }
    }
    let mut prk = build(r#"{"_class_name": "PNDMScheduler"}"#, None).unwrap();
    assert!(matches!(
        prk.set_timesteps(3),
        Err(Error::InvalidInput { .. })
    ));
    prk.set_timesteps(4).unwrap();
    assert_eq!(prk.timesteps().len(), 13);
}

#[test]
fn unknown_and_unsupported_options_are_typed_errors() {
    let err = "dpm++3m".parse::<SchedulerKind>().unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    type IsExpected = fn(&Error) -> bool;
    let cases: &[(&str, IsExpected)] = &[
        (
            r#"{"_class_name": "DDPMScheduler", "variance_type": "learned"}"#,
            |e| matches!(e, Error::Unsupported(_)),
        ),
        (
            r#"{"_class_name": "DDIMScheduler", "thresholding": true}"#,
            |e| matches!(e, Error::Unsupported(_)),
        ),
        (
            r#"{"_class_name": "EulerDiscreteScheduler", "use_beta_sigmas": true}"#,
            |e| matches!(e, Error::Unsupported(_)),
        ),
        (
            r#"{"_class_name": "DDPMScheduler", "beta_schedule": "sigmoid"}"#,
            |e| matches!(e, Error::Unsupported(_)),
        ),
        (
            r#"{"_class_name": "PNDMScheduler", "prediction_type": "sample"}"#,
            |e| matches!(e, Error::Config { .. }),
        ),
        (
            r#"{"_class_name": "EulerAncestralDiscreteScheduler", "prediction_type": "sample"}"#,
            |e| matches!(e, Error::Config { .. }),
        ),
        (
            r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver"}"#,
            |e| matches!(e, Error::Config { .. }),
        ),
        (
            r#"{"_class_name": "UniPCMultistepScheduler", "predict_x0": false}"#,
            |e| matches!(e, Error::Config { .. }),
        ),
        (
            r#"{"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true,
                "use_exponential_sigmas": true}"#,
            |e| matches!(e, Error::Config { .. }),
        ),
        (
            r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 3,
                "trained_betas": [0.1, 0.2]}"#,
            |e| matches!(e, Error::Config { .. }),
        ),
        (r#"{"_class_name": "HeunDiscreteScheduler"}"#, |e| {
            matches!(e, Error::Unsupported(_))
        }),
        (r#"{"beta_start": 0.1}"#, |e| {
            matches!(e, Error::Config { .. })
        }),
    ];
    for (json, ok) in cases {
        match build(json, None) {
            Err(e) => assert!(ok(&e), "{json}: unexpected error {e}"),
            Ok(_) => panic!("{json}: built"),
        }
    }
    // A file that is not JSON, or a wrong type.
    assert!(matches!(
        SchedulerConfig::from_json("{"),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        SchedulerConfig::from_json(r#"{"solver_order": "two"}"#),
        Err(Error::Config { .. })
    ));
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let mut noise = ReplayNoise::default();
    for kind in SchedulerKind::ALL {
        let mut s = SchedulerConfig::sd_v1_5()
            .build::<B>(Some(kind), &device())
            .unwrap();
        s.set_timesteps(2).unwrap();
        let t = s.timesteps()[0];
        let x = latents(3);
        let wrong = Tensor::<B, 4>::zeros([1, 4, 2, 2], &device());
        assert!(s.step(wrong, t, x.clone(), &mut noise).is_err(), "{kind}");
        // Off-schedule timesteps are an error, except for DPM-Solver and UniPC, which (like
        // diffusers) fall back to the last step.
        let off = s.step(x.clone(), 12.5, x.clone(), &mut noise);
        let falls_back = matches!(
            kind,
            SchedulerKind::DpmSolverMultistep
                | SchedulerKind::DpmSolverMultistepKarras
                | SchedulerKind::UniPc
        );
        assert_eq!(off.is_err(), !falls_back, "{kind}");
    }
    // Extreme config values: errors or odd numbers, never a panic. An offset past the training
    // schedule is refused when the config is read, naming the key.
    let far = build(
        r#"{"_class_name": "DDIMScheduler", "steps_offset": 1000000000000000000}"#,
        None,
    );
    let err = far
        .err()
        .expect("steps_offset past the schedule is refused");
    assert!(err.to_string().contains("steps_offset"), "{err}");
    let x = latents(5);
    let mut high = build(
        r#"{"_class_name": "UniPCMultistepScheduler", "solver_order": 30,
            "lower_order_final": false, "final_sigmas_type": "sigma_min"}"#,
        None,
    )
    .unwrap();
    high.set_timesteps(25).unwrap();
    let mut y = x.clone();
    for t in high.timesteps().to_vec() {
        match high.step(y.clone().mul_scalar(0.1), t, y.clone(), &mut noise) {
            Ok(next) => y = next,
            Err(_) => break,
        }
    }
    assert!(
        build(
            r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 0}"#,
            None
        )
        .is_err()
    );
    assert!(
        build(
            r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 100000000000}"#,
            None
        )
        .is_err()
    );
    assert!(build(r#"{"_class_name": "DDIMScheduler", "beta_end": 1.5}"#, None).is_err());

    // Running past the end of the schedule.
    let mut s = SchedulerConfig::sd_v1_5()
        .build::<B>(Some(SchedulerKind::Euler), &device())
        .unwrap();
    s.set_timesteps(1).unwrap();
    let x = latents(4);
    let t = s.timesteps()[0];
    s.step(x.clone(), t, x.clone(), &mut noise).unwrap();
    assert!(matches!(
        s.step(x.clone(), t, x.clone(), &mut noise),
        Err(Error::InvalidInput { .. })
    ));
    // Stepping before set_timesteps.
    let mut d = SchedulerConfig::sd_v1_5()
        .build::<B>(Some(SchedulerKind::DpmSolverMultistep), &device())
        .unwrap();
    assert!(d.step(x.clone(), 999.0, x.clone(), &mut noise).is_err());
    // A stochastic step without noise left.
    let mut a = SchedulerConfig::sd_v1_5()
        .build::<B>(Some(SchedulerKind::EulerAncestral), &device())
        .unwrap();
    a.set_timesteps(2).unwrap();
    let t = a.timesteps()[0];
    assert!(a.step(x.clone(), t, x, &mut noise).is_err());
}

/// Six steps of a fresh SD1.5-configured `kind` with noise seed `seed`.
fn sd15_run(kind: SchedulerKind, seed: u64) -> Vec<f32> {
    let mut s = SchedulerConfig::sd_v1_5()
        .build::<B>(Some(kind), &device())
        .unwrap();
    run(s.as_mut(), 6, seed)
}

#[test]
fn same_seed_same_output() {
    for kind in SchedulerKind::ALL {
        let cfg = SchedulerConfig::sd_v1_5();
        let a = sd15_run(kind, 7);
        let b = sd15_run(kind, 7);
        assert_eq!(a, b, "{kind}");
        assert!(a.iter().all(|v| v.is_finite()), "{kind}");
        // Reusing a scheduler after set_timesteps gives the same result again.
        let mut s = cfg.build::<B>(Some(kind), &device()).unwrap();
        let first = run(s.as_mut(), 6, 7);
        assert_eq!(first, run(s.as_mut(), 6, 7), "{kind}");
    }
    // Stochastic schedulers depend on the seed.
    for kind in [SchedulerKind::EulerAncestral, SchedulerKind::Ddpm] {
        let a = sd15_run(kind, 7);
        let c = sd15_run(kind, 8);
        assert_ne!(a, c, "{kind}");
    }
    let mut ddim = SchedulerConfig::sd_v1_5()
        .build::<B>(Some(SchedulerKind::Ddim), &device())
        .unwrap();
    ddim.set_eta(1.0);
    let a = run(ddim.as_mut(), 6, 7);
    assert_ne!(a, run(ddim.as_mut(), 6, 8));
}

#[test]
fn config_files_are_read() {
    let dir = std::env::temp_dir().join(format!("pd-schedulers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scheduler_config.json");
    std::fs::write(
        &path,
        r#"{"_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.21.0",
            "lambda_min_clipped": -Infinity, "solver_p": null, "beta_schedule": "scaled_linear"}"#,
    )
    .unwrap();
    let cfg = SchedulerConfig::from_file(&path).unwrap();
    assert_eq!(cfg.kind().unwrap(), SchedulerKind::DpmSolverMultistep);
    assert_eq!(cfg.lambda_min_clipped, Some(f64::NEG_INFINITY));
    std::fs::write(&path, r#"{"beta_schedule": 3}"#).unwrap();
    match SchedulerConfig::from_file(&path) {
        Err(Error::Config { origin, field, .. }) => {
            assert_eq!(origin.as_deref(), Some(path.as_path()));
            assert_eq!(field, "beta_schedule");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        SchedulerConfig::from_file(dir.join("missing.json")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}
