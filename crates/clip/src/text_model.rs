//! The CLIP text tower: `CLIPTextModel` and `CLIPTextModelWithProjection`.
//!
//! Ports `CLIPTextEmbeddings`, `CLIPTextModel` and `CLIPTextModelWithProjection` from
//! `transformers/models/clip/modeling_clip.py` (v5). The forward pass adds token and position
//! embeddings, runs the pre-LN encoder with a causal mask, applies `final_layer_norm`
//! (`last_hidden_state`, Stable Diffusion's context) and pools one token per sequence: at
//! `argmax(input_ids)` when `eos_token_id == 2` (the legacy openai configs), otherwise at the
//! first `eos_token_id`. No padding mask is used, as in Stable Diffusion.
//!
//! Parameter paths are the released checkpoint keys: `text_model.embeddings.…`,
//! `text_model.encoder.layers.{i}.…`, `text_model.final_layer_norm.…`, `text_projection.weight`.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::nn::{LayerNorm, LayerNormConfig};
use prompt_diffusion_core::weights::{LoadOptions, TensorSource};

use crate::config::CLIPTextConfig;
use crate::encoder::CLIPEncoder;
use crate::tower::{self, TowerConfig};

/// Token and position embeddings (`CLIPTextEmbeddings`).
#[derive(Module, Debug)]
pub struct CLIPTextEmbeddings<B: Backend> {
    /// `[vocab_size, D]`.
    pub token_embedding: Embedding<B>,
    /// `[max_position_embeddings, D]`.
    pub position_embedding: Embedding<B>,
}

impl<B: Backend> CLIPTextEmbeddings<B> {
    /// Token embedding plus the embedding of positions `0..seq`.
    ///
    /// # Shapes
    /// `[batch, seq]` ids → `[batch, seq, D]`.
    ///
    /// # Panics
    /// When `seq` exceeds `max_position_embeddings`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, seq] = input_ids.dims();
        let positions = self
            .position_embedding
            .weight
            .val()
            .narrow(0, 0, seq)
            .unsqueeze::<3>();
        self.token_embedding.forward(input_ids) + positions
    }

    /// The number of token embeddings (`vocab_size`, plus any appended).
    pub fn num_tokens(&self) -> usize {
        self.token_embedding.weight.dims()[0]
    }

    /// The embedding width `D`.
    pub fn hidden_size(&self) -> usize {
        self.token_embedding.weight.dims()[1]
    }

    /// Gives the tokens `first_id..first_id + n` the embeddings `rows` (`[n, D]`), as
    /// transformers' `resize_token_embeddings(first_id + n)` followed by writing those rows:
    /// the table keeps its first `first_id` rows (rows it did not have are zero) and ends with
    /// `rows`, cast to the table's dtype. Textual inversion uses this.
    ///
    /// # Errors
    /// [`Error::Shape`](prompt_diffusion_core::Error::Shape) when `rows` is not `[n ≥ 1, D]`.
    pub fn append_token_embeddings(&mut self, first_id: usize, rows: Tensor<B, 2>) -> Result<()> {
        let [n, width] = rows.dims();
        let d = self.hidden_size();
        if n == 0 || width != d {
            return Err(prompt_diffusion_core::Error::Shape {
                origin: None,
                key: "token embeddings".into(),
                expected: format!("[n ≥ 1, {d}]"),
                found: vec![n, width],
            });
        }
        let old = self.num_tokens();
        self.token_embedding.weight = self.token_embedding.weight.clone().map(|table| {
            let rows = rows.cast(table.dtype());
            let device = table.device();
            let kept = old.min(first_id);
            let mut parts = Vec::new();
            if kept > 0 {
                parts.push(table.narrow(0, 0, kept));
            }
            if first_id > old {
                let gap = Tensor::<B, 2>::zeros([first_id - old, d], (&device, rows.dtype()));
                parts.push(gap);
            }
            parts.push(rows);
            Tensor::cat(parts, 0)
        });
        Ok(())
    }
}

/// The text transformer (transformers 5's `CLIPTextModel` body, the `text_model` of the
/// released checkpoints).
#[derive(Module, Debug)]
pub struct CLIPTextTransformer<B: Backend> {
    /// Token and position embeddings.
    pub embeddings: CLIPTextEmbeddings<B>,
    /// The causal encoder.
    pub encoder: CLIPEncoder<B>,
    /// Norm applied to the encoder output.
    pub final_layer_norm: LayerNorm<B>,
    eos_token_id: u32,
}

/// Outputs of the text tower.
#[derive(Debug, Clone)]
pub struct CLIPTextOutput<B: Backend> {
    /// `final_layer_norm(encoder output)`, `[batch, seq, D]`: Stable Diffusion's context.
    pub last_hidden_state: Tensor<B, 3>,
    /// `last_hidden_state` at the pooled (end-of-text) position, `[batch, D]`.
    pub pooled_output: Tensor<B, 2>,
    /// With [`forward_with_hidden_states`](CLIPTextTransformer::forward_with_hidden_states):
    /// the embeddings, then each layer's output (before `final_layer_norm`),
    /// `num_hidden_layers + 1` tensors `[batch, seq, D]`. `hidden_states[-1 - k]` followed by
    /// `final_layer_norm` is "CLIP skip k".
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
}

impl<B: Backend> CLIPTextTransformer<B> {
    /// Creates the transformer for `config` (placeholder parameters until weights are loaded).
    pub fn init(config: &CLIPTextConfig, device: &B::Device) -> Self {
        Self {
            embeddings: CLIPTextEmbeddings {
                token_embedding: EmbeddingConfig::new(config.vocab_size, config.hidden_size)
                    .init(device),
                position_embedding: EmbeddingConfig::new(
                    config.max_position_embeddings,
                    config.hidden_size,
                )
                .init(device),
            },
            encoder: config.encoder().init(device),
            final_layer_norm: LayerNormConfig::new(config.hidden_size)
                .with_eps(config.layer_norm_eps)
                .init(device),
            eos_token_id: config.eos_token_id,
        }
    }

    /// Encodes token ids.
    ///
    /// # Shapes
    /// `[batch, seq]` → `last_hidden_state [batch, seq, D]`, `pooled_output [batch, D]`.
    ///
    /// # Panics
    /// When `seq` exceeds `max_position_embeddings` (77; tokenizer output never does), see
    /// [`check_input_ids`](Self::check_input_ids), or an id is not below `vocab_size`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> CLIPTextOutput<B> {
        self.run(input_ids, false)
    }

    /// [`forward`](Self::forward) that also returns every hidden state.
    pub fn forward_with_hidden_states(&self, input_ids: Tensor<B, 2, Int>) -> CLIPTextOutput<B> {
        self.run(input_ids, true)
    }

    /// Checks that token ids of shape `[batch, seq]` fit the model (`1 ≤ seq ≤
    /// max_position_embeddings`, `batch ≥ 1`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`](prompt_diffusion_core::Error::InvalidInput) naming the limit.
    pub fn check_input_ids(&self, dims: [usize; 2]) -> Result<()> {
        let max = self.embeddings.position_embedding.weight.dims()[0];
        let [batch, seq] = dims;
        if batch == 0 || seq == 0 || seq > max {
            return Err(prompt_diffusion_core::Error::invalid_input(
                "input_ids",
                format!("shape {dims:?}, expected [batch ≥ 1, 1..={max}]"),
            ));
        }
        Ok(())
    }

    fn run(&self, input_ids: Tensor<B, 2, Int>, keep: bool) -> CLIPTextOutput<B> {
        let h = self.embeddings.forward(input_ids.clone());
        let (h, hidden_states) = self.encoder.forward(h, true, keep);
        let last_hidden_state = self.final_layer_norm.forward(h);
        let pooled_output = gather_rows(
            last_hidden_state.clone(),
            pooled_positions(input_ids, self.eos_token_id),
        );
        CLIPTextOutput {
            last_hidden_state,
            pooled_output,
            hidden_states,
        }
    }
}

/// The position pooled for each sequence, `[batch, 1]`: transformers' rule, with ties resolved
/// to the first position whatever the backend's `argmax` does with ties.
fn pooled_positions<B: Backend>(ids: Tensor<B, 2, Int>, eos_token_id: u32) -> Tensor<B, 2, Int> {
    let [batch, seq] = ids.dims();
    let seq_i = seq as i64;
    let pos = Tensor::<B, 1, Int>::arange(0..seq_i, &ids.device())
        .reshape([1, seq])
        .repeat_dim(0, batch);
    let score = if eos_token_id == 2 {
        // argmax(ids): larger id first, then the earlier position.
        ids.mul_scalar(seq_i) + pos.neg().add_scalar(seq_i - 1)
    } else {
        // First position holding the eos id; position 0 when there is none (torch's argmax of
        // an all-zero row).
        let is_eos = ids.equal_elem(i64::from(eos_token_id)).int();
        let first = pos.clone().equal_elem(0).int();
        is_eos * (pos.neg().add_scalar(seq_i)).mul_scalar(2) + first
    };
    score.argmax(1)
}

/// Rows `x[b, index[b], :]`.
fn gather_rows<B: Backend>(x: Tensor<B, 3>, index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [batch, _, width] = x.dims();
    let index = index.reshape([batch, 1, 1]).repeat_dim(2, width);
    x.gather(1, index).reshape([batch, width])
}

/// `CLIPTextModel`: the text transformer alone (Stable Diffusion's `text_encoder`).
#[derive(Module, Debug)]
pub struct CLIPTextModel<B: Backend> {
    /// The transformer (`text_model.*` keys).
    pub text_model: CLIPTextTransformer<B>,
}

impl<B: Backend> CLIPTextModel<B> {
    /// Creates the model for `config` (placeholder parameters until weights are loaded).
    pub fn init(config: &CLIPTextConfig, device: &B::Device) -> Self {
        Self {
            text_model: CLIPTextTransformer::init(config, device),
        }
    }

    /// See [`CLIPTextTransformer::forward`].
    ///
    /// # Shapes
    /// `[batch, seq]` → `last_hidden_state [batch, seq, D]`, `pooled_output [batch, D]`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> CLIPTextOutput<B> {
        self.text_model.forward(input_ids)
    }

    /// See [`CLIPTextTransformer::forward_with_hidden_states`].
    pub fn forward_with_hidden_states(&self, input_ids: Tensor<B, 2, Int>) -> CLIPTextOutput<B> {
        self.text_model.forward_with_hidden_states(input_ids)
    }

    /// See [`CLIPTextEmbeddings::append_token_embeddings`].
    ///
    /// # Errors
    /// As [`CLIPTextEmbeddings::append_token_embeddings`].
    pub fn append_token_embeddings(&mut self, first_id: usize, rows: Tensor<B, 2>) -> Result<()> {
        (self.text_model.embeddings).append_token_embeddings(first_id, rows)
    }
}

tower::loaders! {
    CLIPTextModel, CLIPTextConfig, projection: false,
    prefixes: &crate::weights::SD1_TEXT_PREFIXES, ignore: [],
    /// Loads a transformers folder (`config.json` + weights, e.g. a diffusers
    /// `text_encoder/`); the weight-file variant comes from `options.variant`. A folder holding
    /// a full `CLIPModel` loads its text tower.
    ///
    /// # Errors
    /// [`Error::Io`](prompt_diffusion_core::Error::Io) /
    /// [`Error::Config`](prompt_diffusion_core::Error::Config) for the config,
    /// [`Error::Weights`](prompt_diffusion_core::Error::Weights) listing missing, unexpected
    /// and mis-shaped tensors.
    fn from_pretrained;
    /// Takes weights named as in transformers (`text_model.*`, or the same without the
    /// `text_model.` level).
    fn module_tensors;
}

/// Outputs of [`CLIPTextModelWithProjection`].
#[derive(Debug, Clone)]
pub struct CLIPTextProjectionOutput<B: Backend> {
    /// `text_projection(pooled_output)`, `[batch, projection_dim]`.
    pub text_embeds: Tensor<B, 2>,
    /// `[batch, seq, D]`, see [`CLIPTextOutput::last_hidden_state`].
    pub last_hidden_state: Tensor<B, 3>,
    /// `[batch, D]`, see [`CLIPTextOutput::pooled_output`].
    pub pooled_output: Tensor<B, 2>,
    /// See [`CLIPTextOutput::hidden_states`].
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
}

/// `CLIPTextModelWithProjection`: the text transformer and `text_projection` (no bias), as
/// used by Versatile Diffusion and SDXL's second encoder.
#[derive(Module, Debug)]
pub struct CLIPTextModelWithProjection<B: Backend> {
    /// The transformer (`text_model.*` keys).
    pub text_model: CLIPTextTransformer<B>,
    /// `[D → projection_dim]`, no bias.
    pub text_projection: Linear<B>,
}

impl<B: Backend> CLIPTextModelWithProjection<B> {
    /// Creates the model for `config` (placeholder parameters until weights are loaded).
    pub fn init(config: &CLIPTextConfig, device: &B::Device) -> Self {
        Self {
            text_model: CLIPTextTransformer::init(config, device),
            text_projection: LinearConfig::new(config.hidden_size, config.projection_dim)
                .with_bias(false)
                .init(device),
        }
    }

    /// Encodes token ids and projects the pooled token.
    ///
    /// # Shapes
    /// `[batch, seq]` → `text_embeds [batch, P]`, `last_hidden_state [batch, seq, D]`,
    /// `pooled_output [batch, D]`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> CLIPTextProjectionOutput<B> {
        self.project(self.text_model.forward(input_ids))
    }

    /// [`forward`](Self::forward) that also returns every hidden state.
    pub fn forward_with_hidden_states(
        &self,
        input_ids: Tensor<B, 2, Int>,
    ) -> CLIPTextProjectionOutput<B> {
        self.project(self.text_model.forward_with_hidden_states(input_ids))
    }

    fn project(&self, out: CLIPTextOutput<B>) -> CLIPTextProjectionOutput<B> {
        CLIPTextProjectionOutput {
            text_embeds: self.text_projection.forward(out.pooled_output.clone()),
            last_hidden_state: out.last_hidden_state,
            pooled_output: out.pooled_output,
            hidden_states: out.hidden_states,
        }
    }
}

tower::loaders! {
    CLIPTextModelWithProjection, CLIPTextConfig, projection: true,
    prefixes: &crate::weights::SD1_TEXT_PREFIXES, ignore: [],
    /// As [`CLIPTextModel::from_pretrained`].
    fn from_pretrained;
    /// As [`CLIPTextModel`]'s, with `text_projection.weight` as well.
    fn module_tensors;
}

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_diffusion_core::testing::TestBackend as B;

    fn positions(ids: [[i64; 5]; 3], eos: u32) -> Vec<i64> {
        let device = Default::default();
        let ids = Tensor::<B, 2, Int>::from_data(ids, &device);
        pooled_positions(ids, eos)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap()
    }

    #[test]
    fn pooling_rules_resolve_ties_to_the_first_position() {
        // Legacy rule: argmax(ids), first of equal maxima.
        let ids = [[0, 5, 9, 9, 9], [9, 1, 2, 3, 9], [4, 4, 4, 4, 4]];
        assert_eq!(positions(ids, 2), [2, 0, 0]);
        // eos 4: the first 4; none → position 0, as torch's argmax of an all-false row.
        let ids = [[0, 5, 4, 9, 4], [9, 1, 2, 3, 9], [1, 1, 1, 1, 4]];
        assert_eq!(positions(ids, 4), [2, 0, 4]);
    }
}
