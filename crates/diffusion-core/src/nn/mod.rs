//! Layers shared by every model crate: normalisations with f32 statistics, the attention entry
//! point and diffusers' `Attention` layer, the residual block and the up/down samplers used by
//! the UNet, the VAE and the ControlNets, and activations by their config names.

mod activation;
mod attention;
mod attention_processor;
mod conv;
mod fused;
mod host;
mod layout;
mod norm;
pub(crate) mod path;
mod resnet;
mod sampling;

pub use activation::{Activation, geglu};
pub use attention::{
    AttentionOptions, FUSED_ATTENTION_MAX_HEAD_DIM, attention, fused_attention_available,
    fused_attention_launches, multi_head_attention,
};
pub use attention_processor::{Attention, AttentionConfig};
pub use conv::conv2d;
pub use fused::{fused_kernels_available, fused_norm_launches};
pub use layout::channels_last_conv_weights;
pub use norm::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig};
pub use resnet::{ResnetBlock2D, ResnetBlock2DConfig};
pub use sampling::{Downsample2D, DownsamplePadding, Upsample2D, upsample_nearest};
