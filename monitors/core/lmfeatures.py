"""The local LM's per-document statistics: their names and how they are aggregated from per-token numbers.

Pure (numpy only); the model that produces the per-token numbers lives in ``monitors.adapters.lmscore``.
"""

from __future__ import annotations

import numpy as np

#: Per-document statistics, in column order. Machine text moves nll, entropy and log_rank down, curvature up.
FEATURES = ("nll", "entropy", "log_rank", "curvature", "nll_per_entropy")
MIN_TOKENS = 2  # predicted tokens a document needs for its statistics to mean anything


def document_statistics(loglik: np.ndarray, entropy: np.ndarray, second_moment: np.ndarray, log_rank: np.ndarray,
                        doc: np.ndarray, n_docs: int) -> np.ndarray:
    """Rows of :data:`FEATURES`, one per document, from per-token arrays of the predicted tokens.

    ``loglik`` is log p(observed token), ``entropy`` the predictive entropy ``-E[log p]``, ``second_moment``
    ``E[(log p)^2]``, ``log_rank`` the log of the observed token's rank (1 = most likely), ``doc`` each token's
    document index. Documents with fewer than :data:`MIN_TOKENS` predicted tokens get nan.
    """
    count = np.bincount(doc, minlength=n_docs).astype(float)
    s_ll = np.bincount(doc, loglik, n_docs)
    s_ent = np.bincount(doc, entropy, n_docs)
    s_var = np.bincount(doc, np.maximum(second_moment - entropy ** 2, 0.0), n_docs)
    s_rank = np.bincount(doc, log_rank, n_docs)
    with np.errstate(divide="ignore", invalid="ignore"):
        nll, ent = -s_ll / count, s_ent / count
        out = np.column_stack([nll, ent, s_rank / count, (s_ll + s_ent) / np.sqrt(s_var), nll / ent])
    out[count < MIN_TOKENS] = np.nan
    return out


