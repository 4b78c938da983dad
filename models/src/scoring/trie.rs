//! Candidates laid out as a token trie, so that candidates sharing a prefix share its work and all
//! of them can be scored in one pass with a tree attention mask.

/// A trie over candidate token sequences, flattened in insertion order (a parent always comes
/// before its children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateTrie {
    /// Token of each node.
    pub tokens: Vec<u32>,
    /// Parent node of each node; `None` for children of the root (the prompt's last position).
    pub parents: Vec<Option<usize>>,
    /// Depth of each node, 0 for children of the root.
    pub depths: Vec<usize>,
    /// For each candidate, the node path from the root's child to its last token.
    pub paths: Vec<Vec<usize>>,
}

impl CandidateTrie {
    pub fn build(candidates: &[Vec<u32>]) -> Self {
        let mut trie = CandidateTrie {
            tokens: Vec::new(),
            parents: Vec::new(),
            depths: Vec::new(),
            paths: Vec::with_capacity(candidates.len()),
        };
        // children[(parent, token)] -> node; a linear scan is fine for label-sized tries but a map
        // keeps 77-label sets cheap too.
        let mut children = std::collections::HashMap::<(Option<usize>, u32), usize>::new();
        for cand in candidates {
            let mut parent = None;
            let mut path = Vec::with_capacity(cand.len());
            for (depth, &tok) in cand.iter().enumerate() {
                let node = *children.entry((parent, tok)).or_insert_with(|| {
                    trie.tokens.push(tok);
                    trie.parents.push(parent);
                    trie.depths.push(depth);
                    trie.tokens.len() - 1
                });
                path.push(node);
                parent = Some(node);
            }
            trie.paths.push(path);
        }
        trie
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether `ancestor` is `node` or one of its ancestors.
    pub fn is_ancestor_or_self(&self, ancestor: usize, node: usize) -> bool {
        let mut cur = Some(node);
        while let Some(n) = cur {
            if n == ancestor {
                return true;
            }
            if n < ancestor {
                return false; // parents come before children
            }
            cur = self.parents[n];
        }
        false
    }

    /// The nodes that have children, in order: the only ones a scorer feeds through the model
    /// (a node without children, the last token of a candidate, predicts nothing). Their
    /// ancestors have children too, so they form a trie of their own.
    pub fn fed_nodes(&self) -> Vec<usize> {
        let has = self.has_children();
        (0..self.len()).filter(|&i| has[i]).collect()
    }

    /// Nodes that have at least one child: the only places whose next-token logits are needed.
    pub fn has_children(&self) -> Vec<bool> {
        let mut out = vec![false; self.len()];
        for p in self.parents.iter().flatten() {
            out[*p] = true;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefixes_share_nodes() {
        let t = CandidateTrie::build(&[vec![5, 6, 2], vec![5, 7, 2], vec![9, 2]]);
        assert_eq!(t.tokens, vec![5, 6, 2, 7, 2, 9, 2]);
        assert_eq!(t.paths, vec![vec![0, 1, 2], vec![0, 3, 4], vec![5, 6]]);
        assert_eq!(t.depths, vec![0, 1, 2, 1, 2, 0, 1]);
        assert!(t.is_ancestor_or_self(0, 4));
        assert!(!t.is_ancestor_or_self(1, 4));
        assert!(t.is_ancestor_or_self(4, 4));
        assert_eq!(
            t.has_children(),
            vec![true, true, false, true, false, true, false]
        );
        assert_eq!(t.fed_nodes(), vec![0, 1, 3, 5]);
    }
}
