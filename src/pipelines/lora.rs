//! LoRA on Stable Diffusion: low-rank updates of the UNet and the text encoder, read from
//! PEFT/diffusers, kohya-ss and older diffusers files, merged into the weights and removable
//! (diffusers' `load_lora_weights`, `set_adapters`, `fuse_lora`, `unload_lora_weights`).
//!
//! Each loaded LoRA has a name and a scale; the weights are always
//! `W + Σ scaleᵢ · alphaᵢ/rᵢ · upᵢ · downᵢ` over the loaded LoRAs, computed in f32 from the
//! original weights, which are kept (for the layers LoRAs touch) until the LoRAs are unloaded
//! or fused. Every pipeline built on [`StableDiffusion`] (ControlNet, Prompt Diffusion,
//! Diff-Plugin) runs with them.
//!
//! ```no_run
//! use prompt_diffusion::backends::{Flex, FlexDevice};
//! use prompt_diffusion::{ModelOptions, StableDiffusion};
//!
//! # fn main() -> prompt_diffusion::core::Result<()> {
//! let options = ModelOptions::default();
//! let mut sd = StableDiffusion::<Flex>::from_pretrained("stable-diffusion-v1-5", &options, &FlexDevice)?;
//! let ink = sd.load_lora("ink.safetensors", 0.8)?; // named "ink"
//! sd.load_lora_named("paper", "paper_texture.safetensors", 0.5)?;
//! sd.set_lora_scales(&[(ink.as_str(), 0.6), ("paper", 0.3)])?;
//! sd.unload_lora("paper")?;
//! sd.unload_loras(); // the original weights, bit for bit
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use prompt_diffusion_clip::lora as clip_lora;
use prompt_diffusion_core::lora::{LoraFile, LoraTargets, LoraUpdate, MergedWeights};
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::lora as unet_lora;

use super::loading::Components;
use super::stable_diffusion::StableDiffusion;

/// A LoRA file and the scale it is merged with ([`ModelOptions::with_lora`](super::ModelOptions::with_lora),
/// the program's `--lora FILE[:SCALE]`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoraSpec {
    /// The file (`.safetensors`, or a PyTorch pickle).
    pub path: PathBuf,
    /// The multiplier of its updates (diffusers' adapter weight; 1 applies it as trained).
    pub scale: f32,
}

impl LoraSpec {
    /// `path` at `scale`.
    pub fn new(path: impl Into<PathBuf>, scale: f32) -> Self {
        Self {
            path: path.into(),
            scale,
        }
    }

    /// Reads `FILE[:SCALE]`: the text after the last `:` is the scale when it is a number
    /// (`ink.safetensors:0.8`); without one the scale is 1 (so `C:\loras\ink.safetensors` is a
    /// path).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty file name, a scale that is not finite, or a suffix
    /// after `:` that is neither a number nor part of an existing path.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason: String| Error::invalid_input("LoRA (FILE[:SCALE])", reason);
        let spec = match text.rsplit_once(':') {
            Some((file, scale)) => match scale.trim().parse::<f32>() {
                Ok(scale) => Self::new(file, scale),
                Err(_) if Path::new(text).exists() || scale.contains(['/', '\\']) => {
                    Self::new(text, 1.0)
                }
                Err(_) => return Err(invalid(format!("`{scale}` in `{text}` is not a scale"))),
            },
            None => Self::new(text, 1.0),
        };
        if spec.path.as_os_str().is_empty() {
            return Err(invalid(format!("`{text}` names no file")));
        }
        check_scale(spec.scale)?;
        Ok(spec)
    }

    /// The name a LoRA gets by default: its file name without the extension (as AUTOMATIC1111
    /// names LoRAs in prompts and metadata).
    pub fn default_name(path: &Path) -> String {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string())
    }
}

/// A loaded LoRA, as [`StableDiffusion::loras`] lists it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoraInfo {
    /// Its name.
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// The scale it is merged with (0: loaded but inactive).
    pub scale: f32,
    /// The UNet layers it updates.
    pub unet_layers: usize,
    /// The text-encoder layers it updates.
    pub text_encoder_layers: usize,
}

/// One loaded LoRA and its updates on the device.
#[derive(Debug)]
struct Loaded<B: Backend> {
    info: LoraInfo,
    unet: Vec<LoraUpdate<B>>,
    text_encoder: Vec<LoraUpdate<B>>,
}

/// The LoRAs merged into a model's UNet and text encoder, and the original weights they
/// replaced. [`StableDiffusion`] keeps one; it also works on [`Components`] held elsewhere
/// (every method takes the components it changes — always the same ones).
#[derive(Debug)]
pub struct Loras<B: Backend> {
    loaded: Vec<Loaded<B>>,
    unet: MergedWeights<B>,
    text_encoder: MergedWeights<B>,
}

impl<B: Backend> Default for Loras<B> {
    fn default() -> Self {
        Self {
            loaded: Vec::new(),
            unet: MergedWeights::default(),
            text_encoder: MergedWeights::default(),
        }
    }
}

impl<B: Backend> Loras<B> {
    /// Reads the LoRA file `path` and merges it into `components` at `scale`, as `name`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a name already loaded or a scale that is not finite; the
    /// errors of [`LoraFile::open`]; [`Error::Format`] naming the file and the layers that
    /// match no layer of the UNet or the text encoder; [`Error::Shape`] for factors that do
    /// not fit their layer. Nothing changes on error.
    pub fn load(
        &mut self,
        components: &mut Components<B>,
        name: &str,
        path: impl AsRef<Path>,
        scale: f32,
    ) -> Result<()> {
        check_scale(scale)?;
        if self.position(name).is_ok() {
            return Err(Error::invalid_input(
                "LoRA name",
                format!("`{name}` is already loaded (unload it first, or give another name)"),
            ));
        }
        let file = LoraFile::open(path.as_ref())?;
        let (unet, text_encoder) = updates(&file, components)?;
        self.loaded.push(Loaded {
            info: LoraInfo {
                name: name.to_string(),
                path: path.as_ref().to_path_buf(),
                scale,
                unet_layers: unet.len(),
                text_encoder_layers: text_encoder.len(),
            },
            unet,
            text_encoder,
        });
        self.apply(components);
        Ok(())
    }

    /// Sets the scale of the LoRA `name` (0 keeps it loaded without effect).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown name or a scale that is not finite.
    pub fn set_scale(
        &mut self,
        components: &mut Components<B>,
        name: &str,
        scale: f32,
    ) -> Result<()> {
        check_scale(scale)?;
        let i = self.position(name)?;
        self.loaded[i].info.scale = scale;
        self.apply(components);
        Ok(())
    }

    /// Sets the scales of the LoRAs listed and turns the others off (scale 0), as diffusers'
    /// `set_adapters(names, weights)`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown name or a scale that is not finite; nothing
    /// changes on error.
    pub fn set_scales(
        &mut self,
        components: &mut Components<B>,
        scales: &[(&str, f32)],
    ) -> Result<()> {
        let mut new = vec![0.0; self.loaded.len()];
        for &(name, scale) in scales {
            check_scale(scale)?;
            new[self.position(name)?] = scale;
        }
        for (loaded, scale) in self.loaded.iter_mut().zip(new) {
            loaded.info.scale = scale;
        }
        self.apply(components);
        Ok(())
    }

    /// Removes the LoRA `name`; the layers no other LoRA updates get their original weights
    /// back, bit for bit.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown name.
    pub fn unload(&mut self, components: &mut Components<B>, name: &str) -> Result<()> {
        let i = self.position(name)?;
        self.loaded.remove(i);
        self.apply(components);
        Ok(())
    }

    /// Removes every LoRA: the UNet and the text encoder get their original weights back, bit
    /// for bit.
    pub fn unload_all(&mut self, components: &mut Components<B>) {
        self.loaded.clear();
        self.apply(components);
    }

    /// Makes the current weights the model's own (diffusers' `fuse_lora` followed by
    /// `unload_lora_weights`): the originals are freed, and the LoRAs can no longer be scaled
    /// or removed.
    pub fn fuse(&mut self) {
        self.loaded.clear();
        self.unet.fuse();
        self.text_encoder.fuse();
    }

    /// The loaded LoRAs, in loading order.
    pub fn list(&self) -> Vec<LoraInfo> {
        self.loaded.iter().map(|l| l.info.clone()).collect()
    }

    fn position(&self, name: &str) -> Result<usize> {
        self.loaded
            .iter()
            .position(|l| l.info.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.loaded.iter().map(|l| l.info.name.as_str()).collect();
                Error::invalid_input(
                    "LoRA name",
                    format!("no LoRA named `{name}` is loaded (loaded: {names:?})"),
                )
            })
    }

    /// Merges the loaded LoRAs at their scales into the components.
    fn apply(&mut self, components: &mut Components<B>) {
        let unet: Vec<(f32, &[LoraUpdate<B>])> = self
            .loaded
            .iter()
            .map(|l| (l.info.scale, l.unet.as_slice()))
            .collect();
        components.unet = self.unet.apply(components.unet.clone(), &unet);
        let text: Vec<(f32, &[LoraUpdate<B>])> = self
            .loaded
            .iter()
            .map(|l| (l.info.scale, l.text_encoder.as_slice()))
            .collect();
        components.text_encoder = self
            .text_encoder
            .apply(components.text_encoder.clone(), &text);
    }
}

/// How many unmatched layer names an error lists.
const LISTED: usize = 8;

/// The updates of one file for the UNet and for the text encoder.
type UpdatesByModel<B> = (Vec<LoraUpdate<B>>, Vec<LoraUpdate<B>>);

/// The updates of `file` for the UNet and the text encoder of `components`.
fn updates<B: Backend>(file: &LoraFile, components: &Components<B>) -> Result<UpdatesByModel<B>> {
    let unet_targets = unet_lora::lora_targets(&components.unet);
    let text_targets = clip_lora::lora_targets(&components.text_encoder);
    let unet_device = device_of(&components.unet)?;
    let text_device = device_of(&components.text_encoder)?;
    let (mut unet, mut text, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for layer in file.layers() {
        let text_encoder = clip_lora::is_text_encoder_key(&layer.key);
        let (targets, module, updates, device): (&LoraTargets, _, &mut Vec<_>, _) = if text_encoder
        {
            let module = clip_lora::lora_module(&layer.key, &text_targets);
            (&text_targets, module, &mut text, &text_device)
        } else {
            let module = unet_lora::lora_module(&layer.key, &unet_targets);
            (&unet_targets, module, &mut unet, &unet_device)
        };
        match module.and_then(|m| Some((m, targets.get(m)?))) {
            Some((module, target)) => {
                updates.push(LoraUpdate::new(layer, module, target, file.path(), device)?);
            }
            None => unknown.push(layer.key.as_str()),
        }
    }
    if unknown.is_empty() {
        return Ok((unet, text));
    }
    let mut listed: Vec<String> = unknown
        .iter()
        .take(LISTED)
        .map(|k| format!("`{k}`"))
        .collect();
    if unknown.len() > LISTED {
        listed.push(format!("and {} more", unknown.len() - LISTED));
    }
    Err(Error::format(
        file.path(),
        format!(
            "{} LoRA layer(s) match no layer of this model's UNet or text encoder: {} \
             (the file may be for another model family, e.g. SDXL's `lora_te2_`/`text_encoder_2`)",
            unknown.len(),
            listed.join(", ")
        ),
    ))
}

fn device_of<B: Backend, M: Module<B>>(module: &M) -> Result<B::Device> {
    module.devices().first().cloned().ok_or_else(|| {
        Error::invalid_input("model", "it has no parameters to merge LoRA weights into")
    })
}

fn check_scale(scale: f32) -> Result<()> {
    if scale.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid_input(
            "LoRA scale",
            format!("{scale} is not a finite number"),
        ))
    }
}

/// Merges `specs` into `components` for good ([`ModelOptions::loras`](super::ModelOptions::loras)).
pub(crate) fn fuse_loras<B: Backend>(
    components: &mut Components<B>,
    specs: &[LoraSpec],
) -> Result<()> {
    if specs.is_empty() {
        return Ok(());
    }
    let mut loras = Loras::default();
    for (i, spec) in specs.iter().enumerate() {
        loras.load(components, &i.to_string(), &spec.path, spec.scale)?;
    }
    loras.fuse();
    Ok(())
}

impl<B: Backend> StableDiffusion<B> {
    /// Reads the LoRA file `path` (PEFT/diffusers, kohya-ss or older diffusers layout) and
    /// merges it into the UNet and the text encoder at `scale`; returns its name, the file name
    /// without the extension (see [`load_lora_named`](Self::load_lora_named) for another).
    ///
    /// # Errors
    /// As [`Loras::load`]; nothing changes on error.
    pub fn load_lora(&mut self, path: impl AsRef<Path>, scale: f32) -> Result<String> {
        let name = LoraSpec::default_name(path.as_ref());
        self.load_lora_named(&name, path, scale)?;
        Ok(name)
    }

    /// [`load_lora`](Self::load_lora) under the name `name` (diffusers' `adapter_name`).
    ///
    /// # Errors
    /// As [`Loras::load`].
    pub fn load_lora_named(
        &mut self,
        name: &str,
        path: impl AsRef<Path>,
        scale: f32,
    ) -> Result<()> {
        self.loras.load(&mut self.components, name, path, scale)
    }

    /// Sets the scale of the LoRA `name`.
    ///
    /// # Errors
    /// As [`Loras::set_scale`].
    pub fn set_lora_scale(&mut self, name: &str, scale: f32) -> Result<()> {
        self.loras.set_scale(&mut self.components, name, scale)
    }

    /// Sets the scales of the listed LoRAs and turns the others off (diffusers'
    /// `set_adapters(names, adapter_weights)`).
    ///
    /// # Errors
    /// As [`Loras::set_scales`].
    pub fn set_lora_scales(&mut self, scales: &[(&str, f32)]) -> Result<()> {
        self.loras.set_scales(&mut self.components, scales)
    }

    /// Removes the LoRA `name`.
    ///
    /// # Errors
    /// As [`Loras::unload`].
    pub fn unload_lora(&mut self, name: &str) -> Result<()> {
        self.loras.unload(&mut self.components, name)
    }

    /// Removes every LoRA, giving back the original weights bit for bit (diffusers'
    /// `unload_lora_weights`).
    pub fn unload_loras(&mut self) {
        self.loras.unload_all(&mut self.components);
    }

    /// Keeps the merged LoRAs in the weights for good and frees the originals (see
    /// [`Loras::fuse`]).
    pub fn fuse_loras(&mut self) {
        self.loras.fuse();
    }

    /// The loaded LoRAs, in loading order.
    pub fn loras(&self) -> Vec<LoraInfo> {
        self.loras.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_read_file_and_scale() {
        let spec = LoraSpec::parse("ink.safetensors:0.8").unwrap();
        assert_eq!(
            (spec.path, spec.scale),
            (PathBuf::from("ink.safetensors"), 0.8)
        );
        let spec = LoraSpec::parse("dir/ink.safetensors").unwrap();
        assert_eq!(
            (spec.path, spec.scale),
            (PathBuf::from("dir/ink.safetensors"), 1.0)
        );
        let spec = LoraSpec::parse(r"C:\loras\ink.safetensors").unwrap();
        assert_eq!(spec.scale, 1.0);
        assert_eq!(LoraSpec::parse("ink.safetensors:-0.5").unwrap().scale, -0.5);
        for bad in [
            "ink.safetensors:abc",
            ":0.5",
            "ink.safetensors:NaN",
            "ink:inf",
            "",
        ] {
            assert!(LoraSpec::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            LoraSpec::default_name(Path::new("a/ink.v2.safetensors")),
            "ink.v2"
        );
    }
}
