//! VAE tiling and slicing: large images and large batches in bounded memory (diffusers
//! `AutoencoderKL.enable_tiling` / `enable_slicing`, `_tiled_encode`, `tiled_decode`,
//! `blend_v`, `blend_h` of `models/autoencoders/autoencoder_kl.py`).
//!
//! **Tiling.** An image larger than the tile (`tile_sample_size` pixels, by default the config's
//! `sample_size`) on either side is encoded as overlapping square tiles; latents larger than
//! the latent tile (`tile_sample_size / 2^(levels − 1)`) are decoded the same way. Tiles start
//! every `(1 − overlap_factor) · tile` input elements; each output tile is blended linearly with
//! the (already blended) tile above it and the one to its left over `overlap_factor · tile`
//! output elements, then cropped to `tile − blend` and the crops are concatenated. The result
//! is diffusers' to within float rounding, including its sizes: when the tile grid does not
//! divide evenly (with the default overlap, a latent tile that is not a multiple of 4),
//! diffusers' output is not 8× (or ⅛ of) its input, and neither is this one. Inputs at or below
//! the tile size are processed in one piece, exactly as without tiling.
//!
//! **Slicing.** A batch of more than one image or latent runs one element at a time.
//!
//! Both plug into [`AutoencoderKL::encode`] and [`AutoencoderKL::decode`], so every caller
//! (`encode_images`, `sample_images`, `decode_to_images`, and through them every pipeline) gets
//! them from the model's [`VaeOptions`].
//!
//! # Memory
//!
//! A tiled decode holds the decoder's activations of one tile (see
//! [`VaeOptions::decoder_pass`]), the blended tiles of the previous and the current tile row,
//! the cropped output rows and the latents. With Stable Diffusion 1.5's VAE in f32 (512-px
//! tiles of 64 latents), a 2048×2048 decode (a 4×256×256 latent, 6×6 tiles) holds at peak:
//!
//! * one tile's activations: about 0.95 GiB on burn-flex (the last up blocks' 256- and
//!   128-channel 512² feature maps and a convolution's copy of its input; measured with
//!   `examples/decode_memory.rs`);
//! * two rows of blended tiles, 2 × 6 × 3 MiB, and the output rows, up to 48 MiB, then 2 ×
//!   48 MiB while they are joined into the image (after the last tile);
//! * the latents, 1 MiB, and the decoder's weights, 189 MiB.
//!
//! That is about 1.2 GiB in all: the memory of a single 512×512 decode plus less than 100 MiB,
//! whatever the image size (measured peak resident memory: 1127 MiB for a 512² decode, 1195 MiB
//! for a tiled 1024² one). Untiled, the same decode needs 16 times the activations (about
//! 15 GiB), and a 65536² attention score matrix (16 GiB) on backends that materialise it.

use burn::prelude::*;
use prompt_diffusion_core::limits::MAX_SAMPLE_SIZE;
use prompt_diffusion_core::{Error, Result};

use crate::{AutoencoderKL, AutoencoderKLConfig};

/// Tiled encoding and decoding settings (diffusers' `tile_sample_min_size` and
/// `tile_overlap_factor`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct VaeTiling {
    /// Tile side in pixels; `None` (the default) takes the config's `sample_size`, as diffusers
    /// does. The latent tile is this divided by the VAE's downsampling factor.
    pub tile_sample_size: Option<usize>,
    /// The fraction of a tile that overlaps its neighbour, in `[0, 1)` (default 0.25).
    pub overlap_factor: f64,
}

impl Default for VaeTiling {
    fn default() -> Self {
        Self {
            tile_sample_size: None,
            overlap_factor: 0.25,
        }
    }
}

impl VaeTiling {
    prompt_diffusion_core::setters! {
        /// Sets the tile side in pixels (instead of the config's `sample_size`).
        with_tile_sample_size(tile_sample_size: usize) = Some(tile_sample_size);
        /// Sets the overlap factor.
        with_overlap_factor(overlap_factor: f64);
    }

    /// The tile sizes for a VAE of `config`: `(pixels, latents)`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the overlap factor is not in `[0, 1)`, the tile is smaller
    /// than the downsampling factor or larger than `core::limits::MAX_SAMPLE_SIZE`, or the
    /// overlap leaves tiles no step to advance by.
    pub fn tile_sizes(&self, config: &AutoencoderKLConfig) -> Result<(usize, usize)> {
        let what = "VAE tiling";
        let o = self.overlap_factor;
        if !(o.is_finite() && (0.0..1.0).contains(&o)) {
            return Err(Error::invalid_input(
                what,
                format!("overlap_factor {o} is not in [0, 1)"),
            ));
        }
        let (sample, origin) = match self.tile_sample_size {
            Some(size) => (size, "tile_sample_size"),
            None => (config.sample_size, "the config's sample_size"),
        };
        let factor = config.downsampling_factor();
        if sample < factor || sample > MAX_SAMPLE_SIZE {
            return Err(Error::invalid_input(
                what,
                format!(
                    "{origin} {sample} is not between the downsampling factor {factor} and \
                     {MAX_SAMPLE_SIZE}"
                ),
            ));
        }
        let latent = sample / factor;
        if step(latent, o) == 0 || step(sample, o) == 0 {
            return Err(Error::invalid_input(
                what,
                format!("overlap_factor {o} leaves {latent}-latent / {sample}-pixel tiles no step"),
            ));
        }
        Ok((sample, latent))
    }
}

/// How an [`AutoencoderKL`] runs: tiled or not, sliced or not (both off by default).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct VaeOptions {
    /// Tiled encoding and decoding of inputs larger than a tile (`enable_tiling`).
    pub tiling: Option<VaeTiling>,
    /// One batch element at a time (`enable_slicing`).
    pub slicing: bool,
}

impl VaeOptions {
    prompt_diffusion_core::setters! {
        /// Turns tiling on with these settings.
        with_tiling(tiling: VaeTiling) = Some(tiling);
        /// Turns slicing on or off.
        with_slicing(slicing: bool);
    }

    /// Checks the options against a VAE of `config`.
    ///
    /// # Errors
    /// As [`VaeTiling::tile_sizes`].
    pub fn validate(&self, config: &AutoencoderKLConfig) -> Result<()> {
        match &self.tiling {
            Some(tiling) => tiling.tile_sizes(config).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The largest single decoder call of a decode to `images` images of `height × width`
    /// pixels, as `[images, height, width]` of its output: the whole batch and image without
    /// tiling or slicing, one image with slicing, one tile (`tile_sample_size`², or less at a
    /// smaller image's edge) with tiling. The decoder's activations — what dominates a decode's
    /// memory — scale with its product; with tiling it is bounded whatever the image size.
    ///
    /// Options that do not fit `config` (see [`validate`](Self::validate)) count as no tiling.
    pub fn decoder_pass(
        &self,
        config: &AutoencoderKLConfig,
        images: usize,
        height: usize,
        width: usize,
    ) -> [usize; 3] {
        let images = if self.slicing { images.min(1) } else { images };
        let factor = config.downsampling_factor().max(1);
        let (h, w) = (height / factor, width / factor);
        match self.tiling.and_then(|t| t.tile_sizes(config).ok()) {
            Some((_, latent)) if h > latent || w > latent => {
                [images, h.min(latent) * factor, w.min(latent) * factor]
            }
            _ => [images, height, width],
        }
    }
}

/// Elements a tile advances by: `int(tile · (1 − overlap))`, as diffusers computes it.
fn step(tile: usize, overlap: f64) -> usize {
    (tile as f64 * (1.0 - overlap)) as usize
}

/// The tile grid of one direction (encode or decode), in diffusers' terms.
#[derive(Debug, Clone, Copy)]
struct TileGrid {
    /// Input tile side (`tile_sample_min_size` to encode, `tile_latent_min_size` to decode).
    tile: usize,
    /// Input elements between tile starts (`overlap_size`).
    step: usize,
    /// Output elements blended with the previous tile (`blend_extent`).
    blend: usize,
    /// Output elements kept of each tile (`row_limit`).
    keep: usize,
    /// The smallest input extent the model maps to a non-empty output.
    min_extent: usize,
}

impl TileGrid {
    fn new(input_tile: usize, output_tile: usize, overlap: f64, min_extent: usize) -> Self {
        let blend = (output_tile as f64 * overlap) as usize;
        Self {
            tile: input_tile,
            step: step(input_tile, overlap),
            blend,
            keep: output_tile - blend,
            min_extent,
        }
    }

    /// The tile starts along an axis of `len` elements. diffusers starts a tile every `step`
    /// elements; a trailing tile too small for the encoder's downsamplers (where diffusers
    /// fails) is left out — the tile before it already covers its elements.
    fn starts(&self, len: usize) -> Vec<usize> {
        (0..len)
            .step_by(self.step.max(1))
            .filter(|&start| self.tile.min(len - start) >= self.min_extent)
            .collect()
    }
}

impl<B: Backend> AutoencoderKL<B> {
    /// The options this model runs with.
    pub fn options(&self) -> VaeOptions {
        self.options
    }

    /// Sets how the model runs (tiling, slicing).
    ///
    /// # Errors
    /// As [`VaeOptions::validate`]; the options are left unchanged then.
    pub fn set_options(&mut self, options: VaeOptions) -> Result<()> {
        options.validate(self.config())?;
        self.options = options;
        Ok(())
    }

    /// Turns tiled encoding and decoding on with diffusers' defaults (tiles of the config's
    /// `sample_size`, overlap 0.25), as `enable_tiling()`.
    ///
    /// # Errors
    /// As [`VaeTiling::tile_sizes`] (a `sample_size` below the downsampling factor).
    pub fn enable_tiling(&mut self) -> Result<()> {
        self.enable_tiling_with(VaeTiling::default())
    }

    /// Turns tiled encoding and decoding on with `tiling`.
    ///
    /// # Errors
    /// As [`VaeTiling::tile_sizes`].
    pub fn enable_tiling_with(&mut self, tiling: VaeTiling) -> Result<()> {
        self.set_options(self.options.with_tiling(tiling))
    }

    /// Encodes and decodes in one piece again.
    pub fn disable_tiling(&mut self) {
        self.options.tiling = None;
    }

    /// Runs batches one element at a time, as `enable_slicing()`.
    pub fn enable_slicing(&mut self) {
        self.options.slicing = true;
    }

    /// Runs batches whole again.
    pub fn disable_slicing(&mut self) {
        self.options.slicing = false;
    }

    /// Runs `run` on `x` whole, or on each batch element when slicing is on, concatenating the
    /// results along the batch.
    pub(crate) fn sliced(
        &self,
        x: Tensor<B, 4>,
        run: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let n = x.dims()[0];
        if !self.options.slicing || n <= 1 {
            return run(x);
        }
        let parts = (0..n).map(|i| run(x.clone().narrow(0, i, 1))).collect();
        Tensor::cat(parts, 0)
    }

    /// The encoder's moments of images, tiled when tiling is on and the image is larger than
    /// a tile (diffusers `_encode`).
    pub(crate) fn encode_moments(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = images.dims();
        let factor = self.config().downsampling_factor();
        match self.tile_sizes() {
            Some((sample, latent)) if h > sample || w > sample => {
                let o = self.overlap_factor();
                let grid = TileGrid::new(sample, latent, o, factor);
                tiled(images, grid, |tile| self.encode_tile(tile))
            }
            _ => self.encode_tile(images),
        }
    }

    /// The decoder's images of (unscaled) latents, tiled when tiling is on and the latent is
    /// larger than a latent tile (diffusers `_decode`).
    pub(crate) fn decode_latents(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = latents.dims();
        match self.tile_sizes() {
            Some((sample, latent)) if h > latent || w > latent => {
                let grid = TileGrid::new(latent, sample, self.overlap_factor(), 1);
                tiled(latents, grid, |tile| self.decode_tile(tile))
            }
            _ => self.decode_tile(latents),
        }
    }

    fn tile_sizes(&self) -> Option<(usize, usize)> {
        self.options
            .tiling
            .and_then(|tiling| tiling.tile_sizes(self.config()).ok())
    }

    fn overlap_factor(&self) -> f64 {
        self.options
            .tiling
            .map_or(VaeTiling::default().overlap_factor, |t| t.overlap_factor)
    }
}

/// Runs `run` on each tile of `x` (`[n, c, h, w]`), blends every output tile into the tile
/// above it and the one to its left, crops each to `grid.keep` and assembles the crops.
/// Processes in one piece when a side has no usable tile.
fn tiled<B: Backend>(
    x: Tensor<B, 4>,
    grid: TileGrid,
    run: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let (rows, cols) = (grid.starts(h), grid.starts(w));
    if rows.is_empty() || cols.is_empty() {
        return run(x);
    }
    let mut above: Vec<Tensor<B, 4>> = Vec::new();
    let mut strips = Vec::with_capacity(rows.len());
    for &top in &rows {
        let mut row: Vec<Tensor<B, 4>> = Vec::with_capacity(cols.len());
        let mut crops = Vec::with_capacity(cols.len());
        for (j, &left) in cols.iter().enumerate() {
            let tile = x.clone().slice([
                0..n,
                0..c,
                top..(top + grid.tile).min(h),
                left..(left + grid.tile).min(w),
            ]);
            let mut tile = run(tile);
            if let Some(up) = above.get(j) {
                tile = blend(up, tile, grid.blend, 2);
            }
            if let Some(previous) = row.last() {
                tile = blend(previous, tile, grid.blend, 3);
            }
            let [tn, tc, th, tw] = tile.dims();
            crops.push(tile.clone().slice([
                0..tn,
                0..tc,
                0..th.min(grid.keep),
                0..tw.min(grid.keep),
            ]));
            row.push(tile);
        }
        strips.push(Tensor::cat(crops, 3));
        above = row;
    }
    drop(above);
    Tensor::cat(strips, 2)
}

/// Blends the last `extent` elements of `a` along `dim` (2: rows, 3: columns) into the first
/// `extent` of `b`, with weights falling linearly from 1 to `1/extent` on `a`'s side
/// (diffusers `blend_v`/`blend_h`, `extent` capped by both tiles' sizes).
fn blend<B: Backend>(a: &Tensor<B, 4>, b: Tensor<B, 4>, extent: usize, dim: usize) -> Tensor<B, 4> {
    let (a_len, b_len) = (a.dims()[dim], b.dims()[dim]);
    let e = extent.min(a_len).min(b_len);
    if e == 0 {
        return b;
    }
    let ramp = |weight: fn(f64) -> f64| {
        let values: Vec<f32> = (0..e).map(|y| weight(y as f64 / e as f64) as f32).collect();
        let mut shape = [1; 4];
        shape[dim] = e;
        Tensor::<B, 1>::from_data(TensorData::new(values, [e]), &b.device())
            .reshape(shape)
            .cast(b.dtype())
    };
    let tail = a.clone().narrow(dim, a_len - e, e);
    let head = b.clone().narrow(dim, 0, e);
    let mixed = tail * ramp(|t| 1.0 - t) + head * ramp(|t| t);
    if e == b_len {
        mixed
    } else {
        Tensor::cat(vec![mixed, b.narrow(dim, e, b_len - e)], dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_diffusion_core::testing::TestBackend as B;

    fn sd15() -> AutoencoderKLConfig {
        AutoencoderKLConfig::sd_v1_5()
    }

    #[test]
    fn tile_sizes_follow_the_config_sample_size() {
        assert_eq!(VaeTiling::default().tile_sizes(&sd15()).unwrap(), (512, 64));
        let small = VaeTiling::default().with_tile_sample_size(40);
        assert_eq!(small.tile_sizes(&sd15()).unwrap(), (40, 5));

        let grid = TileGrid::new(64, 512, 0.25, 1);
        assert_eq!((grid.step, grid.blend, grid.keep), (48, 128, 384));
        assert_eq!(grid.starts(256), [0, 48, 96, 144, 192, 240]);
        let grid = TileGrid::new(512, 64, 0.25, 8);
        assert_eq!((grid.step, grid.blend, grid.keep), (384, 16, 48));
        // A 1-pixel strip after the last full step is covered by the tile before it.
        assert_eq!(grid.starts(769), [0, 384]);
    }

    #[test]
    fn unusable_tilings_are_errors() {
        let errors = [
            VaeTiling::default().with_overlap_factor(1.0),
            VaeTiling::default().with_overlap_factor(f64::NAN),
            VaeTiling::default().with_tile_sample_size(4),
            VaeTiling::default()
                .with_tile_sample_size(8)
                .with_overlap_factor(0.5),
        ]
        .map(|t| t.tile_sizes(&sd15()).unwrap_err().to_string());
        assert!(errors[0].contains("overlap_factor 1"), "{}", errors[0]);
        assert!(errors[1].contains("overlap_factor NaN"), "{}", errors[1]);
        assert!(errors[2].contains("tile_sample_size 4"), "{}", errors[2]);
        assert!(errors[3].contains("no step"), "{}", errors[3]);

        let mut config = sd15();
        config.sample_size = 4;
        let err = VaeTiling::default().tile_sizes(&config).unwrap_err();
        assert!(err.to_string().contains("sample_size 4"), "{err}");
    }

    #[test]
    fn a_tiled_pass_is_one_tile() {
        let config = sd15();
        let tiled = VaeOptions::default().with_tiling(VaeTiling::default());
        assert_eq!(tiled.decoder_pass(&config, 2, 2048, 2048), [2, 512, 512]);
        assert_eq!(tiled.decoder_pass(&config, 2, 512, 512), [2, 512, 512]);
        assert_eq!(tiled.decoder_pass(&config, 1, 2048, 256), [1, 512, 256]);
        let sliced = tiled.with_slicing(true);
        assert_eq!(sliced.decoder_pass(&config, 4, 4096, 1024), [1, 512, 512]);
        let plain = VaeOptions::default();
        assert_eq!(plain.decoder_pass(&config, 2, 2048, 1024), [2, 2048, 1024]);
    }

    #[test]
    fn blending_ramps_linearly_across_the_overlap() {
        let device = Default::default();
        let a = Tensor::<B, 4>::ones([1, 1, 2, 6], &device);
        let b = Tensor::<B, 4>::zeros([1, 1, 2, 3], &device);
        let out = blend(&a, b, 4, 3).into_data().to_vec::<f32>().unwrap();
        // The extent is capped by b's 3 columns: weights on a are 1, 2/3, 1/3.
        let row = [1.0, 2.0 / 3.0, 1.0 / 3.0];
        assert_eq!(out, [row, row].concat());
    }
}
