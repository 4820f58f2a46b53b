"""The paper's artefacts: Table 1, figures, the memorisation report, k-means, TFD, benchmarks."""
