"""The names a setting may take, where the command line can list them before torch or
scikit-learn is imported; the modules that implement each choice import their list from here."""

from pathlib import Path

#: DiEC's start partition (methods.diec.network): k-means in a UMAP embedding, the consensus of
#: k-means and spectral clusterings, or k-means (DEC's start)
DIEC_INITS = ("umap", "consensus", "kmeans")
#: CLUDI's start (methods.cludi): the consensus partition, spectral clustering of the kNN graph,
#: k-means, or random weights (published)
CLUDI_INITS = ("consensus", "spectral", "kmeans", "random")
#: the files CLUDI reads as a feature matrix (methods.cludi.inputs)
FEATURE_SUFFIXES = (".npy", ".pt", ".pth", ".safetensors")
#: DiEC's search index (methods.diec.search)
SEARCH_SCORES = ("umap_silhouette", "calinski_harabasz", "silhouette")
#: --k auto criteria (cluster.k_selection) -> True when a higher score is better
K_CRITERIA = {"silhouette": True, "calinski_harabasz": True, "davies_bouldin": False, "bic": False, "prediction_strength": True,
              "umap_silhouette": True, "knn_modularity": True, "umap_hdbscan": True}


def is_feature_file(path) -> bool:
    """True for an existing file whose suffix is one of FEATURE_SUFFIXES (CLUDI reads it as rows,
    not as images); here, so the command line can tell before torch is imported."""
    return isinstance(path, (str, Path)) and Path(path).suffix.lower() in FEATURE_SUFFIXES and Path(path).is_file()
