//! Warm starts on a GPU backend: a first run fills the kernel cache folder given by
//! `--cache-dir`, and a second run of the same command reuses it without tuning again
//! (cubecl appends every new autotune result to its files, so they must not grow), and writes
//! the same image, which the CPU backend reproduces within 2/255 (the whole pipeline, fused
//! attention included, on the GPU code path). Runs on any Vulkan device, Mesa's lavapipe
//! included:
//! `cargo test --features wgpu --test integration cli_wgpu`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::assert_images_close;

/// Every file under `dir` with its size.
fn file_sizes(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut sizes = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                sizes.insert(path.clone(), entry.metadata().unwrap().len());
            }
        }
    }
    sizes
}

/// Runs txt2img on `backend` with `cache` as the kernel cache, returning stdout.
fn txt2img(backend: &str, cache: &Path, output: &Path) -> String {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-sd");
    let out = Command::new(env!("CARGO_BIN_EXE_prompt-diffusion"))
        .args(["--cache-dir", &cache.display().to_string()])
        .args(["txt2img", "--model", model, "--prompt", "a fox"])
        .args(["--backend", backend, "--steps", "2", "--seed", "7"])
        .args(["--width", "64", "--height", "64"])
        .args(["--output", &output.display().to_string()])
        .env("RUST_LOG", "error")
        .env_remove("PROMPT_DIFFUSION_CACHE_DIR")
        .output()
        .expect("the program starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "txt2img on {backend} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn second_run_reuses_the_kernel_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kernels");
    let (first_png, second_png) = (dir.path().join("a.png"), dir.path().join("b.png"));

    let first = txt2img("wgpu", &cache, &first_png);
    assert!(first.contains("first step compiles"), "{first}");
    let tuned = file_sizes(&cache.join("autotune"));
    assert!(
        !tuned.is_empty(),
        "no autotune results under {}",
        cache.display()
    );

    let second = txt2img("wgpu", &cache, &second_png);
    assert!(second.contains("reusing the kernels"), "{second}");
    assert_eq!(
        file_sizes(&cache.join("autotune")),
        tuned,
        "the second run tuned again"
    );
    assert_eq!(
        std::fs::read(&first_png).unwrap(),
        std::fs::read(&second_png).unwrap(),
        "the same command wrote a different image"
    );

    let cpu_png = dir.path().join("cpu.png");
    txt2img("flex", &cache, &cpu_png);
    let image = |path: &Path| image::open(path).unwrap().to_rgb8();
    assert_images_close(
        "wgpu against flex",
        &[image(&first_png)],
        &[image(&cpu_png)],
    );
}
