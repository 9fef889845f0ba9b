"""A small document embedding that needs no download: hashed TF-IDF, reduced by SVD, fitted on the reference.

Word unigrams and bigrams are hashed into ``2**14`` buckets (no vocabulary to store), weighted by the
reference's IDF, reduced to ``dims`` SVD components and L2-normalised. k-means on the reference's
embeddings gives the clusters that a batch's occupancy is measured against. Everything fitted is a few
arrays (:meth:`HashedEmbedding.arrays`), stored with the reference.
"""

from __future__ import annotations

import numpy as np

from monitors.core.text import words

N_FEATURES = 2**14


def _vectorizer():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=N_FEATURES, analyzer=_unigrams_bigrams, alternate_sign=False, norm=None)


def _unigrams_bigrams(text: str) -> list[str]:
    toks = words(text)
    return toks + [f"{a} {b}" for a, b in zip(toks, toks[1:])]


class HashedEmbedding:
    """Constructor stores parameters; :meth:`fit` learns IDF, SVD and clusters from reference texts."""

    def __init__(self, dims: int = 32, clusters: int = 12, seed: int = 0):
        self.dims, self.clusters, self.seed = dims, clusters, seed

    def fit(self, texts: list[str]) -> HashedEmbedding:
        from sklearn.cluster import KMeans
        from sklearn.decomposition import TruncatedSVD

        if len(texts) < max(self.dims + 1, self.clusters):
            raise ValueError(f"an embedding with {self.dims} dimensions and {self.clusters} clusters needs more than "
                             f"{max(self.dims, self.clusters)} reference documents, got {len(texts)}")
        counts = _vectorizer().transform(texts)
        df = np.bincount(counts.indices, minlength=N_FEATURES)
        self.idf_ = (np.log((1 + len(texts)) / (1 + df)) + 1).astype(np.float32)
        svd = TruncatedSVD(n_components=self.dims, random_state=self.seed).fit(self._tfidf(counts))
        self.components_ = svd.components_.astype(np.float32)
        emb = self.transform(texts)
        km = KMeans(n_clusters=self.clusters, n_init=4, random_state=self.seed).fit(emb)
        self.centroids_ = km.cluster_centers_.astype(np.float32)
        return self

    def _tfidf(self, counts):
        from sklearn.preprocessing import normalize

        return normalize(counts.multiply(self.idf_).tocsr())

    def transform(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text (a text with no known word gets a zero row)."""
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        emb = np.asarray(self._tfidf(_vectorizer().transform(texts)) @ self.components_.T, dtype=np.float64)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)

    def assign(self, emb: np.ndarray) -> np.ndarray:
        """Nearest reference cluster of each embedding."""
        if len(emb) == 0:
            return np.zeros(0, dtype=np.int64)
        d = ((emb[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        return d.argmin(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"idf": self.idf_, "components": self.components_, "centroids": self.centroids_}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], seed: int = 0) -> HashedEmbedding:
        comp, cent = arrays["components"], arrays["centroids"]
        model = cls(dims=comp.shape[0], clusters=cent.shape[0], seed=seed)
        model.idf_, model.components_, model.centroids_ = arrays["idf"], comp, cent
        return model


def dispersion(emb: np.ndarray) -> float:
    """Mean cosine distance between distinct pairs of unit vectors (down = outputs blur together).

    Uses ``sum_{i!=j} v_i.v_j = |sum v|^2 - n`` so it costs O(n), not O(n^2).
    """
    n = len(emb)
    if n < 2:
        return float("nan")
    s = emb.sum(axis=0)
    mean_sim = (float(s @ s) - float((emb * emb).sum())) / (n * (n - 1))
    return 1.0 - mean_sim


def occupancy(labels: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(labels, minlength=k).astype(float)


def normalized_entropy(counts: np.ndarray) -> float:
    """Entropy of a histogram divided by log(bins): 1 = spread evenly, 0 = one bin."""
    total = counts.sum()
    if total <= 0 or len(counts) < 2:
        return float("nan")
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / np.log(len(counts)))


def js_divergence(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two histograms."""
    if p_counts.sum() <= 0 or q_counts.sum() <= 0:
        return float("nan")
    p, q = p_counts / p_counts.sum(), q_counts / q_counts.sum()
    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)
