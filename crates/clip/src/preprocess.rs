//! CLIP image preprocessing: the pixels transformers' `CLIPImageProcessor` produces
//! ([`CLIPImageProcessor`], [`clip_image_preprocess`]).
//!
//! Steps (transformers 5, default torchvision backend, as used by diffusers' image encoders):
//! resize so the shorter side is `size` (the longer side `floor(size · long / short)`), center
//! crop `size × size`, divide by 255, normalise with the OpenAI CLIP mean and std.
//!
//! **Filter.** The resize is an anti-aliased bicubic (Keys kernel, a = −0.5, support widened by
//! the downscale factor, weights renormalised at the borders) computed like PyTorch's 8-bit
//! `interpolate(..., mode="bicubic", antialias=True)`: weights rounded to 16-bit fixed point,
//! horizontal pass then vertical pass, each rounding to 8 bits. This reproduces transformers'
//! pixel values exactly. PIL's `BICUBIC` (`CLIPImageProcessorPil`, transformers 4's default)
//! uses the same kernel and pass order with 22-bit weights, so it can differ by one 8-bit level
//! on some pixels; the `image` crate's `CatmullRom` (same kernel, float intermediates) differs
//! by about as much.

use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use image::RgbImage;
use prompt_diffusion_core::{Error, Result};

/// OpenAI CLIP normalisation mean (R, G, B), as transformers' `OPENAI_CLIP_MEAN`.
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP normalisation standard deviation (R, G, B), as `OPENAI_CLIP_STD`.
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The input boundary of a CLIP vision tower (transformers' `CLIPImageProcessor` with the
/// OpenAI statistics): images to the normalised pixels the tower takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CLIPImageProcessor {
    /// The side of the square input, in pixels (the config's `image_size`: 224 for ViT-L/14).
    pub size: usize,
}

impl CLIPImageProcessor {
    /// A processor for `size`×`size` inputs.
    pub fn new(size: usize) -> Self {
        Self { size }
    }

    /// Resizes (shorter side to `size`, anti-aliased bicubic), center-crops and normalises,
    /// exactly as transformers does (see the [module](self) documentation).
    ///
    /// # Shapes
    /// `n` images of any sizes → `[n, 3, size, size]`, in the device's default float dtype.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `images` is empty, `size` is 0 or an image has no pixels.
    pub fn preprocess<B: Backend>(
        &self,
        images: &[RgbImage],
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        clip_image_preprocess(images, self.size, device)
    }

    /// The on-tensor variant of Diff-Plugin's `train.py`: images in [-1, 1] to [0, 1],
    /// bilinear to `size`×`size` (no antialiasing, half-pixel centres, no crop), then
    /// [`normalize`](Self::normalize).
    ///
    /// # Shapes
    /// `[n, 3, H, W]` → `[n, 3, size, size]`.
    pub fn preprocess_tensor<B: Backend>(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let options = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false);
        let x = interpolate((images + 1.0) / 2.0, [self.size, self.size], options);
        self.normalize(x)
    }

    /// `(x − mean) / std` per channel with the OpenAI CLIP statistics, on pixels in [0, 1].
    ///
    /// # Shapes
    /// `[n, 3, H, W]` → `[n, 3, H, W]`.
    pub fn normalize<B: Backend>(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
        let device = pixels.device();
        let stat = |v: [f64; 3]| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::<B, 1>::from_data(TensorData::new(v, [3]), &device).reshape([1, 3, 1, 1])
        };
        (pixels - stat(CLIP_MEAN)) / stat(CLIP_STD)
    }
}

/// Preprocesses images for the CLIP vision tower (224 for ViT-L/14): the pixels of
/// [`CLIPImageProcessor::preprocess`].
///
/// # Shapes
/// `n` images of any sizes → `[n, 3, size, size]`, in the device's default float dtype.
///
/// # Errors
/// [`Error::InvalidInput`] when `images` is empty, `size` is 0 or an image has no pixels.
pub fn clip_image_preprocess<B: Backend>(
    images: &[RgbImage],
    size: usize,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    if images.is_empty() {
        return Err(Error::invalid_input("images", "no image given"));
    }
    if size == 0 {
        return Err(Error::invalid_input("size", "must be at least 1"));
    }
    let mut values = Vec::with_capacity(images.len() * 3 * size * size);
    for (i, image) in images.iter().enumerate() {
        let (w, h) = (image.width() as usize, image.height() as usize);
        if w == 0 || h == 0 {
            return Err(Error::invalid_input(
                "images",
                format!("image {i} is {w}x{h}"),
            ));
        }
        let planes = resize_shortest_edge(image, size);
        let (rh, rw) = (planes.height, planes.width);
        let (top, left) = ((rh - size) / 2, (rw - size) / 2);
        for (c, plane) in planes.data.iter().enumerate() {
            // transformers fuses the /255 into the statistics, in f32: (x - 255·mean) / (255·std).
            let mean = CLIP_MEAN[c] as f32 * 255.0;
            let std = CLIP_STD[c] as f32 * 255.0;
            for y in top..top + size {
                let row = &plane[y * rw + left..y * rw + left + size];
                values.extend(row.iter().map(|&p| (f32::from(p) - mean) / std));
            }
        }
    }
    let data = TensorData::new(values, [images.len(), 3, size, size]);
    let dtype = prompt_diffusion_core::dtype::default_float_dtype::<B>(device);
    Ok(Tensor::from_data(
        data.convert_dtype(dtype),
        (device, dtype),
    ))
}

/// Three 8-bit planes (R, G, B) of one size.
struct Planes {
    width: usize,
    height: usize,
    data: [Vec<u8>; 3],
}

/// Resizes so the shorter side is `size`, as transformers' `get_resize_output_image_size`
/// with `default_to_square=False`.
fn resize_shortest_edge(image: &RgbImage, size: usize) -> Planes {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((size * long) as f64 / short as f64) as usize;
    let (out_w, out_h) = if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    };
    let data = [0, 1, 2].map(|c| image.pixels().map(|p| p.0[c]).collect::<Vec<u8>>());
    let mut planes = Planes {
        width: w,
        height: h,
        data,
    };
    if out_w != w {
        let taps = Taps::new(w, out_w);
        let (width, height) = (planes.width, planes.height);
        planes.data = planes.data.map(|plane| {
            let mut out = vec![0u8; out_w * height];
            for y in 0..height {
                let src = &plane[y * width..(y + 1) * width];
                for x in 0..out_w {
                    out[y * out_w + x] = taps.apply(x, |j| src[j]);
                }
            }
            out
        });
        planes.width = out_w;
    }
    if out_h != h {
        let taps = Taps::new(h, out_h);
        let width = planes.width;
        planes.data = planes.data.map(|plane| {
            let mut out = vec![0u8; width * out_h];
            for y in 0..out_h {
                for x in 0..width {
                    out[y * width + x] = taps.apply(y, |j| plane[j * width + x]);
                }
            }
            out
        });
        planes.height = out_h;
    }
    planes
}

/// Fixed-point anti-aliased bicubic weights along one axis (PyTorch's
/// `_compute_index_ranges_int16_weights` with the `a = −0.5` cubic).
struct Taps {
    /// First input index of each output index.
    start: Vec<usize>,
    /// Weights of each output index (as many as inputs it reads).
    weights: Vec<Vec<i32>>,
    precision: u32,
}

impl Taps {
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
        let max_taps = support.ceil() as i64 * 2 + 1;
        let inv_scale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
        let mut start = Vec::with_capacity(out_size);
        let mut float_weights = Vec::with_capacity(out_size);
        let mut w_max = 0.0f64;
        for i in 0..out_size {
            let center = scale * (i as f64 + 0.5);
            // C++ casts truncate toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xsize = ((center + support + 0.5) as i64)
                .min(in_size as i64)
                .saturating_sub(xmin)
                .clamp(0, max_taps);
            let mut ws: Vec<f64> = (0..xsize)
                .map(|j| cubic(((j + xmin) as f64 - center + 0.5) * inv_scale))
                .collect();
            let total: f64 = ws.iter().sum();
            if total != 0.0 {
                for w in &mut ws {
                    *w /= total;
                    w_max = w_max.max(*w);
                }
            }
            start.push(xmin as usize);
            float_weights.push(ws);
        }
        let mut precision = 0u32;
        while precision < 22 {
            let next = (0.5 + w_max * f64::from(1u32 << (precision + 1))) as i32;
            if next >= 1 << 15 {
                break;
            }
            precision += 1;
        }
        let one = f64::from(1u32 << precision);
        let weights = float_weights
            .into_iter()
            .map(|ws| {
                ws.into_iter()
                    .map(|w| {
                        let v = w * one;
                        if v < 0.0 {
                            (v - 0.5) as i32
                        } else {
                            (v + 0.5) as i32
                        }
                    })
                    .collect()
            })
            .collect();
        Self {
            start,
            weights,
            precision,
        }
    }

    /// Output value `i`, reading input `j` through `src(j)`.
    fn apply(&self, i: usize, src: impl Fn(usize) -> u8) -> u8 {
        let mut acc: i32 = 1 << (self.precision - 1);
        for (k, &w) in self.weights[i].iter().enumerate() {
            acc += i32::from(src(self.start[i] + k)) * w;
        }
        (acc >> self.precision).clamp(0, 255) as u8
    }
}

/// Keys' cubic convolution kernel with a = −0.5 (PIL's and PyTorch's anti-aliased bicubic).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_identity_is_exact() {
        for (inp, out) in [(61, 42), (19, 32), (224, 224), (1000, 224)] {
            let taps = Taps::new(inp, out);
            let one = 1i32 << taps.precision;
            for ws in &taps.weights {
                let sum: i32 = ws.iter().sum();
                assert!(
                    (sum - one).abs() <= ws.len() as i32,
                    "{inp}->{out}: {sum} vs {one}"
                );
            }
        }
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([(x * 30) as u8, (y * 50) as u8, 9]));
        let same = resize_shortest_edge(&img, 5);
        assert_eq!((same.width, same.height), (7, 5));
        assert_eq!(same.data[0][3], 90);
    }

    #[test]
    fn output_shape_and_errors() {
        use prompt_diffusion_core::testing::TestBackend as B;
        let device = Default::default();
        let wide = RgbImage::from_pixel(40, 20, image::Rgb([128, 64, 0]));
        let tall = RgbImage::from_pixel(9, 30, image::Rgb([255, 255, 255]));
        let t = clip_image_preprocess::<B>(&[wide, tall], 8, &device).unwrap();
        assert_eq!(t.dims(), [2, 3, 8, 8]);
        let v: Vec<f32> = t.into_data().to_vec().unwrap();
        // A flat image stays flat: (128 - 0.4815·255) / (0.2686·255).
        assert!((v[0] - (128.0 / 255.0 - CLIP_MEAN[0] as f32) / CLIP_STD[0] as f32).abs() < 1e-5);
        assert!(clip_image_preprocess::<B>(&[], 8, &device).is_err());
        assert!(clip_image_preprocess::<B>(&[RgbImage::new(0, 3)], 8, &device).is_err());
    }
}
