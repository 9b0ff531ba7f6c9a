//! The A1111 text format: writing, reading, and the sampler vocabulary.

use super::*;

/// The example of A1111's `parse_generation_parameters` docstring.
const A1111_DOCSTRING: &str = "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate
Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing
Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b";

/// A full set: a LoRA, quoted values (a JSON string with an escaped quote), non-Latin text.
fn full() -> GenerationParameters {
    GenerationParameters {
        prompt: "a watercolor fox, snow <lora:ink:0.8>\nsecond line, 狐".into(),
        negative_prompt: "blurry, low quality".into(),
        steps: Some(20),
        sampler: Some("DPM++ 2M Karras".into()),
        cfg_scale: Some(7.5),
        seed: Some(4_000_000_000),
        size: Some((512, 768)),
        model_hash: Some("6ce0161689".into()),
        model: Some("v1-5-pruned-emaonly".into()),
        denoising_strength: Some(0.6),
        loras: vec![LoraReference {
            name: "ink".into(),
            scale: 0.8,
            hash: Some("4f2a9c81d0e3".into()),
        }],
        extra: vec![
            ("Eta DDIM".into(), "0.3".into()),
            (
                "ControlNet 0".into(),
                "Module: none, Model: canny \"v11\", Weight: 1".into(),
            ),
            ("Version".into(), VERSION.into()),
        ],
    }
}

#[test]
fn writes_a1111_text() {
    let text = full().to_a1111_string();
    assert_eq!(
        text,
        format!(
            "a watercolor fox, snow <lora:ink:0.8>\nsecond line, 狐\n\
             Negative prompt: blurry, low quality\n\
             Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 4000000000, Size: 512x768, \
             Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.6, \
             Lora hashes: \"ink: 4f2a9c81d0e3\", Eta DDIM: 0.3, \
             ControlNet 0: \"Module: none, Model: canny \\\"v11\\\", Weight: 1\", Version: {VERSION}"
        )
    );
    assert_eq!(GenerationParameters::parse(&text).unwrap(), full());
}

#[test]
fn reads_a1111_text() {
    let p = GenerationParameters::parse(A1111_DOCSTRING).unwrap();
    assert!(p.prompt.starts_with("girl with an artist's beret,"));
    assert!(p.prompt.ends_with("detailed, intricate"));
    assert!(p.negative_prompt.starts_with("ugly, fat, obese"));
    assert!(p.negative_prompt.ends_with("messy drawing"));
    assert_eq!(p.steps, Some(20));
    assert_eq!(p.sampler.as_deref(), Some("Euler a"));
    assert_eq!(p.cfg_scale, Some(7.0));
    assert_eq!(p.seed, Some(965400086));
    assert_eq!(p.size, Some((512, 512)));
    assert_eq!(p.model_hash.as_deref(), Some("45dee52b"));
    assert_eq!(p.model, None);
    assert!(p.extra.is_empty() && p.loras.is_empty());
    assert_eq!(p.scheduler().unwrap(), Some(SchedulerKind::EulerAncestral));
    assert_eq!(p.to_a1111_string(), A1111_DOCSTRING);
}

#[test]
fn missing_negative_prompt_and_multiline_prompts() {
    let text =
        "a fox\n  in the snow  \nSteps: 4, Sampler: DDIM, CFG scale: 7.0, Seed: 1, Size: 64x64";
    let p = GenerationParameters::parse(text).unwrap();
    assert_eq!(p.prompt, "a fox\nin the snow");
    assert_eq!(p.negative_prompt, "");
    assert_eq!(
        (p.steps, p.cfg_scale, p.seed),
        (Some(4), Some(7.0), Some(1))
    );
    assert!(!p.to_a1111_string().contains("Negative prompt"));

    let text = "one\ntwo\nNegative prompt: bad\nworse\nSteps: 2, Seed: 3, Size: 8x16";
    let p = GenerationParameters::parse(text).unwrap();
    assert_eq!(
        (p.prompt.as_str(), p.negative_prompt.as_str()),
        ("one\ntwo", "bad\nworse")
    );
    assert_eq!(p.size, Some((8, 16)));
    assert_eq!(
        GenerationParameters::parse(&p.to_a1111_string()).unwrap(),
        p
    );

    // Fewer than three pairs on the last line: it is part of the prompt.
    let p = GenerationParameters::parse("a fox\nStyle: ink, Mood: calm").unwrap();
    assert_eq!(p.prompt, "a fox\nStyle: ink, Mood: calm");
    assert_eq!(p.steps, None);
    // No prompt at all.
    let p = GenerationParameters::parse("Steps: 2, Seed: 3, Size: 8x16").unwrap();
    assert_eq!((p.prompt.as_str(), p.steps), ("", Some(2)));
}

#[test]
fn quoted_values_and_loras() {
    let text = "castle <lora:ink:0.7> <lora:paper>\n\
        Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 9, Size: 768x512, \
        Lora hashes: \"ink: 4f2a9c81d0e3, paper: 0123456789ab\", \
        ControlNet 0: \"Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1\", \
        Note: \"a \\\"quoted\\\", word\\nline\"";
    let p = GenerationParameters::parse(text).unwrap();
    assert_eq!(
        p.scheduler().unwrap(),
        Some(SchedulerKind::DpmSolverMultistepKarras)
    );
    assert_eq!(
        p.loras,
        [
            LoraReference {
                name: "ink".into(),
                scale: 0.7,
                hash: Some("4f2a9c81d0e3".into())
            },
            LoraReference {
                name: "paper".into(),
                scale: 1.0,
                hash: Some("0123456789ab".into())
            },
        ]
    );
    assert_eq!(
        p.extra("ControlNet 0"),
        Some("Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1")
    );
    assert_eq!(p.extra("Note"), Some("a \"quoted\", word\nline"));
    assert_eq!(p.extra("Schedule type"), Some("Karras"));
    // Written back unchanged (the tags are in the prompt already).
    assert_eq!(p.to_a1111_string(), text);

    // A LoRA the prompt does not mention is appended as a tag.
    let mut q = GenerationParameters::parse("a fox\nSteps: 1, Seed: 2, Size: 8x8").unwrap();
    q.loras.push(LoraReference {
        name: "ink".into(),
        scale: 0.5,
        hash: None,
    });
    assert!(
        q.to_a1111_string()
            .starts_with("a fox <lora:ink:0.5>\nSteps: 1")
    );
    assert_eq!(
        GenerationParameters::parse(&q.to_a1111_string())
            .unwrap()
            .loras,
        q.loras
    );
}

#[test]
fn bad_values_name_their_key() {
    for (text, key) in [
        ("x\nSteps: many, Seed: 1, Size: 8x8", "Steps"),
        ("x\nSteps: 1, Seed: -1, Size: 8x8", "Seed"),
        ("x\nSteps: 1, Seed: 1, Size: 8 by 8", "Size"),
        ("x\nSteps: 1, CFG scale: nan, Size: 8x8", "CFG scale"),
        (
            "x\nSteps: 1, Denoising strength: high, Size: 8x8",
            "Denoising strength",
        ),
    ] {
        let err = GenerationParameters::parse(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn sampler_names_round_trip() {
    for kind in SchedulerKind::ALL {
        assert_eq!(
            scheduler_from_a1111(a1111_sampler_name(kind), None).unwrap(),
            kind
        );
        let automatic = scheduler_from_a1111(a1111_sampler_name(kind), Some("Automatic"));
        assert_eq!(automatic.unwrap(), kind);
    }
    assert_eq!(a1111_sampler_name(SchedulerKind::Pndm), "PLMS");
    assert_eq!(
        scheduler_from_a1111("k_euler_a", None).unwrap(),
        SchedulerKind::EulerAncestral
    );
    let err = scheduler_from_a1111("Heun", None).unwrap_err().to_string();
    assert!(err.contains("Heun") && err.contains("Euler a"), "{err}");
    let err = scheduler_from_a1111("Euler", Some("Exponential"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Exponential"), "{err}");
}

#[test]
fn generations_become_parameters_and_back() {
    let generation = Generation::new("a fox")
        .with_negative_prompt("blur")
        .with_steps(12)
        .with_guidance_scale(6.0)
        .with_seed(41);
    let generation = Generation {
        eta: 0.5,
        ..generation
    };
    let p = GenerationParameters::from_generation(&generation, (64, 96), SchedulerKind::Ddim)
        .with_model("tiny-sd", Some("0123456789".into()));
    assert_eq!(
        p.to_a1111_string(),
        format!(
            "a fox\nNegative prompt: blur\nSteps: 12, Sampler: DDIM, CFG scale: 6, Seed: 41, \
             Size: 64x96, Model hash: 0123456789, Model: tiny-sd, Eta DDIM: 0.5, Version: {VERSION}"
        )
    );
    assert_eq!(p.for_image(2).seed, Some(43));
    assert_eq!(p.for_image(0), p);

    let mut back = Generation::default();
    p.for_image(3).apply_to(&mut back).unwrap();
    assert_eq!(back.prompt, "a fox");
    assert_eq!(back.negative_prompt.as_deref(), Some("blur"));
    assert_eq!((back.steps, back.guidance_scale, back.seed), (12, 6.0, 44));
    assert_eq!((back.width, back.height), (Some(64), Some(96)));
    assert_eq!((back.scheduler, back.eta), (Some(SchedulerKind::Ddim), 0.5));
}

#[test]
fn loras_are_recorded_and_their_tags_never_reach_the_prompt() {
    let mut p = GenerationParameters::from_generation(
        &Generation::new("a fox, ink"),
        (64, 64),
        SchedulerKind::Ddim,
    );
    p.loras.push(LoraReference {
        name: "ink".into(),
        scale: 0.8,
        hash: Some("4f2a9c81d0e3".into()),
    });
    let text = p.to_a1111_string();
    assert!(text.starts_with("a fox, ink <lora:ink:0.8>\n"), "{text}");
    assert!(
        text.contains("Lora hashes: \"ink: 4f2a9c81d0e3\""),
        "{text}"
    );
    let read = GenerationParameters::parse(&text).unwrap();
    assert_eq!(read.loras, p.loras);
    assert_eq!(read.prompt_without_loras(), "a fox, ink ");
    let mut back = Generation::default();
    read.apply_to(&mut back).unwrap();
    assert_eq!(back.prompt, "a fox, ink ");
}

#[test]
fn lora_hashes_skip_the_safetensors_header_and_refuse_cut_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    // Only the bytes after the header count: another header, the same data, the same hash.
    let data = b"tensor bytes";
    let file = |header: &[u8]| {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(data);
        bytes
    };
    let a = lora_hash(write("a.safetensors", &file(b"{}"))).unwrap();
    let b = lora_hash(write("b.safetensors", &file(br#"{"__metadata__":{}}"#))).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 12);
    // Other formats hash the whole file, as A1111 does.
    let whole = write("c.pt", data);
    assert_eq!(
        lora_hash(&whole).unwrap(),
        file_sha256(&whole).unwrap()[..12]
    );
    // Cut files and a header length past the end are format errors naming the file, and
    // nothing of the claimed size is allocated.
    for (name, bytes) in [
        ("short.safetensors", vec![1u8, 2, 3]),
        ("huge.safetensors", u64::MAX.to_le_bytes().to_vec()),
    ] {
        match lora_hash(write(name, &bytes)) {
            Err(Error::Format { path, .. }) => assert!(path.ends_with(name), "{path:?}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}
