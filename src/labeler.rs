//! Turns rows into token-level scoring requests (prompt through the chat template, candidates with
//! their end-of-answer token, over-long inputs truncated from the middle) and scores them.

use crate::chat_template::ChatTemplate;
use crate::confidence::LabelScores;
use crate::dataset::{Dataset, Row};
use crate::tasks::Task;
use anyhow::{bail, Result};
use autolabel_models::local_model::ModelKind;
use autolabel_models::{LocalModel, ScoreRequest};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct LabelerOptions {
    /// Wrap prompts in the model's chat template (when it has one).
    pub chat_template: bool,
    /// Longest prompt + answer in tokens; longer inputs are truncated from the middle.
    pub max_tokens: usize,
    /// Most tokens of a chain-of-thought explanation (tasks with `chain_of_thought`).
    pub explanation_tokens: usize,
    /// Score each row with its label list in this many orders and average (1: as configured).
    pub label_orders: usize,
}

/// A row ready to score.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub prompt_ids: Vec<u32>,
    pub labels: Arc<Vec<String>>,
    pub candidates: Arc<Vec<Vec<u32>>>,
    /// The input was cut to fit the context (a warning, not an error).
    pub truncated: bool,
}

/// Tokens a row keeps free for its answer.
pub enum AnswerBudget<'f> {
    /// A fixed number (the longest candidate, end token included).
    Tokens(usize),
    /// A function of the input's length in tokens (a generated answer).
    PerInput(&'f dyn Fn(usize) -> usize),
}

/// A row's prompt, ready to generate from.
#[derive(Debug, Clone)]
pub struct PreparedPrompt {
    pub ids: Vec<u32>,
    /// The input was cut to fit the context (a warning, not an error).
    pub truncated: bool,
    /// The answer's token budget.
    pub answer_tokens: usize,
}

type CandidateCache = Option<(Arc<Vec<String>>, Arc<Vec<Vec<u32>>>)>;

pub struct Labeler<'a> {
    model: &'a LocalModel,
    task: &'a dyn Task,
    chat: Option<ChatTemplate>,
    /// Tokens that end every answer (end-of-turn for chat models, a newline otherwise).
    answer_end: Vec<u32>,
    max_tokens: usize,
    /// The task's input columns (checked for emptiness, truncated when too long).
    inputs: Vec<String>,
    cache: Mutex<CandidateCache>,
    /// Chain of thought: the most tokens an explanation may take (None: no explanation).
    explanation_tokens: Option<usize>,
    /// The label lists a row is asked with (the fixed labels rotated), when more than one.
    orders: Vec<Vec<String>>,
}

const ELLIPSIS: &str = " [...] ";

/// The label lists `--label-orders k` asks each row with: the fixed labels rotated by
/// `j * labels / k` places for j = 0..k (so with k = the number of labels, each label is listed
/// first once). Empty for k = 1.
fn label_orders(task: &dyn Task, k: usize, chain_of_thought: bool) -> Result<Vec<Vec<String>>> {
    if k <= 1 {
        if k == 0 {
            bail!("--label-orders must be at least 1 (1: the configured order only)")
        }
        return Ok(Vec::new());
    }
    let Some(labels) = task.fixed_candidates() else {
        bail!("--label-orders {k} needs one label set for every row; this task's candidates differ per row (label selection, or multiple choice), or it has no label list")
    };
    if chain_of_thought {
        bail!("--label-orders with prompt.chain_of_thought is not supported (each order would need its own explanation); use one or the other")
    }
    if !task.prompt_builder().shows_labels() {
        bail!("--label-orders {k}: the task guidelines do not list the labels (no {{labels}} in prompt.task_guidelines), so there is no order to change")
    }
    let n = labels.len();
    if k > n {
        bail!("--label-orders {k}: there are only {n} labels, so at most {n} rotations of the list differ")
    }
    let orders: Vec<Vec<String>> = (0..k)
        .map(|j| {
            let shift = j * n / k;
            labels[shift..]
                .iter()
                .chain(&labels[..shift])
                .cloned()
                .collect()
        })
        .collect();
    Ok(orders)
}

/// Shorter common prefixes are prefilled with each row (sharing them saves too little).
pub const MIN_SHARED_PREFIX: usize = 16;

impl<'a> Labeler<'a> {
    pub fn new(model: &'a LocalModel, task: &'a dyn Task, opts: &LabelerOptions) -> Result<Self> {
        let encoder_decoder = model.kind == ModelKind::EncoderDecoder;
        let chat = match (&model.chat_template, opts.chat_template) {
            (Some(t), true) if !encoder_decoder => Some(ChatTemplate::new(
                t,
                model.bos_token.clone(),
                model.eos_token.clone(),
            )?),
            _ => None,
        };
        let answer_end = match &chat {
            // An encoder-decoder's answer is a whole decoded sequence: it ends with EOS.
            None if encoder_decoder => match model.eos_token_id {
                Some(eos) => vec![eos],
                None => bail!(
                    "{}: the model names no end-of-sequence token (eos_token_id in config.json)",
                    model.path.display()
                ),
            },
            Some(c) => {
                let suffix = model.encode(&c.answer_suffix()?)?;
                match suffix.first() {
                    Some(&t) => vec![t],
                    None => bail!(
                        "the chat template writes nothing after an answer; use --no-chat-template"
                    ),
                }
            }
            None => model.encode("\n")?,
        };
        let max_tokens = opts.max_tokens.min(model.context_length());
        let explanation_tokens = task.chain_of_thought().then_some(opts.explanation_tokens);
        if explanation_tokens.is_some() {
            if encoder_decoder {
                bail!("prompt.chain_of_thought needs a decoder-only model: {} is an encoder-decoder, whose answer cannot continue an explanation line (its tokenizer has no newline); set chain_of_thought to false or choose a decoder model", model.path.display())
            }
            if opts.explanation_tokens == 0 {
                bail!("--explanation-tokens must be at least 1 with prompt.chain_of_thought")
            }
        }
        let orders = label_orders(task, opts.label_orders, explanation_tokens.is_some())?;
        let labeler = Labeler {
            model,
            task,
            chat,
            answer_end,
            max_tokens,
            inputs: task.input_columns(),
            cache: Mutex::new(None),
            explanation_tokens,
            orders,
        };
        if let Some(labels) = task.fixed_candidates() {
            labeler.candidates(&labels)?; // a bad label set stops the run before any row
        }
        Ok(labeler)
    }

    /// The tokens that end an answer.
    pub fn answer_end(&self) -> &[u32] {
        &self.answer_end
    }

    pub fn model(&self) -> &LocalModel {
        self.model
    }

    /// With chain of thought: the most tokens an explanation may take.
    pub fn explanation_tokens(&self) -> Option<usize> {
        self.explanation_tokens
    }

    /// Longest prompt + answer in tokens (`--max-tokens`, capped by the model's context).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// How many label orders each row is asked with (1: the configured order only).
    pub fn label_orders(&self) -> usize {
        self.orders.len().max(1)
    }

    /// Tokens a row keeps free for its explanation (the line, its newline and an end token).
    pub fn explanation_budget(&self) -> usize {
        self.explanation_tokens.map_or(0, |n| n + 2)
    }

    /// Tokens of the longest candidate of a row (end token included).
    pub fn longest_candidate(&self, data: &Dataset, row: &Row) -> Result<usize, String> {
        let labels = self.task.candidates(data, row)?;
        let candidates = self
            .candidates(&labels)
            .map_err(|e| format!("line {}: {e}", row.line))?;
        Ok(candidates.iter().map(Vec::len).max().unwrap_or(0))
    }

    pub fn uses_chat_template(&self) -> bool {
        self.chat.is_some()
    }

    /// The full prompt text for a row (chat template applied).
    pub fn render(
        &self,
        data: &Dataset,
        row: &Row,
        override_column: Option<(&str, &str)>,
    ) -> Result<String> {
        self.render_order(data, row, override_column, 0)
    }

    /// [`Labeler::render`] with the label list in order `order` (see `--label-orders`).
    fn render_order(
        &self,
        data: &Dataset,
        row: &Row,
        override_column: Option<(&str, &str)>,
        order: usize,
    ) -> Result<String> {
        let user = match self.orders.get(order).filter(|_| order > 0) {
            Some(labels) => self
                .task
                .prompt_with_labels(data, row, override_column, labels)
                .ok_or_else(|| {
                    anyhow::anyhow!("this task cannot show its labels in another order")
                })?,
            None => self.task.prompt(data, row, override_column),
        };
        match &self.chat {
            Some(c) => c.prompt(user.trim_end()),
            None => Ok(user.trim_end().to_string()),
        }
    }

    fn encoder_decoder(&self) -> bool {
        self.model.kind == ModelKind::EncoderDecoder
    }

    fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.model.add_bos && self.chat.is_none() {
            ids.extend(self.model.bos_token_id);
        }
        ids.extend(self.model.encode(text)?);
        if self.encoder_decoder() {
            // The encoder input ends with EOS, as T5's tokenizers write it.
            ids.extend(&self.answer_end);
        }
        Ok(ids)
    }

    /// Token ids of every candidate, with the answer's end token (unless the task's candidates
    /// start an answer that goes on); cached per label set.
    pub fn candidates(&self, labels: &Arc<Vec<String>>) -> Result<Arc<Vec<Vec<u32>>>> {
        let mut cache = self.cache.lock().expect("candidate cache lock");
        if let Some((l, c)) = cache.as_ref() {
            if Arc::ptr_eq(l, labels) {
                return Ok(c.clone());
            }
        }
        let mut out: Vec<Vec<u32>> = Vec::with_capacity(labels.len());
        for label in labels.iter() {
            let text = if self.explanation_tokens.is_some() {
                // After an explanation line, as Autolabel shows a chain-of-thought answer.
                crate::chain_of_thought::label_json(label)
            } else if self.chat.is_some() || self.encoder_decoder() {
                label.clone()
            } else {
                format!(" {label}")
            };
            let ids = self.model.encode(&text)?;
            if ids.is_empty() {
                bail!("label '{label}' tokenizes to nothing; remove it or give it visible text")
            }
            let full = if self.task.candidates_end_answer() {
                [ids, self.answer_end.clone()].concat()
            } else {
                ids
            };
            if let Some(j) = out.iter().position(|o| *o == full) {
                bail!(
                    "labels '{}' and '{label}' tokenize identically; make them differ",
                    labels[j]
                )
            }
            out.push(full);
        }
        let out = Arc::new(out);
        *cache = Some((labels.clone(), out.clone()));
        Ok(out)
    }

    /// Prepares a row, or says why it cannot be labeled.
    pub fn prepare(&self, data: &Dataset, row: &Row) -> Result<Prepared, String> {
        self.prepare_with(data, row, &[])
    }

    /// Prepares a row whose candidates follow `after` (its chain-of-thought explanation), the
    /// input cut as the explanation's own pass cut it.
    pub fn prepare_with(
        &self,
        data: &Dataset,
        row: &Row,
        after: &[u32],
    ) -> Result<Prepared, String> {
        self.prepare_order(data, row, after, 0)
    }

    /// [`Labeler::prepare_with`] with the label list in order `order` (see `--label-orders`).
    pub fn prepare_order(
        &self,
        data: &Dataset,
        row: &Row,
        after: &[u32],
        order: usize,
    ) -> Result<Prepared, String> {
        if let Some(e) = &row.error {
            return Err(e.clone());
        }
        let labels = self.task.candidates(data, row)?;
        let candidates = self
            .candidates(&labels)
            .map_err(|e| format!("line {}: {e}", row.line))?;
        let longest_answer = candidates.iter().map(Vec::len).max().unwrap_or(0);
        let budget = longest_answer + self.explanation_budget();
        let prompt = self.prepare_prompt_order(data, row, AnswerBudget::Tokens(budget), order)?;
        Ok(Prepared {
            prompt_ids: [prompt.ids, after.to_vec()].concat(),
            labels,
            candidates,
            truncated: prompt.truncated,
        })
    }

    /// A row's prompt token ids, its input cut from the middle when the prompt and the answer's
    /// token budget exceed the token limit.
    pub fn prepare_prompt(
        &self,
        data: &Dataset,
        row: &Row,
        budget: AnswerBudget,
    ) -> Result<PreparedPrompt, String> {
        self.prepare_prompt_order(data, row, budget, 0)
    }

    fn prepare_prompt_order(
        &self,
        data: &Dataset,
        row: &Row,
        budget: AnswerBudget,
        order: usize,
    ) -> Result<PreparedPrompt, String> {
        if let Some(e) = &row.error {
            return Err(e.clone());
        }
        let inputs = &self.inputs;
        if !inputs.is_empty()
            && inputs
                .iter()
                .all(|c| data.value(row, c).is_none_or(|v| v.trim().is_empty()))
        {
            return Err(format!(
                "line {}: empty input (columns {} are empty)",
                row.line,
                inputs.join(", ")
            ));
        }
        let err = |e: anyhow::Error| format!("line {}: {e:#}", row.line);
        let mut prompt_ids = self
            .encode_prompt(&self.render_order(data, row, None, order).map_err(err)?)
            .map_err(err)?;
        let mut truncated = false;
        // The longest input column gives up tokens from its middle until the prompt fits.
        let column = inputs
            .iter()
            .max_by_key(|c| data.value(row, c).map_or(0, str::len))
            .cloned();
        let mut text = column
            .as_ref()
            .and_then(|c| data.value(row, c))
            .unwrap_or("")
            .to_string();
        // The input's tokens, when the answer budget depends on them (reused by the first cut).
        let mut text_ids = None;
        let answer_tokens = match budget {
            AnswerBudget::Tokens(n) => n,
            AnswerBudget::PerInput(f) => {
                let ids = self.model.encode(&text).map_err(err)?;
                let n = f(ids.len());
                text_ids = Some(ids);
                n
            }
        };
        let budget = self.max_tokens.saturating_sub(answer_tokens);
        for _ in 0..4 {
            if prompt_ids.len() <= budget {
                return Ok(PreparedPrompt {
                    ids: prompt_ids,
                    truncated,
                    answer_tokens,
                });
            }
            let Some(col) = &column else { break };
            let ids = match text_ids.take() {
                Some(ids) => ids,
                None => self.model.encode(&text).map_err(err)?,
            };
            let overflow = prompt_ids.len() - budget;
            let keep = ids.len().saturating_sub(overflow + 8);
            if keep == 0 {
                break;
            }
            let head = self.model.decode(&ids[..keep / 2]).map_err(err)?;
            let tail = self
                .model
                .decode(&ids[ids.len() - (keep - keep / 2)..])
                .map_err(err)?;
            text = format!("{}{ELLIPSIS}{}", head.trim_end(), tail.trim_start());
            prompt_ids = self
                .encode_prompt(
                    &self
                        .render_order(data, row, Some((col, &text)), order)
                        .map_err(err)?,
                )
                .map_err(err)?;
            truncated = true;
        }
        Err(format!(
            "line {}: the prompt needs {} tokens and cannot be cut to the limit of {budget} (raise --max-tokens or shorten the guidelines)",
            row.line,
            prompt_ids.len()
        ))
    }

    /// Finds the token prefix every prepared prompt starts with (the instructions, labels and
    /// few-shot examples) and lets the model prefill it once for all of them. Returns its length
    /// (0 when shorter than [`MIN_SHARED_PREFIX`] tokens, where sharing is not worth it).
    pub fn share_prefix<'p>(&self, prompts: impl IntoIterator<Item = &'p [u32]>) -> Result<usize> {
        let prefix = self.prefix_of(prompts);
        self.set_prefix(&prefix)?;
        Ok(prefix.len())
    }

    /// The token prefix [`Labeler::share_prefix`] would share for these prompts (empty when
    /// shorter than [`MIN_SHARED_PREFIX`] tokens, or for an encoder-decoder).
    pub fn prefix_of<'p>(&self, prompts: impl IntoIterator<Item = &'p [u32]>) -> Vec<u32> {
        let mut common: Option<&[u32]> = None;
        let mut shortest = usize::MAX;
        for p in prompts {
            shortest = shortest.min(p.len());
            common = Some(match common {
                None => p,
                Some(c) => {
                    let n = c.iter().zip(p).take_while(|(a, b)| a == b).count();
                    &c[..n]
                }
            });
        }
        let Some(common) = common else {
            return Vec::new();
        };
        if self.encoder_decoder() {
            return Vec::new(); // a bidirectional encoder has no reusable prefix state
        }
        // Every prompt keeps at least one token of its own (its last position predicts the answer).
        let n = common.len().min(shortest.saturating_sub(1));
        if n >= MIN_SHARED_PREFIX {
            common[..n].to_vec()
        } else {
            Vec::new()
        }
    }

    /// Prefills `prefix` once for the prompts scored next (see [`Labeler::share_prefix`]).
    pub fn set_prefix(&self, prefix: &[u32]) -> Result<()> {
        self.model.scorer.set_shared_prefix(prefix)?;
        Ok(())
    }

    /// Scores a batch of prepared rows.
    pub fn score(&self, batch: &[&Prepared]) -> Result<Vec<LabelScores>> {
        Ok(self
            .score_tokens(batch)?
            .iter()
            .map(|t| LabelScores::from_token_logprobs(t))
            .collect())
    }

    /// Per-token log-probabilities of every candidate of every row in a batch.
    pub fn score_tokens(&self, batch: &[&Prepared]) -> Result<Vec<Vec<Vec<f32>>>> {
        let requests: Vec<ScoreRequest> = batch
            .iter()
            .map(|p| ScoreRequest {
                prompt: p.prompt_ids.clone(),
                candidates: p.candidates.as_ref().clone(),
            })
            .collect();
        let out = self.model.scorer.score_batch(&requests)?;
        Ok(out.into_iter().map(|c| c.token_logprobs).collect())
    }
}
