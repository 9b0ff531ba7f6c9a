//! The chain of `examples/compose.rs` (Diff-Plugin → Prompt Diffusion → Versatile Diffusion)
//! on the tiny fixtures: each stage's size, determinism for a seed, and that every stage
//! changes its input. The example file itself is compiled in, so this runs its code.

#[allow(dead_code)]
#[path = "../examples/compose.rs"]
mod example;

use example::{Chain, Models, Stages, Systems, load, run_chain};
use image::RgbImage;
use prompt_diffusion::core::image::{load_rgb, resize};
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::pipelines::diff_plugin::WorkingSize;
use prompt_diffusion::pipelines::in_context_size;

use crate::common::{B, DEVICE};

const INPUT: &str = "fixtures/diff_plugin/input.png";

fn systems() -> Systems<B> {
    load(&Models::tiny(), &DEVICE).unwrap()
}

fn run(systems: &Systems<B>, seed: u64) -> (RgbImage, Stages) {
    let degraded = load_rgb(INPUT).unwrap();
    let chain = Chain::fixtures(true, seed).unwrap();
    let stages = run_chain(systems, &degraded, &chain, &mut NoProgress).unwrap();
    (degraded, stages)
}

#[test]
fn each_stage_has_its_size_and_changes_its_input() {
    let systems = systems();
    let (degraded, stages) = run(&systems, 42);

    // Stage 1 restores at the image's own size (104×72, already multiples of 8).
    let (w, h) = degraded.dimensions();
    let restored = WorkingSize::Native.apply(w as usize, h as usize, 8);
    assert_eq!(restored, (104, 72));
    let size = |image: &RgbImage| (image.width() as usize, image.height() as usize);
    assert_eq!(size(&stages.restored), restored);
    // Stage 2: the query's short side to 128, sides rounded to multiples of 64: 184.9 → 192.
    let in_context = in_context_size(104, 72, 128).unwrap();
    assert_eq!(in_context, (192, 128));
    assert_eq!(size(&stages.in_context), in_context);
    // Stage 3 keeps stage 2's size.
    assert_eq!(size(&stages.variation), in_context);

    assert_ne!(stages.restored, degraded);
    let (w, h) = stages.in_context.dimensions();
    assert_ne!(stages.in_context, resize(&stages.restored, w, h));
    assert_ne!(stages.variation, stages.in_context);
}

#[test]
fn same_seed_same_bytes_other_seed_other_images() {
    let systems = systems();
    let (_, a) = run(&systems, 7);
    let (_, b) = run(&systems, 7);
    assert_eq!(a.restored.as_raw(), b.restored.as_raw());
    assert_eq!(a.in_context.as_raw(), b.in_context.as_raw());
    assert_eq!(a.variation.as_raw(), b.variation.as_raw());

    let (_, c) = run(&systems, 8);
    assert_ne!(a.restored.as_raw(), c.restored.as_raw());
    assert_ne!(a.variation.as_raw(), c.variation.as_raw());
}
