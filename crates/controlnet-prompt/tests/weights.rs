//! Key tables and strict loading.
//!
//! `fixtures/controlnet/prompt_diffusion_controlnet_keys.tsv` lists every tensor of the
//! full-size Prompt Diffusion ControlNet as (original key, diffusers key, shape); it is a copy of
//! the reference table derived from the official model definition and conversion script.

use std::collections::BTreeMap;

use crate::common::{B, controlnet_fixture};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::TensorData;
use prompt_diffusion_controlnet_prompt::weights::{HintEncoders, ORIGINAL_ROOTS, original_table};
use prompt_diffusion_controlnet_prompt::{
    ControlNetConfig, ControlNetModel, PromptDiffusionControlNet,
};
use prompt_diffusion_core::testing::{folder_source, load_default, weights_error};
use prompt_diffusion_core::weights::{TensorSource, WeightNaming};
use prompt_diffusion_unet::weights::rename_ldm;

struct Row {
    original: String,
    diffusers: String,
    shape: Vec<usize>,
}

fn tsv() -> Vec<Row> {
    let text = std::fs::read_to_string(controlnet_fixture("prompt_diffusion_controlnet_keys.tsv"))
        .unwrap();
    let rows: Vec<Row> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 3, "{line}");
            Row {
                original: cols[0].to_string(),
                diffusers: cols[1].to_string(),
                shape: cols[2].split('x').map(|d| d.parse().unwrap()).collect(),
            }
        })
        .collect();
    assert_eq!(rows.len(), 356);
    rows
}

#[test]
fn original_table_maps_every_reference_key() {
    let table = original_table(
        &ControlNetConfig::prompt_diffusion(),
        HintEncoders::PairAndQuery,
    )
    .unwrap();
    let mut seen = BTreeMap::new();
    for row in tsv() {
        let key = row.original.strip_prefix("control_model.").unwrap();
        assert_eq!(rename_ldm(key, &table), row.diffusers, "{}", row.original);
        assert!(
            seen.insert(row.diffusers.clone(), ()).is_none(),
            "{} twice",
            row.diffusers
        );
    }
}

/// Parameter paths and shapes of a module, in PyTorch naming (enum variants skipped, `Linear`
/// weights as `[out, in]`), without initialising the parameters.
#[derive(Default)]
struct Shapes {
    path: Vec<String>,
    containers: Vec<String>,
    found: BTreeMap<String, Vec<usize>>,
}

impl ModuleVisitor<B> for Shapes {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let path: Vec<&str> = self
            .path
            .iter()
            .zip(&self.containers)
            .filter(|(_, c)| !c.starts_with("Enum:"))
            .map(|(p, _)| p.as_str())
            .collect();
        let mut shape = param.lazy_shape().to_vec();
        let linear = self.containers.last().is_some_and(|c| c == "Struct:Linear");
        if linear && path.last() == Some(&"weight") {
            shape.reverse();
        }
        self.found.insert(path.join("."), shape);
    }
}

#[test]
fn full_size_model_has_exactly_the_reference_tensors() {
    // Parameters are initialised lazily, so the 362 M-parameter model costs nothing here.
    let model = PromptDiffusionControlNet::<B>::new(
        &ControlNetConfig::prompt_diffusion(),
        &Default::default(),
    )
    .unwrap();
    let mut shapes = Shapes::default();
    model.visit(&mut shapes);
    let found: BTreeMap<String, Vec<usize>> = shapes
        .found
        .into_iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("controlnet.")
                    .map(str::to_string)
                    .unwrap_or(k),
                v,
            )
        })
        .collect();
    let rows = tsv();
    assert_eq!(found.len(), rows.len());
    for row in rows {
        let shape = found
            .get(&row.diffusers)
            .unwrap_or_else(|| panic!("no parameter {}", row.diffusers));
        // SD1's `proj_in`/`proj_out` are 1×1 convolutions in the files and Linear layers here.
        let squeezed: Vec<usize> = if row.shape.len() == 4 && shape.len() == 2 {
            row.shape[..2].to_vec()
        } else {
            row.shape.clone()
        };
        assert_eq!(shape, &squeezed, "{}", row.diffusers);
    }
    // The parameter count of the released ControlNet (reference §1.1).
    let total: usize = found.values().map(|s| s.iter().product::<usize>()).sum();
    assert_eq!(total, 362_366_032);
}

fn pd_source() -> (ControlNetConfig, TensorSource) {
    folder_source(&controlnet_fixture("prompt-diffusion"))
}

fn load_error(config: &ControlNetConfig, source: &TensorSource) -> String {
    weights_error::<PromptDiffusionControlNet<B>>(config, source)
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_named() {
    let (config, source) = pd_source();

    let key = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    let mut missing = source.clone();
    assert!(missing.remove(key));
    let query_key = "controlnet_query_cond_embedding.blocks.3.bias";
    assert!(missing.remove(query_key));
    let msg = load_error(&config, &missing);
    assert!(
        msg.contains("2 missing") && msg.contains(&format!("`{key}`")),
        "{msg}"
    );
    assert!(
        msg.contains(query_key) && !msg.contains("controlnet.down_blocks"),
        "{msg}"
    );

    let mut extra = source.clone();
    extra.insert_data(
        "controlnet_down_blocks.99.weight",
        TensorData::new(vec![0f32; 2], [2]),
    );
    let msg = load_error(&config, &extra);
    assert!(
        msg.contains("unexpected") && msg.contains("`controlnet_down_blocks.99.weight`"),
        "{msg}"
    );

    let mut wrong = config.clone();
    wrong.conditioning_channels = 3;
    let msg = load_error(&wrong, &source);
    assert!(
        msg.contains("wrong shape") && msg.contains("controlnet_cond_embedding.conv_in.weight"),
        "{msg}"
    );
}

#[test]
fn original_layout_errors_use_diffusers_names() {
    let (config, _) = pd_source();
    let file = TensorSource::open(controlnet_fixture("tiny-prompt-diffusion.safetensors")).unwrap();
    let mut control = file.strip_prefix("control_model.");
    assert_eq!(
        WeightNaming::detect(&control, &ORIGINAL_ROOTS),
        WeightNaming::Original
    );
    assert!(control.remove("zero_convs.4.0.weight"));
    assert!(control.remove("input_cond_block.14.bias"));
    let msg = load_error(&config, &control);
    assert!(msg.contains("controlnet_down_blocks.4.weight"), "{msg}");
    assert!(
        msg.contains("controlnet_query_cond_embedding.conv_out.bias"),
        "{msg}"
    );
}

#[test]
fn a_prompt_diffusion_file_is_not_a_standard_controlnet() {
    let (config, source) = pd_source();
    let err = load_default::<ControlNetModel<B>>(&config, &source).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("unexpected") && msg.contains("controlnet_query_cond_embedding"),
        "{msg}"
    );

    // And a standard ControlNet lacks the query encoder.
    let standard = TensorSource::open(controlnet_fixture("standard-ldm.safetensors")).unwrap();
    let standard_config =
        ControlNetConfig::from_file(controlnet_fixture("standard/config.json")).unwrap();
    let msg = load_error(&standard_config, &standard);
    assert!(
        msg.contains("missing") && msg.contains("16 missing"),
        "{msg}"
    );
}
