//! Optimus' decoder: GPT-2 with the latent injected (official `optimus_gpt2.py`
//! `GPT2ForLatentConnector_XX` with `latent_as_gpt_emb` and `latent_as_gpt_memory`;
//! transformers' `GPT2Model` blocks).
//!
//! For a latent `z`: `linear_emb(z)` is added to every token embedding, and `linear(z)` split into
//! one `n_embd` vector per layer is prepended to that layer's keys **and** values (the same raw
//! vector, not passed through `c_attn`) — a one-token past. Positions therefore start at 1 and
//! each token sees the latent slot and the tokens up to itself (a causal mask aligned at the
//! bottom-right). The LM head is tied to the token embedding.

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::module::linear;
use prompt_diffusion_core::nn::{
    Activation, AttentionOptions, LayerNorm, LayerNormConfig, attention,
};

use super::config::OptimusConfig;

/// GPT-2's `Conv1D`: a linear layer whose weight is stored `[in, out]` (kept as is on load).
#[derive(Module, Debug)]
pub struct Conv1D<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Conv1D<B> {
    fn new(i: usize, o: usize, device: &B::Device) -> Self {
        Self {
            weight: Initializer::Zeros.init([i, o], device),
            bias: Initializer::Zeros.init([o], device),
        }
    }

    /// # Shapes
    /// `[batch, seq, in]` → `[batch, seq, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        linear(x, self.weight.val(), Some(self.bias.val()))
    }
}

/// Causal self-attention with the latent memory slot (`GPT2Attention`).
#[derive(Module, Debug)]
pub struct GPT2Attention<B: Backend> {
    /// Fused query/key/value projection, `[n_embd, 3·n_embd]`.
    pub c_attn: Conv1D<B>,
    /// Output projection.
    pub c_proj: Conv1D<B>,
    heads: usize,
}

impl<B: Backend> GPT2Attention<B> {
    /// # Shapes
    /// `x: [batch, seq, n_embd]`, `memory: [batch, n_embd]` → `[batch, seq, n_embd]`.
    pub fn forward(&self, x: Tensor<B, 3>, memory: Tensor<B, 2>) -> Tensor<B, 3> {
        let [b, n, e] = x.dims();
        let d = e / self.heads;
        let qkv = self.c_attn.forward(x);
        let part = |i: usize| {
            qkv.clone()
                .slice([0..b, 0..n, i * e..(i + 1) * e])
                .reshape([b, n, self.heads, d])
                .swap_dims(1, 2)
        };
        let slot = memory.reshape([b, 1, self.heads, d]).swap_dims(1, 2);
        let k = Tensor::cat(vec![slot.clone(), part(1)], 2);
        let v = Tensor::cat(vec![slot, part(2)], 2);
        let out = attention(part(0), k, v, AttentionOptions::causal());
        self.c_proj.forward(out.swap_dims(1, 2).reshape([b, n, e]))
    }
}

/// The MLP (`GPT2MLP`): `c_proj(gelu_new(c_fc(x)))`.
#[derive(Module, Debug)]
pub struct GPT2MLP<B: Backend> {
    /// `n_embd → 4·n_embd`.
    pub c_fc: Conv1D<B>,
    /// `4·n_embd → n_embd`.
    pub c_proj: Conv1D<B>,
    act: Activation,
}

/// One transformer block (`GPT2Block`).
#[derive(Module, Debug)]
pub struct GPT2Block<B: Backend> {
    /// Norm before attention.
    pub ln_1: LayerNorm<B>,
    /// Attention.
    pub attn: GPT2Attention<B>,
    /// Norm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// MLP.
    pub mlp: GPT2MLP<B>,
}

impl<B: Backend> GPT2Block<B> {
    /// # Shapes
    /// `x: [batch, seq, n_embd]`, `memory: [batch, n_embd]` → `[batch, seq, n_embd]`.
    pub fn forward(&self, x: Tensor<B, 3>, memory: Tensor<B, 2>) -> Tensor<B, 3> {
        let h = x.clone() + self.attn.forward(self.ln_1.forward(x), memory);
        let mlp = &self.mlp;
        let inner = mlp
            .act
            .forward(mlp.c_fc.forward(self.ln_2.forward(h.clone())));
        h + mlp.c_proj.forward(inner)
    }
}

/// GPT-2 with the latent connectors (the checkpoint's `decoder.transformer`).
#[derive(Module, Debug)]
pub struct GPT2Model<B: Backend> {
    /// Token embedding, `[vocab, n_embd]` (also the LM head).
    pub wte: Embedding<B>,
    /// Position embedding, `[n_positions, n_embd]`.
    pub wpe: Embedding<B>,
    /// Blocks.
    pub h: Vec<GPT2Block<B>>,
    /// Final norm.
    pub ln_f: LayerNorm<B>,
    /// `latent → n_layer·n_embd`, no bias: the per-layer memory.
    pub linear: Linear<B>,
    /// `latent → n_embd`, no bias: added to every token embedding.
    pub linear_emb: Linear<B>,
}

/// The Optimus decoder (`GPT2ForLatentConnector_XX`).
#[derive(Module, Debug)]
pub struct GPT2ForLatentConnector<B: Backend> {
    /// The transformer.
    pub transformer: GPT2Model<B>,
}

impl<B: Backend> GPT2ForLatentConnector<B> {
    /// Creates the decoder for `config` (weights are filled by loading).
    pub fn new(config: &OptimusConfig, device: &B::Device) -> Self {
        let c = &config.decoder;
        let e = c.n_embd;
        let norm = || {
            LayerNormConfig::new(e)
                .with_eps(c.layer_norm_epsilon)
                .init(device)
        };
        let no_bias = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        Self {
            transformer: GPT2Model {
                wte: EmbeddingConfig::new(c.vocab_size, e).init(device),
                wpe: EmbeddingConfig::new(c.n_positions, e).init(device),
                h: (0..c.n_layer)
                    .map(|_| GPT2Block {
                        ln_1: norm(),
                        attn: GPT2Attention {
                            c_attn: Conv1D::new(e, 3 * e, device),
                            c_proj: Conv1D::new(e, e, device),
                            heads: c.n_head,
                        },
                        ln_2: norm(),
                        mlp: GPT2MLP {
                            c_fc: Conv1D::new(e, 4 * e, device),
                            c_proj: Conv1D::new(4 * e, e, device),
                            act: c.activation_function,
                        },
                    })
                    .collect(),
                ln_f: norm(),
                linear: no_bias(config.latent_size, c.n_layer * e),
                linear_emb: no_bias(config.latent_size, e),
            },
        }
    }

    /// Next-token logits of every position, conditioned on the latent.
    ///
    /// # Shapes
    /// `ids: [batch, seq]` (`seq` < `n_positions`), `z: [batch, latent]` →
    /// `[batch, seq, vocab]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>, z: Tensor<B, 2>) -> Tensor<B, 3> {
        let t = &self.transformer;
        let [b, n] = ids.dims();
        let wte = t.wte.weight.val();
        let e = wte.dims()[1];
        let positions = t.wpe.weight.val().slice([1..n + 1, 0..e]).unsqueeze::<3>();
        let latent_emb = t.linear_emb.forward(z.clone()).reshape([b, 1, e]);
        let mut h = t.wte.forward(ids) + positions + latent_emb;
        let memory = t.linear.forward(z);
        for (l, block) in t.h.iter().enumerate() {
            let slot = memory.clone().slice([0..b, l * e..(l + 1) * e]);
            h = block.forward(h, slot);
        }
        let h = t.ln_f.forward(h).reshape([b * n, e]);
        let vocab = wte.dims()[0];
        h.matmul(wte.transpose()).reshape([b, n, vocab])
    }

    /// Vocabulary size and position-table size.
    pub fn limits(&self) -> (usize, usize) {
        (
            self.transformer.wte.weight.dims()[0],
            self.transformer.wpe.weight.dims()[0],
        )
    }
}
