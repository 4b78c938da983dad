//! Every row's answer for a task without a fixed label: generated under the task's constraint
//! (the generation pass), or read from the exact scores of its candidates (the scoring pass, for
//! multi-label by label membership), interpreted into output either way. `run`, `calibrate`
//! and `merge`'s reports take answers from here.

use crate::generation_pass::generate_all;
use crate::labeler::Labeler;
use crate::scoring_pass::{score_all, PassOptions};
use crate::session::Session;
use crate::tasks::open::{Interpreted, OpenTask};
use anyhow::Result;

/// Every row's interpreted answer, in file order, and what the pass measured.
pub struct AnswerPass {
    pub rows: Vec<Result<Interpreted, String>>,
    pub truncated: usize,
    pub seconds: f64,
    pub reused: usize,
    /// Rows answered in this pass.
    pub answered: usize,
    /// Tokens generated in this pass (None when the candidates were scored).
    pub tokens: Option<usize>,
    /// How long the model waited for the constraints (generation only).
    pub overhead: Option<String>,
    pub interrupted: bool,
    pub owned: Option<Vec<bool>>,
}

pub fn answer_all(
    session: &Session,
    labeler: &Labeler,
    task: &dyn OpenTask,
    opts: PassOptions,
) -> Result<AnswerPass> {
    let data = &session.data;
    if labeler.label_orders() > 1 {
        anyhow::bail!("--label-orders averages a label set's distribution over list orders; a {} task has none (drop --label-orders)", session.config.task_type)
    }
    if task.scores_candidates() {
        let pass = score_all(session, labeler, opts)?;
        let rows = data
            .rows
            .iter()
            .zip(pass.rows)
            .map(|(row, r)| r.and_then(|s| task.interpret_scores(data, row, &s)))
            .collect();
        return Ok(AnswerPass {
            rows,
            truncated: pass.truncated,
            seconds: pass.seconds,
            reused: pass.reused,
            answered: pass.scored,
            tokens: None,
            overhead: None,
            interrupted: pass.interrupted,
            owned: pass.owned,
        });
    }
    let pass = generate_all(session, labeler, task, opts)?;
    let overhead = pass.overhead();
    let rows = data
        .rows
        .iter()
        .zip(pass.rows)
        .map(|(row, r)| r.and_then(|a| task.interpret(data, row, &a)))
        .collect();
    Ok(AnswerPass {
        rows,
        truncated: pass.truncated,
        seconds: pass.seconds,
        reused: pass.reused,
        answered: pass.generated,
        tokens: Some(pass.tokens),
        overhead,
        interrupted: pass.interrupted,
        owned: pass.owned,
    })
}
