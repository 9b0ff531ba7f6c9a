//! The Task-Prompt Branch, the Spatial Complement Branch and the Plugin-Selector against the
//! reference modules (`tools/fixtures/gen_diff_plugin.py`): every output within 1e-4.

use crate::common::{B, Reference, pretrained};
use burn::prelude::*;
use prompt_diffusion_core::testing::assert_close;
use prompt_diffusion_core::weights::LoadOptions;
use prompt_diffusion_diff_plugin::{
    PluginFiles, PluginSelector, SELECTOR_FILE, Task, TaskPlugin, select, weights,
};

const TOL: f32 = 1e-4;

fn plugin(task: Task, r: &Reference) -> TaskPlugin<B> {
    let files = PluginFiles::for_task(pretrained(), task).unwrap();
    TaskPlugin::from_files(&files, &LoadOptions::default(), &r.device).unwrap()
}

#[test]
fn task_prompts_match_for_every_plugin() {
    let r = Reference::open();
    let hidden: Tensor<B, 3> = r.t("clip.last_hidden_state");
    for task in Task::ALL {
        let prompt = plugin(task, &r).tpb.forward(hidden.clone()).unwrap();
        assert_close(
            &format!("F^p {task}"),
            prompt,
            r.t(&format!("tpb.{task}")),
            TOL,
        );
    }
}

#[test]
fn spatial_complement_matches_at_several_timesteps() {
    let r = Reference::open();
    let plugin = plugin(Task::Derain, &r);
    let prompt: Tensor<B, 3> = r.t("tpb.derain");
    for t in [999.0f32, 500.0, 0.0] {
        let out = plugin
            .scb
            .forward(
                Tensor::from_floats([t], &r.device),
                prompt.clone(),
                r.t("z_c"),
            )
            .unwrap();
        assert_eq!(out.len(), 3);
        for (j, fs) in out.into_iter().enumerate() {
            assert_close(
                &format!("F^s t={t} [{j}]"),
                fs,
                r.t(&format!("scb.derain.t{t}.{j}")),
                TOL,
            );
        }
    }
    // A batch of timesteps (all of a schedule in one call) gives the same rows.
    let batch = plugin
        .scb
        .forward(
            Tensor::from_floats([999.0, 500.0], &r.device),
            Tensor::cat(vec![prompt.clone(), prompt], 0),
            Tensor::cat(vec![r.t::<4>("z_c"), r.t("z_c")], 0),
        )
        .unwrap();
    let second = batch[2].clone().narrow(0, 1, 1);
    assert_close("batched F^s", second, r.t("scb.derain.t500.2"), TOL);
}

#[test]
fn selector_scores_and_selection_match() {
    let r = Reference::open();
    let selector: PluginSelector<B> = weights::load_selector(
        pretrained().join(SELECTOR_FILE),
        &LoadOptions::default(),
        &r.device,
    )
    .unwrap();
    assert!((selector.logit_scale - (1.0f64 / 0.07).ln()).abs() < 1e-3);
    let mut rows: Vec<Tensor<B, 3>> = Task::ALL.iter().map(|t| r.t(&format!("tpb.{t}"))).collect();
    rows.push(PluginSelector::<B>::null_row(
        r.t("selector.null_pooled"),
        256,
    ));
    let rows = Tensor::cat(rows, 0);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::common::fixtures().join("reference.json")).unwrap(),
    )
    .unwrap();
    for (i, text) in json["instructions"].as_array().unwrap().iter().enumerate() {
        let scores = selector
            .scores(r.t(&format!("selector.{i}.pooled")), rows.clone())
            .unwrap();
        let expected: Tensor<B, 1> = r.t(&format!("selector.{i}.scores"));
        assert_close(&format!("scores {i}"), scores.clone(), expected, TOL);
        let raw: Vec<f32> = scores.into_data().to_vec().unwrap();
        let selection = select(&Task::ALL, &raw).unwrap();
        let names: Vec<String> = selection.tasks.iter().map(|t| t.to_string()).collect();
        let expected: Vec<String> = json["selections"][text.as_str().unwrap()]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, expected, "selection for {text}");
    }
}
