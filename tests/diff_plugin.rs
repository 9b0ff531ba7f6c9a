//! The Diff-Plugin restore pipeline against the reference loop (`tools/fixtures/gen_diff_plugin.py`:
//! the official `infer.py`/`demo.py` with diffusers 0.17 semantics) on the tiny model: with the
//! reference's noise, every pixel is within 2/255.

use std::ops::ControlFlow;

use burn::prelude::*;
use image::RgbImage;
use prompt_diffusion::core::Error;
use prompt_diffusion::core::image::load_rgb;
use prompt_diffusion::core::noise::ReplayNoise;
use prompt_diffusion::core::progress::{NoProgress, StepInfo};
use prompt_diffusion::core::testing::assert_close;
use prompt_diffusion::core::weights::TensorSource;
use prompt_diffusion::diff_plugin::Task;
use prompt_diffusion::pipelines::diff_plugin::{DiffPlugin, Restore, WorkingSize};

use crate::common::{B, DEVICE, assert_images_close, fixtures, tiny_sd};

fn pipeline() -> DiffPlugin<B> {
    let sd = tiny_sd();
    let dir = fixtures().join("diff_plugin");
    DiffPlugin::new(sd, dir.join("clip-vision"), dir.join("pre-trained")).unwrap()
}

fn reference() -> TensorSource {
    TensorSource::open(fixtures().join("diff_plugin/reference.safetensors")).unwrap()
}

fn input() -> RgbImage {
    load_rgb(fixtures().join("diff_plugin/input.png")).unwrap()
}

fn expected(io: &TensorSource, key: &str) -> RgbImage {
    let data = io.data(key).unwrap();
    let [h, w, 3] = data.shape[..] else {
        panic!("{key}: not [h, w, 3]")
    };
    RgbImage::from_raw(w as u32, h as u32, data.to_vec().unwrap()).unwrap()
}

/// One image against the reference's, within 2/255.
fn assert_image_close(what: &str, actual: &RgbImage, expected: &RgbImage) {
    assert_images_close(
        what,
        std::slice::from_ref(actual),
        std::slice::from_ref(expected),
    );
}

fn noise(io: &TensorSource, n: usize) -> ReplayNoise {
    ReplayNoise::new(vec![io.data("noise").unwrap(); n])
}

#[test]
fn single_task_restores_match_the_reference() {
    let pipe = pipeline();
    let io = reference();
    let image = input();
    let tokens = pipe.clip_tokens(&image).unwrap();
    let expected_tokens: Tensor<B, 3> = io.tensor("clip.last_hidden_state", &DEVICE, None).unwrap();
    assert_close("CLIP tokens of input.png", tokens, expected_tokens, 1e-4);
    for task in [Task::Derain, Task::Lowlight] {
        let request = Restore::task(task).with_size(WorkingSize::Native);
        let mut steps = 0;
        let mut count = |_: &StepInfo| {
            steps += 1;
            ControlFlow::Continue(())
        };
        let out = pipe
            .restore_with_noise(&image, &request, &mut noise(&io, 1), &mut count)
            .unwrap();
        assert_eq!(steps, 20);
        assert_eq!(out.tasks, [task]);
        assert_image_close(
            &format!("{task}"),
            &out.image,
            &expected(&io, &format!("restore.{task}")),
        );
    }
}

#[test]
fn instruction_chain_matches_the_reference() {
    let pipe = pipeline();
    let io = reference();
    // The instruction and the selector's choice recorded in reference.json.
    let json = std::fs::read_to_string(fixtures().join("diff_plugin/reference.json")).unwrap();
    let text = "I want to clear the gleaming highlights";
    assert!(
        json.contains(&format!("\"chain_instruction\": \"{text}\"")),
        "fixture changed"
    );
    let expected_tasks = [Task::Derain, Task::Desnow, Task::Highlight, Task::Face];
    let request = Restore::instruction(text).with_size(WorkingSize::Native);
    let n = expected_tasks.len();
    let out = pipe
        .restore_with_noise(&input(), &request, &mut noise(&io, n), &mut NoProgress)
        .unwrap();
    assert_eq!(out.tasks, expected_tasks);
    assert!(out.selection.is_some());
    assert_image_close("chain", &out.image, &expected(&io, "restore.chain"));
}

#[test]
fn errors_name_the_problem() {
    let pipe = pipeline();
    let image = input();
    let err = "desmoke".parse::<Task>().unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }));
    let err = pipe
        .restore(
            &image,
            &Restore::task(Task::Derain).with_steps(0),
            &mut NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    // Cancelling stops after the first step.
    let err = pipe
        .restore(
            &image,
            &Restore::task(Task::Face)
                .with_size(WorkingSize::Native)
                .with_steps(2),
            &mut |_: &StepInfo| ControlFlow::Break(()),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled { step: 0 }), "{err}");
    // A plugins folder without the task's files names the missing file.
    let empty = tempfile::tempdir().unwrap();
    let sd = tiny_sd();
    let pipe =
        DiffPlugin::<B>::new(sd, fixtures().join("diff_plugin/clip-vision"), empty.path()).unwrap();
    let err = pipe
        .restore(&image, &Restore::task(Task::Dehaze), &mut NoProgress)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("dehaze")),
        "{err}"
    );
    let err = pipe.select(&image, "remove haze").unwrap_err();
    assert!(err.to_string().contains("PromptTunner.pt"), "{err}");
}
