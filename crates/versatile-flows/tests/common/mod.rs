//! Fixture access shared by the parity tests (`fixtures/versatile/`, written by
//! `tools/fixtures/gen_versatile.py`).
#![allow(dead_code)]

use std::path::PathBuf;

use prompt_diffusion_core::testing::TestBackend;
use prompt_diffusion_core::weights::LoadOptions;
use prompt_diffusion_unet::UNet2DConditionConfig;
use prompt_diffusion_vae::AutoencoderKLConfig;
use prompt_diffusion_versatile_flows::{
    Flow, OfficialFiles, OptimusConfig, OptimusFiles, VersatileComponents, VersatileFolders,
};

pub type B = TestBackend;

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

pub fn versatile(path: &str) -> PathBuf {
    fixtures().join("versatile").join(path)
}

/// The tiny VD folder with tiny-sd's VAE and tokenizer.
pub fn folders() -> VersatileFolders {
    VersatileFolders::new(versatile("vd"))
        .with_vae(fixtures().join("tiny-sd/vae"))
        .with_tokenizer(fixtures().join("tiny-sd/tokenizer"))
}

pub fn optimus_files() -> OptimusFiles {
    OptimusFiles::new(
        versatile("optimus/optimus-vae.pth"),
        versatile("optimus/vocab"),
    )
    .with_config(OptimusConfig::from_file(versatile("optimus/config.json")).unwrap())
}

/// The official-layout files of the same tiny model.
pub fn official_files() -> OfficialFiles {
    let vd = versatile("vd");
    let mut files = OfficialFiles::new(
        versatile("official/vd-four-flow-v1-0.pth"),
        versatile("official/kl-f8.pth"),
        vd.join("text_encoder"),
    );
    files.image_encoder = vd.join("image_encoder");
    files.tokenizer = fixtures().join("tiny-sd/tokenizer");
    files.image_unet_config =
        UNet2DConditionConfig::from_file(vd.join("image_unet/config.json")).unwrap();
    files.text_unet_config =
        UNet2DConditionConfig::from_file(vd.join("text_unet/config.json")).unwrap();
    files.vae_config =
        AutoencoderKLConfig::from_file(fixtures().join("tiny-sd/vae/config.json")).unwrap();
    files
}

pub fn load(flows: &[Flow]) -> VersatileComponents<B> {
    VersatileComponents::from_folders(
        &folders(),
        Some(&optimus_files()),
        flows,
        &LoadOptions::default(),
        &Default::default(),
    )
    .unwrap()
}

/// Inputs and reference outputs of one fixture file, read as f32.
pub use prompt_diffusion_core::testing::Fixture as Io;

/// `fixtures/versatile/cases.json`.
pub fn cases() -> serde_json::Value {
    let text = std::fs::read_to_string(versatile("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn id_list(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}
