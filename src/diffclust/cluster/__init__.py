"""Clustering building blocks shared by all methods: k-means, neighbours, heads, losses, metrics (loaded on first use)."""

from diffclust._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "AssignmentMemoryBank": "diffclust.cluster.losses",
    "ClusterHead": "diffclust.cluster.heads",
    "cluster_guidance_loss": "diffclust.cluster.losses",
    "clustering_scores": "diffclust.cluster.metrics",
    "entropy": "diffclust.cluster.losses",
    "fit_kmeans": "diffclust.cluster.kmeans",
    "hungarian_accuracy": "diffclust.cluster.metrics",
    "kmeans_confidences": "diffclust.cluster.kmeans",
    "many_to_one_accuracy": "diffclust.cluster.metrics",
    "nearest_neighbours": "diffclust.cluster.neighbours",
    "neighbour_consistency_loss": "diffclust.cluster.losses",
    "student_t_assignments": "diffclust.cluster.kmeans",
})

__all__ = [
    "AssignmentMemoryBank",
    "ClusterHead",
    "cluster_guidance_loss",
    "clustering_scores",
    "entropy",
    "fit_kmeans",
    "hungarian_accuracy",
    "kmeans_confidences",
    "many_to_one_accuracy",
    "nearest_neighbours",
    "neighbour_consistency_loss",
    "student_t_assignments",
]
