"""tfa's semi-hard triplet loss, line by line: the O(B^3) reference formulation.

A copy of `tfa.losses.triplet_semihard_loss` (tensorflow-addons 0.23.0, losses/triplet.py), which
tiles the distance matrix to `[B*B, B]`. Used by tests/test_losses.py (gradient comparisons on
tied distances) and benchmarks/bench_loss.py (time and memory against our O(B^2) loss).
Reference only: never imported by the library.
"""

import tensorflow as tf

from tinymatch.losses import pairwise_distances


def tfa_semihard_reference(labels, embeddings, margin=1.0, metric="L2"):
    labels = tf.reshape(labels, [-1, 1])
    pdist = pairwise_distances(embeddings, metric)  # itself checked against the golden fixture
    adjacency = tf.equal(labels, tf.transpose(labels))
    adjacency_not = tf.logical_not(adjacency)
    batch_size = tf.size(labels)
    pdist_tile = tf.tile(pdist, [batch_size, 1])  # [B*B, B]: the O(B^3) part
    mask = tf.logical_and(tf.tile(adjacency_not, [batch_size, 1]),
                          tf.greater(pdist_tile, tf.reshape(tf.transpose(pdist), [-1, 1])))
    mask_final = tf.transpose(tf.reshape(
        tf.greater(tf.reduce_sum(tf.cast(mask, tf.float32), 1, keepdims=True), 0.0),
        [batch_size, batch_size]))
    adjacency_not = tf.cast(adjacency_not, tf.float32)
    mask = tf.cast(mask, tf.float32)
    axis_max = tf.reduce_max(pdist_tile, 1, keepdims=True)
    outside = tf.reduce_min((pdist_tile - axis_max) * mask, 1, keepdims=True) + axis_max
    outside = tf.transpose(tf.reshape(outside, [batch_size, batch_size]))
    axis_min = tf.reduce_min(pdist, 1, keepdims=True)
    inside = tf.reduce_max((pdist - axis_min) * adjacency_not, 1, keepdims=True) + axis_min
    inside = tf.tile(inside, [1, batch_size])
    loss_mat = margin + pdist - tf.where(mask_final, outside, inside)
    mask_positives = tf.cast(adjacency, tf.float32) - tf.linalg.diag(tf.ones([batch_size]))
    return tf.reduce_sum(tf.maximum(loss_mat * mask_positives, 0.0)) / tf.reduce_sum(mask_positives)
