"""Reference t-SNE KL divergences for kdscope's t-SNE test (tests/fixtures/tsne_reference.json).

A fixed input (a seeded Gaussian mixture: 1,000 points, 10 clusters, 8 dimensions, rounded to 4
decimals so the JSON round trip is exact) is embedded with scikit-learn (exact on the first 300
points, Barnes-Hut on all) and openTSNE (Barnes-Hut, exact neighbours), all with kdscope's default
settings: perplexity 30, PCA initialisation, early exaggeration 12 for 250 iterations, 1,000
iterations in all, learning rate max(n/12/4, 50) in scikit-learn's convention (openTSNE's gradient
omits scikit-learn's factor 4, so its learning rate is 4x that), theta 0.5.

    .venv-nb/bin/pip install scikit-learn openTSNE
    .venv-nb/bin/python benches/tsne_reference.py > tests/fixtures/tsne_reference.json
"""
import json
import sys

import numpy as np
import sklearn
import openTSNE
from sklearn.manifold import TSNE

rng = np.random.default_rng(7)
n, d, k = 1000, 8, 10
centres = rng.normal(0.0, 4.0, size=(k, d))
labels = np.arange(n) % k
x = centres[labels] + rng.normal(0.0, 1.0, size=(n, d))
x = np.round(x, 4).astype(np.float32)


def sk(data, method):
    t = TSNE(n_components=2, perplexity=30.0, early_exaggeration=12.0, learning_rate="auto", max_iter=1000,
             init="pca", method=method, angle=0.5, random_state=0)
    t.fit_transform(data)
    return float(t.kl_divergence_)


def otsne(data):
    lr = max(len(data) / 12.0 / 4.0, 50.0) * 4.0
    e = openTSNE.TSNE(n_components=2, perplexity=30.0, early_exaggeration=12.0, early_exaggeration_iter=250,
                      n_iter=750, learning_rate=lr, initialization="pca", negative_gradient_method="bh", theta=0.5,
                      neighbors="exact", n_jobs=1, random_state=0).fit(data)
    return float(e.kl_divergence)


out = {
    "generator": "benches/tsne_reference.py",
    "sklearn": sklearn.__version__,
    "opentsne": openTSNE.__version__,
    "n": n, "d": d,
    "x": [float(v) for v in x.ravel()],
    "exact_points": 300,
    "sklearn_exact_kl": sk(x[:300], "exact"),
    "sklearn_bh_kl": sk(x, "barnes_hut"),
    "opentsne_bh_kl": otsne(x),
}
json.dump(out, sys.stdout)
