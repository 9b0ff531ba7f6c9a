//! The `parameters` text chunk of a PNG: written as AUTOMATIC1111 does through PIL (`tEXt`
//! when the text is Latin-1, else an uncompressed `iTXt`), read from `tEXt`, `zTXt` or `iTXt`.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use image::RgbImage;
use image::error::{EncodingError, ImageError, ImageFormatHint};
use png::{BitDepth, ColorType, DecodingError, Encoder, Info};
use prompt_diffusion_core::files::write_atomic;
use prompt_diffusion_core::image::MAX_DECODE_BYTES;
use prompt_diffusion_core::{Error, Result};

use super::GenerationParameters;

/// The keyword of the text chunk holding the parameters (A1111's, read by ComfyUI and image
/// hosts).
pub const PARAMETERS_KEYWORD: &str = "parameters";

/// Encodes `image` as an 8-bit RGB PNG into `w`, with `parameters` (A1111 text) in a
/// `parameters` chunk before the image data: `tEXt` when every character is Latin-1, else
/// `iTXt`.
///
/// # Errors
/// The encoder's error (a zero-sized image, a failed write).
pub fn encode_png<W: Write>(
    image: &RgbImage,
    parameters: Option<&str>,
    w: W,
) -> std::result::Result<(), png::EncodingError> {
    let mut encoder = Encoder::new(w, image.width(), image.height());
    encoder.set_color(ColorType::Rgb);
    encoder.set_depth(BitDepth::Eight);
    if let Some(text) = parameters {
        let (keyword, text) = (PARAMETERS_KEYWORD.to_string(), text.to_string());
        match text.chars().all(|c| u32::from(c) <= 0xff) {
            true => encoder.add_text_chunk(keyword, text)?,
            false => encoder.add_itxt_chunk(keyword, text)?,
        }
    }
    let mut writer = encoder.write_header()?;
    writer.write_image_data(image.as_raw())?;
    writer.finish()
}

/// Writes `image` as a PNG at `path` with `parameters` in its `parameters` chunk (none when
/// `None`), atomically like [`save_rgb`](prompt_diffusion_core::image::save_rgb): a failed
/// write leaves an existing file intact, and a symbolic link at `path` is replaced, not
/// written through.
///
/// # Errors
/// [`Error::Image`] naming the file when encoding fails, [`Error::Io`] when it cannot be
/// written.
pub fn save_png_with_parameters(
    image: &RgbImage,
    path: impl AsRef<Path>,
    parameters: Option<&GenerationParameters>,
) -> Result<()> {
    let path = path.as_ref();
    let text = parameters.map(GenerationParameters::to_a1111_string);
    write_atomic(path, |w| {
        encode_png(image, text.as_deref(), w).map_err(|e| Error::Image {
            path: path.to_path_buf(),
            source: ImageError::Encoding(EncodingError::new(
                ImageFormatHint::Exact(image::ImageFormat::Png),
                e,
            )),
        })
    })
}

/// The text of the `parameters` chunk of the PNG at `path`, `None` when it has none. Chunks
/// after the image data are found too (the image is then decoded, within
/// [`MAX_DECODE_BYTES`]).
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened, [`Error::Format`] naming the file when it is
/// not a readable PNG or the chunk's text cannot be decoded.
pub fn read_parameters_text(path: impl AsRef<Path>) -> Result<Option<String>> {
    let path = path.as_ref();
    let format = |e: DecodingError| Error::format(path, format!("not a readable PNG file: {e}"));
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let limits = png::Limits {
        bytes: usize::try_from(MAX_DECODE_BYTES).unwrap_or(usize::MAX),
    };
    let decoder = png::Decoder::new_with_limits(BufReader::new(file), limits);
    let mut reader = decoder.read_info().map_err(format)?;
    if let Some(text) = parameters_chunk(reader.info()).map_err(format)? {
        return Ok(Some(text));
    }
    // PIL writes text chunks before the image data; other writers may put them after it.
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Error::format(path, "the image is too large to decode"))?;
    let mut pixels = vec![0; size];
    reader.next_frame(&mut pixels).map_err(format)?;
    reader.finish().map_err(format)?;
    parameters_chunk(reader.info()).map_err(format)
}

/// Reads the generation parameters of the PNG at `path`: `None` when it has no `parameters`
/// chunk.
///
/// # Errors
/// As [`read_parameters_text`]; [`Error::Format`] naming the file when the text does not parse
/// ([`GenerationParameters::parse`]).
pub fn read_parameters(path: impl AsRef<Path>) -> Result<Option<GenerationParameters>> {
    let path = path.as_ref();
    let Some(text) = read_parameters_text(path)? else {
        return Ok(None);
    };
    GenerationParameters::parse(&text)
        .map(Some)
        .map_err(|e| Error::format(path, format!("`{PARAMETERS_KEYWORD}` chunk: {e}")))
}

/// The text of the first `parameters` chunk in `info` (tEXt, then zTXt, then iTXt).
fn parameters_chunk(info: &Info) -> std::result::Result<Option<String>, DecodingError> {
    let is_ours = |keyword: &str| keyword == PARAMETERS_KEYWORD;
    if let Some(chunk) = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| is_ours(&c.keyword))
    {
        return Ok(Some(chunk.text.clone()));
    }
    if let Some(chunk) = info
        .compressed_latin1_text
        .iter()
        .find(|c| is_ours(&c.keyword))
    {
        return chunk.get_text().map(Some);
    }
    let chunk = info.utf8_text.iter().find(|c| is_ours(&c.keyword));
    chunk.map(|c| c.get_text()).transpose()
}
