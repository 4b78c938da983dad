//! The BERT sentence-embedding forward against sentence-transformers' own embeddings of real
//! texts (tests/fixtures/minilm_reference.json, made by scripts/make_embedding_reference.py),
//! with the model fetched through its built-in card.

use autolabel_models::embedding::source::{resolve_card, EmbeddingCard};
use autolabel_models::embedding::{cosine, Embedder};
use autolabel_models::sources::fetch::cache_root;

#[test]
fn minilm_matches_sentence_transformers() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/minilm_reference.json")).unwrap();
    let dir =
        resolve_card(&EmbeddingCard::builtin(), &cache_root()).expect("fetched through its card");
    let embedder = Embedder::load(&dir).unwrap();
    assert_eq!(
        embedder.weights_sha256,
        fixture["model_sha256"].as_str().unwrap()
    );
    assert_eq!(
        embedder.max_tokens as u64,
        fixture["max_seq_length"].as_u64().unwrap()
    );
    let texts: Vec<&str> = fixture["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let got = embedder.embed(&texts).unwrap();
    let mut worst = 0f32;
    for (i, (g, want)) in got
        .iter()
        .zip(fixture["embeddings"].as_array().unwrap())
        .enumerate()
    {
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(g.len(), want.len());
        for (a, b) in g.iter().zip(&want) {
            let d = (a - b).abs();
            worst = worst.max(d);
            assert!(
                d < 1e-4,
                "text {i} ({:?}): {a} vs sentence-transformers {b}",
                texts[i]
            );
        }
    }
    eprintln!("largest difference from sentence-transformers: {worst:e}");
    // Embedding one text alone gives what it got inside a padded batch.
    let alone = embedder.embed(&texts[40..41]).unwrap();
    assert!(alone[0]
        .iter()
        .zip(&got[40])
        .all(|(a, b)| (a - b).abs() < 1e-5));
    // Similar meanings are closer than different ones.
    let e = embedder
        .embed(&[
            "my card has not arrived",
            "when will my new card be delivered",
            "the exchange rate was wrong",
        ])
        .unwrap();
    assert!(cosine(&e[0], &e[1]) > cosine(&e[0], &e[2]) + 0.1);
}
