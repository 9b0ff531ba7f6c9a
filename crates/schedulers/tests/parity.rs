//! Step parity with diffusers 0.42.1.
//!
//! Replays every case of `fixtures/schedulers/` (written by `tools/fixtures/gen_schedulers.py`):
//! the same config, step count and model outputs, the noise diffusers drew inside `step`
//! replayed through [`ReplayNoise`]. The loop runs free (each step takes this crate's previous
//! sample), and every step's sample, every `scale_model_input` output and every `add_noise`
//! output must be within `1e-5 · max(1, max|reference|)` (max-abs).
//!
//! Integer timesteps must be equal. Fractional ones (Karras/exponential sigmas mapped back to
//! timesteps, Euler's continuous timesteps) and `init_noise_sigma` pass through `sqrt`/`log` of
//! the sigma table, which PyTorch computes with MKL's vector math (within one ulp, not always
//! correctly rounded); they must agree to `1e-6` relative. The loop starts from the latents
//! scaled by diffusers' `init_noise_sigma`, as the reference did.

use crate::common::{B, Fixtures, compare};
use burn::prelude::*;
use prompt_diffusion_core::noise::ReplayNoise;
use prompt_diffusion_schedulers::{SchedulerConfig, SchedulerKind};

const REL_TOL: f32 = 1e-5;

/// Cases whose reference is ill-conditioned in float32, with their tolerance.
///
/// Zero-terminal-SNR Euler(-ancestral) starts at σ_max = √(2²⁴ − 1): correctly rounded that is
/// 4095.9998, PyTorch's MKL `sqrt` returns 4096. The first step cancels samples of magnitude
/// ~10⁴ down to ~10, amplifying that one-ulp difference about 300-fold; every later step then
/// carries the 2e-5 relative offset. (DDIM, DPM-Solver and UniPC with the same schedule pass
/// at the default tolerance.)
const ILL_CONDITIONED: &[(&str, f32)] = &[("euler_zero_snr", 1e-4), ("euler_a_zero_snr", 1e-4)];

/// diffusers' timesteps for a case.
fn expected_timesteps(case: &serde_json::Value) -> Vec<f64> {
    case["timesteps"]
        .as_array()
        .expect("timesteps")
        .iter()
        .map(|v| v.as_f64().expect("f64"))
        .collect()
}

struct Report {
    failures: Vec<String>,
    worst: (f32, String),
    checks: usize,
    tol: f32,
}

impl Report {
    fn check(&mut self, what: String, actual: &Tensor<B, 4>, expected: &Tensor<B, 4>) {
        let (diff, scale) = compare(actual, expected);
        self.checks += 1;
        let rel = diff / scale;
        if self.tol == REL_TOL && (rel > self.worst.0 || rel.is_nan()) {
            self.worst = (rel, what.clone());
        }
        if diff.is_nan() || diff > self.tol * scale {
            self.failures.push(format!(
                "{what}: max abs diff {diff:e} > {:e}·{scale}",
                self.tol
            ));
        }
    }
}

#[test]
fn schedulers_match_diffusers_step_by_step() {
    let fx = Fixtures::load();
    let device = Default::default();
    let cases = fx.index["cases"].as_array().expect("cases");
    let mut report = Report {
        failures: Vec::new(),
        worst: (0.0, String::new()),
        checks: 0,
        tol: REL_TOL,
    };
    let original = fx.tensor4(fx.data("pool.original"));
    let noise0 = fx.tensor4(fx.data("pool.noise"));
    let latents = fx.tensor4(fx.data("pool.latents"));
    for case in cases {
        let name = case["name"].as_str().expect("name");
        report.tol = ILL_CONDITIONED
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(REL_TOL, |(_, tol)| *tol);
        let config = SchedulerConfig::from_json(&case["config"].to_string())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let kind = case["kind"]
            .as_str()
            .map(|k| k.parse::<SchedulerKind>().expect("kind"));
        let mut s = config
            .build::<B>(kind, &device)
            .unwrap_or_else(|e| panic!("{name}: build failed: {e}"));
        let steps = case["steps"].as_u64().expect("steps") as usize;
        s.set_timesteps(steps)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        s.set_eta(case["eta"].as_f64().unwrap_or(0.0));

        let expected_ts = expected_timesteps(case);
        let ts_ok = s.timesteps().len() == expected_ts.len()
            && s.timesteps().iter().zip(&expected_ts).all(|(a, e)| {
                if e.fract() == 0.0 {
                    a == e
                } else {
                    (a - e).abs() <= 1e-6 * e.abs().max(1.0)
                }
            });
        if !ts_ok {
            report.failures.push(format!(
                "{name}: timesteps {:?} != diffusers {:?}",
                s.timesteps(),
                expected_ts
            ));
            continue;
        }
        let sigma = case["init_noise_sigma"].as_f64().expect("init_noise_sigma");
        if (s.init_noise_sigma() - sigma).abs() > 1e-6 * sigma.abs() {
            report.failures.push(format!(
                "{name}: init_noise_sigma {} != diffusers {sigma}",
                s.init_noise_sigma()
            ));
        }

        if let Some(picks) = case["add_noise_indices"].as_array() {
            for (j, pick) in picks.iter().enumerate() {
                let t = s.timesteps()[pick.as_u64().expect("index") as usize];
                let out = s.add_noise(original.clone(), noise0.clone(), t);
                let expected = fx.tensor4(fx.item(&format!("{name}.add_noise"), j));
                report.check(format!("{name}: add_noise at t={t}"), &out, &expected);
            }
        }

        let (mut sample, start) = match case["begin_index"].as_u64() {
            Some(begin) => {
                let begin = begin as usize;
                s.set_begin_index(begin);
                let t = s.timesteps()[begin];
                let start = s.add_noise(original.clone(), noise0.clone(), t);
                let expected = fx.tensor4(fx.data(&format!("{name}.start")));
                report.check(format!("{name}: img2img add_noise"), &start, &expected);
                (start, begin)
            }
            None => (latents.clone().mul_scalar(sigma as f32), 0),
        };

        let noise_name = format!("{name}.noise");
        let drawn = if fx.has(&noise_name) {
            (0..fx.count(&noise_name))
                .map(|i| fx.item(&noise_name, i))
                .collect()
        } else {
            Vec::new()
        };
        let draws = drawn.len();
        assert_eq!(
            draws as u64,
            case["noise_draws"].as_u64().expect("noise_draws"),
            "{name}"
        );
        let mut replay = ReplayNoise::new(drawn);
        let reference = case["reference"].as_str().unwrap_or(name).to_string();
        let scaled_ref = case["scaled"].as_bool().unwrap_or(false);
        let timesteps = s.timesteps().to_vec();
        for (i, &t) in timesteps[start..].iter().enumerate() {
            let input = s.scale_model_input(sample.clone(), t);
            if scaled_ref {
                let expected = fx.tensor4(fx.item(&format!("{name}.scaled"), i));
                report.check(
                    format!("{name}: scale_model_input {i} (t={t})"),
                    &input,
                    &expected,
                );
            } else {
                let (diff, _) = compare(&input, &sample);
                if diff != 0.0 {
                    report
                        .failures
                        .push(format!("{name}: scale_model_input {i} is not the identity"));
                }
            }
            let model_output = fx.tensor4(fx.item("pool.model_outputs", i));
            sample = match s.step(model_output, t, sample, &mut replay) {
                Ok(next) => next,
                Err(e) => {
                    report
                        .failures
                        .push(format!("{name}: step {i} (t={t}): {e}"));
                    break;
                }
            };
            let expected = fx.tensor4(fx.item(&format!("{reference}.samples"), i));
            report.check(format!("{name}: step {i} (t={t})"), &sample, &expected);
        }
        if replay.remaining() != 0 {
            report.failures.push(format!(
                "{name}: {} of {draws} reference noise tensors unused",
                replay.remaining()
            ));
        }
    }
    println!(
        "{} cases, {} tensor comparisons; worst relative difference at the default tolerance \
         {:e} ({})",
        cases.len(),
        report.checks,
        report.worst.0,
        report.worst.1
    );
    assert!(
        report.failures.is_empty(),
        "{} failures:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
}

/// `X.from_config(pndm.config)` for every kind: the timesteps diffusers gets from SD1.5's file.
#[test]
fn sd15_config_switches_like_from_config() {
    let fx = Fixtures::load();
    let device = Default::default();
    for case in fx.index["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        if !name.starts_with("sd15_") {
            continue;
        }
        let kind: SchedulerKind = case["kind"].as_str().expect("kind").parse().expect("kind");
        let mut s = SchedulerConfig::sd_v1_5()
            .build::<B>(Some(kind), &device)
            .expect("build");
        assert_eq!(s.kind(), kind, "{name}");
        s.set_timesteps(case["steps"].as_u64().expect("steps") as usize)
            .expect("set_timesteps");
        let expected = expected_timesteps(case);
        assert_eq!(s.timesteps().len(), expected.len(), "{name}");
        for (a, e) in s.timesteps().iter().zip(&expected) {
            assert!(
                (a - e).abs() <= 1e-6 * e.abs().max(1.0),
                "{name}: {a} != {e}"
            );
        }
    }
}
