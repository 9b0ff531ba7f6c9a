//! A flow's inputs as the diffuser takes them: the conditions (normalised CLIP tokens, under
//! classifier-free guidance `[unconditional × n; conditional × n]`, with their mixing weights),
//! the latent shape, and the decoding of the result.

use burn::prelude::*;
use burn::tensor::DType;
use image::RgbImage;
use prompt_diffusion_core::config::OneOrMany;
use prompt_diffusion_core::{Error, Result};

use crate::diffuser::Condition;
use crate::encoders::{UncondImage, image_tokens_from_data};
use crate::flow::{Flow, Modality};
use crate::loading::VersatileComponents;
use crate::optimus::TextDecoding;

/// An image condition: an image (encoded by CLIP) or precomputed context tokens
/// (`[257, 768]` or `[n, 257, 768]`, normalised as VD's encoder does, e.g. predicted from
/// another modality).
#[derive(Debug, Clone)]
pub enum ImagePrompt {
    /// An image of any size.
    Image(RgbImage),
    /// Context tokens.
    Tokens(TensorData),
}

/// What a flow is conditioned on.
#[derive(Debug, Clone, Copy)]
pub struct FlowInputs<'a> {
    /// The text (text→image, dual-guided, text variation).
    pub prompt: &'a str,
    /// The unconditional text (`None`: the empty prompt).
    pub negative_prompt: Option<&'a str>,
    /// The image (image variation, dual-guided, image→text).
    pub image: Option<&'a ImagePrompt>,
    /// The unconditional image context.
    pub uncond_image: UncondImage,
    /// Dual guidance: the text's weight (the image's is `1 − mix`).
    pub mix: f64,
    /// Samples generated.
    pub samples: usize,
    /// Whether classifier-free guidance runs (unconditional contexts first).
    pub guided: bool,
}

impl<B: Backend> VersatileComponents<B> {
    /// The conditions of `flow`, cast to `dtype`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a missing image, a mix outside [0, 1], no samples or tokens
    /// of the wrong count; [`Error::Unsupported`] when an encoder the flow needs is not loaded.
    pub fn conditions(
        &self,
        flow: Flow,
        inputs: &FlowInputs<'_>,
        dtype: DType,
    ) -> Result<Vec<Condition<B>>> {
        if inputs.samples == 0 {
            return Err(Error::invalid_input("samples", "at least one is needed"));
        }
        if !(0.0..=1.0).contains(&inputs.mix) {
            return Err(Error::invalid_input(
                "mix",
                format!("{} is outside [0, 1]", inputs.mix),
            ));
        }
        flow.conditions()
            .iter()
            .map(|&modality| {
                let ratio = match (flow, modality) {
                    (Flow::DualGuided, Modality::Text) => inputs.mix,
                    (Flow::DualGuided, Modality::Image) => 1.0 - inputs.mix,
                    _ => 1.0,
                };
                let tokens = match modality {
                    Modality::Text => self.text_tokens(inputs)?,
                    Modality::Image => self.image_tokens(flow, inputs)?,
                };
                Ok(Condition::new(modality, tokens.cast(dtype)).with_ratio(ratio))
            })
            .collect()
    }

    fn text_tokens(&self, inputs: &FlowInputs<'_>) -> Result<Tensor<B, 3>> {
        let encoder = self.text_encoder()?;
        let cond = encoder.encode(&[inputs.prompt])?;
        let uncond = inputs
            .guided
            .then(|| encoder.encode(&[inputs.negative_prompt.unwrap_or("")]))
            .transpose()?;
        Ok(stack(cond, uncond, inputs.samples))
    }

    fn image_tokens(&self, flow: Flow, inputs: &FlowInputs<'_>) -> Result<Tensor<B, 3>> {
        let image = inputs
            .image
            .ok_or_else(|| Error::invalid_input("image", format!("{flow} needs an image")))?;
        let cond = match image {
            ImagePrompt::Image(image) => self
                .image_encoder()?
                .encode_images(std::slice::from_ref(image))?,
            ImagePrompt::Tokens(data) => {
                let [tokens, width] = match &self.image_encoder {
                    Some(encoder) => [encoder.num_tokens(), encoder.width()],
                    None => [257, data.shape.last().copied().unwrap_or(0)],
                };
                let device = self.diffuser.devices().first().cloned().unwrap_or_default();
                image_tokens_from_data(data, tokens, width, &device)?
            }
        };
        let n = cond.dims()[0];
        if n != 1 && n != inputs.samples {
            return Err(Error::invalid_input(
                "image tokens",
                format!(
                    "{n} sets of tokens for {} samples (give 1 or {})",
                    inputs.samples, inputs.samples
                ),
            ));
        }
        let uncond = match (inputs.guided, inputs.uncond_image) {
            (false, _) => None,
            (true, UncondImage::Zeros) => Some(cond.zeros_like().narrow(0, 0, 1)),
            (true, mode) => Some(self.image_encoder()?.unconditional(mode, 1)?),
        };
        Ok(stack(cond, uncond, inputs.samples))
    }

    /// The latent shape of `samples` outputs of `modality`: `[n, 4, h/8, w/8]` for images
    /// (`width`/`height` in pixels, each defaulting to the image UNet's native size),
    /// `[n, 768, 1, 1]` for texts (the size is not used).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the VAE (images) or the text UNet (texts) is not loaded.
    pub fn latent_shape(
        &self,
        output: Modality,
        samples: usize,
        width: Option<usize>,
        height: Option<usize>,
    ) -> Result<[usize; 4]> {
        match output {
            Modality::Image => {
                let vae = self.vae()?.config();
                let factor = vae.downsampling_factor();
                let native = match self
                    .diffuser
                    .data_unet(Modality::Image)
                    .map(|u| &u.config().sample_size)
                {
                    Some(Some(OneOrMany::One(s))) => *s,
                    _ => 64,
                } * factor;
                let (w, h) = (width.unwrap_or(native), height.unwrap_or(native));
                Ok([samples, vae.latent_channels, h / factor, w / factor])
            }
            Modality::Text => {
                let unet = self
                    .diffuser
                    .data_unet(Modality::Text)
                    .ok_or_else(|| Error::Unsupported("the text UNet is not loaded".into()))?;
                Ok([samples, unet.config().in_channels, 1, 1])
            }
        }
    }

    /// VAE-decodes image latents ([`AutoencoderKL::decode_to_images`](prompt_diffusion_vae::AutoencoderKL::decode_to_images)).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the VAE is not loaded; [`Error::NonFinite`] when the decoded
    /// image holds NaN or infinite values.
    pub fn decode_images(&self, latents: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
        self.vae()?.decode_to_images(latents)
    }

    /// Optimus-decodes text latents `[n, latent, 1, 1]` (`seed` drives sampling).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for latents of another shape; [`Error::Unsupported`] when Optimus
    /// is not loaded; decoding errors.
    pub fn decode_texts(
        &self,
        latents: Tensor<B, 4>,
        decoding: TextDecoding,
        seed: u64,
    ) -> Result<Vec<String>> {
        let [n, width, h, w] = latents.dims();
        if (h, w) != (1, 1) {
            return Err(Error::invalid_input(
                "text latents",
                format!("shape [{n}, {width}, {h}, {w}]; expected [n, latent, 1, 1]"),
            ));
        }
        self.optimus()?
            .decode(latents.reshape([n, width]), decoding, seed)
    }
}

/// `[uncond × n; cond × n]` (or `cond × n`), repeating single rows.
fn stack<B: Backend>(cond: Tensor<B, 3>, uncond: Option<Tensor<B, 3>>, n: usize) -> Tensor<B, 3> {
    let repeat = |t: Tensor<B, 3>| {
        if t.dims()[0] == n {
            t
        } else {
            Tensor::cat(vec![t; n], 0)
        }
    };
    match uncond {
        Some(uncond) => Tensor::cat(vec![repeat(uncond), repeat(cond)], 0),
        None => repeat(cond),
    }
}
