//! LoRA: low-rank updates of a model's `Linear` and `Conv2d` weights, read from the layouts
//! they are published in and merged into the weights, removably.
//!
//! * [`LoraFile`] reads a file — PEFT/diffusers (`lora_A`/`lora_B` with the adapter configs in
//!   the safetensors header), kohya-ss (`lora_down`/`lora_up`/`alpha`) or diffusers' older
//!   layouts — into [`LoraLayer`]s, each with its `alpha / rank` factor.
//! * [`LoraTargets`] lists the layers of a module a LoRA can update, by module path, with the
//!   other names (kohya's, older layouts') the model crates register for them.
//! * [`LoraUpdate`] is one layer's update on the device, checked against the weight's shape.
//! * [`MergedWeights`] merges scaled updates into a module (`W' = W + Σ scaleᵢ · alphaᵢ/rᵢ ·
//!   upᵢ · downᵢ`, in f32, cast back to the weight's dtype) and keeps the originals, so scales
//!   can change and updates can be removed, giving back the original weights bit for bit.
//!
//! The key tables from file names to module paths belong to the model crates
//! (`prompt_diffusion_unet::lora`, `prompt_diffusion_clip::lora`).

mod file;
mod merge;
mod peft;

pub use file::{LoraFile, LoraLayer};
pub use merge::{LoraLayerKind, LoraTarget, LoraTargets, LoraUpdate, MergedWeights};
pub use peft::{LORA_ADAPTER_METADATA_KEY, safetensors_metadata};

#[cfg(test)]
mod tests;
