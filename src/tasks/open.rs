//! What a task whose answer is not one of a fixed list provides: the constraint its answer is
//! generated under, a token budget, how the generated text becomes output columns, and its
//! metrics. The generation pass and `run` drive it; the answer is valid by construction, so
//! interpreting it never parses free text.

use crate::dataset::{Dataset, Row};
use crate::scoring_pass::Scored;
use autolabel_models::generation::Grammar;

/// A generated answer, ready to interpret.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The answer's text (without the end token).
    pub text: String,
    /// The answer's token ids (without the end token).
    pub tokens: Vec<u32>,
    /// Byte range of each answer token in `text`, in order.
    pub token_spans: Vec<(usize, usize)>,
    /// Each answer token's log-probability under the model's full distribution.
    pub logprobs: Vec<f32>,
    /// log P(whole answer, end token included).
    pub total_logprob: f32,
}

impl Answer {
    /// exp(mean token log-probability) over the answer and its end token: Autolabel's
    /// `logprob_average` confidence, a row-level figure that does not shrink with length.
    pub fn mean_token_probability(&self) -> f64 {
        let n = self.logprobs.len() + 1;
        (self.total_logprob as f64 / n as f64).exp()
    }

    /// log P of the tokens that overlap bytes `start..end` of the text.
    pub fn logprob_of_bytes(&self, start: usize, end: usize) -> f32 {
        self.token_spans
            .iter()
            .zip(&self.logprobs)
            .filter(|((s, e), _)| *s < end && *e > start)
            .map(|(_, lp)| *lp)
            .sum()
    }

    /// exp(mean log-probability) of the tokens that overlap bytes `start..end` of the text (the
    /// geometric mean of their probabilities, Autolabel's per-key `logprob_average`); None when
    /// no token overlaps them.
    pub fn mean_probability_of_bytes(&self, start: usize, end: usize) -> Option<f64> {
        let lps: Vec<f64> = self
            .token_spans
            .iter()
            .zip(&self.logprobs)
            .filter(|((s, e), _)| *s < end && *e > start)
            .map(|(_, lp)| *lp as f64)
            .collect();
        (!lps.is_empty()).then(|| (lps.iter().sum::<f64>() / lps.len() as f64).exp())
    }
}

/// `x` to 6 significant digits (the probability of a long entity or value can be far below 1e-6,
/// so a fixed number of decimals would write 0).
pub fn round6(x: f64) -> f64 {
    format!("{x:.5e}").parse().unwrap_or(x)
}

/// A row's answer turned into output.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Interpreted {
    /// The `<task>_task_label` value.
    pub label: String,
    /// The `<task>_task_confidence` value (a probability).
    pub confidence: f64,
    /// Values of the task's extra output columns, in [`OpenTask::extra_columns`] order.
    pub extra: Vec<String>,
    /// What the task's metrics need of this answer.
    pub detail: serde_json::Value,
}

pub trait OpenTask: Send + Sync {
    /// The constraint a row's answer is generated under.
    fn grammar(&self, data: &Dataset, row: &Row) -> Result<Grammar, String>;
    /// Most tokens the answer may take (end token included), given the row and its input length
    /// in tokens.
    fn max_answer_tokens(&self, data: &Dataset, row: &Row, input_tokens: usize) -> usize;
    /// The answer as output, or why it cannot be used.
    fn interpret(&self, data: &Dataset, row: &Row, answer: &Answer) -> Result<Interpreted, String>;
    /// Whether the answer comes from scoring the task's candidates exactly (the scoring pass)
    /// instead of generating it (multi-label by label membership).
    fn scores_candidates(&self) -> bool {
        false
    }
    /// The answer read from a row's candidate scores (when [`OpenTask::scores_candidates`]).
    fn interpret_scores(
        &self,
        _data: &Dataset,
        row: &Row,
        _scored: &Scored,
    ) -> Result<Interpreted, String> {
        Err(format!(
            "line {}: this task generates its answers",
            row.line
        ))
    }
    /// The answer `given` (a label column's, for `score`) with the probabilities of a row's
    /// candidate scores (when [`OpenTask::scores_candidates`]).
    fn interpret_given_scores(
        &self,
        _data: &Dataset,
        row: &Row,
        _scored: &Scored,
        _given: &str,
    ) -> Result<Interpreted, String> {
        Err(format!(
            "line {}: this task generates its answers",
            row.line
        ))
    }
    /// Output columns after label, confidence, successfully_labeled and error (names without
    /// the `<task>_task_` prefix).
    fn extra_columns(&self) -> Vec<String>;
    /// Output columns named as they are, without the task prefix (Autolabel's per-attribute
    /// `<name>_label` and `<name>_confidence`); their values follow the extra columns' in
    /// [`Interpreted::extra`].
    fn plain_columns(&self) -> Vec<String> {
        Vec::new()
    }
    /// The answer text this task's grammar would write for an answer given in a label column (a
    /// label produced elsewhere, for `score`), or why the given label cannot be read.
    fn given_answer(&self, data: &Dataset, row: &Row, given: &str) -> Result<String, String>;
    /// The metrics report against the ground truth, when the data has it; notes about the
    /// ground truth (rows that could not be evaluated) come back as warnings.
    fn report(&self, data: &Dataset, answers: &[Option<Interpreted>]) -> Option<Report>;
    /// What one unit of an answer that has its own confidence is called ("entity", "answer");
    /// calibration and thresholds work per unit.
    fn unit(&self) -> &'static str;
    /// Each unit of a row's answer: its probability under the model and whether the ground truth
    /// has it (`None`: the row has no usable ground truth).
    fn outcomes(&self, data: &Dataset, row: &Row, answer: &Interpreted)
        -> Option<Vec<(f64, bool)>>;
    /// The units of a given answer (`score`) judged against the ground truth: by default its
    /// [`OpenTask::outcomes`].
    fn given_outcomes(
        &self,
        data: &Dataset,
        row: &Row,
        answer: &Interpreted,
    ) -> Option<Vec<(f64, bool)>> {
        self.outcomes(data, row, answer)
    }
    /// Applies a calibration to an answer: every unit's confidence becomes `calibrated(p)`; with
    /// a threshold, units below it are marked as such (and left out of the label where the label
    /// is a collection of units). Confidences are compared with the threshold in f32, the
    /// precision the threshold is stored in. Returns whether every unit reached the threshold.
    fn apply_calibration(
        &self,
        answer: &mut Interpreted,
        calibrated: &dyn Fn(f64) -> f64,
        threshold: Option<f64>,
    ) -> bool;
    /// Names of the groups whose units are calibrated separately (attribute extraction: one per
    /// attribute); empty when one calibration serves every unit.
    fn unit_groups(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether each unit group is chosen at its own cut fitted on the seed rows (multi-label by
    /// membership: a label is in the answer when its calibrated probability reaches its cut).
    fn chooses_per_group(&self) -> bool {
        false
    }
    /// Applies a calibration whose groups each have a cut (see
    /// [`OpenTask::chooses_per_group`]); `cut(g)` None: the task's default. Returns whether the
    /// answer needed no fallback.
    fn apply_group_choice(
        &self,
        answer: &mut Interpreted,
        calibrated: &dyn Fn(usize, f64) -> f64,
        _cut: &dyn Fn(usize) -> Option<f64>,
    ) -> bool {
        self.apply_group_calibration(answer, calibrated, None)
    }
    /// What one unit group is ("attribute", "label").
    fn group_kind(&self) -> &'static str {
        "attribute"
    }
    /// What a unit's probability p is (for messages).
    fn unit_probability(&self) -> String {
        format!("probability of the {}'s tokens", self.unit())
    }
    /// [`OpenTask::outcomes`] with each unit's group (an index into [`OpenTask::unit_groups`]).
    fn grouped_outcomes(
        &self,
        data: &Dataset,
        row: &Row,
        answer: &Interpreted,
    ) -> Option<Vec<(usize, f64, bool)>> {
        Some(
            self.outcomes(data, row, answer)?
                .into_iter()
                .map(|(p, ok)| (0, p, ok))
                .collect(),
        )
    }
    /// [`OpenTask::apply_calibration`] with a calibration per unit group: `calibrated(group, p)`.
    fn apply_group_calibration(
        &self,
        answer: &mut Interpreted,
        calibrated: &dyn Fn(usize, f64) -> f64,
        threshold: Option<f64>,
    ) -> bool {
        self.apply_calibration(answer, &|p| calibrated(0, p), threshold)
    }
    /// What happens to the units below a threshold (for the run's summary).
    fn below_threshold_note(&self) -> &'static str;
}

/// Metrics printed after a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub text: String,
    pub warnings: Vec<String>,
    /// Headline figures by name (e.g. `strict_f1`), for tests and scripts.
    pub figures: Vec<(String, f64)>,
}
