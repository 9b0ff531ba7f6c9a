//! Builds and runs `examples/downstream-app/`, an application outside the workspace that depends
//! on the library with `default-features = false` and one backend, and checks that it draws
//! the same picture as the library does in this process (same seed, same backend).
//!
//! ```text
//! cargo run --example downstream
//! ```
//!
//! Its build shares this workspace's target folder, but its smaller feature set compiles burn
//! and the workspace crates once more (minutes), which is why it is an example and not a test.

use std::path::{Path, PathBuf};
use std::process::Command;

use prompt_diffusion::backends::{Flex, FlexDevice};
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("fixtures");
    let app = root.join("examples/downstream-app");
    // The workspace's resolved versions, so that the shared target folder's builds are reused.
    std::fs::copy(root.join("Cargo.lock"), app.join("Cargo.lock"))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["run", "--offline", "--quiet", "--manifest-path"])
        .arg(app.join("Cargo.toml"))
        .arg("--")
        .arg(fixtures.join("tiny-sd"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "the downstream application failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same run in this process: same seed, same backend, same picture.
    let device = FlexDevice;
    let sd = StableDiffusion::<Flex>::from_pretrained(
        fixtures.join("tiny-sd"),
        &ModelOptions::default(),
        &device,
    )?;
    let generation = Generation::new("a red circle on a blue background")
        .with_steps(2)
        .with_seed(3);
    let image = sd.text_to_image(&generation, &mut NoProgress)?.remove(0);
    let sum: u64 = image.as_raw().iter().map(|&v| u64::from(v)).sum();
    let expected = format!("{}x{} sum {sum}", image.width(), image.height());
    anyhow::ensure!(
        stdout.trim() == expected,
        "the downstream application printed {:?}, the library here {expected:?}",
        stdout.trim()
    );
    println!("the downstream application drew the library's picture: {expected}");
    Ok(())
}
