//! Textual inversion against diffusers' `load_textual_inversion` on the tiny model
//! (`fixtures/text/`, made by `tools/fixtures/gen_text_conditioning.py`): the four file layouts,
//! the ids of the new tokens, the grown token embedding, multi-vector expansion, the prompt
//! embeddings (≤ 1e-4), and the files that must be refused.

use std::path::PathBuf;

use prompt_diffusion_clip::textual_inversion::EmbeddingLayout;
use prompt_diffusion_clip::{CLIPTextModel, ClipTokenizer, TextualInversion};
use prompt_diffusion_core::Error;
use prompt_diffusion_core::weights::{LoadOptions, Pretrained};
use serde_json::Value;

use crate::common::{B, Reference, device, fixtures};

fn embedding(name: &str) -> PathBuf {
    fixtures().join("text/embeddings").join(name)
}

fn model() -> (ClipTokenizer, CLIPTextModel<B>) {
    let dir = fixtures().join("tiny-sd");
    let tokenizer = ClipTokenizer::from_folder(&dir).unwrap();
    let encoder = CLIPTextModel::from_pretrained(
        dir.join("text_encoder"),
        &LoadOptions::default(),
        &device(),
    )
    .unwrap();
    (tokenizer, encoder)
}

/// The four files in the order the fixture script loads them.
fn files() -> Vec<TextualInversion> {
    vec![
        TextualInversion::from_file(embedding("learned_embeds.safetensors"), None).unwrap(),
        TextualInversion::from_file(embedding("cat_toy.bin"), None).unwrap(),
        TextualInversion::from_file(embedding("charcoal.pt"), None).unwrap(),
        TextualInversion::from_file(embedding("a1111_style.safetensors"), None).unwrap(),
    ]
}

fn reference_json() -> Value {
    let path = fixtures().join("text/textual_inversion.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_layout_names_its_token() {
    let found: Vec<(String, usize, EmbeddingLayout)> = files()
        .iter()
        .map(|e| (e.token.clone(), e.num_vectors(), e.layout))
        .collect();
    assert_eq!(
        found,
        [
            ("<fox>".to_string(), 1, EmbeddingLayout::Diffusers),
            ("<cat-toy>".to_string(), 3, EmbeddingLayout::Diffusers),
            ("charcoal-v2".to_string(), 2, EmbeddingLayout::A1111Pt),
            (
                "a1111_style".to_string(),
                2,
                EmbeddingLayout::A1111Safetensors
            ),
        ]
    );
    let named = TextualInversion::from_file(embedding("cat_toy.bin"), Some("<toy>")).unwrap();
    assert_eq!(named.tokens(), ["<toy>", "<toy>_1", "<toy>_2"]);
}

#[test]
fn loaded_embeddings_match_diffusers() {
    let (mut tokenizer, mut encoder) = model();
    let json = reference_json();
    let expected_tokens: Vec<String> = serde_json::from_value(json["tokens"].clone()).unwrap();
    let first = json["first_id"].as_u64().unwrap() as u32;
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for file in files() {
        ids.extend(file.load_into(&mut tokenizer, &mut encoder).unwrap());
        tokens.extend(file.tokens());
    }
    assert_eq!(tokens, expected_tokens);
    assert_eq!(ids, (first..first + 8).collect::<Vec<_>>());
    assert_eq!(
        tokenizer.vocab_size() as u64,
        json["vocab_size"].as_u64().unwrap()
    );
    let embeddings = &encoder.text_model.embeddings;
    assert_eq!(embeddings.num_tokens(), tokenizer.vocab_size());
    let reference = Reference::open(fixtures().join("text/textual_inversion.safetensors"));
    let table = embeddings.token_embedding.weight.val();
    reference.check("", "token_embedding", table.narrow(0, first as usize, 8));

    let negative = json["negative_prompt"].as_str().unwrap();
    for (i, case) in json["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt = case["prompt"].as_str().unwrap();
        let expected_ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let expanded = tokenizer.expand_multi_vector_tokens(prompt).unwrap();
        assert_eq!(
            tokenizer.encode(&expanded).unwrap(),
            expected_ids,
            "{prompt}"
        );
        for (text, key) in [
            (prompt, "prompt_embeds"),
            (negative, "negative_prompt_embeds"),
        ] {
            let expanded = tokenizer.expand_multi_vector_tokens(text).unwrap();
            let ids = tokenizer.encode_batch(&[&expanded]).unwrap();
            let ids = ClipTokenizer::ids_tensor::<B>(&ids, &device()).unwrap();
            let z = encoder.forward(ids).last_hidden_state;
            reference.check(&format!("{prompt:?} "), &format!("{i}.{key}"), z);
        }
    }
}

#[test]
fn refused_files_name_the_problem() {
    let message = |name: &str| {
        TextualInversion::from_file(embedding(name), None)
            .unwrap_err()
            .to_string()
    };
    let empty = message("empty.safetensors");
    assert!(
        empty.contains("empty.safetensors") && empty.contains("no tensor"),
        "{empty}"
    );
    let two = message("two_tensors.safetensors");
    assert!(two.contains("`a`, `b`"), "{two}");
    assert!(message("absent.pt").contains("absent.pt"));

    // A width that is not the text encoder's: the file, the key and the shape are named.
    let (mut tokenizer, mut encoder) = model();
    let wrong = TextualInversion::from_file(embedding("wrong_width.safetensors"), None).unwrap();
    let err = wrong.load_into(&mut tokenizer, &mut encoder).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let text = err.to_string();
    for needle in ["wrong_width.safetensors", "<bad>", "[2, 8]", "16"] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert_eq!(tokenizer.vocab_size(), 49408);

    // A token already in the vocabulary, or loaded twice.
    let fox = TextualInversion::from_file(embedding("learned_embeds.safetensors"), None).unwrap();
    fox.load_into(&mut tokenizer, &mut encoder).unwrap();
    let err = fox.load_into(&mut tokenizer, &mut encoder).unwrap_err();
    assert!(
        err.to_string().contains("already in the tokenizer"),
        "{err}"
    );
    let word = TextualInversion::from_file(embedding("cat_toy.bin"), Some("cat</w>")).unwrap();
    let err = word.load_into(&mut tokenizer, &mut encoder).unwrap_err();
    assert!(err.to_string().contains("`cat</w>`"), "{err}");
    assert_eq!(tokenizer.vocab_size(), 49409);
    assert_eq!(encoder.text_model.embeddings.num_tokens(), 49409);
    assert!(TextualInversion::from_file(embedding("cat_toy.bin"), Some(" ")).is_err());
}
