//! Prompt weighting against the embeddings `tools/fixtures/gen_text_conditioning.py` computes by
//! hand with transformers (`fixtures/text/prompt_weighting.*`): the parser against the runs
//! written out in the script, the chunks against the script's token ids and weights, and the
//! encoded chunks (weighted, mean restored, joined) against the script's tensors.

use prompt_diffusion_clip::{
    CLIPTextModel, ClipTokenizer, PromptPart, WeightedChunk, parse_prompt_attention,
};
use prompt_diffusion_core::weights::{LoadOptions, Pretrained};
use serde_json::Value;

use crate::common::{B, Reference, TOL, check, device, fixtures};

struct Case {
    name: String,
    prompt: String,
    runs: Vec<PromptPart>,
    chunks: Vec<WeightedChunk>,
}

fn runs(value: &Value) -> Vec<PromptPart> {
    let list = value.as_array().expect("runs");
    list.iter()
        .map(|run| match run {
            Value::String(s) if s == "BREAK" => PromptPart::Break,
            Value::Array(pair) => {
                PromptPart::text(pair[0].as_str().unwrap(), pair[1].as_f64().unwrap())
            }
            other => panic!("unexpected run {other}"),
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("text/prompt_weighting.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let cases = json["cases"].as_array().unwrap();
    cases
        .iter()
        .map(|case| {
            let ids: Vec<Vec<u32>> = serde_json::from_value(case["ids"].clone()).unwrap();
            let weights: Vec<Vec<f32>> = serde_json::from_value(case["weights"].clone()).unwrap();
            Case {
                name: case["name"].as_str().unwrap().to_string(),
                prompt: case["prompt"].as_str().unwrap().to_string(),
                runs: runs(&case["runs"]),
                chunks: ids
                    .into_iter()
                    .zip(weights)
                    .map(|(ids, weights)| WeightedChunk { ids, weights })
                    .collect(),
            }
        })
        .collect()
}

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_folder(fixtures().join("tiny-sd")).unwrap()
}

fn text_encoder() -> CLIPTextModel<B> {
    let dir = fixtures().join("tiny-sd/text_encoder");
    CLIPTextModel::from_pretrained(dir, &LoadOptions::default(), &device()).unwrap()
}

/// Equal runs; weights within 1e-12 (serde_json may read the last digit of a float one unit
/// off).
fn same_runs(a: &[PromptPart], b: &[PromptPart]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (PromptPart::Break, PromptPart::Break) => true,
            (PromptPart::Text { text, weight }, PromptPart::Text { text: t, weight: w }) => {
                text == t && (weight - w).abs() <= 1e-12
            }
            _ => false,
        })
}

#[test]
fn the_parser_gives_the_hand_written_runs() {
    let cases = cases();
    assert!(cases.len() >= 8);
    for case in &cases {
        let parsed = parse_prompt_attention(&case.prompt);
        assert!(
            same_runs(&parsed, &case.runs),
            "{}: {:?}\n  parsed   {parsed:?}\n  expected {:?}",
            case.name,
            case.prompt,
            case.runs
        );
    }
}

#[test]
fn chunks_hold_75_tokens_framed_with_their_weights() {
    let tokenizer = tokenizer();
    for case in cases() {
        let chunks = tokenizer.encode_weighted(&case.prompt).unwrap();
        assert_eq!(chunks, case.chunks, "{}", case.name);
        assert!(chunks.iter().all(|c| c.ids.len() == 77));
    }
}

#[test]
fn weighted_embeddings_match_the_hand_computed_ones() {
    let (tokenizer, encoder) = (tokenizer(), text_encoder());
    let reference = Reference::open(fixtures().join("text/prompt_weighting.safetensors"));
    for case in cases() {
        let chunks = tokenizer.encode_weighted(&case.prompt).unwrap();
        let z = encoder.encode_weighted(&chunks, &device()).unwrap();
        assert_eq!(z.dims(), [1, 77 * case.chunks.len(), 16], "{}", case.name);
        reference.check("", &format!("{}.embeds", case.name), z);
    }
}

#[test]
fn a_plain_short_prompt_is_exactly_the_plain_encoding() {
    let (tokenizer, encoder) = (tokenizer(), text_encoder());
    let prompt = "a watercolor painting of a fox";
    let chunks = tokenizer.encode_weighted(prompt).unwrap();
    let weighted = encoder.encode_weighted(&chunks, &device()).unwrap();
    let ids = tokenizer.encode_batch(&[prompt]).unwrap();
    assert_eq!(chunks[0].ids, ids[0]);
    let ids = ClipTokenizer::ids_tensor::<B>(&ids, &device()).unwrap();
    let plain = encoder.forward(ids).last_hidden_state;
    assert_eq!(check("plain", weighted, plain.clone(), 0.0), 0.0);
    let reference = Reference::open(fixtures().join("text/prompt_weighting.safetensors"));
    check(
        "plain.unweighted",
        plain,
        reference.float("plain.unweighted"),
        TOL,
    );
}

#[test]
fn mismatched_chunks_are_errors() {
    let encoder = text_encoder();
    assert!(encoder.encode_weighted(&[], &device()).is_err());
    let chunk = WeightedChunk {
        ids: vec![49406, 49407],
        weights: vec![1.0],
    };
    assert!(encoder.encode_weighted(&[chunk], &device()).is_err());
    let long = WeightedChunk {
        ids: vec![49407; 78],
        weights: vec![1.0; 78],
    };
    assert!(encoder.encode_weighted(&[long], &device()).is_err());
}
