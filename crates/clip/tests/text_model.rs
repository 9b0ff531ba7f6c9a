//! Text tower parity with transformers (`fixtures/clip/`, made by
//! `tools/fixtures/gen_clip.py`): outputs and hidden states ≤ 1e-4 (f32), the pooling rules,
//! and the same weights loaded from every layout (folder, SD1 single file with and without the
//! `text_model.` level, SD2 OpenCLIP single file).

use crate::common::{
    B, Reference, TOL, check, check_hidden_states, clip_fixture, device, fixtures, load_fixture,
};
use prompt_diffusion_clip::{
    CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, ClipTokenizer, weights,
};
use prompt_diffusion_core::testing::max_abs_diff;
use prompt_diffusion_core::weights::Pretrained;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource};

#[test]
fn with_projection_quick_gelu_legacy_eos() {
    let model = load_fixture(
        "text_proj",
        CLIPTextModelWithProjection::<B>::from_pretrained,
    );
    let r = Reference::open(clip_fixture("text_proj_io.safetensors"));
    let out = model.forward_with_hidden_states(r.ids("input_ids"));
    r.check_outputs("", out.last_hidden_state, out.pooled_output);
    r.check("", "text_embeds", out.text_embeds);
    check_hidden_states("text_proj", &out.hidden_states.unwrap(), &r);
    // Without hidden states the outputs are the same.
    let plain = model.forward(r.ids("input_ids"));
    assert!(plain.hidden_states.is_none());
    check(
        "text_embeds (forward)",
        plain.text_embeds,
        r.float("text_embeds"),
        TOL,
    );
}

#[test]
fn bare_gelu_model_pools_at_first_eos() {
    // Saved by transformers 5 without the `text_model.` level; eos_token_id 7, inputs shorter
    // than max_position_embeddings.
    let model = load_fixture("text_gelu", CLIPTextModel::<B>::from_pretrained);
    let r = Reference::open(clip_fixture("text_gelu_io.safetensors"));
    model.text_model.check_input_ids([2, 10]).unwrap();
    assert!(model.text_model.check_input_ids([2, 17]).is_err());
    let out = model.forward_with_hidden_states(r.ids("input_ids"));
    assert_eq!(out.last_hidden_state.dims(), [2, 10, 32]);
    r.check_outputs("", out.last_hidden_state, out.pooled_output);
    check_hidden_states("text_gelu", &out.hidden_states.unwrap(), &r);
}

#[test]
fn open_clip_single_file_matches_the_folder() {
    let r = Reference::open(clip_fixture("text_gelu_io.safetensors"));
    let config = CLIPTextConfig::from_file(clip_fixture("text_gelu/config.json")).unwrap();
    let file = TensorSource::open(clip_fixture("openclip_text.safetensors")).unwrap();
    let open_clip = file.strip_prefix(weights::OPEN_CLIP_TEXT_PREFIX);

    let source = weights::open_clip_text(&open_clip, config.num_hidden_layers, false).unwrap();
    let options = LoadOptions::default();
    let model = CLIPTextModel::<B>::from_source(&config, &source, &options, &device());
    let out = model.unwrap().forward(r.ids("input_ids"));
    r.check_outputs("openclip ", out.last_hidden_state, out.pooled_output);

    // With the projection: text_embeds = pooled @ text_projection ([D, P] in OpenCLIP files).
    let source = weights::open_clip_text(&open_clip, config.num_hidden_layers, true).unwrap();
    let model = CLIPTextModelWithProjection::<B>::from_source(
        &config,
        &source,
        &LoadOptions::default(),
        &device(),
    )
    .unwrap();
    let out = model.forward(r.ids("input_ids"));
    let projection = open_clip
        .tensor::<B, 2>("text_projection", &device(), None)
        .unwrap();
    let expected = r.float::<2>("pooled_output").matmul(projection);
    check("openclip text_embeds", out.text_embeds, expected, TOL);
}

#[test]
fn tiny_sd_text_encoder_from_folder_and_single_files() {
    let r = Reference::open(clip_fixture("tiny_sd_text.safetensors"));
    let folder = fixtures().join("tiny-sd/text_encoder");
    let model =
        CLIPTextModel::<B>::from_pretrained(&folder, &LoadOptions::default(), &device()).unwrap();

    // The tokenizer gives the reference's input ids.
    let prompts: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(clip_fixture("tiny_sd_prompts.json")).unwrap(),
    )
    .unwrap();
    let tokenizer = ClipTokenizer::from_folder(fixtures().join("tiny-sd")).unwrap();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let ids = ClipTokenizer::ids_tensor::<B>(&tokenizer.encode_batch(&prompts).unwrap(), &device())
        .unwrap();
    assert_eq!(ids.to_data(), r.ids("input_ids").to_data());

    let out = model.forward_with_hidden_states(ids.clone());
    let (last, pooled) = (out.last_hidden_state.clone(), out.pooled_output.clone());
    r.check_outputs("tiny-sd ", last, pooled);
    check_hidden_states("tiny-sd", out.hidden_states.as_ref().unwrap(), &r);

    // The same weights from the original single files give identical outputs.
    let config = CLIPTextConfig::from_file(folder.join("config.json")).unwrap();
    let load = |source: &TensorSource| {
        let options = LoadOptions::default();
        CLIPTextModel::<B>::from_source(&config, source, &options, &device()).unwrap()
    };
    for file in ["tiny-sd.safetensors", "tiny-sd.ckpt"] {
        let ckpt = TensorSource::open(fixtures().join(file)).unwrap();
        let stripped = ckpt.strip_prefix("cond_stage_model.transformer.");
        let same = load(&stripped).forward(ids.clone());
        assert_eq!(
            max_abs_diff(same.last_hidden_state, out.last_hidden_state.clone()),
            0.0,
            "{file}"
        );
        assert_eq!(
            max_abs_diff(same.pooled_output, out.pooled_output.clone()),
            0.0,
            "{file}"
        );

        // Older files without the `text_model.` level, found through the key table.
        let flat = stripped
            .rename(|k| Some(k.strip_prefix("text_model.").unwrap_or(k).to_string()))
            .unwrap();
        assert!(!flat.has_prefix("text_model."));
        let flat_out = load(&flat).forward(ids.clone());
        assert_eq!(
            max_abs_diff(flat_out.last_hidden_state, out.last_hidden_state.clone()),
            0.0
        );

        let found = weights::sd1_text_encoder(&ckpt)
            .unwrap()
            .expect("SD1 text encoder");
        let found_out = load(&found).forward(ids.clone());
        assert_eq!(
            max_abs_diff(found_out.pooled_output, out.pooled_output.clone()),
            0.0
        );
    }
}
