//! Helpers shared by the pipeline parity tests.

use image::RgbImage;
use prompt_diffusion::core::weights::TensorSource;

/// The reference's uint8 images `[n, h, w, 3]` stored under `key`.
pub fn expected(io: &TensorSource, key: &str) -> Vec<RgbImage> {
    let data = io.data(key).unwrap();
    let [n, h, w, _] = data.shape[..] else {
        panic!("{key}: not [n, h, w, 3]")
    };
    let bytes: Vec<u8> = data.to_vec().unwrap();
    bytes
        .chunks(h * w * 3)
        .take(n)
        .map(|c| RgbImage::from_raw(w as u32, h as u32, c.to_vec()).unwrap())
        .collect()
}

/// Asserts equal counts and sizes and at most 2/255 difference in every pixel channel.
pub fn assert_images_close(what: &str, actual: &[RgbImage], expected: &[RgbImage]) {
    assert_eq!(actual.len(), expected.len(), "{what}: image count");
    let mut worst = 0u8;
    for (a, e) in actual.iter().zip(expected) {
        assert_eq!(a.dimensions(), e.dimensions(), "{what}: size");
        for (pa, pe) in a.as_raw().iter().zip(e.as_raw()) {
            worst = worst.max(pa.abs_diff(*pe));
        }
    }
    eprintln!("{what}: max pixel difference {worst}/255");
    assert!(
        worst <= 2,
        "{what}: max pixel difference {worst}/255 exceeds 2/255"
    );
}
