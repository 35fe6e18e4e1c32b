"""openTSNE (and optionally scikit-learn) on the input that `kdscope bench-embed --write-input` wrote, with
kdscope's default t-SNE settings (perplexity 30, PCA init, exaggeration 12 for 250 iterations, 1,000 in
all, scikit-learn's auto learning rate — 4x in openTSNE's convention —, exact neighbours, theta 0.5).

    cargo run --release -- bench-embed --points 10000 --write-input /tmp/emb10k.csv
    .venv-nb/bin/python benches/embed_opentsne.py /tmp/emb10k.csv [--sklearn]
"""
import sys
import time

import numpy as np
import openTSNE

x = np.loadtxt(sys.argv[1], delimiter=",", dtype=np.float32)
n = len(x)
lr = max(n / 12.0 / 4.0, 50.0) * 4.0
for method in ["bh", "fft"]:
    t = time.time()
    e = openTSNE.TSNE(n_components=2, perplexity=30.0, early_exaggeration=12.0, early_exaggeration_iter=250,
                      n_iter=750, learning_rate=lr, initialization="pca", negative_gradient_method=method, theta=0.5,
                      neighbors="exact", n_jobs=2, random_state=0).fit(x)
    print(f"RESULT opentsne_{method}_n{n} {time.time() - t:.2f} s KL {e.kl_divergence:.4f}")
if "--sklearn" in sys.argv:
    from sklearn.manifold import TSNE
    t = time.time()
    s = TSNE(n_components=2, perplexity=30.0, learning_rate="auto", max_iter=1000, init="pca", method="barnes_hut",
             angle=0.5, random_state=0, n_jobs=2)
    s.fit_transform(x)
    print(f"RESULT sklearn_bh_n{n} {time.time() - t:.2f} s KL {s.kl_divergence_:.4f}")
