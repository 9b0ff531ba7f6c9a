//! Modalities and flows: which data layers and which context layers a generation uses.
//!
//! Versatile Diffusion (X. Xu et al., arXiv 2211.08332) has one diffuser with layer groups per
//! modality: **data layers** chosen by the *output* modality (image: the SD UNet's convolutional
//! blocks on `[4, h, w]` latents; text: fully connected blocks on the 768-d Optimus latent) and
//! **context layers** chosen by the *condition* modality (cross-attention blocks fed CLIP text or
//! CLIP image tokens). A flow is a choice of the two (official `VD_v2_0.apply_model(x, t, c,
//! xtype, ctype)`).

use std::fmt;

/// A modality of data or condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Modality {
    /// Images: SD latents `[4, h/8, w/8]`, or CLIP image tokens `[257, 768]` as a condition.
    Image,
    /// Text: Optimus latents `[768, 1, 1]`, or CLIP text tokens `[77, 768]` as a condition.
    Text,
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Modality::Image => "image",
            Modality::Text => "text",
        })
    }
}

/// The generations Versatile Diffusion offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// Text → image: image data layers, text context layers.
    TextToImage,
    /// Image variation: image data layers, image context layers.
    ImageVariation,
    /// Text and image → image: image data layers, both context layers mixed per slot.
    DualGuided,
    /// Image → text (captioning): text data layers, image context layers.
    ImageToText,
    /// Text variation: text data layers, text context layers.
    TextVariation,
}

impl Flow {
    /// Every flow.
    pub const ALL: [Flow; 5] = [
        Flow::TextToImage,
        Flow::ImageVariation,
        Flow::DualGuided,
        Flow::ImageToText,
        Flow::TextVariation,
    ];

    /// The modality generated (selects the data layers).
    pub fn output(self) -> Modality {
        match self {
            Flow::TextToImage | Flow::ImageVariation | Flow::DualGuided => Modality::Image,
            Flow::ImageToText | Flow::TextVariation => Modality::Text,
        }
    }

    /// The condition modalities (select the context layers), in mixing order.
    pub fn conditions(self) -> &'static [Modality] {
        match self {
            Flow::TextToImage | Flow::TextVariation => &[Modality::Text],
            Flow::ImageVariation | Flow::ImageToText => &[Modality::Image],
            Flow::DualGuided => &[Modality::Text, Modality::Image],
        }
    }

    /// A short name (`text-to-image`, …).
    pub fn name(self) -> &'static str {
        match self {
            Flow::TextToImage => "text-to-image",
            Flow::ImageVariation => "image-variation",
            Flow::DualGuided => "dual-guided",
            Flow::ImageToText => "image-to-text",
            Flow::TextVariation => "text-variation",
        }
    }
}

prompt_diffusion_core::named_values!(Flow: "flow");

/// The layer groups a set of flows needs: what to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerGroups {
    /// The image UNet's data layers (and the global time embedding).
    pub image_data: bool,
    /// The text UNet's data layers.
    pub text_data: bool,
    /// The image-context attention layers.
    pub image_context: bool,
    /// The text-context attention layers.
    pub text_context: bool,
}

impl LayerGroups {
    /// Every group (all five flows).
    pub fn all() -> Self {
        Self::for_flows(&Flow::ALL)
    }

    /// The groups `flows` use.
    pub fn for_flows(flows: &[Flow]) -> Self {
        let mut groups = Self::default();
        for flow in flows {
            *groups.data_mut(flow.output()) = true;
            for &condition in flow.conditions() {
                *groups.context_mut(condition) = true;
            }
        }
        groups
    }

    /// Whether the data layers of `modality` are needed.
    pub fn data(&self, modality: Modality) -> bool {
        match modality {
            Modality::Image => self.image_data,
            Modality::Text => self.text_data,
        }
    }

    /// Whether the context layers of `modality` are needed.
    pub fn context(&self, modality: Modality) -> bool {
        match modality {
            Modality::Image => self.image_context,
            Modality::Text => self.text_context,
        }
    }

    fn data_mut(&mut self, modality: Modality) -> &mut bool {
        match modality {
            Modality::Image => &mut self.image_data,
            Modality::Text => &mut self.text_data,
        }
    }

    fn context_mut(&mut self, modality: Modality) -> &mut bool {
        match modality {
            Modality::Image => &mut self.image_context,
            Modality::Text => &mut self.text_context,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_pick_data_by_output_and_context_by_condition() {
        let t2i = LayerGroups::for_flows(&[Flow::TextToImage]);
        assert!(t2i.image_data && t2i.text_context && !t2i.text_data && !t2i.image_context);
        let captions = LayerGroups::for_flows(&[Flow::ImageToText]);
        assert!(captions.text_data && captions.image_context);
        assert_eq!(
            Flow::DualGuided.conditions(),
            &[Modality::Text, Modality::Image]
        );
        assert_eq!(
            LayerGroups::all(),
            LayerGroups {
                image_data: true,
                text_data: true,
                image_context: true,
                text_context: true
            }
        );
    }
}
