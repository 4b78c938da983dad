//! A tokenizer from a SentencePiece `spiece.model` (for repos such as google/t5-v1_1-* that ship
//! no tokenizer.json): the model protobuf is read here and turned into the same Unigram tokenizer
//! that transformers' converter builds (precompiled normalization map, whitespace collapsing,
//! `▁` metaspace, `</s>` appended when special tokens are asked for).

use anyhow::{bail, Context, Result};
use std::path::Path;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{precompiled::Precompiled, replace::Replace, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, NormalizerWrapper, Tokenizer};

/// What the converter needs from `ModelProto`.
#[derive(Debug, Default, PartialEq)]
pub struct SpModel {
    /// (piece, score, type): type 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte.
    pub pieces: Vec<(String, f32, u32)>,
    /// 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: u32,
    pub byte_fallback: bool,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).context("truncated varint")?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint longer than 64 bits")
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).context("length overflow")?;
        let s = self.buf.get(self.pos..end).context("truncated field")?;
        self.pos = end;
        Ok(s)
    }

    /// Next (field number, wire type, payload); payload is the varint value or the bytes.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let f = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed(self.bytes(8)?),
            2 => {
                let n = self.varint()? as usize;
                Field::Bytes(self.bytes(n)?)
            }
            5 => Field::Fixed(self.bytes(4)?),
            w => bail!("unsupported protobuf wire type {w}"),
        };
        Ok(Some((key >> 3, f)))
    }
}

enum Field<'a> {
    Varint(u64),
    Fixed(&'a [u8]),
    Bytes(&'a [u8]),
}

fn each_field<'a>(buf: &'a [u8], mut f: impl FnMut(u64, Field<'a>) -> Result<()>) -> Result<()> {
    let mut r = Reader { buf, pos: 0 };
    while let Some((num, field)) = r.field()? {
        f(num, field)?;
    }
    Ok(())
}

impl SpModel {
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut m = SpModel {
            model_type: 1,
            add_dummy_prefix: true,
            ..Default::default()
        };
        each_field(buf, |num, field| {
            match (num, field) {
                (1, Field::Bytes(piece)) => {
                    let (mut text, mut score, mut kind) = (String::new(), 0f32, 1u32);
                    each_field(piece, |n, f| {
                        match (n, f) {
                            (1, Field::Bytes(b)) => {
                                text =
                                    String::from_utf8(b.to_vec()).context("a piece is not UTF-8")?
                            }
                            (2, Field::Fixed(b)) if b.len() == 4 => {
                                score = f32::from_le_bytes(b.try_into().expect("4 bytes"))
                            }
                            (3, Field::Varint(v)) => kind = v as u32,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    m.pieces.push((text, score, kind));
                }
                (2, Field::Bytes(trainer)) => each_field(trainer, |n, f| {
                    match (n, f) {
                        (3, Field::Varint(v)) => m.model_type = v as u32,
                        (35, Field::Varint(v)) => m.byte_fallback = v != 0,
                        _ => {}
                    }
                    Ok(())
                })?,
                (3, Field::Bytes(norm)) => each_field(norm, |n, f| {
                    match (n, f) {
                        (2, Field::Bytes(b)) => m.precompiled_charsmap = b.to_vec(),
                        (3, Field::Varint(v)) => m.add_dummy_prefix = v != 0,
                        _ => {}
                    }
                    Ok(())
                })?,
                _ => {}
            }
            Ok(())
        })?;
        if m.pieces.is_empty() {
            bail!("no pieces found")
        }
        Ok(m)
    }
}

pub fn tokenizer_from_spiece(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let sp = SpModel::parse(&bytes)
        .with_context(|| format!("{} is not a readable SentencePiece model", path.display()))?;
    build(&sp).with_context(|| format!("cannot build a tokenizer from {}", path.display()))
}

pub fn build(sp: &SpModel) -> Result<Tokenizer> {
    if sp.model_type != 1 {
        bail!(
            "only Unigram SentencePiece models are supported (this one has model type {}); provide a tokenizer.json",
            sp.model_type
        )
    }
    let unk_id = sp.pieces.iter().position(|p| p.2 == 2);
    let vocab = sp
        .pieces
        .iter()
        .map(|(p, s, _)| (p.clone(), *s as f64))
        .collect();
    let model = Unigram::from(vocab, unk_id, sp.byte_fallback)
        .map_err(|e| anyhow::anyhow!("invalid Unigram vocabulary: {e}"))?;
    let mut tok = Tokenizer::new(model);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if !sp.precompiled_charsmap.is_empty() {
        let pre = Precompiled::from(&sp.precompiled_charsmap)
            .map_err(|e| anyhow::anyhow!("invalid precompiled_charsmap: {e}"))?;
        normalizers.push(pre.into());
    }
    // As transformers' SentencePiece converter: strip the right end, collapse runs of spaces.
    normalizers.push(tokenizers::normalizers::strip::Strip::new(false, true).into());
    normalizers.push(
        Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(" {2,}".into()),
            "\u{2581}",
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into(),
    );
    tok.with_normalizer(Some(Sequence::new(normalizers)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let scheme = if sp.add_dummy_prefix {
        PrependScheme::Always
    } else {
        PrependScheme::Never
    };
    tok.with_pre_tokenizer(Some(Metaspace::new('\u{2581}', scheme, true)));
    tok.with_decoder(Some(tokenizers::decoders::metaspace::Metaspace::new(
        '\u{2581}', scheme, true,
    )));
    // Control pieces (<pad>, </s>, <unk>) match as whole special tokens in text.
    let specials: Vec<AddedToken> = sp
        .pieces
        .iter()
        .filter(|p| p.2 == 2 || p.2 == 3)
        .map(|p| AddedToken::from(p.0.clone(), true))
        .collect();
    tok.add_special_tokens(specials)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(eos) = sp.pieces.iter().position(|p| p.0 == "</s>") {
        let tp = TemplateProcessing::builder()
            .try_single("$A </s>")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .try_pair("$A </s> $B </s>")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .special_tokens(vec![("</s>".to_string(), eos as u32)])
            .build()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tok.with_post_processor(Some(tp));
    }
    Ok(tok)
}
