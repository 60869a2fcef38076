"""Clustering building blocks shared by all methods: k-means, neighbours, heads, losses, metrics."""

from diffclust.cluster.heads import ClusterHead
from diffclust.cluster.kmeans import fit_kmeans, kmeans_confidences, student_t_assignments
from diffclust.cluster.losses import AssignmentMemoryBank, cluster_guidance_loss, entropy, neighbour_consistency_loss
from diffclust.cluster.metrics import clustering_scores, hungarian_accuracy, many_to_one_accuracy
from diffclust.cluster.neighbours import nearest_neighbours

__all__ = [
    "AssignmentMemoryBank",
    "ClusterHead",
    "cluster_guidance_loss",
    "clustering_scores",
    "entropy",
    "fit_kmeans",
    "kmeans_confidences",
    "hungarian_accuracy",
    "many_to_one_accuracy",
    "nearest_neighbours",
    "neighbour_consistency_loss",
    "student_t_assignments",
]
