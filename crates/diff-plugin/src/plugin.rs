//! `TaskPlugin`: one task's TPB and SCB, and where their files live.
//!
//! Two folder layouts hold a plugin:
//!
//! | layout | TPB | SCB |
//! |---|---|---|
//! | released (`pre-trained/<task>/`) | `tpb.pt` | `scb/` (diffusers folder) |
//! | training checkpoint (`checkpoint-N/`) | `tpb_net.pt` | `scb_net/` (diffusers folder) |
//!
//! The selector head of the released weights is `pre-trained/plugin_selector/PromptTunner.pt`.

use prompt_diffusion_core::weights::Pretrained;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use prompt_diffusion_core::weights::LoadOptions;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::{UNetControl, UNetResiduals};

use crate::{SCBNet, SCBNetConfig, TPBConfig, TPBNet, Task, weights};

/// The selector file, relative to the released `pre-trained/` folder.
pub const SELECTOR_FILE: &str = "plugin_selector/PromptTunner.pt";

/// `(TPB file, SCB folder)` names of the released layout.
pub const RELEASED_LAYOUT: (&str, &str) = ("tpb.pt", "scb");
/// `(TPB file, SCB folder)` names of a training checkpoint.
pub const CHECKPOINT_LAYOUT: (&str, &str) = ("tpb_net.pt", "scb_net");

/// A Task-Plugin: the Task-Prompt Branch and the Spatial Complement Branch of one task.
#[derive(Module, Debug)]
pub struct TaskPlugin<B: Backend> {
    /// Task-Prompt Branch (CLIP patch tokens → F^p).
    pub tpb: TPBNet<B>,
    /// Spatial Complement Branch (z_c, t, F^p → F^s).
    pub scb: SCBNet<B>,
}

/// The SCB plugs into the one denoising loop as a UNet control model: paired with the frozen
/// UNet by [`Controlled`](prompt_diffusion_unet::Controlled), with the task prompt F^p as the
/// text context and the condition latent z_c (in the UNet's dtype) as its hint. It ignores the
/// noisy latents: F^s depends on z_c, the timestep and F^p only.
impl<B: Backend> UNetControl<B> for SCBNet<B> {
    type Hint = Tensor<B, 4>;

    fn residuals(
        &self,
        _latents: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        prompt: Tensor<B, 3>,
        condition: &Tensor<B, 4>,
    ) -> Result<UNetResiduals<B>> {
        SCBNet::residuals(self, timestep, prompt, condition.clone())
    }
}

/// The files of one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFiles {
    /// The TPB's `.pt` file.
    pub tpb: PathBuf,
    /// The SCB's diffusers folder.
    pub scb: PathBuf,
}

impl PluginFiles {
    /// The files of the plugin in `dir`, in the released or the training-checkpoint layout.
    ///
    /// # Errors
    /// [`Error::Io`] (not found) naming the missing file or folder.
    pub fn find(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(not_found(dir, "Task-Plugin folder not found"));
        }
        let layout = [RELEASED_LAYOUT, CHECKPOINT_LAYOUT]
            .into_iter()
            .find(|(tpb, scb)| dir.join(tpb).is_file() || dir.join(scb).is_dir())
            .unwrap_or(RELEASED_LAYOUT);
        let files = Self {
            tpb: dir.join(layout.0),
            scb: dir.join(layout.1),
        };
        if !files.tpb.is_file() {
            return Err(not_found(&files.tpb, "Task-Plugin file not found"));
        }
        let config = files.scb.join("config.json");
        if !config.is_file() {
            return Err(not_found(&config, "Task-Plugin file not found"));
        }
        Ok(files)
    }

    /// The files of `task`'s plugin under a released `pre-trained/` folder.
    ///
    /// # Errors
    /// As [`find`](Self::find).
    pub fn for_task(root: impl AsRef<Path>, task: Task) -> Result<Self> {
        Self::find(root.as_ref().join(task.name()))
    }
}

impl<B: Backend> TaskPlugin<B> {
    /// A freshly initialised plugin (zero convolutions at zero), the start of training.
    ///
    /// # Errors
    /// An invalid SCB config.
    pub fn new(tpb: &TPBConfig, scb: &SCBNetConfig, device: &B::Device) -> Result<Self> {
        check_widths(tpb, scb)?;
        Ok(Self {
            tpb: tpb.init(device),
            scb: SCBNet::new(scb, device)?,
        })
    }

    /// Loads the plugin in `dir` (released or training-checkpoint layout).
    ///
    /// # Errors
    /// A missing file (named), an invalid config, or weights that do not match.
    pub fn from_dir(
        dir: impl AsRef<Path>,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_files(&PluginFiles::find(dir)?, options, device)
    }

    /// Loads a plugin from its files.
    ///
    /// # Errors
    /// As [`from_dir`](Self::from_dir).
    pub fn from_files(
        files: &PluginFiles,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let tpb = weights::load_tpb(&files.tpb, options, device)?;
        let scb = SCBNet::from_pretrained(&files.scb, options, device)?;
        check_widths(&tpb.config(), scb.config())?;
        Ok(Self { tpb, scb })
    }
}

fn check_widths(tpb: &TPBConfig, scb: &SCBNetConfig) -> Result<()> {
    if tpb.out_dim != scb.context_width() {
        return Err(Error::config(
            "cross_attention_dim",
            format!(
                "the SCB attends to {}-wide prompts but the TPB makes {}-wide ones",
                scb.context_width(),
                tpb.out_dim
            ),
        ));
    }
    Ok(())
}

fn not_found(path: &Path, what: &str) -> Error {
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, what.to_string()),
    )
}
