//! One pass of constrained generation over a dataset (tasks with open answers): prepare every
//! row's prompt and constraint, generate in length-sorted batches that share the instruction
//! prefix, and hand back each row's answer or the reason it has none. Like the scoring pass it
//! journals every finished batch (the generated tokens and their log-probabilities), so an
//! interrupted run resumes without generating those rows again.

use crate::dataset::{Dataset, Row};
use crate::journal::{row_key, RowKey};
use crate::labeler::{AnswerBudget, Labeler};
use crate::progress::Progress;
use crate::scoring_pass::{PassOptions, Repeats};
use crate::session::Session;
use crate::tasks::open::{Answer, OpenTask};
use anyhow::Result;
use autolabel_models::generation::{
    generate_timed, ConstraintCompiler, Finish, Generated, GenerationRequest, GenerationTimes,
    Grammar,
};
use autolabel_models::tokenization::token_env::token_env;
use sha2::{Digest, Sha256};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Every row's answer, in file order, and what the pass measured.
pub struct GenerationResult {
    pub rows: Vec<Result<Answer, String>>,
    pub truncated: usize,
    pub seconds: f64,
    pub reused: usize,
    pub generated: usize,
    /// Tokens generated in this pass (end tokens included).
    pub tokens: usize,
    /// Time spent generating, and how much of it the model waited for the constraints.
    pub times: GenerationTimes,
    pub interrupted: bool,
    /// With a shard: the rows it labeled (the others hold an error).
    pub owned: Option<Vec<bool>>,
    /// The rows generated together, batch by batch (every batch of the pass, a shard's or not;
    /// repeated rows are in their first row's batch only).
    pub batches: Vec<Vec<usize>>,
}

impl GenerationResult {
    /// How much of the generation time the model waited for the constraints (None when
    /// nothing was generated).
    pub fn overhead(&self) -> Option<String> {
        let t = &self.times;
        (t.seconds > 0.0).then(|| {
            format!(
                "constraint overhead: the model waited {:.1} s of {:.1} s of generation ({:.1}%) for grammar masks and token choice",
                t.constraint_seconds,
                t.seconds,
                100.0 * t.constraint_seconds / t.seconds
            )
        })
    }
}

/// What a generation pass generates for each row: its constraint and token budget.
pub trait Generates: Sync {
    /// The constraint a row's answer is generated under.
    fn grammar(&self, data: &Dataset, row: &Row) -> Result<Grammar, String>;
    /// Most tokens the answer may take (end token included), given the row's input length in
    /// tokens.
    fn max_answer_tokens(&self, data: &Dataset, row: &Row, input_tokens: usize) -> usize;
    /// Tokens the prompt leaves free after the answer (for what is scored after it), so that a
    /// later pass over prompt + answer cuts the input exactly as this one did.
    fn reserved_tokens(&self, _data: &Dataset, _row: &Row) -> Result<usize, String> {
        Ok(0)
    }
}

/// An open task's answers.
pub struct OpenAnswers<'a>(pub &'a dyn OpenTask);

impl Generates for OpenAnswers<'_> {
    fn grammar(&self, data: &Dataset, row: &Row) -> Result<Grammar, String> {
        self.0.grammar(data, row)
    }
    fn max_answer_tokens(&self, data: &Dataset, row: &Row, input_tokens: usize) -> usize {
        self.0.max_answer_tokens(data, row, input_tokens)
    }
}

struct Item {
    row: usize,
    prompt: Vec<u32>,
    grammar: Grammar,
    max_new: usize,
    key: Option<RowKey>,
}

/// The journal key of a generated row: the settings, its prompt and its constraint.
fn generation_key(settings: &RowKey, prompt: &[u32], grammar: &Grammar, max_new: usize) -> RowKey {
    let mut h = Sha256::new();
    h.update(b"generation-1");
    h.update(format!("{grammar:?}").as_bytes());
    h.update((max_new as u64).to_le_bytes());
    let digest: [u8; 32] = h.finalize().into();
    let marker: Vec<u32> = digest
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    row_key(settings, prompt, &[marker])
}

/// Journal form: tokens (as f32, exact below 2^24), log-probs, constrained log-probs, finish.
fn encode(g: &Generated) -> Option<Vec<Vec<f32>>> {
    let finish = match g.finish {
        Finish::End => 0.0,
        Finish::Length => 1.0,
        Finish::ConstraintError(_) => return None,
    };
    Some(vec![
        g.tokens.iter().map(|&t| t as f32).collect(),
        g.logprobs.clone(),
        g.constrained_logprobs.clone(),
        vec![finish],
    ])
}

fn decode(v: &[Vec<f32>]) -> Option<Generated> {
    let [tokens, logprobs, constrained, finish] = v else {
        return None;
    };
    if tokens.len() != logprobs.len() || tokens.len() != constrained.len() {
        return None;
    }
    Some(Generated {
        tokens: tokens.iter().map(|&t| t as u32).collect(),
        logprobs: logprobs.clone(),
        constrained_logprobs: constrained.clone(),
        finish: if finish.first() == Some(&0.0) {
            Finish::End
        } else {
            Finish::Length
        },
    })
}

/// A constraint failure in a line (llguidance's first line, without its parser-state dump), with
/// what to do when the model could not spell what the constraint requires.
fn constraint_failure(line: u64, e: &str) -> String {
    let first = e.lines().next().unwrap_or(e).trim();
    match first.split_once("forced bytes: got '") {
        Some((_, rest)) => {
            let needed = rest.split('\'').next().unwrap_or(rest);
            format!(
                "line {line}: the model cannot write the answer: the constraint requires {needed:?} next and the model's vocabulary has no token for it (T5-family vocabularies have no '{{' or newline, so they cannot write JSON answers; use a decoder model such as the default)"
            )
        }
        None => format!("line {line}: constraint failed: {first}"),
    }
}

/// The generated tokens as an [`Answer`] (text, tokens and their byte ranges, log-probs).
fn answer(compiler: &ConstraintCompiler, g: &Generated, line: u64) -> Result<Answer, String> {
    match &g.finish {
        Finish::End => {}
        Finish::Length => {
            return Err(format!(
                "line {line}: the answer did not end within {} tokens",
                g.tokens.len()
            ))
        }
        Finish::ConstraintError(e) => return Err(constraint_failure(line, e)),
    }
    let trie = compiler.env().tok_trie();
    let mut bytes = Vec::new();
    let mut token_spans = Vec::new();
    for &t in g.answer_tokens() {
        let start = bytes.len();
        bytes.extend_from_slice(&trie.decode(&[t]));
        token_spans.push((start, bytes.len()));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("line {line}: the answer is not UTF-8 ({e})"))?;
    Ok(Answer {
        text,
        tokens: g.answer_tokens().to_vec(),
        token_spans,
        logprobs: g.logprobs[..g.answer_tokens().len()].to_vec(),
        total_logprob: g.total_logprob(),
    })
}

pub fn generate_all(
    session: &Session,
    labeler: &Labeler,
    task: &dyn OpenTask,
    opts: PassOptions,
) -> Result<GenerationResult> {
    generate_rows(&session.data, labeler, &OpenAnswers(task), opts, None)
}

/// Generates `spec`'s answer for the rows of `data` that `only` names (all rows when `None`);
/// the others keep an error saying they were not labeled.
pub fn generate_rows(
    data: &Dataset,
    labeler: &Labeler,
    spec: &dyn Generates,
    opts: PassOptions,
    only: Option<&[usize]>,
) -> Result<GenerationResult> {
    let PassOptions {
        batch_size,
        max_tokens,
        mut journal,
        stop,
        shard,
    } = opts;
    let model = labeler.model();
    let end = labeler.answer_end().to_vec();
    let env = token_env(&model.tokenizer, model.scorer.vocab_size(), &end[..1])?;
    let compiler = ConstraintCompiler::new(&env)?;

    let mut rows: Vec<Result<Answer, String>> = vec![Err("not labeled".into()); data.rows.len()];
    let mut items: Vec<Item> = Vec::new();
    let mut truncated = 0;
    for (i, row) in data.rows.iter().enumerate() {
        if only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let grammar = match spec.grammar(data, row) {
            Ok(g) => g,
            Err(e) => {
                rows[i] = Err(e);
                continue;
            }
        };
        let reserved = match spec.reserved_tokens(data, row) {
            Ok(n) => n,
            Err(e) => {
                rows[i] = Err(e);
                continue;
            }
        };
        let budget = |n| spec.max_answer_tokens(data, row, n) + reserved;
        match labeler.prepare_prompt(data, row, AnswerBudget::PerInput(&budget)) {
            Ok(p) => {
                if p.truncated {
                    truncated += 1;
                    eprintln!(
                        "warning: line {}: input cut from the middle to fit {max_tokens} tokens",
                        row.line
                    );
                }
                items.push(Item {
                    row: i,
                    prompt: p.ids,
                    grammar,
                    max_new: p.answer_tokens - reserved,
                    key: None,
                });
            }
            Err(e) => rows[i] = Err(e),
        }
    }
    // A repeated request is generated once and its answer copied (see [`Repeats`]).
    let (kept, repeats) =
        Repeats::split(items.into_iter().map(|it| (it.row, it)).collect(), |it| {
            generation_key(&RowKey::default(), &it.prompt, &it.grammar, it.max_new)
        });
    let mut items: Vec<Item> = kept.into_iter().map(|(_, it)| it).collect();
    let started = Instant::now();
    let shared = labeler.share_prefix(items.iter().map(|it| it.prompt.as_slice()))?;
    // Batches are formed over every row, journaled or not (a resumed run generates each row in
    // the same company and gets the same bits); a shard takes its share of the same batches.
    let (batch_size, work) = crate::batching::limits(batch_size, &labeler.model().device);
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&j| items[j].prompt.len());
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for j in order {
        let w = items[j].prompt.len().saturating_sub(shared);
        match batches.last_mut() {
            Some(b) if b.len() < batch_size.max(1) && (b.len() + 1) * w <= work.max(w) => b.push(j),
            _ => batches.push(vec![j]),
        }
    }
    let owned =
        shard.map(|s| s.assign(data.rows.len(), &batches, |j| items[j].row, &repeats.copies));
    let row_batches: Vec<Vec<usize>> = batches
        .iter()
        .map(|b| b.iter().map(|&j| items[j].row).collect())
        .collect();
    let mine = |row: usize| owned.as_ref().is_none_or(|o| o[row]);

    let mut done = vec![false; items.len()];
    let mut reused = 0;
    if let Some((journal, settings, command)) = journal.as_mut() {
        let mut by_row: Vec<Option<RowKey>> = vec![None; data.rows.len()];
        for (j, it) in items.iter_mut().enumerate() {
            if !mine(it.row) {
                continue;
            }
            let key = generation_key(settings, &it.prompt, &it.grammar, it.max_new);
            it.key = Some(key);
            by_row[it.row] = Some(key);
            if let Some(g) = journal.lookup(&key)?.as_deref().and_then(decode) {
                rows[it.row] = answer(&compiler, &g, data.rows[it.row].line);
                done[j] = true;
                reused += 1;
            }
        }
        for &(row, j) in &repeats.copies {
            by_row[row] = items[j].key;
        }
        // A shard's journal tracks its own rows.
        let by_row: Vec<Option<RowKey>> = (0..by_row.len())
            .filter(|&r| mine(r))
            .map(|r| by_row[r])
            .collect();
        journal.begin_run(command, &by_row)?;
    }

    let reused_first = done.clone();
    let to_do = items.iter().filter(|it| mine(it.row)).count();
    let bar = Progress::new(to_do, reused);
    let mut times = GenerationTimes::default();
    let (mut generated, mut tokens, mut interrupted) = (0, 0, false);
    let mut oom = crate::batching::OomSplitter::default();
    for (k, batch) in batches.into_iter().enumerate() {
        if batch.iter().all(|&j| done[j]) || shard.is_some_and(|s| !s.owns_batch(k)) {
            continue;
        }
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            interrupted = true;
            break;
        }
        // A row whose constraint llguidance rejects is reported; the rest of the batch goes on.
        let mut matchers = Vec::with_capacity(batch.len());
        let mut batch_ok = Vec::with_capacity(batch.len());
        for &j in &batch {
            match compiler.matcher(&items[j].grammar) {
                Ok(m) => {
                    matchers.push(Some(m));
                    batch_ok.push(j);
                }
                Err(e) => {
                    let i = items[j].row;
                    rows[i] = Err(format!("line {}: {e:#}", data.rows[i].line));
                    if !done[j] {
                        done[j] = true;
                        bar.inc(1);
                    }
                }
            }
        }
        let batch = batch_ok;
        if batch.is_empty() {
            continue;
        }
        // On out-of-memory the batch runs again in smaller pieces, each with fresh matchers.
        let mut matchers = Some(matchers);
        let outcome = oom.run(&batch, |piece| {
            let requests: Vec<GenerationRequest> = piece
                .iter()
                .map(|&j| GenerationRequest {
                    prompt: items[j].prompt.clone(),
                    max_new_tokens: items[j].max_new,
                })
                .collect();
            let fresh = match matchers.take().filter(|m| m.len() == piece.len()) {
                Some(m) => m,
                None => piece
                    .iter()
                    .map(|&j| compiler.matcher(&items[j].grammar).map(Some))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{e:#}"))?,
            };
            let (out, t) = generate_timed(model.scorer.as_ref(), &requests, fresh, &end[..1])
                .map_err(|e| format!("{e:#}"))?;
            times.add(t);
            Ok::<_, String>(out)
        });
        match outcome {
            Ok(out) => {
                if let Some((journal, _, _)) = journal.as_mut() {
                    let enc: Vec<(RowKey, Vec<Vec<f32>>)> = batch
                        .iter()
                        .zip(&out)
                        .filter_map(|(&j, g)| Some((items[j].key?, encode(g)?)))
                        .collect();
                    let record: Vec<(RowKey, &[Vec<f32>])> =
                        enc.iter().map(|(k, v)| (*k, v.as_slice())).collect();
                    journal.record(&record)?;
                }
                for (&j, g) in batch.iter().zip(&out) {
                    let it = &items[j];
                    rows[it.row] = answer(&compiler, g, data.rows[it.row].line);
                    if !done[j] {
                        done[j] = true;
                        generated += 1;
                        tokens += g.tokens.len();
                        bar.inc(1);
                    }
                }
            }
            Err(e) => {
                for &j in &batch {
                    let i = items[j].row;
                    rows[i] = Err(format!(
                        "line {}: generation failed: {e}",
                        data.rows[i].line
                    ));
                    if !done[j] {
                        done[j] = true;
                        bar.inc(1);
                    }
                }
            }
        }
    }
    bar.finish_and_clear();
    if interrupted {
        for (j, it) in items.iter().enumerate() {
            if !done[j] {
                rows[it.row] = Err("not labeled: the run was interrupted".into());
            }
        }
    }
    repeats.fill(&mut rows, |j| items[j].row, |i| data.rows[i].line);
    // Copies count where their first row does: taken from the journal, or generated now.
    for &(row, j) in &repeats.copies {
        if !mine(row) {
            continue;
        }
        if reused_first[j] {
            reused += 1;
        } else if rows[items[j].row].is_ok() {
            generated += 1;
        }
    }
    Ok(GenerationResult {
        rows,
        truncated,
        seconds: started.elapsed().as_secs_f64(),
        reused,
        generated,
        tokens,
        times,
        interrupted,
        owned,
        batches: row_batches,
    })
}
