//! Reading latents files, checking and writing outputs, and the progress display.

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use burn::tensor::TensorData;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use prompt_diffusion::backends::{BackendKind, kernel_cache_dir, warm_up_message};
use prompt_diffusion::core::Precision;
use prompt_diffusion::core::files::{check_output_path, write_bytes_atomic};
use prompt_diffusion::core::progress::{StepCallback, StepInfo};
use prompt_diffusion::core::weights::TensorSource;
use prompt_diffusion::metadata::save_png_with_parameters;

use crate::metadata::Record;

/// The tensor `key` of a safetensors file.
pub fn read_tensor(path: &Path, key: &str) -> anyhow::Result<TensorData> {
    let source = TensorSource::open(path)?;
    if !source.contains(key) {
        bail!("{}: no tensor named `{key}`", path.display());
    }
    Ok(source.data(key)?)
}

/// The tensor `latents` of a safetensors file, rank 4.
pub fn read_latents(path: &Path) -> anyhow::Result<TensorData> {
    let data = read_tensor(path, "latents")?;
    if data.shape.len() != 4 {
        bail!(
            "{}: tensor `latents` has shape {:?}, expected [n, 4, height/8, width/8]",
            path.display(),
            data.shape
        );
    }
    Ok(data)
}

/// The file names of `count` images: `output` itself for one, `stem_i.ext` for several.
pub fn output_paths(output: &Path, count: usize) -> Vec<PathBuf> {
    if count == 1 {
        return vec![output.to_path_buf()];
    }
    let stem = output
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("output");
    let ext = output.extension().and_then(|s| s.to_str()).unwrap_or("png");
    (0..count)
        .map(|i| output.with_file_name(format!("{stem}_{i}.{ext}")))
        .collect()
}

/// Checks, before any work is done, that the `count` output files of `output` can be written:
/// the extension is `ext` and each path is a file name in an existing folder that accepts new
/// files (see [`check_output_path`]).
pub fn check_output(output: &Path, ext: &str, count: usize) -> anyhow::Result<()> {
    let found = output.extension().and_then(|e| e.to_str());
    if !found.is_some_and(|e| e.eq_ignore_ascii_case(ext)) {
        bail!("output {}: must be a .{ext} file", output.display());
    }
    for path in output_paths(output, count) {
        check_output_path(&path)?;
    }
    Ok(())
}

/// Saves images as PNG, each written whole or not at all with its parameters from `record`
/// (image `i` its own seed), printing each path.
pub fn save_images(images: &[RgbImage], output: &Path, record: &Record) -> anyhow::Result<()> {
    let count = images.len();
    for (i, (image, path)) in images.iter().zip(output_paths(output, count)).enumerate() {
        let parameters = record.image(i, count);
        save_png_with_parameters(image, &path, parameters.as_ref())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Prints the texts, one a line, and writes each to its own file of `output` when given.
#[cfg_attr(not(feature = "versatile"), allow(dead_code))]
pub fn save_texts(texts: &[String], output: Option<&PathBuf>) -> anyhow::Result<()> {
    for text in texts {
        println!("{}", text.replace('\n', " "));
    }
    let Some(output) = output else {
        return Ok(());
    };
    for (text, path) in texts.iter().zip(output_paths(output, texts.len())) {
        write_bytes_atomic(&path, format!("{text}\n").as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Prints what was loaded, on which device, in which precision and how long it took.
pub fn report_loaded(what: &str, device: &str, precision: Precision, start: Instant) {
    println!(
        "loaded {what} on {device} ({precision}) in {:.2} s",
        start.elapsed().as_secs_f64()
    );
}

/// Set once a GPU backend was announced: the first step then compiles and tunes kernels.
static KERNEL_WARM_UP: AtomicBool = AtomicBool::new(false);

/// Prints that the first step on `backend` compiles and autotunes kernels, and where the
/// results are kept; the progress display then shows the warm-up while it lasts.
pub fn announce_kernel_warm_up(backend: BackendKind) {
    KERNEL_WARM_UP.store(true, Ordering::Relaxed);
    println!(
        "{}",
        warm_up_message(backend.name(), kernel_cache_dir().as_deref())
    );
}

/// An indicatif bar over the denoising steps (hidden when stdout is not a terminal) that
/// records the time per step.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    steps: usize,
    busy: Duration,
    first: Duration,
    start: Instant,
}

impl Progress {
    /// A bar labelled `label`. On a GPU backend a spinner shows the kernel warm-up until the
    /// first step is done.
    pub fn new(label: &str) -> Self {
        let warm_up = KERNEL_WARM_UP.load(Ordering::Relaxed) && std::io::stdout().is_terminal();
        Self {
            bar: warm_up.then(|| {
                let spinner = ProgressBar::new_spinner();
                spinner.set_message(format!(
                    "{label}: warming up kernels (compiling and autotuning on first use)"
                ));
                spinner.enable_steady_tick(Duration::from_millis(120));
                spinner
            }),
            label: label.to_string(),
            steps: 0,
            busy: Duration::ZERO,
            first: Duration::ZERO,
            start: Instant::now(),
        }
    }

    /// Prints the step count and times.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.steps > 0 {
            let per_step = self.busy.as_secs_f64() / self.steps as f64;
            println!(
                "{}: {} steps in {:.2} s ({:.3} s/step), {:.2} s in all",
                self.label,
                self.steps,
                self.busy.as_secs_f64(),
                per_step,
                self.start.elapsed().as_secs_f64()
            );
        }
        // The first step on a GPU backend compiles and autotunes kernels (kept in the kernel
        // cache for later runs); say so when it dominates.
        if self.steps > 2 {
            let rest = (self.busy - self.first).as_secs_f64() / (self.steps - 1) as f64;
            if self.first.as_secs_f64() > 3.0 * rest + 0.5 {
                println!(
                    "{}: the first step took {:.2} s (kernel warm-up), the others {rest:.3} s each",
                    self.label,
                    self.first.as_secs_f64()
                );
            }
        }
    }
}

impl Progress {
    /// The bar over `total` steps, replacing the warm-up spinner (hidden when stdout is not a
    /// terminal).
    fn step_bar(&self, total: usize) -> ProgressBar {
        if let Some(spinner) = &self.bar {
            spinner.finish_and_clear();
        }
        if !std::io::stdout().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {per_sec}, eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(self.label.clone());
        bar
    }
}

impl StepCallback for Progress {
    fn on_step(&mut self, info: &StepInfo) -> ControlFlow<()> {
        if self.steps == 0 {
            self.first = info.elapsed;
            self.bar = Some(self.step_bar(info.total));
        }
        if let Some(bar) = &self.bar {
            bar.set_position(info.step as u64);
        }
        self.steps += 1;
        self.busy += info.elapsed;
        ControlFlow::Continue(())
    }
}
