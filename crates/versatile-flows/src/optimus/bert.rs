//! Optimus' encoder: BERT and the latent connector (official `optimus_bert.py`
//! `BertForLatentConnector_XX`; transformers' `BertModel`).
//!
//! `embeddings (word + position + token type 0, LayerNorm) → layers (self-attention, add & norm,
//! GELU MLP, add & norm) → pooler tanh(dense(token 0)) → linear` (no bias) to `2·latent`, whose
//! first half is the posterior mean Versatile Diffusion uses.

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::tanh;
use prompt_diffusion_core::nn::{
    Activation, AttentionOptions, LayerNorm, LayerNormConfig, attention,
};

use super::config::{BertConfig, OptimusConfig};

/// Word, position and token-type embeddings (`BertEmbeddings`).
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    /// `[vocab, hidden]`.
    pub word_embeddings: Embedding<B>,
    /// `[positions, hidden]`.
    pub position_embeddings: Embedding<B>,
    /// `[types, hidden]` (only type 0 is used).
    pub token_type_embeddings: Embedding<B>,
    /// The checkpoint's `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
}

/// Query, key and value projections (`BertSelfAttention`, the checkpoint's `attention.self`).
#[derive(Module, Debug)]
pub struct BertSelfAttention<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
}

/// Projection and residual norm (`BertSelfOutput`, `BertOutput`).
#[derive(Module, Debug)]
pub struct BertResidual<B: Backend> {
    /// The projection.
    pub dense: Linear<B>,
    /// The checkpoint's `LayerNorm`, of the projection plus the residual.
    pub layer_norm: LayerNorm<B>,
}

impl<B: Backend> BertResidual<B> {
    fn forward(&self, x: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        self.layer_norm.forward(self.dense.forward(x) + residual)
    }
}

/// `BertAttention`: self-attention and its output.
#[derive(Module, Debug)]
pub struct BertAttention<B: Backend> {
    /// `attention.self`.
    pub self_attention: BertSelfAttention<B>,
    /// `attention.output`.
    pub output: BertResidual<B>,
}

/// One projection: the MLP's first (`BertIntermediate`, `hidden → intermediate`) or the
/// pooler's (`BertPooler`, `hidden → hidden`).
#[derive(Module, Debug)]
pub struct BertDense<B: Backend> {
    /// The projection.
    pub dense: Linear<B>,
}

/// The MLP's first projection (`BertIntermediate`).
pub type BertIntermediate<B> = BertDense<B>;

/// `tanh(dense(token 0))` (`BertPooler`).
pub type BertPooler<B> = BertDense<B>;

/// One transformer layer (`BertLayer`).
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    /// Self-attention with residual norm.
    pub attention: BertAttention<B>,
    /// MLP input projection.
    pub intermediate: BertIntermediate<B>,
    /// MLP output projection with residual norm.
    pub output: BertResidual<B>,
    heads: usize,
    act: Activation,
}

impl<B: Backend> BertLayer<B> {
    /// # Shapes
    /// `[batch, seq, hidden]` → same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let heads = |t: Tensor<B, 3>| {
            t.reshape([b, n, self.heads, d / self.heads])
                .swap_dims(1, 2)
        };
        let sa = &self.attention.self_attention;
        let context = attention(
            heads(sa.query.forward(x.clone())),
            heads(sa.key.forward(x.clone())),
            heads(sa.value.forward(x.clone())),
            AttentionOptions::default(),
        )
        .swap_dims(1, 2)
        .reshape([b, n, d]);
        let h = self.attention.output.forward(context, x);
        let inner = self.act.forward(self.intermediate.dense.forward(h.clone()));
        self.output.forward(inner, h)
    }
}

/// The layer stack (`BertEncoder`).
#[derive(Module, Debug)]
pub struct BertEncoder<B: Backend> {
    /// The layers.
    pub layer: Vec<BertLayer<B>>,
}

/// BERT with the latent connector (`BertForLatentConnector_XX`).
#[derive(Module, Debug)]
pub struct BertForLatentConnector<B: Backend> {
    /// Embeddings.
    pub embeddings: BertEmbeddings<B>,
    /// Layers.
    pub encoder: BertEncoder<B>,
    /// Pooler.
    pub pooler: BertPooler<B>,
    /// `hidden → 2·latent`, no bias: `[mean ‖ log-variance]`.
    pub linear: Linear<B>,
}

impl<B: Backend> BertForLatentConnector<B> {
    /// Creates the encoder for `config` (weights are filled by loading).
    pub fn new(config: &OptimusConfig, device: &B::Device) -> Self {
        let c: &BertConfig = &config.encoder;
        let h = c.hidden_size;
        let norm = || {
            LayerNormConfig::new(h)
                .with_eps(c.layer_norm_eps)
                .init(device)
        };
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        Self {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(c.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(c.max_position_embeddings, h)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(c.type_vocab_size, h).init(device),
                layer_norm: norm(),
            },
            encoder: BertEncoder {
                layer: (0..c.num_hidden_layers)
                    .map(|_| BertLayer {
                        attention: BertAttention {
                            self_attention: BertSelfAttention {
                                query: linear(h, h),
                                key: linear(h, h),
                                value: linear(h, h),
                            },
                            output: BertResidual {
                                dense: linear(h, h),
                                layer_norm: norm(),
                            },
                        },
                        intermediate: BertDense {
                            dense: linear(h, c.intermediate_size),
                        },
                        output: BertResidual {
                            dense: linear(c.intermediate_size, h),
                            layer_norm: norm(),
                        },
                        heads: c.num_attention_heads,
                        act: c.hidden_act,
                    })
                    .collect(),
            },
            pooler: BertDense {
                dense: linear(h, h),
            },
            linear: LinearConfig::new(h, 2 * config.latent_size)
                .with_bias(false)
                .init(device),
        }
    }

    /// The posterior mean of token sequences without padding (no attention mask: the
    /// reference's padding mask only hides pad tokens, so each sentence is encoded alone).
    ///
    /// # Shapes
    /// `ids: [batch, seq]` (`seq` ≤ the position table) → `[batch, latent]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, n] = ids.dims();
        let e = &self.embeddings;
        let words = e.word_embeddings.forward(ids);
        let d = words.dims()[2];
        let positions = e
            .position_embeddings
            .weight
            .val()
            .slice([0..n, 0..d])
            .unsqueeze::<3>();
        let types = e
            .token_type_embeddings
            .weight
            .val()
            .slice([0..1, 0..d])
            .unsqueeze::<3>();
        let h = e.layer_norm.forward(words + positions + types);
        let h = self
            .encoder
            .layer
            .iter()
            .fold(h, |h, layer| layer.forward(h));
        let first = h.slice([0..b, 0..1, 0..d]).reshape([b, d]);
        let pooled = tanh(self.pooler.dense.forward(first));
        let moments = self.linear.forward(pooled);
        let latent = moments.dims()[1] / 2;
        moments.slice([0..b, 0..latent])
    }

    /// Vocabulary size and position-table size.
    pub fn limits(&self) -> (usize, usize) {
        (
            self.embeddings.word_embeddings.weight.dims()[0],
            self.embeddings.position_embeddings.weight.dims()[0],
        )
    }
}
