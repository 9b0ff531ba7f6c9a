//! Key tables against the reference lists (`fixtures/versatile/reference/`) and the official
//! `.pth` layouts of the tiny model, which must give exactly the outputs of the diffusers folders.

use std::collections::BTreeMap;

use crate::common::{B, Io, folders, load, official_files, optimus_files, versatile};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use prompt_diffusion_core::testing::assert_close;
use prompt_diffusion_core::weights::LoadOptions;
use prompt_diffusion_unet::UNet2DConditionModel;
use prompt_diffusion_versatile_flows::weights::official_unet_table;
use prompt_diffusion_versatile_flows::{
    Condition, Flow, Modality, VersatileComponents, image_unet_config, text_unet_config,
};

/// `data_blocks.N.0 -> module` lines of the reference map.
fn reference_map() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(versatile(
        "reference/versatile_diffusion_official_to_diffusers_map.txt",
    ))
    .unwrap();
    text.lines()
        .filter_map(|line| line.trim().split_once(" -> "))
        .filter(|(k, _)| k.starts_with("data_blocks.") || k.starts_with("context_blocks."))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn official_tables_match_the_reference_map() {
    let reference = reference_map();
    assert_eq!(reference.len(), 46);
    for config in [image_unet_config(), text_unet_config()] {
        let table = official_unet_table(&config).unwrap();
        let mut ours = BTreeMap::new();
        for e in &table {
            // Image down/upsamplers carry their conv (`op`/`conv`); the map names the module.
            let official = e.ldm.trim_end_matches(".op").trim_end_matches(".conv");
            let module = e.diffusers.trim_end_matches(".conv");
            if module == "conv_norm_out" {
                let head = official.strip_suffix(".0.0").unwrap();
                ours.insert(
                    format!("{head}.0"),
                    "conv_norm_out(.0.0) + conv_out(.0.2)".to_string(),
                );
            } else if module == "conv_out" {
                assert!(official.ends_with(".0.2"), "{official}");
            } else if !official.starts_with("time_embed") {
                ours.insert(official.to_string(), module.to_string());
            }
        }
        assert_eq!(ours, reference, "{:?}", config.data_layers);
    }
    let table = official_unet_table(&image_unet_config()).unwrap();
    let find = |k: &str| {
        table
            .iter()
            .find(|e| e.ldm == k)
            .map(|e| e.diffusers.clone())
    };
    assert_eq!(
        find("data_blocks.3.0.op").as_deref(),
        Some("down_blocks.0.downsamplers.0.conv")
    );
    assert_eq!(
        find("time_embed.2").as_deref(),
        Some("time_embedding.linear_2")
    );
}

/// Parameter paths and shapes (PyTorch layout) of a module, without initialising it.
#[derive(Default)]
struct Shapes {
    path: Vec<String>,
    out: BTreeMap<String, Vec<usize>>,
}

impl ModuleVisitor<B> for Shapes {
    fn enter_module(&mut self, name: &str, container: &str) {
        if !container.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }
    fn exit_module(&mut self, _name: &str, container: &str) {
        if !container.starts_with("Enum:") {
            self.path.pop();
        }
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let key = self.path.join(".");
        let mut shape = param.lazy_shape().dims::<D>().to_vec();
        if key.ends_with("weight")
            && D == 2
            && !key.contains("downsamplers")
            && !key.contains("upsamplers")
            && !key.starts_with("conv_in")
            && !key.starts_with("conv_out")
        {
            shape.reverse(); // burn `Linear` is [in, out]
        }
        self.out.insert(key, shape);
    }
}

#[test]
fn text_unet_has_the_reference_parameter_shapes() {
    let text = std::fs::read_to_string(versatile(
        "reference/versatile_diffusion_text_unet_param_shapes.txt",
    ))
    .unwrap();
    let reference: BTreeMap<String, Vec<usize>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (key, shape) = line.split_once(' ')?;
            let dims = shape
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|d| d.trim().parse().unwrap())
                .collect();
            Some((key.to_string(), dims))
        })
        .collect();
    assert_eq!(reference.len(), 686);
    let unet = UNet2DConditionModel::<B>::new(&text_unet_config(), &Default::default()).unwrap();
    let mut shapes = Shapes::default();
    unet.visit(&mut shapes);
    assert_eq!(shapes.out.len(), 686);
    for (key, expected) in &reference {
        let ours = shapes
            .out
            .get(key)
            .unwrap_or_else(|| panic!("missing {key}"));
        // 1×1 convolutions are linear layers here: [out, in, 1, 1] ↔ [out, in].
        let squeezed: Vec<usize> = expected.iter().copied().take(2).collect();
        assert!(
            ours == expected || (expected.len() == 4 && *ours == squeezed),
            "{key}: {ours:?} vs {expected:?}"
        );
    }
    let total = |shapes: &Shapes| {
        shapes
            .out
            .values()
            .map(|s| s.iter().product::<usize>())
            .sum::<usize>()
    };
    assert_eq!(total(&shapes), 1_708_848_448);
    let image = UNet2DConditionModel::<B>::new(&image_unet_config(), &Default::default()).unwrap();
    let mut shapes = Shapes::default();
    image.visit(&mut shapes);
    assert_eq!(total(&shapes), 859_520_964);
}

#[test]
fn official_checkpoints_load_to_identical_outputs() {
    let io = Io::open(versatile("io.safetensors"));
    let device = Default::default();
    let official = VersatileComponents::<B>::from_official(
        &official_files(),
        Some(&optimus_files()),
        &Flow::ALL,
        &LoadOptions::default(),
        &device,
    )
    .unwrap();
    let diffusers = load(&Flow::ALL);
    for (output, condition, sample, name) in [
        (
            Modality::Image,
            Modality::Text,
            "sample_image",
            "text_to_image",
        ),
        (
            Modality::Text,
            Modality::Image,
            "sample_text",
            "image_to_text",
        ),
    ] {
        let context = match condition {
            Modality::Text => io.t("context_text"),
            Modality::Image => io.t("context_image"),
        };
        let run = |vd: &VersatileComponents<B>| {
            vd.diffuser
                .forward(
                    io.t(sample),
                    io.t("timestep"),
                    output,
                    &[Condition::new(condition, context.clone())],
                )
                .unwrap()
        };
        let (a, b) = (run(&official), run(&diffusers));
        assert_eq!(
            a.clone().into_data(),
            b.into_data(),
            "{name}: official layout differs"
        );
        assert_close(name, a, io.t(&format!("flow.{name}")), 1e-4);
    }
    let latents = Tensor::<B, 4>::ones([1, 4, 16, 16], &device);
    let decode =
        |vd: &VersatileComponents<B>| vd.vae().unwrap().decode(latents.clone()).into_data();
    assert_eq!(decode(&official), decode(&diffusers), "kl-f8.pth");
    let _ = folders();
}

#[test]
fn only_the_layers_a_flow_needs_are_loaded() {
    let t2i = load(&[Flow::TextToImage]);
    let groups = t2i.diffuser.layer_groups();
    // The image UNet brings its own attentions: image context is available too.
    assert!(groups.image_data && groups.text_context && groups.image_context && !groups.text_data);
    assert!(t2i.diffuser.text_unet.is_none() && t2i.diffuser.text_context.is_some());
    assert!(t2i.image_encoder.is_none() && t2i.optimus.is_none() && t2i.vae.is_some());
    assert!(!t2i.diffuser.supports(Flow::ImageToText));
    let io = Io::open(versatile("io.safetensors"));
    let err = t2i
        .diffuser
        .forward(
            io.t("sample_text"),
            io.t("timestep"),
            Modality::Text,
            &[Condition::new(Modality::Text, io.t("context_text"))],
        )
        .unwrap_err();
    assert!(err.to_string().contains("text data layers"), "{err}");
    // The standalone text-context layers give the text→image flow of the full model.
    let out = t2i
        .diffuser
        .forward(
            io.t("sample_image"),
            io.t("timestep"),
            Modality::Image,
            &[Condition::new(Modality::Text, io.t("context_text"))],
        )
        .unwrap();
    assert_close(
        "text→image from context layers",
        out,
        io.t("flow.text_to_image"),
        1e-4,
    );
}

#[test]
fn an_image_unet_saved_with_dual_attention_loads() {
    // diffusers' dual-guided pipeline records `dual_cross_attention: true` in the image UNet's
    // config when it wraps the attentions; the stored weights are the plain blocks.
    let dir = std::env::temp_dir().join(format!("vd-dual-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = versatile("vd/image_unet");
    let config = std::fs::read_to_string(source.join("config.json")).unwrap();
    let config = config.replace(
        "\"dual_cross_attention\": false",
        "\"dual_cross_attention\": true",
    );
    assert!(config.contains("\"dual_cross_attention\": true"));
    std::fs::write(dir.join("config.json"), config).unwrap();
    let weights = "diffusion_pytorch_model.safetensors";
    std::fs::copy(source.join(weights), dir.join(weights)).unwrap();
    let mut folders = folders();
    folders.image_unet = dir.clone();
    let vd = VersatileComponents::<B>::from_folders(
        &folders,
        None,
        &[Flow::ImageVariation],
        &LoadOptions::default(),
        &Default::default(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let io = Io::open(versatile("io.safetensors"));
    let out = vd
        .unwrap()
        .diffuser
        .forward(
            io.t("sample_image"),
            io.t("timestep"),
            Modality::Image,
            &[Condition::new(Modality::Image, io.t("context_image"))],
        )
        .unwrap();
    assert_close("image variation", out, io.t("flow.image_variation"), 1e-4);
}
