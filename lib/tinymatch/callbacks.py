"""The Keras callbacks of a training run: per-epoch evaluation, bookkeeping, non-finite loss.

They run inside `model.fit` in this order: `StopOnNonFiniteLoss` (every batch), then at the end of
each epoch `EpochEvaluation` (val AUC, learning rate and mining statistics into the epoch's logs,
so TensorBoard sees them), the caller's own callbacks, `EpochBookkeeping` (best model, early
stopping, checkpoint: `train._Session.end_epoch`), and TensorBoard.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from tinymatch import distribute, ema, losses
from tinymatch.metrics import pair_distances, roc_auc


def val_auc(embeddings, pairs, metric) -> float:
    """ROC AUC of the validation pairs; NaN when the embedding has diverged to non-finite values."""
    distances = pair_distances(embeddings, pairs, metric)
    return roc_auc(distances, pairs.same) if np.all(np.isfinite(distances)) else float("nan")


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, and says why.

    Like `keras.callbacks.TerminateOnNaN`, but the epoch it stops is marked failed on the session
    (`session.failure`), so that the end of the epoch neither saves the diverged weights as the
    best model nor writes them into the checkpoint: the last good epoch stays what a re-run
    resumes from.
    """

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(np.asarray(loss))
        if not math.isfinite(loss):
            self.session.failure = (f"the training loss became {loss} in epoch {self.epoch + 1}, "
                                    f"step {batch + 1} (learning rate or margin too large?)")
            self.model.stop_training = True


class EpochEvaluation(keras.callbacks.Callback):
    """Adds val_auc, the learning rate and mining stats (on a fixed batch) to the epoch logs.

    Running before the TensorBoard callback, its values land in TensorBoard too.
    """

    def __init__(self, session, embedding, probe, training_model):
        super().__init__()
        self.session, self.embedding, self.probe = session, embedding, probe
        self.training_model = training_model
        self.row = {}
        self.began = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.time()

    def on_epoch_end(self, epoch, logs=None):
        s, c = self.session, self.session.config
        if s.failure:
            return  # diverged weights: nothing to measure
        logs = logs if logs is not None else {}
        distribute.average_statistics(self.training_model, s.strategy)  # workers agree
        with ema.averaged_weights(self.training_model.optimizer):  # the EMA model, if config.ema_decay
            embeddings = distribute.embed(s.inference_model(self.embedding), s.val_inputs,
                                          c.eval_batch_size, s.strategy)
            probe_embeddings = self.embedding(self.probe[0], training=False)
        auc = val_auc(embeddings, s.val_pairs, c.distance_metric)
        stats = losses.mining_stats(self.probe[1], probe_embeddings, c.margin,
                                    distance_metric=c.distance_metric)
        lr = float(np.asarray(self.training_model.optimizer.learning_rate))
        logs.update(val_auc=auc, lr=lr, **{k: float(np.asarray(v)) for k, v in stats.items()})
        # With the classification loss kept on, `loss` stays the triplet loss (comparable with
        # the other runs'); the classifier's accuracy shows the head still learning.
        self.row = dict(loss=float(logs.get("embedding_loss", logs.get("loss", np.nan))),
                        accuracy=float(logs.get("accuracy", logs.get("classifier_accuracy", np.nan))),
                        active_fraction=logs["active_fraction"],
                        mean_positive_distance=logs["mean_positive_distance"],
                        mean_negative_distance=logs["mean_negative_distance"],
                        val_auc=auc, lr=lr, seconds=round(time.time() - self.began, 2))


class EpochBookkeeping(keras.callbacks.Callback):
    """Hands each finished epoch's row to the session (best model, early stopping, checkpoint)."""

    def __init__(self, session, embedding, training_model, segment, evaluation):
        super().__init__()
        self.session, self.embedding, self.training_model = session, embedding, training_model
        self.segment, self.evaluation = segment, evaluation

    def on_epoch_end(self, epoch, logs=None):
        if self.session.failure:
            return  # keep the last good checkpoint and best model
        row = dict(self.evaluation.row)
        if self.session.end_epoch(self.embedding, self.training_model, self.segment, row):
            self.training_model.stop_training = True


__all__ = ["StopOnNonFiniteLoss", "EpochEvaluation", "EpochBookkeeping", "val_auc"]
