//! Conversions between `image::RgbImage` and `[batch, 3, height, width]` tensors.
//!
//! They follow diffusers' `VaeImageProcessor`: pixels are divided by 255 and mapped to
//! [-1, 1] on the way in; on the way out values are mapped back with `x/2 + 0.5`, clamped to
//! [0, 1], multiplied by 255 and rounded half-to-even (numpy's `round`).

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
/// The 8-bit RGB image type of every image boundary (re-exported, so that model crates need
/// no `image` dependency of their own).
pub use image::RgbImage;

use crate::{Error, Result};

/// The value range of an image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PixelRange {
    /// `[-1, 1]`, what the VAE takes and returns.
    #[default]
    MinusOneToOne,
    /// `[0, 1]`.
    ZeroToOne,
}

/// The largest width or height [`load_rgb`] accepts, in pixels (so at most 64 Mpx).
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// The most memory [`load_rgb`] lets the decoder allocate: an image of
/// [`MAX_IMAGE_SIDE`]² pixels in 16-bit RGBA.
pub const MAX_DECODE_BYTES: u64 = MAX_IMAGE_SIDE as u64 * MAX_IMAGE_SIDE as u64 * 8;

/// Reads an image file and converts it to 8-bit RGB.
///
/// The size is read from the file's header first: an image wider or taller than
/// [`MAX_IMAGE_SIDE`] is rejected before anything is decoded, and the decoder may allocate at
/// most [`MAX_DECODE_BYTES`], so a small file claiming a huge image never costs gigabytes.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened, [`Error::InvalidInput`] when the image is too
/// large, [`Error::Image`] when it cannot be decoded.
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let open = || -> Result<_> {
        let reader = image::ImageReader::open(path).map_err(|e| Error::io(path, e))?;
        reader.with_guessed_format().map_err(|e| Error::io(path, e))
    };
    let image_error = |source| Error::Image {
        path: path.to_path_buf(),
        source,
    };
    let (width, height) = open()?.into_dimensions().map_err(image_error)?;
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(Error::invalid_input(
            "image",
            format!(
                "{}: {width}x{height} pixels exceeds the limit of {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}",
                path.display()
            ),
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut reader = open()?;
    reader.limits(limits);
    Ok(reader.decode().map_err(image_error)?.to_rgb8())
}

/// Writes an image; the format follows the extension (PNG or JPEG). The file is written
/// atomically ([`crate::files::write_atomic`]): a failed write leaves an existing file intact
/// and a symbolic link at `path` is replaced, not written through.
///
/// # Errors
/// [`Error::Image`] when the extension names no supported format or encoding fails,
/// [`Error::Io`] when the file cannot be written.
pub fn save_rgb(image: &RgbImage, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let image_error = |source| Error::Image {
        path: path.to_path_buf(),
        source,
    };
    let format = image::ImageFormat::from_path(path).map_err(image_error)?;
    crate::files::write_atomic(path, |w| image.write_to(w, format).map_err(image_error))
}

/// Stacks images of one size into a `[n, 3, h, w]` tensor in `range`, in the device's default
/// float dtype.
///
/// # Errors
/// [`Error::InvalidInput`] when `images` is empty or the sizes differ.
pub fn images_to_tensor<B: Backend>(
    images: &[RgbImage],
    range: PixelRange,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let first = images
        .first()
        .ok_or_else(|| Error::invalid_input("images", "no image given"))?;
    let (w, h) = first.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut values = Vec::with_capacity(images.len() * 3 * h * w);
    for (i, img) in images.iter().enumerate() {
        if img.dimensions() != first.dimensions() {
            let (wi, hi) = img.dimensions();
            let reason = format!("image {i} is {wi}x{hi}, image 0 is {w}x{h}");
            return Err(Error::invalid_input("images", reason));
        }
        for c in 0..3 {
            values.extend(img.pixels().map(|p| {
                let x = p.0[c] as f32 / 255.0;
                match range {
                    PixelRange::MinusOneToOne => 2.0 * x - 1.0,
                    PixelRange::ZeroToOne => x,
                }
            }));
        }
    }
    let data = TensorData::new(values, [images.len(), 3, h, w]);
    let dtype = crate::dtype::default_float_dtype::<B>(device);
    Ok(Tensor::from_data(
        data.convert_dtype(dtype),
        (device, dtype),
    ))
}

/// Converts a `[n, 3, h, w]` tensor in `range` to `n` images.
///
/// # Errors
/// [`Error::Shape`] when the tensor does not have 3 channels.
pub fn tensor_to_images<B: Backend>(
    tensor: Tensor<B, 4>,
    range: PixelRange,
) -> Result<Vec<RgbImage>> {
    let [n, c, h, w] = tensor.dims();
    if c != 3 {
        return Err(Error::Shape {
            origin: None,
            key: "image".into(),
            expected: "[n, 3, h, w]".into(),
            found: vec![n, c, h, w],
        });
    }
    let data = tensor.cast(DType::F32).into_data();
    let values: Vec<f32> = data
        .to_vec()
        .map_err(|e| Error::invalid_input("image tensor", format!("{e:?}")))?;
    let plane = h * w;
    let images = (0..n)
        .map(|i| {
            let base = i * 3 * plane;
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let idx = y as usize * w + x as usize;
                image::Rgb([0, 1, 2].map(|ch| {
                    let v = values[base + ch * plane + idx];
                    let unit = match range {
                        PixelRange::MinusOneToOne => v / 2.0 + 0.5,
                        PixelRange::ZeroToOne => v,
                    };
                    to_u8(unit)
                }))
            })
        })
        .collect();
    Ok(images)
}

/// `round(clamp(x, 0, 1) · 255)` with ties to even, as numpy does.
fn to_u8(unit: f32) -> u8 {
    let scaled = unit.clamp(0.0, 1.0) * 255.0;
    if scaled.is_nan() {
        0
    } else {
        scaled.round_ties_even() as u8
    }
}

/// Resizes with a Lanczos3 filter (PIL's `LANCZOS`, diffusers' default resample).
pub fn resize(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        return image.clone();
    }
    image::imageops::resize(image, width, height, image::imageops::FilterType::Lanczos3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestBackend as B;

    #[test]
    fn round_trip_is_exact() {
        let img = RgbImage::from_fn(5, 3, |x, y| {
            image::Rgb([(x * 50) as u8, (y * 100) as u8, 255])
        });
        let device = Default::default();
        for range in [PixelRange::MinusOneToOne, PixelRange::ZeroToOne] {
            let t = images_to_tensor::<B>(&[img.clone(), img.clone()], range, &device).unwrap();
            assert_eq!(t.dims(), [2, 3, 3, 5]);
            let back = tensor_to_images(t, range).unwrap();
            assert_eq!(back.len(), 2);
            assert_eq!(back[1], img);
        }
    }

    #[test]
    fn mismatched_sizes_are_an_error() {
        let a = RgbImage::new(4, 4);
        let b = RgbImage::new(4, 5);
        let device = Default::default();
        assert!(images_to_tensor::<B>(&[a, b], PixelRange::ZeroToOne, &device).is_err());
        assert!(images_to_tensor::<B>(&[], PixelRange::ZeroToOne, &device).is_err());
    }

    #[test]
    fn oversized_images_are_rejected_from_their_header() {
        let dir = tempfile::tempdir().unwrap();
        // A valid PNG header claiming 12000x12000 pixels, with no pixel data: rejected from the
        // header, nothing decoded.
        let path = dir.path().join("huge.png");
        std::fs::write(&path, crate::testing::png_claiming(12000)).unwrap();
        let err = load_rgb(&path).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        assert!(err.to_string().contains("12000x12000"), "{err}");
        let small = dir.path().join("small.png");
        save_rgb(&RgbImage::new(9, 7), &small).unwrap();
        assert_eq!(load_rgb(&small).unwrap().dimensions(), (9, 7));
    }

    #[test]
    fn rounding_is_half_to_even_and_clamped() {
        assert_eq!(to_u8(0.5 / 255.0), 0);
        assert_eq!(to_u8(1.5 / 255.0), 2);
        assert_eq!(to_u8(2.0), 255);
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(f32::NAN), 0);
    }
}
