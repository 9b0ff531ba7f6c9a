//! Token ids against transformers' `CLIPTokenizer` (`fixtures/clip/tokenizer_ids.jsonl`, made by
//! `tools/fixtures/gen_clip.py`) for SD1's vocab.json + merges.txt folder, the same vocabulary
//! with SD2's special-token files (pad `!`), and a tokenizer.json folder saved by transformers.

use std::path::Path;

use crate::common::{B, clip_fixture, device, fixtures};
use prompt_diffusion_clip::ClipTokenizer;
use prompt_diffusion_core::Error;

struct Case {
    prompt: String,
    sd1: Vec<u32>,
    sd2: Vec<u32>,
    tokenizer_json: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(clip_fixture("tokenizer_ids.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let ids = |k: &str| -> Vec<u32> { serde_json::from_value(v[k].clone()).unwrap() };
            Case {
                prompt: v["prompt"].as_str().unwrap().to_string(),
                sd1: ids("sd1"),
                sd2: ids("sd2"),
                tokenizer_json: ids("tokenizer_json"),
            }
        })
        .collect()
}

fn check_all(tokenizer: &ClipTokenizer, expected: impl Fn(&Case) -> &Vec<u32>, what: &str) {
    let cases = cases();
    assert!(cases.len() >= 50, "{} prompts", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let ids = tokenizer.encode(&case.prompt).unwrap();
        if &ids != expected(case) {
            failures.push(format!(
                "{:?}\n  got      {:?}\n  expected {:?}",
                case.prompt,
                &ids[..ids.len().min(24)],
                &expected(case)[..expected(case).len().min(24)]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} prompts differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The batch entry point gives the same rows.
    let prompts: Vec<&str> = cases.iter().map(|c| c.prompt.as_str()).collect();
    let batch = tokenizer.encode_batch(&prompts).unwrap();
    assert!(batch.iter().zip(&cases).all(|(ids, c)| ids == expected(c)));
}

#[test]
fn sd1_vocab_and_merges_folder() {
    // A model folder (its tokenizer/ sub-folder is used) and the tokenizer folder itself.
    for dir in [
        fixtures().join("tiny-sd"),
        fixtures().join("tiny-sd/tokenizer"),
    ] {
        let tokenizer = ClipTokenizer::from_folder(&dir).unwrap();
        assert_eq!(
            (
                tokenizer.bos_id(),
                tokenizer.eos_id(),
                tokenizer.pad_id(),
                tokenizer.max_length()
            ),
            (49406, 49407, 49407, 77)
        );
        check_all(&tokenizer, |c| &c.sd1, "sd1");
    }
}

fn sd2_folder(tmp: &Path) {
    for name in ["vocab.json", "merges.txt"] {
        std::fs::copy(
            fixtures().join("tiny-sd/tokenizer").join(name),
            tmp.join(name),
        )
        .unwrap();
    }
    for name in ["special_tokens_map.json", "tokenizer_config.json"] {
        std::fs::copy(clip_fixture("tokenizer_sd2").join(name), tmp.join(name)).unwrap();
    }
}

#[test]
fn sd2_special_tokens_pad_with_exclamation_mark() {
    let tmp = tempfile::tempdir().unwrap();
    sd2_folder(tmp.path());
    let tokenizer = ClipTokenizer::from_folder(tmp.path()).unwrap();
    assert_eq!(tokenizer.pad_id(), 0);
    assert_eq!(tokenizer.eos_id(), 49407);
    check_all(&tokenizer, |c| &c.sd2, "sd2");
}

#[test]
fn embedded_vocabulary_equals_the_folders() {
    let sd1 = ClipTokenizer::openai_clip().unwrap();
    assert_eq!(
        (sd1.bos_id(), sd1.eos_id(), sd1.pad_id(), sd1.max_length()),
        (49406, 49407, 49407, 77)
    );
    check_all(&sd1, |c| &c.sd1, "embedded sd1");
    let sd2 = ClipTokenizer::open_clip_sd2().unwrap();
    assert_eq!(sd2.pad_id(), 0);
    check_all(&sd2, |c| &c.sd2, "embedded sd2");
}

#[test]
fn tokenizer_json_folder() {
    let tokenizer = ClipTokenizer::from_folder(clip_fixture("tokenizer_json")).unwrap();
    assert_eq!((tokenizer.bos_id(), tokenizer.eos_id()), (2512, 2513));
    check_all(&tokenizer, |c| &c.tokenizer_json, "tokenizer.json");
}

#[test]
fn ids_tensor_stacks_rows_and_rejects_ragged_input() {
    let tokenizer = ClipTokenizer::from_folder(fixtures().join("tiny-sd")).unwrap();
    let ids = tokenizer.encode_batch(&["a cat", "a dog"]).unwrap();
    let t = ClipTokenizer::ids_tensor::<B>(&ids, &device()).unwrap();
    assert_eq!(t.dims(), [2, 77]);
    let back: Vec<i64> = t.into_data().convert::<i64>().to_vec().unwrap();
    assert_eq!(back[..3], [49406, 320, 2368]);
    let ragged = vec![vec![1, 2, 3], vec![1, 2]];
    assert!(matches!(
        ClipTokenizer::ids_tensor::<B>(&ragged, &device()),
        Err(Error::InvalidInput { .. })
    ));
    assert!(ClipTokenizer::ids_tensor::<B>(&[], &device()).is_err());
}

#[test]
fn missing_and_malformed_files_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("tiny-sd/tokenizer/vocab.json"),
        tmp.path().join("vocab.json"),
    )
    .unwrap();
    let err = ClipTokenizer::from_folder(tmp.path()).unwrap_err();
    match &err {
        Error::Tokenizer { path: Some(p), .. } => assert!(p.ends_with("merges.txt"), "{err}"),
        other => panic!("unexpected error {other}"),
    }
    std::fs::write(tmp.path().join("merges.txt"), "#version: 0.2\na b c\n").unwrap();
    let err = ClipTokenizer::from_folder(tmp.path()).unwrap_err();
    assert!(matches!(err, Error::Tokenizer { .. }), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    sd2_folder(tmp.path());
    std::fs::write(tmp.path().join("tokenizer_config.json"), "{not json").unwrap();
    let err = ClipTokenizer::from_folder(tmp.path()).unwrap_err();
    match &err {
        Error::Tokenizer { path: Some(p), .. } => {
            assert!(p.ends_with("tokenizer_config.json"), "{err}")
        }
        other => panic!("unexpected error {other}"),
    }
    // A pad token that is not in the vocabulary.
    std::fs::write(tmp.path().join("tokenizer_config.json"), "{}").unwrap();
    std::fs::write(
        tmp.path().join("special_tokens_map.json"),
        r#"{"pad_token": "<pad>"}"#,
    )
    .unwrap();
    let tokenizer = ClipTokenizer::from_folder(tmp.path()).unwrap();
    // transformers adds it as a new token after the vocabulary.
    assert_eq!(tokenizer.pad_id(), 49408);
    let ids = tokenizer.encode("hi <pad> x").unwrap();
    assert_eq!(ids[..6], [49406, 1883, 49408, 343, 49407, 49408]);
    assert_eq!(ids.len(), 77);
    assert!(ClipTokenizer::from_folder(tmp.path().join("absent")).is_err());
}
