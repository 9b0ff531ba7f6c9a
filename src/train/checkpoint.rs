//! Training checkpoints: `checkpoint-<step>/` folders holding burn records of the models and
//! the optimiser (parameter ids included, so the optimiser's moments find their parameters
//! again), the components' configs and the training state.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::model::TrainConfig;
use crate::core::{Error, Result};

/// What a checkpoint's `state.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The stage (`vae` or `text-to-image`).
    pub stage: String,
    /// Steps taken.
    pub step: usize,
    /// The settings of the run.
    pub train: TrainConfig,
}

impl TrainState {
    /// The state itself when it was written by `stage`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `source` (the file or folder the state was read from) when
    /// another stage wrote it.
    pub fn expect_stage(self, stage: &str, source: &Path) -> Result<Self> {
        if self.stage == stage {
            Ok(self)
        } else {
            Err(Error::invalid_input(
                source.display().to_string(),
                format!("a `{}` state, `{stage}` expected", self.stage),
            ))
        }
    }
}

/// A resumable training stage ([`VaeTrainer`](super::VaeTrainer),
/// [`TextToImageTrainer`](super::TextToImageTrainer)): what a training loop drives.
pub trait TrainingStage {
    /// One optimisation step, returning the loss before the update.
    ///
    /// # Errors
    /// A failed step (rendering, tokenisation, shapes).
    fn step(&mut self) -> Result<f32>;

    /// Steps taken.
    fn steps(&self) -> usize;

    /// Writes `dir/checkpoint-<steps>/`.
    ///
    /// # Errors
    /// Unwritable files.
    fn save(&self, dir: &Path) -> Result<Checkpoint>;
}

/// A checkpoint folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    dir: PathBuf,
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

fn record_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(path, format!("burn record: {e}"))
}

impl Checkpoint {
    /// Creates `root/checkpoint-<step>/`.
    ///
    /// # Errors
    /// [`Error::Io`] when the folder cannot be made.
    pub fn create(root: &Path, step: usize) -> Result<Self> {
        let dir = root.join(format!("checkpoint-{step}"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self { dir })
    }

    /// Opens an existing checkpoint folder.
    ///
    /// # Errors
    /// [`Error::Io`] when `dir` has no `state.json`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let state = dir.join("state.json");
        if !state.is_file() {
            let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "not a checkpoint");
            return Err(Error::io(state, missing));
        }
        Ok(Self { dir })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `module` as `<name>.mpk`.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file when it cannot be written.
    pub fn save_module<B: Backend, M: Module<B>>(&self, module: &M, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        module
            .clone()
            .save_file(&path, &recorder())
            .map_err(|e| record_error(&path, e))
    }

    /// Fills `module` (built from the saved config) from `<name>.mpk`.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file when it is missing or does not fit `module`.
    pub fn load_module<B: Backend, M: Module<B>>(
        &self,
        module: M,
        name: &str,
        device: &B::Device,
    ) -> Result<M> {
        let path = self.dir.join(name);
        module
            .load_file(&path, &recorder(), device)
            .map_err(|e| record_error(&path, e))
    }

    /// Writes the optimiser's state as `optimizer.mpk`.
    ///
    /// # Errors
    /// [`Error::Format`] when it cannot be written.
    pub fn save_optimizer<O, M, B>(&self, optimizer: &OptimizerAdaptor<O, M, B>) -> Result<()>
    where
        B: AutodiffBackend,
        M: burn::module::AutodiffModule<B>,
        O: burn::optim::SimpleOptimizer<B::InnerBackend>,
    {
        let path = self.dir.join("optimizer");
        Recorder::<B>::record(&recorder(), optimizer.to_record(), path.clone())
            .map_err(|e| record_error(&path, e))
    }

    /// Restores an optimiser's state from `optimizer.mpk`.
    ///
    /// # Errors
    /// [`Error::Format`] when the file is missing or unreadable.
    pub fn load_optimizer<O, M, B>(
        &self,
        optimizer: OptimizerAdaptor<O, M, B>,
        device: &B::Device,
    ) -> Result<OptimizerAdaptor<O, M, B>>
    where
        B: AutodiffBackend,
        M: burn::module::AutodiffModule<B>,
        O: burn::optim::SimpleOptimizer<B::InnerBackend>,
    {
        let path = self.dir.join("optimizer");
        let record = Recorder::<B>::load(&recorder(), path.clone(), device)
            .map_err(|e| record_error(&path, e))?;
        Ok(optimizer.load_record(record))
    }

    /// Writes a component's config as `<name>.json`.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be written.
    pub fn save_config(&self, name: &str, config: &impl Serialize) -> Result<()> {
        crate::core::weights::save_config_json(&self.dir.join(format!("{name}.json")), config, &[])
    }

    /// Reads a component's config from `<name>.json`.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Format`] naming the file.
    pub fn config<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let path = self.dir.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))
    }

    /// Writes `state.json` (last, so a checkpoint with one is complete).
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be written.
    pub fn save_state(&self, state: &TrainState) -> Result<()> {
        self.save_config("state", state)
    }

    /// Reads `state.json`.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Format`] naming the file.
    pub fn state(&self) -> Result<TrainState> {
        self.config("state")
    }

    /// Reads `state.json` and checks that the checkpoint belongs to `stage`.
    ///
    /// # Errors
    /// As [`state`](Self::state); [`Error::InvalidInput`] naming the folder when the checkpoint
    /// was written by another stage.
    pub fn state_for(&self, stage: &str) -> Result<TrainState> {
        self.state()?.expect_stage(stage, &self.dir)
    }
}

/// The complete checkpoints of `root` (`checkpoint-<step>/` folders with a `state.json`) with
/// their steps, in increasing order of steps; none when `root` does not exist.
///
/// # Errors
/// [`Error::Io`] when `root` exists but cannot be listed.
pub fn checkpoints(root: &Path) -> Result<Vec<(usize, Checkpoint)>> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(root, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(root, e))?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("checkpoint-"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(step) = step
            && path.join("state.json").is_file()
        {
            found.push((step, Checkpoint { dir: path }));
        }
    }
    found.sort_by_key(|(step, _)| *step);
    Ok(found)
}

/// The complete checkpoint of `root` with the most steps, if any (the last of
/// [`checkpoints`]).
///
/// # Errors
/// [`Error::Io`] when `root` exists but cannot be listed.
pub fn latest_checkpoint(root: &Path) -> Result<Option<Checkpoint>> {
    Ok(checkpoints(root)?.pop().map(|(_, checkpoint)| checkpoint))
}
