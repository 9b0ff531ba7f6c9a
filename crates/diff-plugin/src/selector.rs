//! The Plugin-Selector (Diff-Plugin `modules/prompt.py` `PromptTunnerModel` with
//! `tunner_for_visual`, and the selection rule of `demo.py`).
//!
//! Each plugin is represented by its task prompt F^p on the input image, max-pooled over the
//! tokens and projected by `proj_v`; the instruction by the CLIP text encoder's pooled output,
//! projected by `proj_t`. The score is the cosine of the two, times `exp(logit_scale)`. A last
//! "null" row stands for "do nothing": the pooled embedding of the prompt `" "`. Every row
//! with a positive score is selected (if none is, the null row is); selected plugins run in
//! the official task order, not by score.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use prompt_diffusion_core::{Error, Result};

use crate::Task;

/// The selector head.
#[derive(Module, Debug)]
pub struct PluginSelector<B: Backend> {
    /// Projection of the max-pooled task prompts.
    pub proj_v: Linear<B>,
    /// Projection of the pooled instruction embedding.
    pub proj_t: Linear<B>,
    /// The learned temperature, `ln(1/τ)` (0-d in the file; only scales the scores).
    pub logit_scale: f64,
}

/// A selector row: a task's plugin or the null choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Run this task's plugin.
    Task(Task),
    /// Leave the image as it is.
    Null,
}

/// The outcome of a selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Every row with its score after clamping at 0 (and the null row set to 1 when all are 0),
    /// the tasks in the official order, then the null row.
    pub scores: Vec<(Choice, f32)>,
    /// The tasks to run, in the official order (empty when only the null row is selected).
    pub tasks: Vec<Task>,
}

impl<B: Backend> PluginSelector<B> {
    /// A randomly initialised head of width `dim` (768 for SD1); `logit_scale` = ln(1/0.07).
    pub fn new(dim: usize, device: &B::Device) -> Self {
        Self {
            proj_v: LinearConfig::new(dim, dim).init(device),
            proj_t: LinearConfig::new(dim, dim).init(device),
            logit_scale: (1.0f64 / 0.07).ln(),
        }
    }

    /// The width of the embeddings the head compares.
    pub fn dim(&self) -> usize {
        self.proj_v.weight.dims()[0]
    }

    /// The raw scores `exp(logit_scale) · cos(proj_v(max_tokens V_i), proj_t(q))`.
    ///
    /// # Shapes
    /// `instruction` (pooled text): `[1, dim]`, `rows` (F^p per plugin and the null row):
    /// `[n, tokens, dim]` → `[n]`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the widths do not match the head.
    pub fn scores(&self, instruction: Tensor<B, 2>, rows: Tensor<B, 3>) -> Result<Tensor<B, 1>> {
        let dim = self.dim();
        if instruction.dims() != [1, dim] {
            return Err(shape_error(
                "instruction",
                format!("[1, {dim}]"),
                &instruction.dims(),
            ));
        }
        let [n, tokens, width] = rows.dims();
        if width != dim || tokens == 0 || n == 0 {
            return Err(shape_error(
                "rows",
                format!("[n, tokens, {dim}]"),
                &rows.dims(),
            ));
        }
        let pooled = rows.max_dim(1).reshape([n, dim]);
        let v = normalize(self.proj_v.forward(pooled));
        let u = normalize(self.proj_t.forward(instruction.cast(v.dtype())));
        let cos = (v * u).sum_dim(1).reshape([n]);
        Ok(cos * self.logit_scale.exp())
    }

    /// The null row: the pooled embedding of `" "` repeated over `tokens` (what `demo.py` writes
    /// into the last row of the plugin embeddings).
    ///
    /// # Shapes
    /// `[1, dim]` → `[1, tokens, dim]` (of a larger batch, the first row is used).
    pub fn null_row(null_text: Tensor<B, 2>, tokens: usize) -> Tensor<B, 3> {
        let [_, dim] = null_text.dims();
        null_text
            .narrow(0, 0, 1)
            .reshape([1, 1, dim])
            .expand([1, tokens, dim])
    }
}

fn normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().square().sum_dim(1).sqrt();
    x / norm
}

/// The selection rule of `demo.py`: scores are clamped at 0, the null row (last) gets 1 when
/// all are 0, every positive row is selected, tasks run in the official order.
///
/// `tasks` names the first rows (in the official order); `raw` has one more entry, the null
/// row.
///
/// # Errors
/// [`Error::InvalidInput`] when the lengths do not match or the tasks are not in the official
/// order.
pub fn select(tasks: &[Task], raw: &[f32]) -> Result<Selection> {
    if raw.len() != tasks.len() + 1 {
        return Err(Error::invalid_input(
            "selector scores",
            format!(
                "{} scores for {} tasks and the null row",
                raw.len(),
                tasks.len()
            ),
        ));
    }
    if tasks.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::invalid_input(
            "selector tasks",
            "must be distinct and in the official order",
        ));
    }
    let mut clamped: Vec<f32> = raw.iter().map(|s| s.max(0.0)).collect();
    if clamped.iter().all(|s| *s == 0.0) {
        *clamped.last_mut().expect("the null row exists") = 1.0;
    }
    let choices = tasks
        .iter()
        .map(|t| Choice::Task(*t))
        .chain(std::iter::once(Choice::Null));
    let scores: Vec<(Choice, f32)> = choices.zip(clamped).collect();
    let selected = scores
        .iter()
        .filter_map(|(c, s)| match c {
            Choice::Task(t) if *s > 0.0 => Some(*t),
            _ => None,
        })
        .collect();
    Ok(Selection {
        scores,
        tasks: selected,
    })
}

fn shape_error(key: &str, expected: String, found: &[usize]) -> Error {
    Error::Shape {
        origin: None,
        key: key.into(),
        expected,
        found: found.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_rows_run_in_official_order() {
        let tasks = Task::ALL;
        let raw = [0.1, -0.2, 0.0, 0.3, -1.0, -0.1, -0.3, -0.4, 0.05];
        let s = select(&tasks, &raw).unwrap();
        assert_eq!(s.tasks, [Task::Derain, Task::Dehaze]);
        assert_eq!(s.scores[1], (Choice::Task(Task::Desnow), 0.0));
        assert_eq!(s.scores[8], (Choice::Null, 0.05));
    }

    #[test]
    fn all_negative_selects_null() {
        let s = select(&[Task::Derain, Task::Face], &[-1.0, -2.0, -0.5]).unwrap();
        assert!(s.tasks.is_empty());
        assert_eq!(s.scores[2], (Choice::Null, 1.0));
        assert!(select(&[Task::Face, Task::Derain], &[1.0, 1.0, 1.0]).is_err());
        assert!(select(&[Task::Face], &[1.0]).is_err());
    }
}
