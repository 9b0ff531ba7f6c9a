//! The model `txt2img`, `img2img` and `inpaint` use without `--model` or `--checkpoint`: the
//! scenes model trained by this library (`docs/training.md`), a diffusers folder found on disk.

use std::path::{Path, PathBuf};

use crate::args::ModelArgs;

/// The environment variable naming the default model's folder.
pub const DEFAULT_MODEL_ENV: &str = "PROMPT_DIFFUSION_DEFAULT_MODEL";

/// The default model's folder inside the repository and next to an installed binary.
const FOLDER: &str = "models/scenes";

/// The folders searched for the default model, in order: `$PROMPT_DIFFUSION_DEFAULT_MODEL`;
/// `models/scenes` beside the executable, and two levels up (the repository of a binary in
/// `target/<profile>/`); the repository this binary was built from.
pub fn candidates() -> Vec<PathBuf> {
    let mut folders = Vec::new();
    if let Some(dir) = std::env::var_os(DEFAULT_MODEL_ENV) {
        folders.push(PathBuf::from(dir));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        folders.push(exe_dir.join(FOLDER));
        if let Some(repo) = exe_dir.parent().and_then(Path::parent) {
            folders.push(repo.join(FOLDER));
        }
    }
    folders.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(FOLDER));
    folders
}

/// The first candidate folder holding a `model_index.json`.
pub fn find() -> Option<PathBuf> {
    candidates()
        .into_iter()
        .find(|dir| dir.join("model_index.json").is_file())
}

impl ModelArgs {
    /// These arguments, with the default model as `--model` when neither `--model` nor
    /// `--checkpoint` was given (printing which folder was taken).
    ///
    /// # Errors
    /// When neither was given and no default model is found.
    pub fn or_default_model(&self) -> anyhow::Result<Self> {
        if self.model.is_some() || self.checkpoint.is_some() {
            return Ok(self.clone());
        }
        let Some(dir) = find() else {
            let searched: Vec<String> = candidates()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            anyhow::bail!(
                "give --model DIR|ORG/NAME or --checkpoint FILE (no default model in {})",
                searched.join(", ")
            );
        };
        eprintln!("model: the default scenes model, {}", dir.display());
        Ok(Self {
            model: Some(dir),
            ..self.clone()
        })
    }
}
