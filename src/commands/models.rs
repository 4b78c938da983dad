//! `autolabel-local models`: the built-in model cards (cached or not) and the models in the
//! Hugging Face cache.

use anyhow::Result;
use autolabel_models::embedding::source::EmbeddingCard;
use autolabel_models::sources::cards::ModelCard;
use autolabel_models::sources::{fetch, hub};

pub fn models() -> Result<()> {
    let root = fetch::cache_root();
    for card in ModelCard::builtin() {
        let path = fetch::cached_path(&card, &root);
        println!(
            "{:<30} {:<8} {:>6.0} MB  {}{}\n{:<30} license: {}",
            card.name,
            card.architecture,
            card.size as f64 / 1e6,
            if path.exists() {
                format!("cached at {}", path.display())
            } else {
                "not cached".into()
            },
            if card.default { "  (default)" } else { "" },
            "",
            card.license
        );
    }
    let e = EmbeddingCard::builtin();
    let dir = root.join("embeddings").join(&e.name);
    let size: u64 = e.files.iter().map(|f| f.size).sum();
    println!(
        "{:<30} {:<8} {:>6.0} MB  {}  (embeddings, default)\n{:<30} license: {}; config key embedding.model = {}",
        e.name,
        "bert",
        size as f64 / 1e6,
        if e.files.iter().all(|f| dir.join(&f.path).exists()) {
            format!("cached at {}", dir.display())
        } else {
            "not cached".into()
        },
        "",
        e.license,
        e.upstream
    );
    let hub = fetch::hf_hub_cache();
    let repos = hub::list_cache(&hub);
    println!("\nHugging Face cache {}:", hub.display());
    if repos.is_empty() {
        println!("  (no models; --model org/name downloads one)");
    }
    for r in repos {
        let refs: Vec<String> = r
            .refs
            .iter()
            .map(|(name, commit)| format!("{name} -> {}", &commit[..commit.len().min(12)]))
            .collect();
        println!(
            "  {:<40} {:>8.1} MB  {}",
            r.repo,
            r.bytes as f64 / 1e6,
            refs.join(", ")
        );
        for (dir, what) in r.snapshots {
            println!(
                "    {}: {what}",
                dir.file_name().unwrap_or_default().to_string_lossy()
            );
        }
    }
    Ok(())
}
