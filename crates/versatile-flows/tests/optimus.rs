//! Optimus parity (`fixtures/versatile/`): tokenizer ids and texts, encoder means and decoder
//! logits (≤ 1e-4) against transformers' BERT and GPT-2 with the latent injection, greedy
//! decoding token for token, and the official checkpoint's naming variants.

use crate::common::{B, Io, cases, id_list, optimus_files, versatile};
use burn::prelude::*;
use prompt_diffusion_core::testing::assert_close;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource};
use prompt_diffusion_versatile_flows::optimus::OptimusVae;
use prompt_diffusion_versatile_flows::{Optimus, OptimusConfig, OptimusTokenizers, TextDecoding};

fn optimus() -> Optimus<B> {
    let files = optimus_files();
    Optimus::from_files(
        &files.weights,
        &files.vocab,
        &files.config,
        &LoadOptions::default(),
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn tokenizers_match_transformers() {
    let cases = cases();
    let tokenizers = OptimusTokenizers::from_folder(versatile("optimus/vocab")).unwrap();
    let sentences = cases["optimus"]["sentences"].as_array().unwrap();
    for (sentence, expected) in sentences
        .iter()
        .zip(cases["optimus"]["bert_ids"].as_array().unwrap())
    {
        let ids = tokenizers.encode(sentence.as_str().unwrap()).unwrap();
        assert_eq!(ids, id_list(expected), "{sentence}");
    }
    assert_eq!(
        tokenizers.bos_id() as u64,
        cases["optimus"]["bos"].as_u64().unwrap()
    );
    assert_eq!(
        tokenizers.eos_id() as u64,
        cases["optimus"]["eos"].as_u64().unwrap()
    );
    for (ids, text) in cases["optimus"]["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .zip(cases["optimus"]["greedy_text"].as_array().unwrap())
    {
        assert_eq!(
            tokenizers.detokenize(&id_list(ids)).unwrap(),
            text.as_str().unwrap()
        );
    }
}

#[test]
fn encoder_and_decoder_match_the_reference() {
    let io = Io::open(versatile("io.safetensors"));
    let model = optimus();
    let sentences = [
        "A red car parked in the sun.",
        "Two dogs playing with a zebra!",
    ];
    assert_close(
        "encoder mean",
        model.encode(&sentences).unwrap(),
        io.t("optimus.encode"),
        1e-4,
    );
    let logits = model
        .logits(&io.ids("optimus.decode.ids"), io.t("optimus.decode.z"))
        .unwrap();
    assert_close("decoder logits", logits, io.t("optimus.logits"), 1e-4);
}

#[test]
fn greedy_decoding_reproduces_the_reference_ids() {
    let io = Io::open(versatile("io.safetensors"));
    let cases = cases();
    let model = optimus();
    let ids = model
        .decode_ids(io.t("optimus.decode.z"), TextDecoding::Greedy, 0)
        .unwrap();
    let expected: Vec<Vec<u32>> = cases["optimus"]["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_list)
        .collect();
    assert_eq!(ids, expected);
    let texts = model
        .decode(io.t("optimus.decode.z"), TextDecoding::Greedy, 0)
        .unwrap();
    assert_eq!(
        texts[0],
        cases["optimus"]["greedy_text"][0].as_str().unwrap()
    );

    // Sampling: seeded, within the length limit, ends with <EOS>.
    let z: Tensor<B, 2> = io.t("optimus.decode.z");
    let sample = |seed| {
        model
            .decode_ids(z.clone(), TextDecoding::Sample { temperature: 1.0 }, seed)
            .unwrap()
    };
    let a = sample(3);
    assert_eq!(a, sample(3));
    let eos = model.tokenizers.eos_id();
    assert!(a.iter().all(|ids| ids.len() <= 30
        && ids.last() == Some(&eos)
        && ids[0] == model.tokenizers.bos_id()));
    let cold = model
        .decode_ids(z, TextDecoding::Sample { temperature: 1e-4 }, 9)
        .unwrap();
    assert_eq!(cold, expected, "a cold sampler is greedy");
}

#[test]
fn dataparallel_prefixes_and_new_layernorm_names_load_identically() {
    let source = TensorSource::open(versatile("optimus/optimus-vae.pth")).unwrap();
    assert!(source.contains("encoder.embeddings.LayerNorm.gamma"));
    let renamed = source
        .rename(|key| {
            let key = key.replace(".gamma", ".weight").replace(".beta", ".bias");
            Some(format!("module.{key}"))
        })
        .unwrap();
    let config = OptimusConfig::from_file(versatile("optimus/config.json")).unwrap();
    let device = Default::default();
    let a =
        OptimusVae::<B>::from_source(&config, &source, &LoadOptions::default(), &device).unwrap();
    let b =
        OptimusVae::<B>::from_source(&config, &renamed, &LoadOptions::default(), &device).unwrap();
    let ids = Tensor::<B, 2, Int>::from_data([[2, 5, 6, 3]], &device);
    assert_eq!(
        a.encoder.forward(ids.clone()).into_data(),
        b.encoder.forward(ids).into_data()
    );
    // Missing tensors are reported, not ignored.
    let partial = source
        .rename(|key| (!key.contains("pooler")).then(|| key.to_string()))
        .unwrap();
    let err = OptimusVae::<B>::from_source(&config, &partial, &LoadOptions::default(), &device)
        .unwrap_err();
    assert!(err.to_string().contains("pooler"), "{err}");
}
