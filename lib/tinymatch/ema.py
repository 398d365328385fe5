"""Exponential moving average (EMA) of the weights, as `config.ema_decay` asks for.

Keras' optimizers keep the averages themselves (`use_ema=True, ema_momentum=decay`: after every
step `average = decay * average + (1 - decay) * weight`) and store them with their other
variables, so a checkpoint holds them. What Keras does not offer, and this module adds: measuring
and saving with the averaged weights while training continues on the raw ones.

Difference from Keras' default: Keras copies the averages into the model when `fit` ends; a run
here has one `fit` per phase, and a run resumed from a checkpoint would then continue from other
weights than an uninterrupted one. So the copy is switched off (`keep_raw_weights_after_fit`) and
the averages are used only inside `averaged_weights`. (Uses the optimizer's
`_model_variables_moving_average`: Keras 3 has no public accessor; checked against Keras 3.15.)
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def averaged_weights(optimizer):
    """Inside: the model's trainable weights are the optimizer's moving averages (config.ema_decay),
    so what is measured or saved there is the EMA model; afterwards the raw weights are back.
    Without EMA (or before the first step) nothing changes. BatchNorm statistics are not averaged:
    they are moving averages already."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # (a loss-scale wrapper)
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not getattr(optimizer, "use_ema", False) or not averages:
        yield
        return
    variables = optimizer._trainable_variables
    raw = [variable.numpy() for variable in variables]
    optimizer._overwrite_model_variables_with_average_value(variables)
    try:
        yield
    finally:
        for variable, value in zip(variables, raw):
            variable.assign(value)


def keep_raw_weights_after_fit(optimizer):
    """Keras overwrites the weights with their averages when `fit` ends; here training goes on with
    the raw weights (the checkpoint holds those and the averages), so a resumed run and an
    uninterrupted one continue from the same weights, and the averages are used only where
    `averaged_weights` says."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # (a loss-scale wrapper)
    if getattr(optimizer, "use_ema", False):
        optimizer.finalize_variable_values = lambda var_list: None


__all__ = ["averaged_weights", "keep_raw_weights_after_fit"]
