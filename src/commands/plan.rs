//! `autolabel-local plan`: what a run will do and roughly how long it will take, measured on a
//! short timed sample on the chosen device.

use crate::generation_pass::{generate_rows, OpenAnswers};
use crate::labeler::{AnswerBudget, Labeler, Prepared};
use crate::scoring_pass::PassOptions;
use crate::session::{CommonArgs, Session};
use crate::tasks::open::OpenTask;
use anyhow::{bail, Context, Result};
use autolabel_models::scoring::trie::CandidateTrie;
use std::io::Write;
use std::time::Instant;

#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Rows scored to estimate the run time.
    #[arg(long, default_value_t = 4)]
    pub sample: usize,
    /// Write every row's exact request as JSONL, e.g. to run the same requests through another
    /// engine: prompt token ids, and labels with their token ids (label sets) or the answer's
    /// token budget, end tokens and constraint (generated answers).
    #[arg(long)]
    pub dump_requests: Option<std::path::PathBuf>,
}

pub fn plan(args: &PlanArgs) -> Result<()> {
    let session = Session::open(&args.common)?;
    for n in &session.notices {
        println!("note: {n}");
    }
    let labeler = session.labeler(&args.common)?;
    let data = &session.data;
    let Some(first) = data.rows.first() else {
        bail!("{} has no rows", data.path.display())
    };
    println!(
        "model: {} ({})",
        session.model.path.display(),
        session.model.architecture
    );
    println!(
        "chat template: {}",
        if labeler.uses_chat_template() {
            "yes"
        } else {
            "no"
        }
    );
    println!("--- prompt of the first row (line {}) ---", first.line);
    println!("{}", labeler.render(data, first, None)?);
    println!("--- end of prompt ---");
    // Multi-label by membership scores candidates: its plan is the scoring one.
    if let Some(open) = session.task.open().filter(|o| !o.scores_candidates()) {
        return plan_open(args, &session, &labeler, open);
    }

    let mut ok: Vec<Prepared> = Vec::new();
    let mut errors = 0;
    let mut dump = match &args.dump_requests {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write --dump-requests file {}", path.display()))?,
        )),
        None => None,
    };
    for row in &data.rows {
        match labeler.prepare(data, row) {
            Ok(p) => {
                if let Some(w) = dump.as_mut() {
                    let line = serde_json::json!({
                        "line": row.line,
                        "prompt_ids": p.prompt_ids,
                        "labels": p.labels.as_ref(),
                        "candidate_ids": p.candidates.as_ref(),
                        "truth": session.task.ground_truth(data, row),
                    });
                    writeln!(w, "{line}")?;
                }
                ok.push(p)
            }
            Err(_) => errors += 1,
        }
    }
    if let (Some(mut w), Some(path)) = (dump, &args.dump_requests) {
        w.flush()?;
        println!("wrote {} requests to {}", ok.len(), path.display());
    }
    let Some(p0) = ok.first() else {
        bail!("no row of {} can be labeled", data.path.display())
    };
    let lens: Vec<usize> = ok.iter().map(|p| p.prompt_ids.len()).collect();
    let mean = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
    let truncated = ok.iter().filter(|p| p.truncated).count();
    println!(
        "rows: {} ({} can be labeled, {errors} with errors, {truncated} to be truncated)",
        data.rows.len(),
        ok.len()
    );
    println!(
        "prompt tokens: mean {mean:.1}, max {}",
        lens.iter().max().unwrap()
    );
    let trie = CandidateTrie::build(&p0.candidates);
    println!(
        "label continuations: {} labels, {} tokens in all, {} after prefix sharing, {} fed through the model per row (the rest only end a label)",
        p0.candidates.len(),
        p0.candidates.iter().map(Vec::len).sum::<usize>(),
        trie.len(),
        trie.fed_nodes().len()
    );
    let t = Instant::now();
    let shared = labeler.share_prefix(ok.iter().map(|p| p.prompt_ids.as_slice()))?;
    let prefix_seconds = t.elapsed().as_secs_f64();
    if shared > 0 {
        println!(
            "shared prompt prefix: {shared} tokens, prefilled once ({prefix_seconds:.2} s) instead of per row"
        );
    } else {
        println!("shared prompt prefix: none (too short, or an encoder-decoder, whose encoder sees each prompt whole)");
    }
    let n = args.sample.clamp(1, ok.len());
    if let Some(max) = labeler.explanation_tokens() {
        // Chain of thought: the sample rows are explained, then scored after their explanations.
        let grammar = crate::chain_of_thought::grammar_for(&labeler, max)?;
        println!(
            "chain of thought: each row first generates a one-line explanation of at most {max} tokens (--explanation-tokens), then its labels are scored after it as {}; explanation constraint (llguidance):\n{}",
            crate::chain_of_thought::label_json(&p0.labels[0]),
            grammar.text().trim_end()
        );
        let rows: Vec<_> = data
            .rows
            .iter()
            .filter(|r| labeler.prepare(data, r).is_ok())
            .take(n)
            .cloned()
            .collect();
        let part = crate::dataset::Dataset::new(data.path.clone(), data.columns.clone(), rows);
        let t = Instant::now();
        let pass = crate::scoring_pass::score_data(
            &part,
            &labeler,
            crate::scoring_pass::PassOptions::new(Some(8), args.common.max_tokens),
        )?;
        let per_row = t.elapsed().as_secs_f64() / part.rows.len().max(1) as f64;
        if let Some(x) = &pass.explanation_pass {
            println!("{}", x.describe());
        }
        for (row, e) in part.rows.iter().zip(pass.explanations.iter().flatten()) {
            println!(
                "explanation of line {}: {}",
                row.line,
                e.as_deref().unwrap_or("(none)")
            );
        }
        println!(
            "estimated run time on {}: {:.0} s for {} rows ({:.2} rows/s, measured on {} rows)",
            args.common.device,
            per_row * ok.len() as f64,
            ok.len(),
            1.0 / per_row,
            part.rows.len()
        );
        return Ok(());
    }
    let sample: Vec<&Prepared> = ok.iter().take(n).collect();
    let t = Instant::now();
    labeler.score(&sample)?;
    // With --label-orders every row is asked once per order (measured in the configured one).
    let orders = labeler.label_orders();
    let per_row = t.elapsed().as_secs_f64() / n as f64 * orders as f64;
    println!(
        "estimated run time on {}: {:.0} s for {} rows ({:.2} rows/s, measured on {n} rows{})",
        args.common.device,
        prefix_seconds * orders as f64 + per_row * ok.len() as f64,
        ok.len(),
        1.0 / per_row,
        if orders > 1 {
            format!(", each asked in {orders} label orders")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `plan` for a task whose answers are generated: prompt and answer budgets, the first row's
/// constraint, and a run-time estimate from generating `--sample` rows.
fn plan_open(
    args: &PlanArgs,
    session: &Session,
    labeler: &Labeler,
    task: &dyn OpenTask,
) -> Result<()> {
    let data = &session.data;
    let mut dump = match &args.dump_requests {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write --dump-requests file {}", path.display()))?,
        )),
        None => None,
    };
    let mut ok: Vec<(usize, Vec<u32>, usize)> = Vec::new();
    let mut errors = 0;
    for (i, row) in data.rows.iter().enumerate() {
        let budget = |n| task.max_answer_tokens(data, row, n);
        match labeler.prepare_prompt(data, row, AnswerBudget::PerInput(&budget)) {
            Ok(p) => {
                if let Some(w) = dump.as_mut() {
                    let line = serde_json::json!({
                        "line": row.line,
                        "row": i,
                        "prompt_ids": p.ids,
                        "max_answer_tokens": p.answer_tokens,
                        "end_ids": labeler.answer_end(),
                        "constraint": task.grammar(data, row).map(|g| g.text()).ok(),
                        "truth": session.task.ground_truth(data, row),
                    });
                    writeln!(w, "{line}")?;
                }
                ok.push((i, p.ids, p.answer_tokens))
            }
            Err(_) => errors += 1,
        }
    }
    if let (Some(mut w), Some(path)) = (dump, &args.dump_requests) {
        w.flush()?;
        println!(
            "wrote {} generation requests to {}",
            ok.len(),
            path.display()
        );
    }
    let Some((first, _, _)) = ok.first() else {
        bail!("no row of {} can be labeled", data.path.display())
    };
    let n_ok = ok.len() as f64;
    println!(
        "rows: {} ({} can be labeled, {errors} with errors)",
        data.rows.len(),
        ok.len()
    );
    println!(
        "prompt tokens: mean {:.1}, max {}; answer budget (tokens): mean {:.1}, max {}",
        ok.iter().map(|o| o.1.len()).sum::<usize>() as f64 / n_ok,
        ok.iter().map(|o| o.1.len()).max().unwrap_or(0),
        ok.iter().map(|o| o.2).sum::<usize>() as f64 / n_ok,
        ok.iter().map(|o| o.2).max().unwrap_or(0)
    );
    match task.grammar(data, &data.rows[*first]) {
        Ok(g) => {
            let text = g.text();
            let short: String = text.chars().take(600).collect();
            println!("--- answer constraint of the first row (llguidance) ---\n{short}{}\n--- end of constraint ---", if short.len() < text.len() { " [...]" } else { "" });
        }
        Err(e) => println!("answer constraint of the first row: {e}"),
    }
    let sample: Vec<usize> = ok
        .iter()
        .take(args.sample.clamp(1, ok.len()))
        .map(|o| o.0)
        .collect();
    let t = Instant::now();
    let pass = generate_rows(
        &session.data,
        labeler,
        &OpenAnswers(task),
        PassOptions::new(Some(8), args.common.max_tokens),
        Some(&sample),
    )?;
    let seconds = t.elapsed().as_secs_f64();
    let per_row = seconds / sample.len() as f64;
    println!(
        "estimated run time on {}: {:.0} s for {} rows ({:.2} rows/s, {:.1} generated tokens/s, measured on {} rows)",
        args.common.device,
        per_row * n_ok,
        ok.len(),
        1.0 / per_row,
        pass.tokens as f64 / seconds.max(1e-9),
        sample.len()
    );
    Ok(())
}
