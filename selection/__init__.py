"""The data side of paser: corpus, embeddings, clusters, degradation scores and selection."""
