//! Vision tower and preprocessing parity with transformers (`fixtures/clip/`, made by
//! `tools/fixtures/gen_clip.py`).

use crate::common::{
    B, Reference, TOL, check, check_hidden_states, clip_fixture, device, load_fixture,
};
use prompt_diffusion_clip::{
    CLIPVisionModel, CLIPVisionModelWithProjection, clip_image_preprocess,
};
use prompt_diffusion_core::image::load_rgb;
use prompt_diffusion_core::testing::max_abs_diff;
use prompt_diffusion_core::weights::Pretrained;

/// The vision tower with its projection, from the fixture folder `vision_proj`.
fn vision_proj() -> CLIPVisionModelWithProjection<B> {
    load_fixture(
        "vision_proj",
        CLIPVisionModelWithProjection::<B>::from_pretrained,
    )
}

#[test]
fn with_projection_outputs_and_hidden_states() {
    let model = vision_proj();
    let r = Reference::open(clip_fixture("vision_io.safetensors"));
    let pixels = r.float::<4>("pixel_values");
    model
        .vision_model
        .check_pixel_values(pixels.dims())
        .unwrap();
    let out = model.forward_with_hidden_states(pixels.clone());
    assert_eq!(out.last_hidden_state.dims(), [2, 65, 32]);
    r.check_outputs("", out.last_hidden_state.clone(), out.pooled_output);
    r.check("", "image_embeds", out.image_embeds);
    let hidden = out.hidden_states.unwrap();
    check_hidden_states("vision", &hidden, &r);
    // hidden_states[num_layers] is last_hidden_state (before post_layernorm).
    assert_eq!(max_abs_diff(hidden[3].clone(), out.last_hidden_state), 0.0);

    // The tower alone, from the same folder (its visual_projection is ignored).
    let tower = load_fixture("vision_proj", CLIPVisionModel::<B>::from_pretrained);
    let plain = tower.forward(pixels);
    assert!(plain.hidden_states.is_none());
    check(
        "CLIPVisionModel pooled_output",
        plain.pooled_output,
        r.float("pooled_output"),
        TOL,
    );
}

#[test]
fn wrong_pixel_shape_is_reported() {
    let err = vision_proj()
        .vision_model
        .check_pixel_values([1, 3, 224, 224])
        .unwrap_err();
    assert!(err.to_string().contains("[batch, 3, 32, 32]"), "{err}");
}

#[test]
fn preprocessing_matches_clip_image_processor() {
    let r = Reference::open(clip_fixture("preprocess.safetensors"));
    for name in ["landscape", "portrait"] {
        let image = load_rgb(clip_fixture(&format!("images/{name}.png"))).unwrap();
        let pixels = clip_image_preprocess::<B>(&[image.clone(), image], 32, &device()).unwrap();
        assert_eq!(pixels.dims(), [2, 3, 32, 32]);
        let expected = r.float::<4>(name);
        for i in 0..2 {
            check(name, pixels.clone().narrow(0, i, 1), expected.clone(), 1e-5);
        }
    }
}
